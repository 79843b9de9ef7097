//! Telemetry: Prometheus metrics ([`metrics`]), the machine snapshot ([`system`]), structured
//! logs and OpenTelemetry trace export ([`tracing_setup`]), and the three metrics routes.

pub mod metrics;
pub mod system;
pub mod tracing_setup;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::{
    app::App,
    http::error::{ApiError, ErrorCode},
};

/// When `METRICS_TOKEN` is set, the metrics routes need `Authorization: Bearer <token>`.
fn check_token(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    check_metrics_token(app.config.metrics_token.as_ref(), headers)
}

/// The check of [`check_token`] against `expected` (`METRICS_TOKEN`; none: open), for the
/// worker's metrics too.
pub fn check_metrics_token(expected: Option<&secrecy::SecretString>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().as_bytes())
        .unwrap_or_default();
    if bool::from(given.ct_eq(expected.expose_secret().as_bytes())) && !given.is_empty() {
        Ok(())
    } else {
        ::metrics::counter!("lexiflow_auth_failures_total", "reason" => "metrics_token").increment(1);
        Err(ApiError::new(ErrorCode::AuthRequired, "the metrics routes need Authorization: Bearer <METRICS_TOKEN>"))
    }
}

/// `GET /metrics`: Prometheus text exposition (not enveloped).
pub async fn prometheus(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = check_token(&app, &headers) {
        return e.into_response();
    }
    match metrics::render(&app.db, &app.cache).await {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
            text,
        )
            .into_response(),
        None => ApiError::new(ErrorCode::DependencyUnavailable, "metrics are not being recorded in this process")
            .into_response(),
    }
}

/// `GET /metrics/json`: the same figures as JSON.
pub async fn json(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = check_token(&app, &headers) {
        return e.into_response();
    }
    match metrics::render(&app.db, &app.cache).await {
        Some(text) => crate::http::Envelope::ok(metrics::text_to_json(&text)).into_response(),
        None => ApiError::new(ErrorCode::DependencyUnavailable, "metrics are not being recorded in this process")
            .into_response(),
    }
}

/// `GET /metrics/system`: memory, CPU, load, uptime, disk of the data directory.
pub async fn system(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = check_token(&app, &headers) {
        return e.into_response();
    }
    crate::http::Envelope::ok(system::snapshot(&app.config.data_dir, app.started.elapsed())).into_response()
}
