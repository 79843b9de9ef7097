//! Security headers on every response (errors included): the OWASP Secure Headers set, a
//! strict Content-Security-Policy for the API and a separate minimal one that lets the
//! Swagger UI at `/api/docs` run; plus the request deadline, so a slow request ends in our
//! error body instead of holding a connection forever.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, header};

use super::error::{ApiError, ErrorCode};
use crate::app::App;

/// The API returns JSON only: nothing may be loaded, framed or submitted from it.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Swagger UI: its own scripts and styles (it sets inline styles), images incl. data: icons,
/// and fetching the OpenAPI document from us; nothing from elsewhere.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";
const PERMISSIONS: &str = "accelerometer=(), autoplay=(), camera=(), display-capture=(), geolocation=(), \
    gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), usb=()";

const FIXED: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("x-dns-prefetch-control", "off"),
    ("x-permitted-cross-domain-policies", "none"),
    ("permissions-policy", PERMISSIONS),
];

fn is_docs(path: &str) -> bool {
    path == "/api/docs" || path.starts_with("/api/docs/")
}

/// Adds the security headers to whatever the inner layers answered.
pub async fn headers(State(app): State<App>, req: Request, next: Next) -> Response {
    let docs = is_docs(req.uri().path());
    let console = crate::console::is_console(req.uri().path());
    let mut res = next.run(req).await;
    if !app.config.security.enabled {
        return res;
    }
    let h = res.headers_mut();
    for (name, value) in FIXED {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    let csp = if docs {
        DOCS_CSP
    } else if console {
        crate::console::CSP
    } else {
        API_CSP
    };
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    if let Some(max_age) = app.config.security.hsts_max_age
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    // Responses carry case data: no shared or browser cache may keep them. The documentation's
    // static assets are the exception.
    if !docs || !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.remove(header::SERVER);
    h.remove("x-powered-by");
    res
}

/// Ends a request that has not been answered within `REQUEST_TIMEOUT_SECONDS` (reading a slow
/// body included) with 408 `REQUEST_TIMEOUT` in our error body.
pub async fn deadline(State(app): State<App>, req: Request, next: Next) -> Response {
    let limit: Duration = app.config.security.request_timeout;
    if !app.config.security.enabled {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request exceeded its deadline");
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!("the request was not completed within {} s", limit.as_secs_f64()),
            )
            .into_response()
        }
    }
}
