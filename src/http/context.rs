//! The outermost middleware: correlation id, timing, the error body for every rejection, and
//! the one log line per request.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use http::{HeaderName, HeaderValue, header};

use super::{
    envelope::{REQUEST, RequestContext, render_error},
    error::{ApiError, ErrorCode},
};
use crate::auth::Principal;

/// `X-Correlation-ID`, read from requests and set on every response.
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// `X-Response-Time`, set on every response.
pub static RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

/// A client's correlation id is echoed only when it is a sane token: 1–128 characters of
/// letters, digits and `-_.:`; anything else (log injection, huge values) gets a new one.
pub fn sane_correlation_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

/// Wraps every request: see the module docs.
pub async fn request_context(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation_id = req
        .headers()
        .get(&CORRELATION_ID)
        .and_then(sane_correlation_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let ctx = Arc::new(RequestContext {
        correlation_id,
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        started,
        received_at: Utc::now(),
    });

    // A panicking handler becomes a 500 in our body and a log line, not a dropped connection.
    let run = std::panic::AssertUnwindSafe(REQUEST.scope(ctx.clone(), next.run(req)));
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

    let principal = res.extensions().get::<Principal>();
    tracing::info!(
        target: "lexiflow::http",
        correlation_id = %ctx.correlation_id,
        method = %ctx.method,
        path = %ctx.path,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        firm_id = principal.map(|p| p.firm_id.to_string()),
        user_id = principal.map(|p| p.user_id.to_string()),
        error_code = error.as_ref().map(|e| format!("{:?}", e.code)),
        "request"
    );
    res
}

/// The fallback for paths no route matches.
pub async fn not_found() -> Response {
    ApiError::new(ErrorCode::ResourceNotFound, "no route for this path").into_response()
}
