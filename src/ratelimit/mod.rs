//! Rate limiting: a GCRA limiter with two stores behind one interface — in process (the
//! default) and Redis (shared by every instance, one atomic Lua script per check). When Redis
//! stops answering, checks fall back to the in-process store within milliseconds (the Redis
//! circuit breaker opens), a warning is logged once and `lexiflow_rate_limit_degraded` shows
//! 1; when Redis answers again it is used again.
//!
//! Two layers use it: [`global_limit`] (every route but probes, metrics and docs; per user
//! when the request carries a valid access token, else per client IP) and [`route_limit`]
//! (a named, stricter policy declared next to its routes in the router).

pub mod gcra;

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

pub use gcra::{Decision, MemoryStore, Quota};

use crate::{
    app::App,
    config::ThrottleConfig,
    http::{
        client_ip::ClientIp,
        error::{ApiError, ErrorCode},
    },
    redis_link::{Fallback, RedisLink},
};

/// The GCRA step as one atomic script, on Redis' own clock (so instances need not agree on
/// time). Returns {allowed, remaining, reset_us, retry_after_us}.
const GCRA_LUA: &str = r#"
local period = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, 0, tat - now, new_tat - now - period}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
local remaining = math.floor((period - (new_tat - now)) / interval)
if remaining > limit then remaining = limit end
return {1, remaining, new_tat - now, 0}
"#;

/// Checks quotas against Redis when configured, else (or when Redis is down) in process.
#[derive(Debug)]
pub struct Limiter {
    memory: MemoryStore,
    redis: Option<Arc<RedisLink>>,
    script: redis::Script,
    fallback: Fallback,
}

impl Limiter {
    /// A limiter; `redis` None means in process only.
    pub fn new(redis: Option<Arc<RedisLink>>) -> Self {
        Self {
            memory: MemoryStore::default(),
            redis,
            script: redis::Script::new(GCRA_LUA),
            fallback: Fallback::new(
                "lexiflow_rate_limit_degraded",
                "Redis is unavailable: rate limits fall back to this instance alone",
                "Redis answers again: rate limits are shared across instances again",
            ),
        }
    }

    /// Whether the shared store is configured but currently not used.
    pub fn degraded(&self) -> bool {
        self.fallback.active()
    }

    /// Checks and counts one request against `quota` for `key`.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        if let Some(link) = &self.redis {
            let full_key = format!("{}rl:{key}", link.prefix);
            let period = quota.period.as_micros().max(1) as u64;
            let interval = (period / u64::from(quota.limit.max(1))).max(1);
            let mut inv = self.script.key(full_key);
            inv.arg(period).arg(interval).arg(quota.limit);
            let res = link.run(|mut c| async move { inv.invoke_async::<(i64, i64, i64, i64)>(&mut c).await }).await;
            match res {
                Ok((allowed, remaining, reset_us, retry_us)) => {
                    self.fallback.answered();
                    return Decision {
                        allowed: allowed == 1,
                        limit: quota.limit,
                        window: quota.period,
                        remaining: remaining.clamp(0, i64::from(quota.limit)) as u32,
                        reset: std::time::Duration::from_micros(reset_us.max(0) as u64),
                        retry_after: std::time::Duration::from_micros(retry_us.max(0) as u64),
                    };
                }
                Err(e) => self.fallback.failed(&e),
            }
        }
        self.memory.check(key, quota)
    }
}

/// Access-token claims whose signature, algorithm, expiry and type were already checked
/// for this request (by the rate limiter, which needs the user to pick the budget).
#[derive(Clone, Debug)]
pub struct VerifiedClaims(pub crate::auth::tokens::Claims);

/// Paths no limit applies to: probes, metrics and the documentation.
fn exempt(method: &Method, path: &str) -> bool {
    path.starts_with("/health")
        || path.starts_with("/metrics")
        || path.starts_with("/api/docs")
        || path == "/api/openapi.json"
        // A tus upload's bytes: a 1 GiB upload in 5 MiB chunks is 205 PATCHes, more than the
        // global quota allows. A PATCH needs its upload's lease (one at a time per upload),
        // and the creations that make uploads are limited.
        || (*method == Method::PATCH && path.starts_with("/api/v1/uploads/"))
}

