//! `/api/v1/users` handlers (admins only).

use axum::extract::State;
use serde::Deserialize;

use super::{
    UserView,
    ops::{self, CreateUser, UpdateUser},
};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::{DEFAULT_LIMIT, MAX_LIMIT},
    },
    ids::UserId,
};

/// `GET /users` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub limit: Option<u64>,
}

/// Add a user to the caller's firm.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = Success<UserView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<CreateUser>,
) -> ApiResult<axum::response::Response> {
    // Hashing a password is expensive, and a 409 tells whether an address is taken: limited.
    let quota = app.config.throttle.password;
    if let Err(refused) = crate::ratelimit::enforce(&app, "password", &format!("u:{}", p.user_id), quota).await {
        return Ok(refused);
    }
    let u = ops::create(&app, &p, input).await?;
    let v = u.version;
    Ok(axum::response::IntoResponse::into_response(Envelope::created(u).etag(v)))
}

/// The firm's users.
#[utoipa::path(get, path = "/users", tag = "users", params(ListUsersQuery),
    responses((status = 200, body = Success<Vec<UserView>>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppQuery(q): AppQuery<ListUsersQuery>,
) -> ApiResult<Envelope<Vec<UserView>>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let page = q.page.unwrap_or(1).clamp(1, crate::http::pagination::MAX_PAGE);
    let (items, pagination) = ops::list(&app, &p, page, limit).await?;
    Ok(Envelope::page(items, pagination))
}

/// Change a user's role or status.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = UserId, Path, description = "user id")),
    responses((status = 200, body = Success<UserView>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<UserId>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateUser>,
) -> ApiResult<Envelope<UserView>> {
    let u = ops::update(&app, &p, id, input, if_match).await?;
    let v = u.version;
    Ok(Envelope::ok(u).etag(v))
}
