//! `/api/v1/cases/{id}/parties` handlers.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;

use super::ops::{self, CreateParty, PartyView, UpdateParty};
use crate::{
    app::App,
    auth::Principal,
    cases::{
        bulk::{BulkMode, BulkResult},
        http::parse_item,
    },
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::{DEFAULT_LIMIT, MAX_LIMIT},
    },
    ids::{CaseId, PartyId},
};

/// `GET /cases/{id}/parties` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPartiesQuery {
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub limit: Option<u64>,
}

/// The parties of a case.
#[utoipa::path(get, path = "/cases/{id}/parties", tag = "parties",
    params(("id" = CaseId, Path, description = "case id"), ListPartiesQuery),
    responses((status = 200, body = Success<Vec<PartyView>>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppQuery(q): AppQuery<ListPartiesQuery>,
) -> ApiResult<Envelope<Vec<PartyView>>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let (items, pagination) =
        ops::list(&app, &p, case_id, q.page.unwrap_or(1).clamp(1, crate::http::pagination::MAX_PAGE), limit).await?;
    Ok(Envelope::page(items, pagination))
}

/// Add a party to a case.
#[utoipa::path(post, path = "/cases/{id}/parties", tag = "parties", request_body = CreateParty,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 201, body = Success<PartyView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppJson(input): AppJson<CreateParty>,
) -> ApiResult<Envelope<PartyView>> {
    let v = ops::create(&app, &p, case_id, input).await?;
    let version = v.version;
    Ok(Envelope::created(v).etag(version))
}

/// One party.
#[utoipa::path(get, path = "/cases/{id}/parties/{partyId}", tag = "parties",
    params(("id" = CaseId, Path, description = "case id"), ("partyId" = PartyId, Path, description = "party id")),
    responses((status = 200, body = Success<PartyView>), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, PartyId)>,
) -> ApiResult<Envelope<PartyView>> {
    let v = ops::get(&app, &p, case_id, id).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Change a party (`If-Match` or `version` guards against lost updates).
#[utoipa::path(patch, path = "/cases/{id}/parties/{partyId}", tag = "parties", request_body = UpdateParty,
    params(("id" = CaseId, Path, description = "case id"), ("partyId" = PartyId, Path, description = "party id")),
    responses((status = 200, body = Success<PartyView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, PartyId)>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateParty>,
) -> ApiResult<Envelope<PartyView>> {
    let v = ops::update(&app, &p, case_id, id, input, if_match).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Remove a party from a case (soft delete).
#[utoipa::path(delete, path = "/cases/{id}/parties/{partyId}", tag = "parties",
    params(("id" = CaseId, Path, description = "case id"), ("partyId" = PartyId, Path, description = "party id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    p: Principal,
    AppPath((case_id, id)): AppPath<(CaseId, PartyId)>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<impl IntoResponse> {
    ops::delete(&app, &p, case_id, id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /cases/{id}/parties/bulk` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkPartiesBody {
    /// `atomic` (default) or `partial`.
    #[serde(default)]
    pub mode: BulkMode,
    /// Up to 10,000 parties, each as for `POST /cases/{id}/parties` (more are refused while
    /// the body is read).
    #[schema(value_type = Vec<CreateParty>)]
    #[serde(deserialize_with = "crate::cases::http::bulk_items")]
    pub items: Vec<serde_json::Value>,
}

/// Add up to 10,000 parties to a case at once.
#[utoipa::path(post, path = "/cases/{id}/parties/bulk", tag = "parties", request_body = BulkPartiesBody,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 200, body = Success<BulkResult>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bulk_create(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppJson(body): AppJson<BulkPartiesBody>,
) -> ApiResult<Envelope<BulkResult>> {
    let items = body.items.into_iter().map(parse_item::<CreateParty>).collect();
    Ok(Envelope::ok(ops::create_many(&app, &p, case_id, items, body.mode).await?))
}

#[cfg(test)]
mod tests {
    use super::BulkPartiesBody;
    use crate::cases::bulk::MAX_ITEMS;

    /// `{"items":[{},{},…]}` with `n` items.
    fn body(n: usize) -> String {
        format!(r#"{{"items":[{}]}}"#, vec!["{}"; n].join(","))
    }

    #[test]
    fn bulk_parties_body_takes_max_items_and_refuses_one_more() {
        assert_eq!(serde_json::from_str::<BulkPartiesBody>(&body(MAX_ITEMS)).unwrap().items.len(), MAX_ITEMS);
        let e = serde_json::from_str::<BulkPartiesBody>(&body(MAX_ITEMS + 1)).unwrap_err();
        assert!(e.to_string().contains(&format!("at most {MAX_ITEMS} items per request")), "{e}");
    }
}
