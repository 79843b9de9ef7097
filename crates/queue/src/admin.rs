//! Operations for the admin API and the operator: pause/resume, clean, retry, cancel, counts
//! and listings. Each is a plain async function over a connection.
//!
//! Pause lives in `queue_settings`, which every instance's claim query reads, so pausing
//! through any instance stops all of them at their next claim; jobs already running finish,
//! as do the few a worker had already claimed ahead ([`crate::WorkerBuilder::read_ahead`]).

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, SqlErr};
use serde::Serialize;

use crate::{
    QueueError,
    job::{Job, JobId, JobRow, JobState},
    metric,
    sql::{JOB_COLUMNS, at, minus, stmt},
};

/// Pauses `queue` on every instance: nothing more is claimed until [`resume`].
pub async fn pause(db: &impl ConnectionTrait, queue: &str) -> Result<(), QueueError> {
    set_paused(db, queue, true).await
}

/// Resumes a paused `queue`.
pub async fn resume(db: &impl ConnectionTrait, queue: &str) -> Result<(), QueueError> {
    set_paused(db, queue, false).await?;
    crate::enqueue::wake_local();
    Ok(())
}

async fn set_paused(db: &impl ConnectionTrait, queue: &str, paused: bool) -> Result<(), QueueError> {
    db.execute_raw(stmt(
        db,
        "INSERT INTO queue_settings (queue, paused, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        vec![queue.to_owned().into(), paused.into(), at(Utc::now()).into()],
    ))
    .await?;
    if !paused && db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_raw(stmt(
            db,
            "SELECT pg_notify($1, $2)",
            vec![crate::NOTIFY_CHANNEL.into(), queue.to_owned().into()],
        ))
        .await?;
    }
    Ok(())
}

#[derive(FromQueryResult)]
struct PausedRow {
    queue: String,
    paused: bool,
}

/// Whether `queue` is paused.
pub async fn is_paused(db: &impl ConnectionTrait, queue: &str) -> Result<bool, QueueError> {
    let row = PausedRow::find_by_statement(stmt(
        db,
        "SELECT queue, paused FROM queue_settings WHERE queue = $1",
        vec![queue.to_owned().into()],
    ))
    .one(db)
    .await?;
    Ok(row.is_some_and(|r| r.paused))
}

/// Deletes jobs of `queue` in `state` that reached it more than `older_than` ago; returns how
/// many. Active jobs cannot be cleaned (their workers still hold leases); `Delayed` means
/// waiting jobs not yet due, `Waiting` those that are.
pub async fn clean(
    db: &impl ConnectionTrait,
    queue: &str,
    state: JobState,
    older_than: Duration,
    now: DateTime<Utc>,
) -> Result<u64, QueueError> {
    let now = at(now);
    let cutoff = minus(now, older_than);
    let (filter, when) = match state {
        JobState::Active => return Err(QueueError::InvalidState("active jobs cannot be cleaned".into())),
        JobState::Waiting => ("state = 'waiting' AND run_at <= $3", "created_at"),
        JobState::Delayed => ("state = 'waiting' AND run_at > $3", "created_at"),
        JobState::Failed => ("state = 'failed' AND $3 = $3", "failed_at"),
        JobState::Completed => ("state = 'completed' AND $3 = $3", "finished_at"),
        JobState::Dead => ("state = 'dead' AND $3 = $3", "finished_at"),
    };
    let res = db
        .execute_raw(stmt(
            db,
            &format!("DELETE FROM queue_jobs WHERE queue = $1 AND {filter} AND {when} < $2"),
            vec![queue.to_owned().into(), cutoff.into(), now.into()],
        ))
        .await?;
    Ok(res.rows_affected())
}

/// Deletes completed jobs older than `max_age`, and beyond the newest `max_count` per queue.
pub async fn trim_completed(
    db: &impl ConnectionTrait,
    max_age: Duration,
    max_count: u64,
    now: DateTime<Utc>,
) -> Result<u64, QueueError> {
    let by_age = db
        .execute_raw(stmt(
            db,
            "DELETE FROM queue_jobs WHERE state = 'completed' AND finished_at < $1",
            vec![minus(at(now), max_age).into()],
        ))
        .await?
        .rows_affected();
    let mut by_count = 0;
    for queue in queue_names(db).await? {
        by_count += db
            .execute_raw(stmt(
                db,
                "DELETE FROM queue_jobs WHERE queue = $1 AND state = 'completed' AND id NOT IN \
                 (SELECT id FROM queue_jobs WHERE queue = $1 AND state = 'completed' \
                  ORDER BY finished_at DESC, id DESC LIMIT $2)",
                vec![queue.into(), i64::try_from(max_count).unwrap_or(i64::MAX).into()],
            ))
            .await?
            .rows_affected();
    }
    Ok(by_age + by_count)
}

