//! Small helpers shared by the SQL in this crate.
//!
//! Statements use `$N` placeholders on both backends: sqlx's SQLite driver binds `$N` by
//! position just as PostgreSQL does, so one string serves both.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, Statement, Value};

/// A statement for `db`'s backend.
pub(crate) fn stmt(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

/// Times are stored at microsecond precision, which PostgreSQL keeps; truncating everywhere
/// makes a time read back equal to the one written on both backends.
pub(crate) fn at(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// `t` plus a std duration, saturating instead of overflowing.
pub(crate) fn plus(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    at(t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

/// `t` minus a std duration, saturating.
pub(crate) fn minus(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    at(t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// Every column of `queue_jobs` a [`crate::job::Job`] is read from.
pub(crate) const JOB_COLUMNS: &str = "id, queue, job_type, payload, priority, state, run_at, attempts, max_attempts, \
     backoff_base_ms, backoff_max_ms, unique_key, locked_by, lease_expires_at, last_error, errors, \
     created_at, started_at, failed_at, finished_at";
