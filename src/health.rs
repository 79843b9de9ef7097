//! Health probes in the Terminus shape `{status, info, error, details}`, not wrapped in the
//! envelope. Liveness checks nothing external; readiness checks the database (a real query
//! with a short timeout) and Redis when configured and required, and turns 503 as soon as
//! shutdown begins; `/health` adds memory and disk against their thresholds.

use std::{sync::atomic::Ordering, time::Duration};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::{Map, Value, json};

use crate::{app::App, db};

const DB_TIMEOUT: Duration = Duration::from_secs(2);

fn report(checks: Vec<(&str, Result<Value, String>)>) -> (StatusCode, Json<Value>) {
    let mut info = Map::new();
    let mut error = Map::new();
    let mut details = Map::new();
    for (name, r) in checks {
        let v = match r {
            Ok(extra) => {
                let mut v = json!({ "status": "up" });
                if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                    o.extend(e);
                }
                info.insert(name.into(), v.clone());
                v
            }
            Err(message) => {
                let v = json!({ "status": "down", "message": message });
                error.insert(name.into(), v.clone());
                v
            }
        };
        details.insert(name.into(), v);
    }
    let ok = error.is_empty();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({ "status": if ok { "ok" } else { "error" }, "info": info, "error": error, "details": details })),
    )
}

async fn database(app: &App) -> Result<Value, String> {
    db::ping(&app.db, DB_TIMEOUT).await.map(|_| json!({ "backend": format!("{:?}", app.db.get_database_backend()) }))
}

fn accepting(app: &App) -> Result<Value, String> {
    if app.shutting_down.load(Ordering::Relaxed) { Err("shutting down".into()) } else { Ok(json!({})) }
}

/// Redis, when configured. Not required (the default): a failure is reported in `details`
/// but does not make the service unready, since it degrades to per-instance limits.
async fn redis(app: &App) -> Option<(bool, Result<Value, String>)> {
    let link = app.redis.as_ref()?;
    let r = match link.ping().await {
        Ok(()) => Ok(json!({ "breaker": format!("{:?}", link.breaker().state()).to_lowercase() })),
        Err(e) => {
            tracing::warn!(error = %e, "Redis health check failed");
            Err("Redis did not answer".to_owned())
        }
    };
    Some((app.config.ops.redis_required, r))
}

fn memory(app: &App) -> Result<Value, String> {
    let max = app.config.ops.memory_max_bytes;
    match crate::telemetry::system::resident_bytes() {
        Some(rss) if rss > max => Err(format!("resident set {rss} bytes is above the threshold of {max}")),
        Some(rss) => Ok(json!({ "residentBytes": rss, "thresholdBytes": max })),
        None => Ok(json!({ "residentBytes": null, "thresholdBytes": max })),
    }
}

fn disk(path: &std::path::Path, min_free: u64) -> Result<Value, String> {
    // Paths stay out of this public body: they tell an attacker about the host.
    match crate::telemetry::system::disk_space(path) {
        Some((free, _)) if free < min_free => Err(format!("{free} bytes free, below the threshold of {min_free}")),
        Some((free, total)) => Ok(json!({ "availableBytes": free, "totalBytes": total, "thresholdBytes": min_free })),
        None => Err("cannot read the free space".to_owned()),
    }
}

/// Splits an optional check into the list: required failures count, optional ones are noted.
fn push_optional<'a>(
    checks: &mut Vec<(&'a str, Result<Value, String>)>,
    name: &'a str,
    c: Option<(bool, Result<Value, String>)>,
) {
    match c {
        Some((true, r)) => checks.push((name, r)),
        Some((false, Err(m))) => checks.push((name, Ok(json!({ "status": "down", "required": false, "message": m })))),
        Some((false, Ok(v))) => checks.push((name, Ok(v))),
        None => {}
    }
}

/// `GET /health/liveness`: the process answers.
pub async fn liveness() -> impl IntoResponse {
    report(vec![("process", Ok(json!({})))])
}

/// `GET /health/readiness`: ready for traffic (database reachable, not shutting down).
pub async fn readiness(State(app): State<App>) -> impl IntoResponse {
    let mut checks = vec![("lifecycle", accepting(&app)), ("database", database(&app).await)];
    push_optional(&mut checks, "redis", redis(&app).await);
    report(checks)
}

/// `GET /health`: every check with details.
pub async fn health(State(app): State<App>) -> impl IntoResponse {
    let min_free = app.config.ops.disk_min_free_bytes;
    let mut checks = vec![
        ("lifecycle", accepting(&app)),
        ("database", database(&app).await),
        ("memory", memory(&app)),
        ("disk_data", disk(&app.config.data_dir, min_free)),
        ("disk_uploads", disk(&app.config.upload_dir, min_free)),
        ("version", Ok(json!({ "version": env!("CARGO_PKG_VERSION") }))),
    ];
    push_optional(&mut checks, "redis", redis(&app).await);
    report(checks)
}
