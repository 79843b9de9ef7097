//! `/api/v1/cases` handlers: cases, their teams and sealed-access grants.

use axum::{
    extract::{FromRequest, Request, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;

use super::{
    CaseView,
    bulk::{self, BulkMode, BulkResult, CreateOptions, MAX_ITEMS, OnConflict, UpdateItem},
    model::{CaseStatus, CaseType},
    ops::{self, CaseFilter, CaseSort, CreateCase, UpdateCase},
    sealed::{self, SealedGrantView},
    team::{self, AddMember, TeamMemberView},
};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::PageRequest,
    },
    ids::{CaseId, UserId},
};

/// `GET /cases` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCasesQuery {
    pub status: Option<CaseStatus>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub case_type: Option<CaseType>,
    /// Text searched in title and case number (case-insensitive).
    pub q: Option<String>,
    /// `createdAt`, `updatedAt`, `caseNumber` or `title`; prefix `-` for descending. Default `-createdAt`.
    pub sort: Option<String>,
    /// Offset paging: page number from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100 (default 20).
    pub limit: Option<u64>,
    /// Cursor paging: empty for the first page, then `meta.pagination.nextCursor`.
    pub cursor: Option<String>,
}

/// Open a case.
#[utoipa::path(post, path = "/cases", tag = "cases", request_body = CreateCase,
    responses((status = 201, body = Success<CaseView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<CreateCase>,
) -> ApiResult<Envelope<CaseView>> {
    let c = ops::create(&app, &p, input).await?;
    let v = c.version;
    Ok(Envelope::created(c).etag(v))
}

/// Cases the caller can see, filtered, sorted, paged by offset or cursor.
#[utoipa::path(get, path = "/cases", tag = "cases", params(ListCasesQuery),
    responses((status = 200, body = Success<Vec<CaseView>>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<ListCasesQuery>,
) -> ApiResult<Envelope<Vec<CaseView>>> {
    let sort = CaseSort::parse(q.sort.as_deref())?;
    let page = PageRequest::parse(q.page, q.limit, q.cursor.as_deref(), &sort_name(q.sort.as_deref()))?;
    let filter = CaseFilter { status: q.status, case_type: q.case_type, q: q.q.map(|t| crate::input::plain(&t)) };
    let (items, pagination) = ops::list(&app, &p, filter, sort, page).await?;
    Ok(Envelope::page(items, pagination))
}

fn sort_name(s: Option<&str>) -> String {
    s.unwrap_or("-createdAt").to_owned()
}

/// One case.
#[utoipa::path(get, path = "/cases/{id}", tag = "cases", params(("id" = CaseId, Path, description = "case id")),
    responses((status = 200, body = Success<CaseView>, headers(("ETag" = String, description = "the case's version"))), (status = 404, body = ErrorBody)))]
pub async fn get(State(app): State<App>, p: Principal, AppPath(id): AppPath<CaseId>) -> ApiResult<Envelope<CaseView>> {
    let c = ops::get(&app, &p, id).await?;
    let v = c.version;
    Ok(Envelope::ok(c).etag(v))
}

