//! `/api/v1/api-keys` (signed-in admins).

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use uuid::Uuid;

use super::{ApiKeyView, CreateKey};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiResult, AppJson, AppPath, Envelope,
        envelope::{ErrorBody, Success},
    },
};

/// Make an API key. The answer's `key` is the only time the whole key is shown: store it in
/// the calling system's secret store.
#[utoipa::path(post, path = "/api-keys", tag = "api-keys", request_body = CreateKey,
    responses((status = 201, body = Success<ApiKeyView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<CreateKey>,
) -> ApiResult<Envelope<ApiKeyView>> {
    Ok(Envelope::created(super::create(&app, &p, input).await?).holding_secret(&["key"]))
}

/// The firm's API keys (never their secrets), with when each was last used.
#[utoipa::path(get, path = "/api-keys", tag = "api-keys",
    responses((status = 200, body = Success<Vec<ApiKeyView>>), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<ApiKeyView>>> {
    Ok(Envelope::ok(super::list(&app, &p).await?))
}

/// Revoke an API key: from now on it gets 401, on every instance. Revoking twice changes nothing.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "API key id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(State(app): State<App>, p: Principal, AppPath(id): AppPath<Uuid>) -> ApiResult<impl IntoResponse> {
    super::revoke(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
