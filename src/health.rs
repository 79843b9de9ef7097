//! Health probes in the Terminus shape `{status, info, error, details}`, not wrapped in the
//! envelope. Liveness checks nothing external; readiness checks the database (a real query
//! with a short timeout) and Redis when configured and required, and turns 503 as soon as
//! shutdown begins; `/health` adds memory and disk against their thresholds.
//!
//! Probes and load balancers call these all the time, so no request runs a check: one task
//! per process ([`Monitor`]) runs them every [`PERIOD`] and keeps the rendered answers, and a
//! request serves the newest. The task starts with the first probe. A result older than
//! [`STALE_AFTER`] means a check hangs: the database is then reported down, so readiness turns
//! 503 within a second of losing the database whether it refuses or stops answering. The
//! shutdown flag is read on every request, so readiness turns 503 at once on SIGTERM.

use std::{
    sync::{Arc, OnceLock, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::app::{App, AppInner};

/// How often the task runs the checks.
pub const PERIOD: Duration = Duration::from_millis(250);
/// How long the database or Redis may take to answer a check.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(700);
/// A result older than this is not served: the database is reported down instead.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

type Check = (&'static str, Result<Value, String>);

/// One run of the checks, with the bodies rendered once for every request that reads it.
#[derive(Debug)]
struct Snapshot {
    at: Instant,
    /// The checks readiness uses (database; Redis when configured).
    ready: Vec<Check>,
    /// The extra checks `/health` adds (memory, disks, version).
    extra: Vec<Check>,
    /// Rendered with the lifecycle check up.
    readiness: (StatusCode, Bytes),
    health: (StatusCode, Bytes),
}

/// The process's health checker: the newest [`Snapshot`] and the task that refreshes it.
#[derive(Debug, Default)]
pub struct Monitor {
    started: OnceLock<watch::Receiver<Option<Arc<Snapshot>>>>,
}

impl Monitor {
    /// The newest snapshot, starting the task on the first call and waiting for its first run.
    async fn current(&self, app: &App) -> Option<Arc<Snapshot>> {
        // `get_or_init` runs one initialiser, so one task starts.
        let mut rx = self.started.get_or_init(|| spawn(app.weak())).clone();
        let first = tokio::time::timeout(STALE_AFTER, rx.wait_for(Option::is_some)).await;
        match first {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        }
    }
}

fn spawn(app: Weak<AppInner>) -> watch::Receiver<Option<Arc<Snapshot>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Only a weak handle between runs: a dropped App ends the task.
            let Some(app) = App::upgrade(&app) else { return };
            let snapshot = run_checks(&app).await;
            drop(app);
            if tx.send(Some(Arc::new(snapshot))).is_err() {
                return;
            }
        }
    });
    rx
}

async fn run_checks(app: &App) -> Snapshot {
    let (database, redis, clamd) = tokio::join!(database(app), redis(app), clamd(app));
    let mut ready = vec![("database", database)];
    push_optional(&mut ready, "redis", redis);
    let min_free = app.config.ops.disk_min_free_bytes;
    let mut extra = vec![
        ("memory", memory(app)),
        ("disk_data", disk(&app.config.data_dir, min_free)),
        ("disk_uploads", disk(&app.config.upload_dir, min_free)),
        ("version", Ok(json!({ "version": env!("CARGO_PKG_VERSION") }))),
        ("storage", Ok(json!({ "backend": app.storage.kind() }))),
    ];
    if let Some(c) = clamd {
        extra.push(("clamd", c));
    }
    let up = || ("lifecycle", Ok(json!({})));
    let readiness = render(std::iter::once(up()).chain(ready.iter().cloned()));
    let health = render(std::iter::once(up()).chain(ready.iter().cloned()).chain(extra.iter().cloned()));
    Snapshot { at: Instant::now(), ready, extra, readiness, health }
}

fn render(checks: impl Iterator<Item = Check>) -> (StatusCode, Bytes) {
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
    let body = json!({ "status": if ok { "ok" } else { "error" }, "info": info, "error": error, "details": details });
    (status, Bytes::from(body.to_string()))
}

