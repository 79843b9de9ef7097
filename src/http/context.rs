//! The request-context middleware: correlation id, timing, the request span (a child of the
//! caller's W3C `traceparent` when there is one), the error body for every rejection, a
//! caught panic, the HTTP metrics, and the one log line per request.

use std::{sync::Arc, time::Instant};

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use http::{HeaderName, HeaderValue, header};
use tracing::Instrument;

use super::client_ip::{ClientIp, client_ip};
use super::{
    envelope::{REQUEST, RequestContext, render_error},
    error::{ApiError, ErrorCode},
};
use crate::{app::App, auth::Principal};

/// `X-Correlation-ID`, read from requests and set on every response.
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// `X-Response-Time`, set on every response.
pub static RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");
/// `Server-Timing`, set on the answer to a request that committed a write: `commit;dur=<ms
/// from the request's arrival to the end of its last commit>`.
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// A client's correlation id is echoed only when it is a sane token: 1–128 characters of
/// letters, digits and `-_.:`; anything else (log injection, huge values) gets a new one.
pub fn sane_correlation_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

/// The route template a request matched (`/api/v1/cases/{id}`), handed from inside the
/// router to [`request_context`] through the response extensions.
#[derive(Clone, Debug)]
pub struct RouteTemplate(pub Arc<str>);

/// Route layer: records the matched route template on the response.
pub async fn record_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| Arc::<str>::from(m.as_str()));
    let mut res = next.run(req).await;
    if let Some(r) = route {
        res.extensions_mut().insert(RouteTemplate(r));
    }
    res
}

/// A request path fit for the log: a path segment that is a credential (a calendar feed's
/// `lfcal_…` token, which calendar apps can only send in the URL) keeps its prefix alone.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const SECRET: &str = "lfcal_";
    if !path.contains(SECRET) {
        return std::borrow::Cow::Borrowed(path);
    }
    let masked: Vec<&str> =
        path.split('/').map(|seg| if seg.starts_with(SECRET) { "lfcal_[redacted]" } else { seg }).collect();
    std::borrow::Cow::Owned(masked.join("/"))
}

/// Methods get their own label value; anything else is `_OTHER` (bounded cardinality).
fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "_OTHER",
    }
}

/// Decrements the in-flight gauge however the request ends (even if it is cancelled).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!("http_server_active_requests").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_server_active_requests").decrement(1.0);
    }
}

