//! `/api/v1/calendar/...` and `/api/v1/cases/{id}/deadlines/compute` handlers.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{
    court::{self, ClosureView, ComputeRequest, ComputeResult, NewRule},
    deadlines::Rule,
    ics::{self, FeedCreated},
    model::event::EventType,
    ops::{self, CreateEvent, EventView, Filter, UpdateEvent},
    sync,
};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::{DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE},
    },
    ids::{CalendarEventId, CaseId, UserId},
};

/// `GET /calendar` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Events that end at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Events that start before this instant.
    pub to: Option<DateTime<Utc>>,
    pub case_id: Option<CaseId>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<EventType>,
    /// A user id, or `me`.
    pub assignee: Option<String>,
    pub completed: Option<bool>,
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub limit: Option<u64>,
}

fn limit_of(limit: Option<u64>) -> ApiResult<u64> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    Ok(limit)
}

fn assignee(p: &Principal, raw: Option<&str>) -> ApiResult<Option<UserId>> {
    match raw {
        None => Ok(None),
        Some("me") => Ok(Some(p.user_id)),
        Some(s) => uuid::Uuid::parse_str(s)
            .map(|u| Some(UserId(u)))
            .map_err(|_| ApiError::field("assignee", "must be a user id or \"me\"")),
    }
}

/// The calendar events the caller may see, by start time, overlapping `[from, to)`.
#[utoipa::path(get, path = "/calendar", tag = "calendar", params(ListQuery),
    responses((status = 200, body = Success<Vec<EventView>>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Envelope<Vec<EventView>>> {
    let limit = limit_of(q.limit)?;
    if let (Some(f), Some(t)) = (q.from, q.to)
        && t < f
    {
        return Err(ApiError::field("to", "must not be before from"));
    }
    let filter = Filter {
        from: q.from,
        to: q.to,
        case_id: q.case_id,
        event_type: q.event_type,
        assignee: assignee(&p, q.assignee.as_deref())?,
        completed: q.completed,
    };
    let (items, pagination) = ops::list(&app, &p, filter, q.page.unwrap_or(1).clamp(1, MAX_PAGE), limit).await?;
    Ok(Envelope::page(items, pagination))
}

/// `GET /calendar/upcoming` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UpcomingQuery {
    /// How far ahead, in days (default 14, at most 366).
    pub days: Option<u32>,
    /// At most this many (default 20, at most 100).
    pub limit: Option<u64>,
    /// Only events the caller is assigned to or attends.
    pub mine: Option<bool>,
}

/// The caller's upcoming events: not completed, not over, starting within `days`.
#[utoipa::path(get, path = "/calendar/upcoming", tag = "calendar", params(UpcomingQuery),
    responses((status = 200, body = Success<Vec<EventView>>), (status = 400, body = ErrorBody)))]
pub async fn upcoming(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<UpcomingQuery>,
) -> ApiResult<Envelope<Vec<EventView>>> {
    let days = q.days.unwrap_or(14);
    if days == 0 || days > 366 {
        return Err(ApiError::field("days", "must be between 1 and 366"));
    }
    let limit = limit_of(Some(q.limit.unwrap_or(20)))?;
    Ok(Envelope::ok(ops::upcoming(&app, &p, days, limit, q.mine.unwrap_or(false)).await?))
}

