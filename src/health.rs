//! Health probes in the Terminus shape `{status, info, error, details}`, not wrapped in the
//! envelope. Liveness checks nothing external; readiness checks the database and turns 503
//! as soon as shutdown begins.

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

/// `GET /health/liveness`: the process answers.
pub async fn liveness() -> impl IntoResponse {
    report(vec![("process", Ok(json!({})))])
}

/// `GET /health/readiness`: ready for traffic (database reachable, not shutting down).
pub async fn readiness(State(app): State<App>) -> impl IntoResponse {
    report(vec![("lifecycle", accepting(&app)), ("database", database(&app).await)])
}

/// `GET /health`: every check with details.
pub async fn health(State(app): State<App>) -> impl IntoResponse {
    report(vec![
        ("lifecycle", accepting(&app)),
        ("database", database(&app).await),
        ("version", Ok(json!({ "version": env!("CARGO_PKG_VERSION") }))),
    ])
}
