//! The worker's probes. `lexiflow worker` serves no API; with `WORKER_HEALTH_PORT` set it
//! listens on `HOST` at that port for an orchestrator and Prometheus, and nothing else:
//!
//! - `GET /health/liveness`: 200 while the worker's claim loop runs, 503 once it has ended.
//! - `GET /health/readiness`: 200 when the database answers within a second; 503 when it does
//!   not, and from SIGTERM on (the worker is draining and claims nothing new).
//! - `GET /metrics`: the process's Prometheus text (queue, job and pool figures), behind
//!   `METRICS_TOKEN` when it is set, as on the API.
//!
//! Answers are small JSON bodies (`{"status": …}`), not the API's envelope: nothing but probes
//! reads them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use serde_json::json;

use crate::cache::Cache;

/// What the probes read: the pools, the claim loop's state, and whether SIGTERM came.
#[derive(Clone)]
pub struct Probe {
    pub db: DatabaseConnection,
    pub cache: Arc<Cache>,
    pub metrics_token: Option<SecretString>,
    /// Set when the claim loop has ended.
    pub ended: Arc<AtomicBool>,
    /// Set on SIGTERM.
    pub stopping: Arc<AtomicBool>,
}

/// The probe routes.
pub fn router(p: Probe) -> Router {
    Router::new()
        .route("/health/liveness", get(liveness))
        .route("/health/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .with_state(p)
}

fn status(code: StatusCode, s: &str) -> Response {
    (code, [(header::CACHE_CONTROL, "no-store")], Json(json!({ "status": s }))).into_response()
}

async fn liveness(State(p): State<Probe>) -> Response {
    if p.ended.load(Ordering::Acquire) {
        status(StatusCode::SERVICE_UNAVAILABLE, "stopped")
    } else {
        status(StatusCode::OK, "ok")
    }
}

async fn readiness(State(p): State<Probe>) -> Response {
    if p.stopping.load(Ordering::Acquire) || p.ended.load(Ordering::Acquire) {
        return status(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    match tokio::time::timeout(Duration::from_secs(1), p.db.ping()).await {
        Ok(Ok(())) => status(StatusCode::OK, "ready"),
        // The cause goes to the log, not to whoever asks.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "worker readiness: the database did not answer");
            status(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
        Err(_) => {
            tracing::warn!("worker readiness: the database did not answer within 1 s");
            status(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

async fn metrics(State(p): State<Probe>, headers: HeaderMap) -> Response {
    if let Err(e) = crate::telemetry::check_metrics_token(p.metrics_token.as_ref(), &headers) {
        return e.into_response();
    }
    match crate::telemetry::metrics::render(&p.db, &p.cache).await {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        None => status(StatusCode::SERVICE_UNAVAILABLE, "metrics are not installed"),
    }
}
