//! Authentication: registration and login, refresh-token rotation with reuse detection,
//! sessions, and the layer that requires a valid access token on every non-public route.

pub mod cache;
pub mod http;
pub mod model;
pub mod ops;
pub mod password;
pub mod tokens;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::Response,
};
use sea_orm::{
    ConnectionTrait,
    sea_query::{Expr, ExprTrait, Query},
};

use crate::{
    app::App,
    http::error::{ApiError, ErrorCode},
    ids::{FirmId, SessionId, UserId},
    users::model::{self as user, Role, UserStatus},
};
use model::session;

/// Who is making the request: set by [`require_auth`], read by handlers.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: UserId,
    pub firm_id: FirmId,
    /// The role as it is now in the database, not as it was when the token was issued.
    pub role: Role,
    pub session_id: SessionId,
    /// Set when the request came with an API key instead of a session: the key's id and
    /// scopes (`session_id` is then the key's id, `user_id` its maker's).
    pub api_key: Option<crate::api_keys::KeyGrant>,
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only reachable without the layer if a route was mounted in the wrong group; fail closed.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::AuthRequired, ErrorCode::AuthRequired.default_message()))
    }
}

/// The bearer token of a request, if any.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let missing = || ApiError::new(ErrorCode::AuthRequired, "send an access token: Authorization: Bearer <token>");
    let value = req.headers().get(::http::header::AUTHORIZATION).ok_or_else(missing)?;
    let s = value.to_str().map_err(|_| missing())?;
    match s.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(missing()),
    }
}

/// An API key presented as `X-API-Key` or as a bearer token starting `lf_`.
fn presented_key(req: &Request) -> Option<String> {
    match req.headers().get("x-api-key") {
        Some(v) => Some(v.to_str().unwrap_or("").trim().to_owned()),
        None => bearer(req).ok().filter(|t| crate::api_keys::looks_like_key(t)).map(str::to_owned),
    }
}

/// Requires a valid access token whose session is live and whose user is active, or a valid
/// API key whose scopes open the route.
pub async fn require_auth(State(app): State<App>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(key) = presented_key(&req) {
        // Checked already by the rate limiter (which needs the key to pick its budget), or now.
        let checked =
            req.extensions_mut().remove::<crate::api_keys::CheckedKey>().filter(|c| c.decided && c.presented == key);
        let principal = match checked {
            Some(c) => c.into_result(),
            None => crate::api_keys::authenticate(&app, &key).await,
        }
        .inspect_err(|_| {
            metrics::counter!("lexiflow_auth_failures_total", "reason" => "api_key").increment(1);
        })?;
        let path = match req.extensions().get::<axum::extract::OriginalUri>() {
            Some(o) => o.0.path().to_owned(),
            None => req.uri().path().to_owned(),
        };
        crate::api_keys::check_scope(&principal, req.method(), &path)?;
        req.extensions_mut().insert(principal.clone());
        let mut res = next.run(req).await;
        res.extensions_mut().insert(principal);
        return Ok(res);
    }
    let verified = req.extensions_mut().remove::<crate::ratelimit::VerifiedClaims>().map(|v| v.0);
    let claims = match verified {
        Some(c) => Ok(c),
        None => bearer(&req).and_then(|t| app.tokens.verify(t)),
    }
    .inspect_err(|e| {
        let reason = match e.code {
            ErrorCode::AuthRequired => "missing",
            ErrorCode::AuthTokenExpired => "expired",
            _ => "invalid",
        };
        metrics::counter!("lexiflow_auth_failures_total", "reason" => reason).increment(1);
    })?;
    let principal = principal_of(&app, &claims).await.inspect_err(|e| {
        if e.code == ErrorCode::AuthTokenInvalid {
            metrics::counter!("lexiflow_auth_failures_total", "reason" => "session_ended").increment(1);
        }
    })?;
    req.extensions_mut().insert(principal.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(principal);
    Ok(res)
}

/// Who verified `claims` speak for: their session must be live and their user active (from
/// the session cache when it was checked recently, else from the database). The API's
/// [`require_auth`] and the realtime gateway's handshake both go through here.
pub async fn principal_of(app: &App, claims: &tokens::Claims) -> Result<Principal, ApiError> {
    match app.sessions.get(claims.sid, claims.sub) {
        Some(p) if p.firm_id.0 == claims.firm => Ok(p),
        _ => live_principal(app, claims).await,
    }
}

async fn live_principal(app: &App, claims: &tokens::Claims) -> Result<Principal, ApiError> {
    live(app, claims.sub, claims.sid, claims.firm).await
}

/// `p`'s session and user read again from the database, past the session cache (which may be
/// up to `AUTH_CACHE_TTL_MS` behind a revocation on another instance): for a long-lived
/// connection deciding what it may join.
pub async fn fresh_principal(app: &App, p: &Principal) -> Result<Principal, ApiError> {
    live(app, p.user_id.0, p.session_id.0, p.firm_id.0).await
}

async fn live(app: &App, sub: uuid::Uuid, sid: uuid::Uuid, claimed_firm: uuid::Uuid) -> Result<Principal, ApiError> {
    let looked_up_at = std::time::Instant::now();
    let ended = || ApiError::new(ErrorCode::AuthTokenInvalid, "the session of this token has ended; log in again");
    let stmt = Query::select()
        .expr_as(Expr::col((session::Entity, session::Column::RevokedAt)), "revoked_at")
        .expr_as(Expr::col((session::Entity, session::Column::ExpiresAt)), "expires_at")
        .expr_as(Expr::col((user::Entity, user::Column::Status)), "status")
        .expr_as(Expr::col((user::Entity, user::Column::Role)), "role")
        .expr_as(Expr::col((user::Entity, user::Column::FirmId)), "firm_id")
        .from(session::Entity)
        .inner_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id)).equals((session::Entity, session::Column::UserId)),
        )
        .and_where(Expr::col((session::Entity, session::Column::Id)).eq(sid))
        .and_where(Expr::col((session::Entity, session::Column::UserId)).eq(sub))
        .to_owned();
    let row = app.db.query_one(&stmt).await?.ok_or_else(ended)?;
    let revoked: Option<chrono::DateTime<chrono::Utc>> = row.try_get("", "revoked_at")?;
    let expires: chrono::DateTime<chrono::Utc> = row.try_get("", "expires_at")?;
    let status: UserStatus = row.try_get("", "status")?;
    let role: Role = row.try_get("", "role")?;
    let firm: uuid::Uuid = row.try_get("", "firm_id")?;
    if revoked.is_some() || expires <= chrono::Utc::now() || status != UserStatus::Active || firm != claimed_firm {
        return Err(ended());
    }
    let p = Principal { user_id: UserId(sub), firm_id: FirmId(firm), role, session_id: SessionId(sid), api_key: None };
    app.sessions.put(&p, expires, looked_up_at);
    Ok(p)
}
