//! Claiming due jobs under a lease, and finishing attempts.
//!
//! A claim marks jobs `active`, counts the attempt, and stamps a fresh lease token and
//! expiry. Every later write about the attempt — extend, complete, fail — names the job *and*
//! the token, so a worker whose lease expired and was reclaimed cannot complete or fail a job
//! that someone else now holds: its write matches no row and it gets
//! [`QueueError::LeaseLost`]. [`complete_many`] records many completions in one statement
//! with the same check for each job, and [`release`] gives unstarted jobs back.
//!
//! PostgreSQL claims in one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//! LOCKED) RETURNING …`: concurrent workers skip each other's rows instead of queueing on
//! them. SQLite has one writer at a time, so the same UPDATE runs in a `BEGIN IMMEDIATE`
//! transaction, which takes the write lock before reading.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use serde_json::Value;

use crate::{
    QueueError,
    job::{AttemptError, Job, JobId, JobRow, JobState},
    metric,
    sql::{JOB_COLUMNS, at, plus, stmt},
};

/// The right to finish one attempt of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The token stamped by the claim; only its holder may finish the attempt.
    pub token: String,
}

/// A job claimed for one attempt, with its lease.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job as claimed (state active, `attempts` counting this one).
    pub job: Job,
    /// The lease to finish it with.
    pub lease: Lease,
}

/// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite so a read-then-write never fails
/// with a busy snapshot, plain `BEGIN` on PostgreSQL.
pub(crate) async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction, QueueError> {
    let options = TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    Ok(db.begin_with_options(options).await?)
}

/// Claims up to `limit` due jobs of `queue` for `lease_for`, unless the queue is paused.
/// Jobs come back in priority order (highest first), then due time, then id.
pub async fn claim(
    db: &DatabaseConnection,
    queue: &str,
    limit: u32,
    lease_for: Duration,
    worker_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, QueueError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = at(now);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let sql = format!(
        "UPDATE queue_jobs SET state = 'active', attempts = attempts + 1, lease_token = $1, lease_expires_at = $2, \
         locked_by = $3, started_at = $4 \
         WHERE id IN (SELECT id FROM queue_jobs \
           WHERE queue = $5 AND state IN ('waiting', 'failed') AND run_at <= $4 \
             AND NOT EXISTS (SELECT 1 FROM queue_settings s WHERE s.queue = $5 AND s.paused) \
           ORDER BY priority DESC, run_at, id LIMIT $6{}) \
         RETURNING {JOB_COLUMNS}",
        if postgres { " FOR UPDATE SKIP LOCKED" } else { "" }
    );
    let values = vec![
        token.clone().into(),
        plus(now, lease_for).into(),
        worker_id.to_owned().into(),
        now.into(),
        queue.to_owned().into(),
        i64::from(limit).into(),
    ];
    let rows = if postgres {
        JobRow::find_by_statement(stmt(db, &sql, values)).all(db).await?
    } else {
        let tx = begin_write(db).await?;
        let rows = JobRow::find_by_statement(stmt(&tx, &sql, values)).all(&tx).await?;
        tx.commit().await?;
        rows
    };
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|row| {
            let job = row.into_job(now);
            Claimed { lease: Lease { job_id: job.id, token: token.clone() }, job }
        })
        .collect();
    // RETURNING has no order; hand jobs out in the order they were chosen.
    claimed.sort_by(|a, b| {
        b.job.priority.cmp(&a.job.priority).then(a.job.run_at.cmp(&b.job.run_at)).then(a.job.id.cmp(&b.job.id))
    });
    Ok(claimed)
}

/// Pushes the lease's expiry to `now + lease_for`; a long handler calls this to keep its job.
pub async fn extend(
    db: &impl ConnectionTrait,
    lease: &Lease,
    lease_for: Duration,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let res = db
        .execute_raw(stmt(
            db,
            "UPDATE queue_jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'active'",
            vec![lease.job_id.0.into(), lease.token.clone().into(), plus(at(now), lease_for).into()],
        ))
        .await?;
    if res.rows_affected() == 1 { Ok(()) } else { Err(QueueError::LeaseLost(lease.job_id.0)) }
}

