//! `/api/v1/cases` handlers: cases and their teams.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;

use super::{
    CaseView,
    model::{CaseStatus, CaseType},
    ops::{self, CaseFilter, CaseSort, CreateCase, UpdateCase},
    team::{self, AddMember, TeamMemberView},
};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
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
