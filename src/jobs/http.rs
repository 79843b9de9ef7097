//! `/api/v1/admin/queues*` and `/api/v1/admin/jobs/*`: operating the job queue.
//!
//! Queues serve every firm of the deployment, so these routes are for the operator: an
//! admin of the firm named by `OPERATOR_FIRM_ID`, or — when that is not set outside
//! production (the embedded, single-firm default) — any admin. In production without
//! `OPERATOR_FIRM_ID` nobody may use them. Job payloads are never shown (they can carry one
//! firm's data); ids, types, states, attempts and errors are. Every change is audited in
//! the acting admin's firm trail.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use lexiflow_queue::{JobId, JobState, QueueError, admin};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    db::TxOptions,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, ErrorCode,
        envelope::{ErrorBody, Success},
        pagination::MAX_LIMIT,
    },
    users::model::Role,
};

pub(crate) fn require_operator(app: &App, p: &Principal) -> ApiResult<()> {
    // In production anyone can register a firm and be its admin, so without a named operator
    // firm nobody operates the queue through the API.
    let operator_firm = match app.config.operator_firm_id {
        Some(f) => f == p.firm_id.0,
        None => app.config.env != crate::config::AppEnv::Production,
    };
    if p.role == Role::Admin && operator_firm {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the deployment's operator admins may manage the job queue"))
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Db(d) => d.into(),
            QueueError::Duplicate { queue, key } => ApiError::new(
                ErrorCode::Conflict,
                format!("a job with unique key {key:?} is already pending in queue {queue:?}"),
            ),
            QueueError::InvalidState(m) => ApiError::new(ErrorCode::Conflict, m),
            other => ApiError::internal(other),
        }
    }
}

fn valid_queue(name: &str) -> ApiResult<()> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(ApiError::field("name", "a queue name is 1-64 letters, digits, '-', '_' or '.'")) }
}

/// Every queue LexiFlow defines (with zero counts before its first job) and every queue that
/// has jobs: counts by state, paused, throughput, oldest waiting age.
#[utoipa::path(get, path = "/admin/queues", tag = "admin",
    responses((status = 200, body = Success<Vec<Object>>), (status = 403, body = ErrorBody)))]
