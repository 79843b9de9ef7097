//! `/api/v1/auth/*` handlers.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    Principal,
    ops::{self, AuthTokens, ClientInfo, FirmSessionView, RegisterInput, SessionView},
};
use crate::{
    app::App,
    http::client_ip::ClientIp,
    http::{
        ApiResult, AppJson, AppPath, Envelope,
        envelope::{ErrorBody, Success},
    },
    ids::SessionId,
    ratelimit,
    users::UserView,
};

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientInfo {
            user_agent: parts.headers.get(::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
            ip: parts
                .extensions
                .get::<ClientIp>()
                .map(|c| c.0)
                .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
                .map(|ip| ip.to_string()),
        })
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshInput {
    pub refresh_token: String,
}

/// Create a firm and its first user (an admin); returns a logged-in session.
#[utoipa::path(post, path = "/auth/register", tag = "auth", security(()),
    request_body = RegisterInput,
    responses((status = 201, body = Success<AuthTokens>), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn register(
    State(app): State<App>,
    client: ClientInfo,
    AppJson(input): AppJson<RegisterInput>,
) -> ApiResult<Envelope<AuthTokens>> {
    Ok(Envelope::created(ops::register(&app, input, client).await?))
}

/// Log in with e-mail and password. Limited per client address, and per e-mail address from
/// each client address (never per e-mail address alone: that would let anyone keep a user
/// out). Failures on an account slow every attempt on it down; repeated failures from one
/// address lock that address out of the account for a while.
#[utoipa::path(post, path = "/auth/login", tag = "auth", security(()),
    request_body = LoginInput,
    responses((status = 200, body = Success<AuthTokens>), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(app): State<App>,
    client: ClientInfo,
    AppJson(input): AppJson<LoginInput>,
) -> ApiResult<Response> {
    let key = ops::source_key(&ops::login_key(&input.email), client.ip.as_deref());
    let decision = match ratelimit::enforce(&app, "login_email", &key, app.config.throttle.login_email).await {
        Ok(d) => d,
        Err(refused) => return Ok(refused),
    };
    let mut res = Envelope::ok(ops::login(&app, &input.email, input.password, client).await?).into_response();
    ratelimit::set_headers(res.headers_mut(), "login_email", &decision);
    Ok(res)
}

/// Exchange a refresh token for a new pair. Reusing a rotated token ends the session.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", security(()),
    request_body = RefreshInput,
    responses((status = 200, body = Success<AuthTokens>), (status = 401, body = ErrorBody)))]
pub async fn refresh(State(app): State<App>, AppJson(input): AppJson<RefreshInput>) -> ApiResult<Envelope<AuthTokens>> {
    Ok(Envelope::ok(ops::refresh(&app, &input.refresh_token).await?))
}

/// End the current session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(app): State<App>, p: Principal) -> ApiResult<impl IntoResponse> {
    ops::logout(&app, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, body = Success<UserView>), (status = 401, body = ErrorBody)))]
pub async fn me(State(app): State<App>, p: Principal) -> ApiResult<Envelope<UserView>> {
    Ok(Envelope::ok(ops::me(&app, &p).await?))
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth",
    responses((status = 200, body = Success<Vec<SessionView>>), (status = 401, body = ErrorBody)))]
pub async fn sessions(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<SessionView>>> {
    Ok(Envelope::ok(ops::list_sessions(&app, &p).await?))
}

/// Revoke one of the caller's sessions.
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "auth",
    params(("id" = SessionId, Path, description = "session id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_session(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<SessionId>,
) -> ApiResult<impl IntoResponse> {
    ops::revoke_own_session(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every live session of the firm's users (firm admins, signed in).
#[utoipa::path(get, path = "/sessions", tag = "auth",
    responses((status = 200, body = Success<Vec<FirmSessionView>>), (status = 403, body = ErrorBody)))]
pub async fn firm_sessions(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<FirmSessionView>>> {
    Ok(Envelope::ok(ops::list_firm_sessions(&app, &p).await?))
}

/// End any session of the firm (firm admins, signed in); audited as `auth.session_revoked`.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "auth",
    params(("id" = SessionId, Path, description = "session id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_firm_session(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<SessionId>,
) -> ApiResult<impl IntoResponse> {
    ops::revoke_firm_session(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
