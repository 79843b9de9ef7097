//! `/api/v1/reports` handlers.

use axum::extract::State;

use super::CaseSummary;
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiResult, Envelope,
        envelope::{ErrorBody, Success},
    },
};

/// Counts of the cases the caller can see: by status, by type, opened and closed per month
/// over the last twelve months. Served from the cache; any change to the firm's cases makes
/// it stale at once.
#[utoipa::path(get, path = "/reports/cases/summary", tag = "reports",
    responses((status = 200, body = Success<CaseSummary>), (status = 401, body = ErrorBody)))]
pub async fn case_summary(State(app): State<App>, p: Principal) -> ApiResult<Envelope<CaseSummary>> {
    Ok(Envelope::ok(super::case_summary(&app, &p).await?))
}