/// Marks the leased attempt successful.
pub async fn complete(db: &impl ConnectionTrait, lease: &Lease, now: DateTime<Utc>) -> Result<(), QueueError> {
    let res = db
        .execute_raw(stmt(
            db,
            "UPDATE queue_jobs SET state = 'completed', finished_at = $3, lease_token = NULL, lease_expires_at = NULL, \
             locked_by = NULL WHERE id = $1 AND lease_token = $2 AND state = 'active'",
            vec![lease.job_id.0.into(), lease.token.clone().into(), at(now).into()],
        ))
        .await?;
    if res.rows_affected() == 1 { Ok(()) } else { Err(QueueError::LeaseLost(lease.job_id.0)) }
}

/// Marks many leased attempts successful in one statement, each under its own lease: a
/// lease that is no longer current (reclaimed, re-claimed, finished) changes nothing, exactly
/// as with [`complete`]. Returns the jobs whose completion was recorded; the others lost
/// their lease. The worker records its completions through this, a batch at a time.
pub async fn complete_many(
    db: &impl ConnectionTrait,
    leases: &[Lease],
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, QueueError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    // The (id, token) pairs travel as one JSON array, so the statement text (and its
    // prepared plan) is the same whatever the batch size. `id` is matched on its own first so
    // the rows are found through the primary key; the pair check then applies each job's own
    // token.
    //
    // A lease token is only ever present on an `active` row (the claim sets it with the
    // state, and every statement that moves a job out of `active` clears it), so the pair
    // match is the lease check. PostgreSQL's statement leaves out `state = 'active'`: that
    // is the predicate of the partial lease index, and without it the planner cannot pick a
    // bitmap scan of that index — which, between vacuums, holds an entry for every lease
    // ever granted and made each batch cost O(jobs processed).
    let pairs: Value = leases.iter().map(|l| serde_json::json!([l.job_id.0, l.token])).collect();
    let sql = if db.get_database_backend() == DbBackend::Postgres {
        "UPDATE queue_jobs SET state = 'completed', finished_at = $2, lease_token = NULL, lease_expires_at = NULL, \
         locked_by = NULL \
         WHERE id = ANY(ARRAY(SELECT (p->>0)::bigint FROM jsonb_array_elements($1) p)) \
           AND (id, lease_token) IN (SELECT (p->>0)::bigint, p->>1 FROM jsonb_array_elements($1) p) \
         RETURNING id"
    } else {
        "UPDATE queue_jobs SET state = 'completed', finished_at = $2, lease_token = NULL, lease_expires_at = NULL, \
         locked_by = NULL \
         WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each($1)) AND state = 'active' \
           AND (id, lease_token) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($1)) \
         RETURNING id"
    };
    let rows = Completed::find_by_statement(stmt(db, sql, vec![pairs.into(), at(now).into()])).all(db).await?;
    Ok(rows.into_iter().map(|r| JobId(r.id)).collect())
}

#[derive(FromQueryResult)]
struct Completed {
    id: i64,
}

/// Marks the leased attempt failed with `error`: the job is retried after its backoff, or
/// becomes dead when it has used all its attempts. Returns the state it moved to.
pub async fn fail(
    db: &impl ConnectionTrait,
    lease: &Lease,
    error: &str,
    now: DateTime<Utc>,
) -> Result<JobState, QueueError> {
    fail_attempt(db, lease, error, now, false).await
}