/// Adds an event (of a case the caller may edit, or of the firm).
#[utoipa::path(post, path = "/calendar", tag = "calendar", request_body = CreateEvent,
    responses((status = 201, body = Success<EventView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<CreateEvent>,
) -> ApiResult<impl IntoResponse> {
    let v = ops::create(&app, &p, input).await?;
    let version = v.version;
    Ok(Envelope::created(v).etag(version))
}

/// One event.
#[utoipa::path(get, path = "/calendar/{id}", tag = "calendar",
    params(("id" = CalendarEventId, Path, description = "event id")),
    responses((status = 200, body = Success<EventView>), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CalendarEventId>,
) -> ApiResult<Envelope<EventView>> {
    let v = ops::get(&app, &p, id).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Changes an event (`If-Match` or `version` guards against lost updates). Moving a computed
/// deadline by hand stops its recomputation.
#[utoipa::path(patch, path = "/calendar/{id}", tag = "calendar", request_body = UpdateEvent,
    params(("id" = CalendarEventId, Path, description = "event id")),
    responses((status = 200, body = Success<EventView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CalendarEventId>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateEvent>,
) -> ApiResult<Envelope<EventView>> {
    let v = ops::update(&app, &p, id, input, if_match).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Deletes an event; its reminders no longer fire.
#[utoipa::path(delete, path = "/calendar/{id}", tag = "calendar",
    params(("id" = CalendarEventId, Path, description = "event id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<CalendarEventId>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<impl IntoResponse> {
    ops::delete(&app, &p, id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Computes a court deadline by rule (FRCP 6(a) counting, federal holidays and the firm's
/// court closures); with `create: true` also makes its calendar event.
#[utoipa::path(post, path = "/cases/{id}/deadlines/compute", tag = "calendar", request_body = ComputeRequest,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 200, body = Success<ComputeResult>), (status = 201, body = Success<ComputeResult>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn compute(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppJson(input): AppJson<ComputeRequest>,
) -> ApiResult<Response> {
    let create = input.create;
    let r = court::compute(&app, &p, case_id, input).await?;
    Ok(if create { Envelope::created(r).into_response() } else { Envelope::ok(r).into_response() })
}

/// The deadline rules the firm can use: LexiFlow's, then its own.
#[utoipa::path(get, path = "/calendar/rules", tag = "calendar",
    responses((status = 200, body = Success<Vec<Rule>>)))]
pub async fn rules(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<Rule>>> {
    Ok(Envelope::ok(court::rules(&app.db, p.firm_id.0).await?))
}

/// Adds a rule of the firm's own (admins and partners).
#[utoipa::path(post, path = "/calendar/rules", tag = "calendar", request_body = NewRule,
    responses((status = 201, body = Success<Rule>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_rule(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<NewRule>,
) -> ApiResult<impl IntoResponse> {
    Ok(Envelope::created(court::add_rule(&app, &p, input).await?))
}

/// Removes a rule of the firm's own; deadlines computed from it keep their dates.
#[utoipa::path(delete, path = "/calendar/rules/{ruleId}", tag = "calendar",
    params(("ruleId" = String, Path, description = "rule id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_rule(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    court::remove_rule(&app, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /calendar/closures` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClosuresQuery {
    /// From this day (default: a year ago).
    pub from: Option<NaiveDate>,
    /// To this day (default: two years on).
    pub to: Option<NaiveDate>,
}

/// The firm's court closures (counted as legal holidays by FRCP 6(a)(6)).
#[utoipa::path(get, path = "/calendar/closures", tag = "calendar", params(ClosuresQuery),
    responses((status = 200, body = Success<Vec<ClosureView>>)))]
pub async fn closures(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<ClosuresQuery>,
) -> ApiResult<Envelope<Vec<ClosureView>>> {
    let today = crate::clock::now().date_naive();
    let from = q.from.unwrap_or(today - chrono::Duration::days(365));
    let to = q.to.unwrap_or(today + chrono::Duration::days(730));
    Ok(Envelope::ok(court::list_closures(&app, &p, from, to).await?))
}

/// What adding or removing a closure did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClosureChange {
    pub closure: Option<ClosureView>,
    /// Computed deadlines whose dates moved.
    pub recomputed: usize,
}

/// Records a court closure (admins and partners); the firm's computed deadlines it moves are
/// recomputed in the same transaction.
#[utoipa::path(post, path = "/calendar/closures", tag = "calendar", request_body = ClosureView,
    responses((status = 201, body = Success<ClosureChange>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn add_closure(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<ClosureView>,
) -> ApiResult<impl IntoResponse> {
    let (c, n) = court::add_closure(&app, &p, input).await?;
    Ok(Envelope::created(ClosureChange { closure: Some(c), recomputed: n }))
}

/// `DELETE /calendar/closures/{day}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClosureCourt {
    /// The court whose closure it is (absent: the closure of every court).
    pub court: Option<String>,
}

/// Removes a court closure; the deadlines it had moved are recomputed.
#[utoipa::path(delete, path = "/calendar/closures/{day}", tag = "calendar",
    params(("day" = NaiveDate, Path, description = "the day"), ClosureCourt),
    responses((status = 200, body = Success<ClosureChange>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_closure(
    State(app): State<App>,
    p: Principal,
    AppPath(day): AppPath<NaiveDate>,
    AppQuery(q): AppQuery<ClosureCourt>,
) -> ApiResult<Envelope<ClosureChange>> {
    let n = court::remove_closure(&app, &p, day, q.court.as_deref()).await?;
    Ok(Envelope::ok(ClosureChange { closure: None, recomputed: n }))
}

/// Makes the caller's `.ics` feed (revoking any earlier one). The token is shown once.
#[utoipa::path(post, path = "/calendar/feed", tag = "calendar",
    responses((status = 201, body = Success<FeedCreated>), (status = 403, body = ErrorBody)))]
pub async fn create_feed(State(app): State<App>, p: Principal) -> ApiResult<impl IntoResponse> {
    Ok(Envelope::created(ics::create(&app, &p).await?).holding_secret(&["path", "token"]))
}

/// Revokes the caller's `.ics` feed.
#[utoipa::path(delete, path = "/calendar/feed", tag = "calendar",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_feed(State(app): State<App>, p: Principal) -> ApiResult<impl IntoResponse> {
    ics::revoke(&app, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's calendar as RFC 5545 text. Public: the secret token in the path is the key
/// (calendar applications cannot send a bearer token).
#[utoipa::path(get, path = "/calendar/feed/{token}", tag = "calendar", security(()),
    params(("token" = String, Path, description = "the feed's token, optionally followed by .ics")),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
pub async fn feed(State(app): State<App>, AppPath(token): AppPath<String>) -> ApiResult<Response> {
    let body = ics::render(&app, &token).await?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/calendar; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline; filename=\"lexiflow.ics\""));
    Ok(r)
}

/// The caller's calendar connections (never their tokens).
#[utoipa::path(get, path = "/calendar/connections", tag = "calendar",
    responses((status = 200, body = Success<Vec<sync::ConnectionView>>)))]
pub async fn connections(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<sync::ConnectionView>>> {
    Ok(Envelope::ok(sync::list(&app, &p).await?))
}

/// Where the authorization starts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub authorization_url: String,
}

/// Starts connecting a provider (`google` or `microsoft`): a 302 to its consent page, with a
/// fresh `state` and a PKCE S256 challenge (the address is in the body too, for callers that
/// do not follow redirects).
#[utoipa::path(get, path = "/calendar/connections/{provider}/authorize", tag = "calendar",
    params(("provider" = String, Path, description = "google or microsoft")),
    responses((status = 302, body = Success<Authorization>), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn authorize(
    State(app): State<App>,
    p: Principal,
    AppPath(provider): AppPath<String>,
) -> ApiResult<Response> {
    let url = sync::authorize(&app, &p, &provider).await?;
    let mut r = Envelope::ok(Authorization { authorization_url: url.to_string() }).into_response();
    *r.status_mut() = StatusCode::FOUND;
    let location = HeaderValue::from_str(url.as_str()).map_err(ApiError::internal)?;
    r.headers_mut().insert(header::LOCATION, location);
    Ok(r)
}

/// What the provider put in the query of the redirect back to the front end
/// (`CALENDAR_REDIRECT_URL`), posted on by the front end under the same (OAuth's) names.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CallbackBody {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the user refused.
    pub error: Option<String>,
}

/// Completes connecting a provider: the front end's page at `CALENDAR_REDIRECT_URL`, where the
/// provider sent the browser back, posts the `code` and `state` it was given. Only the user who
/// started with `authorize` can complete it. Fields the provider adds (`scope`, `iss`, …) may
/// be posted too and are ignored.
#[utoipa::path(post, path = "/calendar/connections/{provider}/callback", tag = "calendar",
    params(("provider" = String, Path, description = "google or microsoft")),
    request_body = CallbackBody,
    responses((status = 200, body = Success<sync::ConnectionView>), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn callback(
    State(app): State<App>,
    p: Principal,
    AppPath(provider): AppPath<String>,
    AppJson(b): AppJson<CallbackBody>,
) -> ApiResult<Envelope<sync::ConnectionView>> {
    let c = sync::callback(&app, &p, &provider, b.code.as_deref(), b.state.as_deref(), b.error.as_deref()).await?;
    Ok(Envelope::ok(c))
}

/// Pulls the caller's connected calendar now (a queued job).
#[utoipa::path(post, path = "/calendar/connections/{provider}/sync", tag = "calendar",
    params(("provider" = String, Path, description = "google or microsoft")),
    responses((status = 202), (status = 404, body = ErrorBody)))]
pub async fn sync_now(
    State(app): State<App>,
    p: Principal,
    AppPath(provider): AppPath<String>,
) -> ApiResult<StatusCode> {
    sync::sync_now(&app, &p, &provider).await?;
    Ok(StatusCode::ACCEPTED)
}

/// What disconnecting did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disconnected {
    /// The grant was revoked at the provider (Google); Microsoft has no revocation endpoint.
    pub revoked_at_provider: bool,
}

/// Disconnects a provider: revokes the grant where the provider can, and forgets the tokens.
#[utoipa::path(delete, path = "/calendar/connections/{provider}", tag = "calendar",
    params(("provider" = String, Path, description = "google or microsoft")),
    responses((status = 200, body = Success<Disconnected>), (status = 404, body = ErrorBody)))]
pub async fn disconnect(
    State(app): State<App>,
    p: Principal,
    AppPath(provider): AppPath<String>,
) -> ApiResult<Envelope<Disconnected>> {
    let revoked = sync::disconnect(&app, &p, &provider).await?;
    Ok(Envelope::ok(Disconnected { revoked_at_provider: revoked }))
}