/// Change a case. Send `If-Match` (the ETag) or `version`; a stale one gets 412.
#[utoipa::path(patch, path = "/cases/{id}", tag = "cases", request_body = UpdateCase,
    params(("id" = CaseId, Path, description = "case id"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    responses((status = 200, body = Success<CaseView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateCase>,
) -> ApiResult<Envelope<CaseView>> {
    let c = ops::update(&app, &p, id, input, if_match).await?;
    let v = c.version;
    Ok(Envelope::ok(c).etag(v))
}

/// Delete a case (soft: kept for the legal record, gone from the API).
#[utoipa::path(delete, path = "/cases/{id}", tag = "cases",
    params(("id" = CaseId, Path, description = "case id"), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<impl IntoResponse> {
    ops::delete(&app, &p, id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The case's team.
#[utoipa::path(get, path = "/cases/{id}/team", tag = "cases", params(("id" = CaseId, Path, description = "case id")),
    responses((status = 200, body = Success<Vec<TeamMemberView>>), (status = 404, body = ErrorBody)))]
pub async fn team_list(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
) -> ApiResult<Envelope<Vec<TeamMemberView>>> {
    Ok(Envelope::ok(team::list(&app, &p, id).await?))
}

/// Add a member to the case's team.
#[utoipa::path(post, path = "/cases/{id}/team", tag = "cases", request_body = AddMember,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 201, body = Success<Vec<TeamMemberView>>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn team_add(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
    AppJson(input): AppJson<AddMember>,
) -> ApiResult<Envelope<Vec<TeamMemberView>>> {
    Ok(Envelope::created(team::add(&app, &p, id, input).await?))
}

/// Remove a member from the case's team.
#[utoipa::path(delete, path = "/cases/{id}/team/{userId}", tag = "cases",
    params(("id" = CaseId, Path, description = "case id"), ("userId" = UserId, Path, description = "user id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn team_remove(
    State(app): State<App>,
    p: Principal,
    AppPath((id, user_id)): AppPath<(CaseId, UserId)>,
) -> ApiResult<impl IntoResponse> {
    team::remove(&app, &p, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who besides the firm's admins may see the case's sealed material (admins only).
#[utoipa::path(get, path = "/cases/{id}/sealed-access", tag = "cases",
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 200, body = Success<Vec<SealedGrantView>>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sealed_access_list(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CaseId>,
) -> ApiResult<Envelope<Vec<SealedGrantView>>> {
    Ok(Envelope::ok(sealed::list(&app, &p, id).await?))
}

/// Let a user see the case's sealed material (admins only, never to themselves; the user must
/// be an active user of the firm who can see the case). Granting twice changes nothing.
#[utoipa::path(put, path = "/cases/{id}/sealed-access/{userId}", tag = "cases",
    params(("id" = CaseId, Path, description = "case id"), ("userId" = UserId, Path, description = "user id")),
    responses((status = 200, body = Success<SealedGrantView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sealed_access_grant(
    State(app): State<App>,
    p: Principal,
    AppPath((id, user_id)): AppPath<(CaseId, UserId)>,
) -> ApiResult<Envelope<SealedGrantView>> {
    Ok(Envelope::ok(sealed::grant(&app, &p, id, user_id).await?))
}

/// Withdraw a user's access to the case's sealed material, at once (admins only).
#[utoipa::path(delete, path = "/cases/{id}/sealed-access/{userId}", tag = "cases",
    params(("id" = CaseId, Path, description = "case id"), ("userId" = UserId, Path, description = "user id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sealed_access_revoke(
    State(app): State<App>,
    p: Principal,
    AppPath((id, user_id)): AppPath<(CaseId, UserId)>,
) -> ApiResult<impl IntoResponse> {
    sealed::revoke(&app, &p, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /cases/bulk` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCreateBody {
    /// `atomic` (default: all or nothing) or `partial` (bad items reported, good ones kept).
    #[serde(default)]
    pub mode: BulkMode,
    /// When an item's case number is taken: `fail` (default), `skip` or `update`.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Up to 10,000 cases, each as for `POST /cases`.
    #[schema(value_type = Vec<CreateCase>)]
    #[serde(deserialize_with = "bulk_items")]
    pub items: Vec<serde_json::Value>,
}

/// `PATCH /cases/bulk` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkUpdateBody {
    #[serde(default)]
    pub mode: BulkMode,
    /// Up to 10,000 items: `id` plus the fields of `PATCH /cases/{id}` (with `version` to guard).
    #[schema(value_type = Vec<Object>)]
    #[serde(deserialize_with = "bulk_items")]
    pub items: Vec<serde_json::Value>,
}

/// `POST /cases/bulk/delete` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkDeleteBody {
    #[serde(default)]
    pub mode: BulkMode,
    /// Permanently (admins only; refused for cases with parties or docket entries). Default:
    /// soft delete, the case kept for the record.
    #[serde(default)]
    pub hard: bool,
    pub ids: Vec<CaseId>,
}

/// The `items` of a bulk body: at most [`MAX_ITEMS`], refused while the body is read, before
/// the rest of it is parsed (see [`crate::input::bounded_items`]).
pub(crate) fn bulk_items<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<serde_json::Value>, D::Error> {
    crate::input::bounded_items(d, MAX_ITEMS, "items")
}

/// Parses one item, reporting a malformed one as that item's error.
pub(crate) fn parse_item<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::field("item", e.to_string()))
}

fn parse_update_item(v: serde_json::Value) -> Result<UpdateItem, ApiError> {
    let serde_json::Value::Object(mut m) = v else {
        return Err(ApiError::field("item", "expected an object with id and the fields to change"));
    };
    let id = m.remove("id").ok_or_else(|| ApiError::field("id", "required"))?;
    let id: CaseId = serde_json::from_value(id).map_err(|_| ApiError::field("id", "not a case id"))?;
    Ok(UpdateItem { id, changes: parse_item(serde_json::Value::Object(m))? })
}

/// Open up to 10,000 cases at once (or upsert them on the case number). Each item is
/// validated on its own; the result lists every failed item with its index and reason.
#[utoipa::path(post, path = "/cases/bulk", tag = "cases", request_body = BulkCreateBody,
    responses((status = 200, body = Success<BulkResult>), (status = 400, body = ErrorBody, description = "atomic mode: items failed validation; nothing written"),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "atomic mode: case numbers taken; nothing written")))]
pub async fn bulk_create(State(app): State<App>, p: Principal, req: Request) -> ApiResult<Envelope<BulkResult>> {
    // The role alone decides, so it is checked before up to 32 MiB of body is read and parsed
    // (`create_many` checks it again, for the import).
    if !p.role.may_create_cases() {
        return Err(ApiError::forbidden("your role may not open cases"));
    }
    let AppJson(body) = AppJson::<BulkCreateBody>::from_request(req, &app).await?;
    let items = body.items.into_iter().map(parse_item::<CreateCase>).collect();
    let opts = CreateOptions { mode: body.mode, on_conflict: body.on_conflict };
    Ok(Envelope::ok(bulk::create_many(&app, &p, items, opts, &|_| {}).await?))
}

/// Change up to 10,000 cases at once.
#[utoipa::path(patch, path = "/cases/bulk", tag = "cases", request_body = BulkUpdateBody,
    responses((status = 200, body = Success<BulkResult>), (status = 400, body = ErrorBody)))]
pub async fn bulk_update(
    State(app): State<App>,
    p: Principal,
    AppJson(body): AppJson<BulkUpdateBody>,
) -> ApiResult<Envelope<BulkResult>> {
    let items = body.items.into_iter().map(parse_update_item).collect();
    Ok(Envelope::ok(bulk::update_many(&app, &p, items, body.mode).await?))
}

/// Delete up to 10,000 cases at once (soft unless `hard`).
#[utoipa::path(post, path = "/cases/bulk/delete", tag = "cases", request_body = BulkDeleteBody,
    responses((status = 200, body = Success<BulkResult>), (status = 400, body = ErrorBody)))]
pub async fn bulk_delete(
    State(app): State<App>,
    p: Principal,
    AppJson(body): AppJson<BulkDeleteBody>,
) -> ApiResult<Envelope<BulkResult>> {
    Ok(Envelope::ok(bulk::delete_many(&app, &p, body.ids, body.hard, body.mode).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"items":[{},{},…]}` with `n` items.
    fn body(n: usize) -> String {
        format!(r#"{{"items":[{}]}}"#, vec!["{}"; n].join(","))
    }

    #[test]
    fn bulk_bodies_take_max_items_and_refuse_one_more() {
        assert_eq!(serde_json::from_str::<BulkCreateBody>(&body(MAX_ITEMS)).unwrap().items.len(), MAX_ITEMS);
        assert_eq!(serde_json::from_str::<BulkUpdateBody>(&body(MAX_ITEMS)).unwrap().items.len(), MAX_ITEMS);
        let limit = format!("at most {MAX_ITEMS} items per request");
        let e = serde_json::from_str::<BulkCreateBody>(&body(MAX_ITEMS + 1)).unwrap_err();
        assert!(e.to_string().contains(&limit), "{e}");
        let e = serde_json::from_str::<BulkUpdateBody>(&body(MAX_ITEMS + 1)).unwrap_err();
        assert!(e.to_string().contains(&limit), "{e}");
    }
}
