//! The operator console at `/console`: one page (HTML, CSS and a script, embedded in the
//! binary, nothing from a CDN) for queues, health, circuit breakers, audit verification,
//! sessions, webhooks and live request metrics.
//!
//! Admins sign in with their LexiFlow account (`POST /console/login`, the API's login with
//! its lockout and rate limits). The console then holds a cookie, not a bearer token:
//! `lf_console`, HttpOnly, SameSite=Strict, Path=/console, Secure in production, eight hours at
//! most. It names the LexiFlow session the login opened, signed with a key derived from
//! `JWT_SECRET`; ending that session (sign-out, the Sessions panel, a suspension) ends the
//! console's access at once, since every request goes through the same live-session check as
//! the API's.
//!
//! Everything the console does goes through `/console/api/v1/...`: the API's own protected
//! routes mounted a second time behind [`gate`], which takes the cookie instead of a bearer
//! token. So the console can do exactly what an admin can through the API, checked and audited
//! by the same handlers. The API itself never accepts the cookie.
//!
//! CSRF: every request to `/console/api`, `/console/live` and `/console/logout` must carry
//! `X-CSRF-Token`, an HMAC of the session id under the cookie key, which the page reads from
//! `GET /console/session` (a same-origin read another site cannot make). A request whose
//! `Origin` names another site is refused too, and the cookie is SameSite=Strict.

pub mod live;

use std::time::Duration;

use aws_lc_rs::hmac;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    app::App,
    auth::{
        self, Principal,
        ops::{self, ClientInfo},
        tokens::Claims,
    },
    config::AppEnv,
    http::{ApiError, ApiResult, AppJson, Envelope, ErrorCode},
    ids::SessionId,
    ratelimit,
    users::{UserView, model::Role},
};

const COOKIE: &str = "lf_console";
/// The longest a console sign-in lasts, whatever the session's own expiry.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
const CSRF_HEADER: &str = "x-csrf-token";

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The console's pages and endpoints; `api` is the API's protected routes, mounted under
/// `/console/api/v1` behind [`gate`].
pub fn routes(app: &App, api: Router<App>) -> Router<App> {
    let gated = Router::new()
        .nest("/console/api/v1", api)
        .route("/console/api/health", get(crate::health::health))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), gate));
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/console/session", get(session))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/live", get(live))
        .merge(gated)
}

/// Whether a path is the console's (it gets the console's CSP).
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's Content-Security-Policy: its own script and styles only; no inline script or
/// style, nothing from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