/// [`fail`], and with `only_if_expired` only while the lease is still expired at `now` when
/// the write lands: a reclaim then loses to a renewal committed after it read the lease.
async fn fail_attempt(
    db: &impl ConnectionTrait,
    lease: &Lease,
    error: &str,
    now: DateTime<Utc>,
    only_if_expired: bool,
) -> Result<JobState, QueueError> {
    let now = at(now);
    let row = JobRow::find_by_statement(stmt(
        db,
        &format!("SELECT {JOB_COLUMNS} FROM queue_jobs WHERE id = $1 AND lease_token = $2 AND state = 'active'"),
        vec![lease.job_id.0.into(), lease.token.clone().into()],
    ))
    .one(db)
    .await?
    .ok_or(QueueError::LeaseLost(lease.job_id.0))?;
    let job = row.into_job(now);
    let mut errors = job.errors.clone();
    errors.push(AttemptError { attempt: job.attempts, error: error.to_owned(), at: now });
    let errors = serde_json::to_value(&errors).unwrap_or_default();
    let dead = job.attempts >= job.max_attempts;
    let (state, run_at, finished_at) = if dead {
        (JobState::Dead, job.run_at, Some(now))
    } else {
        (JobState::Failed, plus(now, job.backoff.delay(job.attempts)), None)
    };
    // The token check makes this a compare-and-set: if the lease was reclaimed between the
    // read above and this write, nothing changes and the caller learns it lost the job.
    let sql = format!(
        "UPDATE queue_jobs SET state = $3, run_at = $4, finished_at = $5, failed_at = $6, last_error = $7, \
         errors = $8, lease_token = NULL, lease_expires_at = NULL, locked_by = NULL \
         WHERE id = $1 AND lease_token = $2 AND state = 'active'{}",
        if only_if_expired { " AND lease_expires_at < $6" } else { "" }
    );
    let res = db
        .execute_raw(stmt(
            db,
            &sql,
            vec![
                lease.job_id.0.into(),
                lease.token.clone().into(),
                state.as_str().into(),
                run_at.into(),
                finished_at.into(),
                now.into(),
                error.to_owned().into(),
                errors.into(),
            ],
        ))
        .await?;
    if res.rows_affected() != 1 {
        return Err(QueueError::LeaseLost(lease.job_id.0));
    }
    metrics::counter!(metric::FAILURES, "queue" => job.queue.clone(), "type" => job.job_type.clone()).increment(1);
    if dead {
        metrics::counter!(metric::DEAD_LETTERS, "queue" => job.queue.clone()).increment(1);
        tracing::warn!(job = %job.id, queue = %job.queue, job_type = %job.job_type, attempts = job.attempts, error, "job is dead: retries exhausted");
    } else {
        tracing::info!(job = %job.id, queue = %job.queue, job_type = %job.job_type, attempt = job.attempts, retry_at = %run_at, error, "job attempt failed; will retry");
    }
    Ok(state)
}

/// Gives claimed jobs back unstarted (a worker shutting down with jobs read ahead): each
/// returns to `waiting` (or `failed`, when earlier attempts failed) and the claim's attempt
/// is not counted. Leases no longer current are skipped. Returns how many were released.
pub async fn release(db: &impl ConnectionTrait, leases: &[Lease]) -> Result<u64, QueueError> {
    let mut released = 0;
    for lease in leases {
        released += db
            .execute_raw(stmt(
                db,
                "UPDATE queue_jobs SET state = CASE WHEN attempts > 1 THEN 'failed' ELSE 'waiting' END, \
                 attempts = attempts - 1, started_at = CASE WHEN attempts > 1 THEN started_at END, \
                 lease_token = NULL, lease_expires_at = NULL, locked_by = NULL \
                 WHERE id = $1 AND lease_token = $2 AND state = 'active'",
                vec![lease.job_id.0.into(), lease.token.clone().into()],
            ))
            .await?
            .rows_affected();
    }
    if released > 0 {
        crate::enqueue::wake_local();
    }
    Ok(released)
}

#[derive(FromQueryResult)]
struct Expired {
    id: i64,
    lease_token: Option<String>,
}

/// Turns every lease that expired before `now` into a failed attempt ("lease expired"), so a
/// job whose worker died or stalled is retried. Returns how many jobs were reclaimed.
///
/// Safe to run on every instance at once: each reclaim is a token-checked write, so only
/// one instance reclaims a given attempt.
pub async fn reclaim_expired(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, QueueError> {
    let expired = Expired::find_by_statement(stmt(
        db,
        "SELECT id, lease_token FROM queue_jobs WHERE state = 'active' AND lease_expires_at < $1 LIMIT 500",
        vec![at(now).into()],
    ))
    .all(db)
    .await?;
    let mut reclaimed = 0;
    for row in expired {
        let Some(token) = row.lease_token else { continue };
        let lease = Lease { job_id: JobId(row.id), token };
        // Still expired when the write lands: a renewal that committed after the read above
        // keeps the job with its worker, which is still running it.
        match fail_attempt(db, &lease, "lease expired: the worker died or stalled", now, true).await {
            Ok(_) => reclaimed += 1,
            Err(QueueError::LeaseLost(_)) => {} // finished or reclaimed meanwhile
            Err(e) => return Err(e),
        }
    }
    if reclaimed > 0 {
        tracing::warn!(reclaimed, "reclaimed jobs whose lease expired");
    }
    Ok(reclaimed)
}