/// Puts a dead (or failed) job back to waiting, due now, with a fresh set of attempts; its
/// error history is kept. Returns false when no such job is dead or failed.
pub async fn retry(db: &impl ConnectionTrait, id: JobId, now: DateTime<Utc>) -> Result<bool, QueueError> {
    let res = db
        .execute_raw(stmt(
            db,
            "UPDATE queue_jobs SET state = 'waiting', attempts = 0, run_at = $2, finished_at = NULL \
             WHERE id = $1 AND state IN ('dead', 'failed')",
            vec![id.0.into(), at(now).into()],
        ))
        .await;
    match res {
        Ok(r) => {
            if r.rows_affected() == 1 {
                crate::enqueue::wake_local();
            }
            Ok(r.rows_affected() == 1)
        }
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            let job = get(db, id, now).await?;
            Err(QueueError::Duplicate {
                queue: job.as_ref().map(|j| j.queue.clone()).unwrap_or_default(),
                key: job.and_then(|j| j.unique_key).unwrap_or_default(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Cancels a job that is not running: deletes it if waiting, delayed, failed or dead (a dead
/// job's record and error history go with it). Returns false when there was no such job
/// (running, completed, or unknown).
pub async fn cancel(db: &impl ConnectionTrait, id: JobId) -> Result<bool, QueueError> {
    let res = db
        .execute_raw(stmt(
            db,
            "DELETE FROM queue_jobs WHERE id = $1 AND state IN ('waiting', 'failed', 'dead')",
            vec![id.0.into()],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// One job by id.
pub async fn get(db: &impl ConnectionTrait, id: JobId, now: DateTime<Utc>) -> Result<Option<Job>, QueueError> {
    let row = JobRow::find_by_statement(stmt(
        db,
        &format!("SELECT {JOB_COLUMNS} FROM queue_jobs WHERE id = $1"),
        vec![id.0.into()],
    ))
    .one(db)
    .await?;
    Ok(row.map(|r| r.into_job(now)))
}

/// Jobs of `queue` in `state`, at most `limit` after skipping `offset`: pending jobs in the
/// order they will run, others newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    queue: &str,
    state: JobState,
    limit: u64,
    offset: u64,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, QueueError> {
    let now = at(now);
    let (filter, order) = match state {
        JobState::Waiting => ("state = 'waiting' AND run_at <= $2", "priority DESC, run_at, id"),
        JobState::Delayed => ("state = 'waiting' AND run_at > $2", "run_at, id"),
        JobState::Failed => ("state = 'failed' AND $2 = $2", "run_at, id"),
        JobState::Active => ("state = 'active' AND $2 = $2", "started_at, id"),
        JobState::Completed => ("state = 'completed' AND $2 = $2", "id DESC"),
        JobState::Dead => ("state = 'dead' AND $2 = $2", "id DESC"),
    };
    let rows = JobRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {JOB_COLUMNS} FROM queue_jobs WHERE queue = $1 AND {filter} ORDER BY {order} LIMIT $3 OFFSET $4"
        ),
        vec![
            queue.to_owned().into(),
            now.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            i64::try_from(offset).unwrap_or(i64::MAX).into(),
        ],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.into_job(now)).collect())
}

/// Jobs per state in one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Due and not running.
    pub waiting: u64,
    /// Not due yet.
    pub delayed: u64,
    /// Running.
    pub active: u64,
    /// Finished (until cleaned).
    pub completed: u64,
    /// Awaiting a retry.
    pub failed: u64,
    /// Out of attempts.
    pub dead: u64,
}

impl StateCounts {
    /// The count for `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::Dead => self.dead,
        }
    }

    fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Delayed => &mut self.delayed,
            JobState::Active => &mut self.active,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
            JobState::Dead => &mut self.dead,
        }
    }
}

/// One queue's figures for the admin API.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Jobs per state.
    pub counts: StateCounts,
    /// How long the longest-waiting due job has been due, in seconds.
    pub oldest_waiting_secs: Option<f64>,
    /// Jobs completed in the last hour (throughput).
    pub completed_last_hour: u64,
}