/// The cookie's signing key: HMAC-SHA256 of a fixed label under `JWT_SECRET`, so it is not
/// the token key itself.
fn key(app: &App) -> ApiResult<hmac::Key> {
    let secret = app
        .config
        .auth
        .jwt_secret
        .as_ref()
        .ok_or_else(|| ApiError::internal(std::io::Error::other("no JWT secret")))?;
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    Ok(hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, b"lexiflow console cookie v1").as_ref()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// What the cookie says: whose session, until when.
#[derive(Debug, Serialize, Deserialize)]
struct Ticket {
    sid: Uuid,
    sub: Uuid,
    firm: Uuid,
    exp: i64,
}

fn seal(key: &hmac::Key, t: &Ticket) -> String {
    let body = b64(&serde_json::to_vec(t).unwrap_or_default());
    let tag = hmac::sign(key, body.as_bytes());
    format!("{body}.{}", b64(tag.as_ref()))
}

fn open(key: &hmac::Key, value: &str) -> Option<Ticket> {
    let (body, tag) = value.split_once('.')?;
    hmac::verify(key, body.as_bytes(), &unb64(tag)?).ok()?;
    let t: Ticket = serde_json::from_slice(&unb64(body)?).ok()?;
    (t.exp > chrono::Utc::now().timestamp()).then_some(t)
}

fn csrf_token(key: &hmac::Key, sid: Uuid) -> String {
    b64(hmac::sign(key, format!("csrf.{sid}").as_bytes()).as_ref())
}

fn csrf_ok(key: &hmac::Key, sid: Uuid, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).and_then(unb64) else { return false };
    hmac::verify(key, format!("csrf.{sid}").as_bytes(), &given).is_ok()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(app: &App, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.config.env == AppEnv::Production { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("lf_console=; Path=/console; Max-Age=0"))
}

fn signed_out() -> ApiError {
    ApiError::new(ErrorCode::AuthRequired, "sign in to the console")
}

fn csrf_refused() -> ApiError {
    ApiError::forbidden("the console's CSRF token is missing or wrong; reload the page")
}

/// A request whose `Origin` names a site other than the one it was sent to: neither the
/// `Host` it arrived with, nor the `X-Forwarded-Host` a proxy in front set (a page on another
/// site can set neither), nor an origin listed in `CORS_ORIGIN`. No `Origin` at all is a
/// same-origin GET or a client that is not a browser; the CSRF token still decides.
fn cross_site(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    if origin == "null" {
        return true;
    }
    if app.config.cors_origins.iter().any(|o| o == origin) {
        return false;
    }
    let Some((_, authority)) = origin.split_once("://") else { return true };
    let named = |h: header::HeaderName| {
        headers.get(h).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(str::trim)
    };
    ![named(header::HOST), named(header::HeaderName::from_static("x-forwarded-host"))]
        .into_iter()
        .flatten()
        .any(|h| h.eq_ignore_ascii_case(authority))
}

/// The session of a valid ticket in the request's cookie, without opening the database: what
/// the rate limiter counts console requests against.
pub fn ticket_session(app: &App, headers: &HeaderMap) -> Option<Uuid> {
    let key = key(app).ok()?;
    cookie_value(headers).and_then(|v| open(&key, &v)).map(|t| t.sid)
}

/// The admin the cookie speaks for: a valid ticket, a live session, an active admin.
async fn signed_in(app: &App, headers: &HeaderMap) -> ApiResult<(Principal, hmac::Key)> {
    let (p, key) = ticket_holder(app, headers).await?;
    if p.role != Role::Admin {
        return Err(ApiError::forbidden("the console is for firm admins"));
    }
    Ok((p, key))
}

/// Whoever the cookie speaks for, admin or not: a valid ticket and a live session. Only an
/// ended session signs the console out; the database being down is a 503, not a sign-out.
async fn ticket_holder(app: &App, headers: &HeaderMap) -> ApiResult<(Principal, hmac::Key)> {
    let key = key(app)?;
    let ticket = cookie_value(headers).and_then(|v| open(&key, &v)).ok_or_else(signed_out)?;
    let claims = Claims {
        sub: ticket.sub,
        firm: ticket.firm,
        role: Role::Admin,
        sid: ticket.sid,
        typ: auth::tokens::ACCESS.to_owned(),
        exp: 0,
        iat: 0,
        jti: Uuid::nil(),
    };
    let p = auth::principal_of(app, &claims).await.map_err(|e| match e.code {
        ErrorCode::AuthTokenInvalid | ErrorCode::AuthTokenExpired | ErrorCode::AuthRequired => signed_out(),
        _ => e,
    })?;
    Ok((p, key))
}

/// In front of `/console/api/*`: the cookie and the CSRF token in, a short-lived access token
/// for the same session out (as `Authorization`), so the API's own authentication, checks and
/// auditing run as for any API call. The cookie itself goes no further.
pub async fn gate(State(app): State<App>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let (p, key) = signed_in(&app, req.headers()).await?;
    if cross_site(&app, req.headers()) || !csrf_ok(&key, p.session_id.0, req.headers()) {
        return Err(csrf_refused());
    }
    let token = app.tokens.issue(p.user_id, p.firm_id, p.role, p.session_id)?;
    let h = req.headers_mut();
    h.remove(header::COOKIE);
    h.remove(CSRF_HEADER);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| ApiError::internal(std::io::Error::other(e)))?,
    );
    Ok(next.run(req).await)
}

/// Who is signed in, and the CSRF token for their requests.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsoleSession {
    user: UserView,
    csrf_token: String,
}