fn respond((status, body): (StatusCode, Bytes)) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What a request serves: the snapshot's rendered body while it is fresh and the process is
/// not shutting down; otherwise a body rendered now from what is known.
fn answer(app: &App, snapshot: Option<Arc<Snapshot>>, full: bool) -> Response {
    let shutting_down = app.shutting_down.load(Ordering::Relaxed);
    let fresh = snapshot.as_ref().is_some_and(|s| s.at.elapsed() <= STALE_AFTER);
    if let (Some(s), true, false) = (&snapshot, fresh, shutting_down) {
        return respond(if full { s.health.clone() } else { s.readiness.clone() });
    }
    let lifecycle = if shutting_down { Err("shutting down".to_owned()) } else { Ok(json!({})) };
    let mut checks: Vec<Check> = vec![("lifecycle", lifecycle)];
    match (&snapshot, fresh) {
        (Some(s), true) => checks.extend(s.ready.iter().cloned()),
        _ => checks.push((
            "database",
            Err(format!("the health checks have not completed within {} ms", STALE_AFTER.as_millis())),
        )),
    }
    if full && let Some(s) = &snapshot {
        checks.extend(s.extra.iter().cloned());
    }
    respond(render(checks.into_iter()))
}

async fn database(app: &App) -> Result<Value, String> {
    let t = Instant::now();
    crate::db::ping(&app.db, CHECK_TIMEOUT).await?;
    Ok(json!({
        "backend": format!("{:?}", app.db.get_database_backend()),
        "latencyMs": latency_ms(t),
    }))
}

fn latency_ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 10_000.0).round() / 10.0
}

/// Redis, when configured. Not required (the default): a failure is reported in `details`
/// but does not make the service unready, since it degrades to per-instance limits.
async fn redis(app: &App) -> Option<(bool, Result<Value, String>)> {
    let link = app.redis.as_ref()?;
    let t = Instant::now();
    let r = match tokio::time::timeout(CHECK_TIMEOUT, link.ping()).await {
        Ok(Ok(())) => Ok(json!({
            "breaker": format!("{:?}", link.breaker().state()).to_lowercase(),
            "latencyMs": latency_ms(t),
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Redis health check failed");
            Err("Redis did not answer".to_owned())
        }
        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    };
    Some((app.config.ops.redis_required, r))
}

/// clamd, when configured: reported in the full health only (uploads keep working while it is
/// down; their scans wait and `SCAN_REQUIRED` decides what is served).
async fn clamd(app: &App) -> Option<Result<Value, String>> {
    let addr = app.config.files.clamd_addr.as_ref()?;
    let t = Instant::now();
    Some(match crate::clamd::ping(addr, CHECK_TIMEOUT).await {
        Ok(()) => Ok(json!({ "latencyMs": latency_ms(t) })),
        Err(e) => Err(e.to_string()),
    })
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
fn push_optional(checks: &mut Vec<Check>, name: &'static str, c: Option<(bool, Result<Value, String>)>) {
    match c {
        Some((true, r)) => checks.push((name, r)),
        Some((false, Err(m))) => checks.push((name, Ok(json!({ "status": "down", "required": false, "message": m })))),
        Some((false, Ok(v))) => checks.push((name, Ok(v))),
        None => {}
    }
}

/// `GET /health/liveness`: the process answers.
pub async fn liveness() -> Response {
    static BODY: OnceLock<(StatusCode, Bytes)> = OnceLock::new();
    respond(BODY.get_or_init(|| render(std::iter::once(("process", Ok(json!({})))))).clone())
}

/// `GET /health/readiness`: ready for traffic (database reachable, not shutting down).
pub async fn readiness(State(app): State<App>) -> Response {
    let s = app.health.current(&app).await;
    answer(&app, s, false)
}

/// `GET /health`: every check with details.
pub async fn health(State(app): State<App>) -> Response {
    let s = app.health.current(&app).await;
    answer(&app, s, true)
}
