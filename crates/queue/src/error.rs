//! The queue's error type.

use sea_orm::DbErr;

/// What can go wrong in a queue operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database refused or failed.
    #[error("queue database error: {0}")]
    Db(#[from] DbErr),
    /// The caller's lease is no longer current: it expired and was reclaimed, or the job moved on.
    #[error("job {0} is no longer leased under this token")]
    LeaseLost(i64),
    /// A pending job already holds this unique key in this queue.
    #[error("a pending job in queue {queue} already has unique key {key}")]
    Duplicate {
        /// The queue.
        queue: String,
        /// The key.
        key: String,
    },
    /// A cron pattern or time zone did not parse.
    #[error("schedule {name}: {reason}")]
    Schedule {
        /// The schedule's name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The operation does not apply to jobs in this state.
    #[error("{0}")]
    InvalidState(String),
}
