//! Adding jobs: one or many, on any connection or inside the caller's transaction.
//!
//! Passing the caller's transaction makes the job exist if and only if the caller commits —
//! the domain change and the work it causes are one atomic write. On PostgreSQL the insert
//! is followed by `pg_notify`, which the server delivers at commit, so idle workers wake
//! exactly when the job becomes visible.

use std::{collections::BTreeSet, sync::LazyLock};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Value};
use tokio::sync::watch;

use crate::{
    NOTIFY_CHANNEL, QueueError,
    job::{JobId, NewJob},
    sql::{at, plus, stmt},
};

/// Rows per multi-row INSERT: 11 parameters each stays far below both backends' limits.
const BATCH: usize = 500;

/// Bumped on every enqueue in this process, so local workers wake without waiting for a poll.
pub(crate) static LOCAL_WAKE: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Wakes this process's idle workers.
pub(crate) fn wake_local() {
    LOCAL_WAKE.send_modify(|n| *n = n.wrapping_add(1));
}

/// Adds one job. Returns its id, or `None` when its unique key is already held by a pending
/// or running job in the same queue.
pub async fn enqueue(db: &impl ConnectionTrait, job: NewJob) -> Result<Option<JobId>, QueueError> {
    let key = job.unique_key.is_some();
    let ids = enqueue_many_at(db, vec![job], Utc::now()).await?;
    debug_assert!(key || ids.len() == 1);
    Ok(ids.into_iter().next())
}

/// Adds many jobs, one multi-row INSERT per 500. Returns the ids of the jobs inserted (jobs
/// skipped for a held unique key have none), in no particular order.
pub async fn enqueue_many(db: &impl ConnectionTrait, jobs: Vec<NewJob>) -> Result<Vec<JobId>, QueueError> {
    enqueue_many_at(db, jobs, Utc::now()).await
}

#[derive(FromQueryResult)]
struct Inserted {
    id: i64,
}

/// [`enqueue_many`] with an explicit "now" (the base of delays and `created_at`).
pub async fn enqueue_many_at(
    db: &impl ConnectionTrait,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, QueueError> {
    let now = at(now);
    let mut ids = Vec::with_capacity(jobs.len());
    let mut queues = BTreeSet::new();
    for batch in jobs.chunks(BATCH) {
        let mut sql = String::from(
            "INSERT INTO queue_jobs (queue, job_type, payload, priority, state, run_at, attempts, max_attempts, \
             backoff_base_ms, backoff_max_ms, unique_key, errors, created_at) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(batch.len() * 11);
        for (i, job) in batch.iter().enumerate() {
            let run_at = job.run_at.map(at).unwrap_or_else(|| plus(now, job.delay.unwrap_or_default()));
            let p = i * 11;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},'waiting',${},0,${},${},${},${},${},${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9,
                p + 10,
                p + 11
            ));
            values.extend([
                job.queue.clone().into(),
                job.job_type.clone().into(),
                job.payload.clone().into(),
                job.priority.as_i32().into(),
                run_at.into(),
                i32::try_from(job.max_attempts.max(1)).unwrap_or(i32::MAX).into(),
                millis(job.backoff.base).into(),
                millis(job.backoff.max).into(),
                job.unique_key.clone().into(),
                serde_json::Value::Array(Vec::new()).into(),
                now.into(),
            ]);
            queues.insert(job.queue.clone());
        }
        // Without a conflict target this skips rows whose unique key a pending job holds
        // (the partial unique index), on both backends, and RETURNING lists only new rows.
        sql.push_str(" ON CONFLICT DO NOTHING RETURNING id");
        let rows = Inserted::find_by_statement(stmt(db, &sql, values)).all(db).await?;
        ids.extend(rows.into_iter().map(|r| JobId(r.id)));
    }
    if !ids.is_empty() {
        if db.get_database_backend() == DbBackend::Postgres {
            for queue in &queues {
                db.execute_raw(stmt(db, "SELECT pg_notify($1, $2)", vec![NOTIFY_CHANNEL.into(), queue.clone().into()]))
                    .await?;
            }
        }
        wake_local();
    }
    Ok(ids)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