/// Wraps every request: see the module docs.
pub async fn request_context(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let _in_flight = InFlight::enter();
    let started = Instant::now();
    let method = method_label(req.method());
    // A span per request only when spans are exported: otherwise the log line carries all
    // of it, and building a span's field set on every request is measurable under load.
    let span = if crate::telemetry::tracing_setup::exporting() {
        tracing::info_span!(
            "http.request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            http.request.method = method,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let trace_id = crate::telemetry::tracing_setup::adopt_parent(&span, req.headers());
    let correlation_id = req
        .headers()
        .get(&CORRELATION_ID)
        .and_then(sane_correlation_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let client_ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).map(|peer| {
        let xff: Vec<&str> = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        client_ip(peer, &xff, &app.config.security.trusted_proxies)
    });
    if let Some(ip) = client_ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| crate::input::plain(ua).chars().take(512).collect());
    let ctx = Arc::new(RequestContext {
        correlation_id,
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        started,
        received_at: Utc::now(),
        client_ip,
        user_agent,
        committed_us: std::sync::atomic::AtomicU64::new(0),
    });

    // A panicking handler becomes a 500 in our body and a log line, not a dropped connection.
    let run = std::panic::AssertUnwindSafe(REQUEST.scope(ctx.clone(), next.run(req)).instrument(span.clone()));
    let mut res = match futures_util::FutureExt::catch_unwind(run).await {
        Ok(res) => res,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let err = ApiError::internal(std::io::Error::other(format!("handler panicked: {what}")));
            let mut res = (err.code.status(), render_error(&err, Some(&ctx))).into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res.extensions_mut().insert(err);
            res
        }
    };

    let status = res.status();
    let error = res.extensions_mut().remove::<ApiError>();
    match &error {
        Some(err) if status.is_server_error() => {
            tracing::error!(
                correlation_id = %ctx.correlation_id,
                code = ?err.code,
                cause = err.cause.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                "request failed"
            );
        }
        Some(_) => {}
        // Health probes answer 503 with their own JSON body: leave bodies that are already JSON.
        None if (status.is_client_error() || status.is_server_error())
            && res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_none_or(|v| !v.as_bytes().starts_with(b"application/json")) =>
        {
            // Produced outside our handlers (no route, wrong method, a layer's own rejection):
            // replace the framework's body with ours, keeping headers such as `Allow`.
            let code = ErrorCode::for_status(status);
            let err = ApiError::new(code, code.default_message());
            let (mut parts, _) = res.into_parts();
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts.headers.remove(header::CONTENT_LENGTH);
            res = Response::from_parts(parts, Body::from(render_error(&err, Some(&ctx))));
        }
        None => {}
    }

    let elapsed = started.elapsed();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.correlation_id) {
        headers.insert(CORRELATION_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}ms", elapsed.as_secs_f64() * 1000.0)) {
        headers.insert(RESPONSE_TIME.clone(), v);
    }
    // When the write committed, for a caller timing what follows it (the realtime benchmark
    // measures events from commit to receipt with it); W3C Server Timing.
    if let Some(ms) = ctx.committed_ms()
        && let Ok(v) = HeaderValue::from_str(&format!("commit;dur={ms:.3}"))
    {
        headers.insert(SERVER_TIMING.clone(), v);
    }

    let route = res.extensions().get::<RouteTemplate>().map(|r| r.0.clone()).unwrap_or_else(|| "unmatched".into());
    let status_label = status.as_u16().to_string();
    metrics::histogram!("http_server_request_duration_seconds",
        "method" => method, "route" => route.to_string(), "status" => status_label)
    .record(elapsed.as_secs_f64());
    crate::console::live::record(elapsed);
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.route", &*route);
    span.record("http.response.status_code", status.as_u16());

    let principal = res.extensions().get::<Principal>();
    let _entered = span.enter();
    tracing::info!(
        target: "lexiflow::http",
        correlation_id = %ctx.correlation_id,
        method = %ctx.method,
        route = &*route,
        path = %loggable_path(&ctx.path),
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        firm_id = principal.map(|p| p.firm_id.to_string()),
        user_id = principal.map(|p| p.user_id.to_string()),
        trace_id = trace_id.as_deref(),
        error_code = error.as_ref().map(|e| format!("{:?}", e.code)),
        "request"
    );
    drop(_entered);
    res
}

/// The fallback for paths no route matches.
pub async fn not_found() -> Response {
    ApiError::new(ErrorCode::ResourceNotFound, "no route for this path").into_response()
}

/// Runs `work` on a task of its own, carrying the request's context (correlation id, client
/// address: what the audit trail records) and its span, since task-locals do not cross
/// `spawn`. The work finishes even when the client hangs up and the request's future is
/// dropped: used where stopping half-way would leave state to clean up (a stored idempotent
/// answer, an upload's lease and offset).
pub async fn detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let context = super::envelope::REQUEST.try_with(|c| c.clone()).ok();
    let work = tracing::Instrument::instrument(work, tracing::Span::current());
    tokio::spawn(async move {
        match context {
            Some(c) => super::envelope::REQUEST.scope(c, work).await,
            None => work.await,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn a_feed_token_never_reaches_the_log() {
        assert_eq!(loggable_path("/api/v1/cases/42"), "/api/v1/cases/42");
        assert_eq!(
            loggable_path("/api/v1/calendar/feed/lfcal_AbC-123_xyz.ics"),
            "/api/v1/calendar/feed/lfcal_[redacted]"
        );
    }
}