#[derive(FromQueryResult)]
struct CountRow {
    queue: String,
    state: String,
    n: i64,
}

#[derive(FromQueryResult)]
struct QueueCount {
    queue: String,
    n: i64,
}

#[derive(FromQueryResult)]
struct RunAt {
    run_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Name {
    queue: String,
}

async fn queue_names(db: &impl ConnectionTrait) -> Result<Vec<String>, QueueError> {
    let rows = Name::find_by_statement(stmt(
        db,
        "SELECT DISTINCT queue FROM queue_jobs UNION SELECT queue FROM queue_settings",
        vec![],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.queue).collect())
}

/// Figures for every queue that has jobs or settings, sorted by name; also refreshes the
/// `lexiflow_queue_jobs{queue,state}` gauge.
pub async fn stats(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Vec<QueueStats>, QueueError> {
    stats_including(db, &[], now).await
}

/// [`stats`], also listing each of `known` (the queues a deployment defines, see
/// [`crate::WorkerBuilder::known_queues`]) with zero counts when it has no jobs or settings
/// yet, so a fresh install shows its queues.
pub async fn stats_including(
    db: &impl ConnectionTrait,
    known: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<QueueStats>, QueueError> {
    let now = at(now);
    let mut out: BTreeMap<String, QueueStats> = BTreeMap::new();
    for q in queue_names(db).await?.into_iter().chain(known.iter().cloned()) {
        let blank = QueueStats {
            queue: q.clone(),
            paused: false,
            counts: StateCounts::default(),
            oldest_waiting_secs: None,
            completed_last_hour: 0,
        };
        out.insert(q, blank);
    }
    let counts = CountRow::find_by_statement(stmt(
        db,
        "SELECT queue, CASE WHEN state = 'waiting' AND run_at > $1 THEN 'delayed' ELSE state END AS state, \
         COUNT(*) AS n FROM queue_jobs GROUP BY 1, 2",
        vec![now.into()],
    ))
    .all(db)
    .await?;
    for c in counts {
        if let (Some(s), Some(st)) = (out.get_mut(&c.queue), JobState::parse(&c.state)) {
            *s.counts.slot(st) = u64::try_from(c.n).unwrap_or(0);
        }
    }
    let paused =
        PausedRow::find_by_statement(stmt(db, "SELECT queue, paused FROM queue_settings", vec![])).all(db).await?;
    for p in paused {
        if let Some(s) = out.get_mut(&p.queue) {
            s.paused = p.paused;
        }
    }
    let recent = QueueCount::find_by_statement(stmt(
        db,
        "SELECT queue, COUNT(*) AS n FROM queue_jobs WHERE state = 'completed' AND finished_at >= $1 GROUP BY queue",
        vec![minus(now, Duration::from_secs(3600)).into()],
    ))
    .all(db)
    .await?;
    for r in recent {
        if let Some(s) = out.get_mut(&r.queue) {
            s.completed_last_hour = u64::try_from(r.n).unwrap_or(0);
        }
    }
    for s in out.values_mut() {
        if s.counts.waiting > 0 {
            // A plain column rather than MIN(): SQLite reports no type for an aggregate of
            // text timestamps, which the decoder needs.
            let oldest = RunAt::find_by_statement(stmt(
                db,
                "SELECT run_at FROM queue_jobs WHERE queue = $1 AND state = 'waiting' AND run_at <= $2 \
                 ORDER BY run_at LIMIT 1",
                vec![s.queue.clone().into(), now.into()],
            ))
            .one(db)
            .await?;
            s.oldest_waiting_secs = oldest.map(|o| (now - o.run_at).num_milliseconds().max(0) as f64 / 1000.0);
        }
        for state in JobState::ALL {
            metrics::gauge!(metric::JOBS, "queue" => s.queue.clone(), "state" => state.as_str())
                .set(s.counts.get(state) as f64);
        }
    }
    Ok(out.into_values().collect())
}