/// Who a request counts against: the user of a valid access token or the checked API key,
/// else the client address.
/// A token verified here is handed on (as [`VerifiedClaims`]) so authentication does not
/// verify the same signature again.
async fn client_key(app: &App, req: &mut Request) -> String {
    // The operator console: its session (from the signed cookie, no database), so a console
    // tab neither eats its admin's API budget nor shares one address's budget with the office.
    if crate::console::is_console(req.uri().path())
        && let Some(sid) = crate::console::ticket_session(app, req.headers())
    {
        return format!("console:{sid}");
    }
    if let Some(k) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(|k| k.trim().to_owned()) {
        return key_budget(app, req, &k).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    if let Some(t) = token.as_deref().filter(|t| crate::api_keys::looks_like_key(t)) {
        return key_budget(app, req, t).await;
    }
    if let Some(claims) = token.and_then(|t| app.tokens.verify(&t).ok()) {
        let key = format!("u:{}", claims.sub);
        req.extensions_mut().insert(VerifiedClaims(claims));
        return key;
    }
    ip_key(req)
}

/// A presented key's budget when the key is valid, else the address's. The check is done once
/// per request and handed on ([`crate::api_keys::CheckedKey`]) to the per-route limits and to
/// authentication.
async fn key_budget(app: &App, req: &mut Request, presented: &str) -> String {
    let checked = match req.extensions().get::<crate::api_keys::CheckedKey>() {
        Some(c) if c.presented == presented => c.clone(),
        _ => {
            let c = crate::api_keys::CheckedKey::check(app, presented).await;
            req.extensions_mut().insert(c.clone());
            c
        }
    };
    checked.budget().unwrap_or_else(|| ip_key(req))
}

fn ip_key(req: &Request) -> String {
    match req.extensions().get::<ClientIp>() {
        Some(ip) => format!("ip:{}", ip.0),
        None => "ip:unknown".to_owned(),
    }
}

/// The global limit: `THROTTLE_LIMIT` per `THROTTLE_TTL` per client.
pub async fn global_limit(State(app): State<App>, mut req: Request, next: Next) -> Response {
    if !app.config.throttle.enabled || exempt(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let key = format!("global:{}", client_key(&app, &mut req).await);
    let d = app.limiter.check(&key, app.config.throttle.global).await;
    if !d.allowed {
        return refused("global", d);
    }
    let mut res = next.run(req).await;
    set_headers(res.headers_mut(), "global", &d);
    res
}

/// Whose budget a route policy counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// The client address (public routes such as login).
    Ip,
    /// The authenticated user, else the address.
    Client,
}

/// A named per-route policy; its quota is read from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct RoutePolicy {
    pub name: &'static str,
    pub quota: fn(&ThrottleConfig) -> Quota,
    pub by: By,
}

/// The per-route limit layer: `middleware::from_fn_with_state((app, policy), route_limit)`.
pub async fn route_limit(State((app, policy)): State<(App, RoutePolicy)>, mut req: Request, next: Next) -> Response {
    if !app.config.throttle.enabled {
        return next.run(req).await;
    }
    let who = match policy.by {
        By::Ip => ip_key(&req),
        By::Client => client_key(&app, &mut req).await,
    };
    let d = app.limiter.check(&format!("{}:{who}", policy.name), (policy.quota)(&app.config.throttle)).await;
    if !d.allowed {
        return refused(policy.name, d);
    }
    let mut res = next.run(req).await;
    set_headers(res.headers_mut(), policy.name, &d);
    res
}

/// Checks a limit from inside a handler (keys only a handler knows, such as a login e-mail).
pub async fn enforce(app: &App, policy: &'static str, key: &str, quota: Quota) -> Result<Decision, Response> {
    if !app.config.throttle.enabled {
        return Ok(Decision {
            allowed: true,
            limit: quota.limit,
            window: quota.period,
            remaining: quota.limit,
            reset: std::time::Duration::ZERO,
            retry_after: std::time::Duration::ZERO,
        });
    }
    let d = app.limiter.check(&format!("{policy}:{key}"), quota).await;
    if d.allowed { Ok(d) } else { Err(refused(policy, d)) }
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RL_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RL: HeaderName = HeaderName::from_static("ratelimit");

/// Sets the rate-limit headers for `d`: the IETF `RateLimit-Policy` lists every policy that
/// applied; `RateLimit` and the `X-RateLimit-*` trio describe the one closest to refusing.
pub fn set_headers(h: &mut HeaderMap, policy: &str, d: &Decision) {
    let this_policy = format!("\"{policy}\";q={};w={}", d.limit, ceil_secs(d.window).max(1));
    let policies = match h.get(&RL_POLICY).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {this_policy}"),
        None => this_policy,
    };
    if let Ok(v) = HeaderValue::from_str(&policies) {
        h.insert(RL_POLICY.clone(), v);
    }
    let current = h.get(&X_REMAINING).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
    if current.is_some_and(|c| c <= d.remaining) {
        return;
    }
    let reset = ceil_secs(d.reset);
    h.insert(X_LIMIT.clone(), HeaderValue::from(d.limit));
    h.insert(X_REMAINING.clone(), HeaderValue::from(d.remaining));
    h.insert(X_RESET.clone(), HeaderValue::from(reset));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{policy}\";r={};t={reset}", d.remaining)) {
        h.insert(RL.clone(), v);
    }
}

/// 429 `RATE_LIMIT_EXCEEDED` in our error body, with `Retry-After` and the limit headers.
pub fn refused(policy: &'static str, d: Decision) -> Response {
    metrics::counter!("lexiflow_rate_limit_refusals_total", "policy" => policy).increment(1);
    let retry = ceil_secs(d.retry_after).max(1);
    let mut res = ApiError::new(ErrorCode::RateLimitExceeded, format!("too many requests; retry in {retry} s"))
        .with_details(serde_json::json!({ "policy": policy, "limit": d.limit, "retryAfterSeconds": retry }))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    set_headers(h, policy, &d);
    res
}