/// 204 when nobody is signed in (no cookie, or its session has ended), so the page shows the
/// sign-in form without an error in the browser's console.
async fn session(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, key) = match signed_in(&app, &headers).await {
        Ok(found) => found,
        Err(e) if e.code == ErrorCode::AuthRequired => return Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => return Err(e),
    };
    let user = ops::me(&app, &p).await?;
    Ok(Envelope::ok(ConsoleSession { user, csrf_token: csrf_token(&key, p.session_id.0) }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginInput {
    email: String,
    password: String,
}

/// The API's login (lockout, slow-down, per-address and per-e-mail limits), then the cookie;
/// a non-admin's new session is ended at once and refused.
async fn login(
    State(app): State<App>,
    client: ClientInfo,
    headers: HeaderMap,
    AppJson(input): AppJson<LoginInput>,
) -> ApiResult<Response> {
    if cross_site(&app, &headers) {
        return Err(csrf_refused());
    }
    let ip = client.ip.clone();
    // The API login's per-address budget (the same key), not a second one.
    let ip_key = format!("ip:{}", ip.as_deref().unwrap_or("unknown"));
    if let Err(refused) = ratelimit::enforce(&app, "login", &ip_key, app.config.throttle.login_ip).await {
        return Ok(refused);
    }
    let key = ops::source_key(&ops::login_key(&input.email), ip.as_deref());
    if let Err(refused) = ratelimit::enforce(&app, "login_email", &key, app.config.throttle.login_email).await {
        return Ok(refused);
    }
    let tokens = ops::login(&app, &input.email, input.password, client).await?;
    let claims = app.tokens.verify(&tokens.access_token)?;
    if tokens.user.role != Role::Admin {
        let p = auth::principal_of(&app, &claims).await?;
        ops::logout(&app, &p).await?;
        return Err(ApiError::forbidden("the console is for firm admins"));
    }
    let key = self::key(&app)?;
    let until = chrono::Utc::now() + chrono::Duration::from_std(LIFETIME).unwrap_or_default();
    // The session lives no longer than the cookie that names it, and signing in again ends
    // the session of the console's previous cookie.
    ops::cap_session(&app, SessionId(claims.sid), until).await?;
    if let Ok((previous, _)) = ticket_holder(&app, &headers).await
        && previous.session_id.0 != claims.sid
    {
        ops::logout(&app, &previous).await?;
    }
    let exp = until.timestamp();
    let cookie = seal(&key, &Ticket { sid: claims.sid, sub: claims.sub, firm: claims.firm, exp });
    let body = ConsoleSession { user: tokens.user, csrf_token: csrf_token(&key, claims.sid) };
    let mut res = Envelope::ok(body).into_response();
    res.headers_mut().insert(header::SET_COOKIE, set_cookie(&app, &cookie, LIFETIME.as_secs() as i64));
    Ok(res)
}

/// Ends the console's LexiFlow session (audited as `auth.logout`) and clears the cookie.
async fn logout(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    // Anyone holding a ticket may end its session, an admin demoted meanwhile included.
    let (p, key) = ticket_holder(&app, &headers).await?;
    if cross_site(&app, &headers) || !csrf_ok(&key, p.session_id.0, &headers) {
        return Err(csrf_refused());
    }
    ops::logout(&app, &p).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, set_cookie(&app, "", 0));
    Ok(res)
}

/// The last hour of request rate and p99 latency of this process, a point every 10 s.
async fn live(State(app): State<App>, headers: HeaderMap) -> ApiResult<Envelope<live::Series>> {
    let (p, key) = signed_in(&app, &headers).await?;
    if !csrf_ok(&key, p.session_id.0, &headers) {
        return Err(csrf_refused());
    }
    // The whole deployment's traffic: for its operator, as the queues are.
    crate::jobs::http::require_operator(&app, &p)?;
    Ok(Envelope::ok(live::series()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"test key")
    }

    #[test]
    fn a_ticket_opens_only_unaltered_and_unexpired() {
        let t = Ticket {
            sid: Uuid::new_v4(),
            sub: Uuid::new_v4(),
            firm: Uuid::new_v4(),
            exp: chrono::Utc::now().timestamp() + 60,
        };
        let sealed = seal(&k(), &t);
        assert_eq!(open(&k(), &sealed).unwrap().sid, t.sid);
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other key");
        assert!(open(&other, &sealed).is_none(), "another key's ticket");
        let (body, tag) = sealed.split_once('.').unwrap();
        let forged = Ticket { sub: Uuid::new_v4(), ..t };
        let forged_body = b64(&serde_json::to_vec(&forged).unwrap());
        assert!(open(&k(), &format!("{forged_body}.{tag}")).is_none(), "a changed body");
        assert!(open(&k(), body).is_none(), "no tag");
        let old = Ticket { exp: chrono::Utc::now().timestamp() - 1, ..forged };
        assert!(open(&k(), &seal(&k(), &old)).is_none(), "expired");
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut h = HeaderMap::new();
        h.insert(CSRF_HEADER, HeaderValue::from_str(&csrf_token(&k(), a)).unwrap());
        assert!(csrf_ok(&k(), a, &h));
        assert!(!csrf_ok(&k(), b, &h));
        assert!(!csrf_ok(&k(), a, &HeaderMap::new()));
    }
}