pub async fn queues(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<Value>>> {
    require_operator(&app, &p)?;
    let known = crate::jobs::known_queues(&app).unwrap_or_else(|e| {
        // Only a schedule that does not parse gets here; that stops any worker from starting,
        // so say so, and still list the queues that have jobs.
        tracing::warn!(error = %e, "cannot assemble the job schedules; listing only queues that have jobs");
        Vec::new()
    });
    let stats = admin::stats_including(&app.db, &known, chrono::Utc::now()).await?;
    Ok(Envelope::ok(stats.iter().map(audit::json).collect()))
}

/// `GET /admin/queues/{name}/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// waiting, delayed, active, completed, failed or dead.
    pub state: String,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

/// Jobs of a queue in a state, without their payloads.
#[utoipa::path(get, path = "/admin/queues/{name}/jobs", tag = "admin", params(("name" = String, Path), JobsQuery),
    responses((status = 200, body = Success<Vec<Object>>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn jobs(
    State(app): State<App>,
    p: Principal,
    AppPath(name): AppPath<String>,
    AppQuery(q): AppQuery<JobsQuery>,
) -> ApiResult<Envelope<Vec<Value>>> {
    require_operator(&app, &p)?;
    valid_queue(&name)?;
    let state = JobState::parse(&q.state)
        .ok_or_else(|| ApiError::field("state", "use waiting, delayed, active, completed, failed or dead"))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let page = q.page.unwrap_or(1).clamp(1, crate::http::pagination::MAX_PAGE);
    let rows = admin::list(&app.db, &name, state, limit, (page - 1) * limit, chrono::Utc::now()).await?;
    let views = rows
        .iter()
        .map(|j| {
            let mut v = audit::json(j);
            if let Some(o) = v.as_object_mut() {
                o.remove("payload");
            }
            v
        })
        .collect();
    Ok(Envelope::ok(views))
}

/// Records a queue change in the acting admin's trail, in the change's own transaction.
async fn audited(
    tx: &impl sea_orm::ConnectionTrait,
    p: &Principal,
    action: &'static str,
    entity: String,
    change: Value,
) -> ApiResult<()> {
    audit::record(tx, p.firm_id, &Actor::user(p), AuditEvent::new(action, "queue", Some(entity)).changes(change))
        .await?;
    Ok(())
}

/// Pauses or resumes a queue, audited in the same transaction.
async fn set_paused(app: &App, p: &Principal, name: String, paused: bool) -> ApiResult<StatusCode> {
    require_operator(app, p)?;
    valid_queue(&name)?;
    let name = &name;
    app.write(TxOptions::write(), |tx| async move {
        if paused {
            admin::pause(&tx, name).await?;
        } else {
            admin::resume(&tx, name).await?;
        }
        let action = if paused { "queue.pause" } else { "queue.resume" };
        audited(&tx, p, action, name.clone(), json!({ "paused": { "old": !paused, "new": paused } })).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a queue on every instance (jobs wait; active ones finish).
#[utoipa::path(post, path = "/admin/queues/{name}/pause", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn pause(
    State(app): State<App>,
    p: Principal,
    AppPath(name): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    set_paused(&app, &p, name, true).await
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/admin/queues/{name}/resume", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn resume(
    State(app): State<App>,
    p: Principal,
    AppPath(name): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    set_paused(&app, &p, name, false).await
}

/// `POST /admin/queues/{name}/clean` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanInput {
    /// completed, dead, failed, waiting or delayed (not active).
    pub state: String,
    /// Only jobs that finished (or were due) at least this long ago.
    pub older_than_seconds: u64,
}

/// Delete a queue's jobs in a state older than an age.
#[utoipa::path(post, path = "/admin/queues/{name}/clean", tag = "admin", params(("name" = String, Path)), request_body = CleanInput,
    responses((status = 200, body = Success<Object>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn clean(
    State(app): State<App>,
    p: Principal,
    AppPath(name): AppPath<String>,
    AppJson(input): AppJson<CleanInput>,
) -> ApiResult<Envelope<Value>> {
    require_operator(&app, &p)?;
    valid_queue(&name)?;
    let state = JobState::parse(&input.state).ok_or_else(|| ApiError::field("state", "not a job state"))?;
    let age = std::time::Duration::from_secs(input.older_than_seconds);
    let (name, input, p) = (&name, &input, &p);
    let removed = app
        .write(TxOptions::write(), |tx| async move {
            let removed = admin::clean(&tx, name, state, age, chrono::Utc::now()).await?;
            let change =
                json!({ "removed": { "old": null, "new": removed }, "state": { "old": null, "new": input.state } });
            audited(&tx, p, "queue.clean", name.clone(), change).await?;
            Ok(removed)
        })
        .await?;
    Ok(Envelope::ok(json!({ "removed": removed })))
}

/// Send a dead (or failed) job back to waiting.
#[utoipa::path(post, path = "/admin/jobs/{id}/retry", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(State(app): State<App>, p: Principal, AppPath(id): AppPath<i64>) -> ApiResult<impl IntoResponse> {
    require_operator(&app, &p)?;
    let p = &p;
    app.write(TxOptions::write(), |tx| async move {
        if !admin::retry(&tx, JobId(id), chrono::Utc::now()).await? {
            return Err(ApiError::not_found("retryable job"));
        }
        audited(&tx, p, "job.retry", id.to_string(), json!({})).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a job that is not running (waiting, delayed, failed), or delete a dead one.
#[utoipa::path(delete, path = "/admin/jobs/{id}", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn cancel(State(app): State<App>, p: Principal, AppPath(id): AppPath<i64>) -> ApiResult<impl IntoResponse> {
    require_operator(&app, &p)?;
    let p = &p;
    app.write(TxOptions::write(), |tx| async move {
        // What it was, for the trail: the row is gone afterwards.
        let job = admin::get(&tx, JobId(id), chrono::Utc::now()).await?;
        if !admin::cancel(&tx, JobId(id)).await? {
            return Err(ApiError::not_found("cancellable job"));
        }
        let was = job.map_or(
            json!({}),
            |j| json!({"queue": j.queue, "jobType": j.job_type, "state": j.state, "attempts": j.attempts}),
        );
        audited(&tx, p, "job.cancel", id.to_string(), was).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The circuit breakers of this process (the instance that answers) and their states: Redis,
/// clamd, and one per outside host called (webhook receivers, calendar providers).
#[utoipa::path(get, path = "/admin/breakers", tag = "admin",
    responses((status = 200, body = Success<Vec<crate::resilience::breaker::BreakerView>>), (status = 403, body = ErrorBody)))]
pub async fn breakers(
    State(app): State<App>,
    p: Principal,
) -> ApiResult<Envelope<Vec<crate::resilience::breaker::BreakerView>>> {
    require_operator(&app, &p)?;
    Ok(Envelope::ok(crate::resilience::breaker::snapshot()))
}
