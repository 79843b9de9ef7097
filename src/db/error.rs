//! The data layer's own error: a database error classified by what the caller can do about
//! it. The HTTP side maps it to a status (`impl From<DbError> for ApiError` in
//! `http::error`); the data layer knows nothing of HTTP.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// A failed database call, classified.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique constraint refused the write; `constraint` is its name when it is one of ours.
    #[error("unique constraint violated ({})", constraint.unwrap_or("unknown"))]
    Unique {
        constraint: Option<&'static str>,
        #[source]
        source: DbErr,
    },
    /// The transaction lost a conflict (PostgreSQL serialization failure or deadlock, SQLite
    /// busy or locked) and may succeed if run again from the start.
    #[error("the transaction lost a conflict: {0}")]
    Conflict(#[source] DbErr),
    /// The database could not be reached, or was too busy to answer in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] DbErr),
    /// Anything else: a failure of ours (a bad statement, a broken invariant).
    #[error(transparent)]
    Other(DbErr),
}

impl DbError {
    /// True when running the whole transaction again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DbError::Conflict(_))
    }

    /// True when the database itself is unreachable or overloaded (also for a conflict that
    /// is SQLite's busy lock outlasting its timeout).
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Conflict(e) => is_unavailable(e),
            _ => false,
        }
    }
}

/// One of our unique constraints and how SQLite names its columns in the error.
struct UniqueConstraint {
    name: &'static str,
    sqlite_columns: &'static str,
}

const UNIQUE_CONSTRAINTS: &[UniqueConstraint] = &[
    UniqueConstraint { name: "uq_cases_firm_case_number", sqlite_columns: "cases.firm_id, cases.case_number" },
    UniqueConstraint { name: "uq_users_email", sqlite_columns: "users.email" },
    UniqueConstraint {
        name: "pk_case_team_members",
        sqlite_columns: "case_team_members.case_id, case_team_members.user_id",
    },
];

/// The name of the constraint a unique-violation message is about, found by name
/// (PostgreSQL) or column list (SQLite).
pub fn unique_constraint(message: &str) -> Option<&'static str> {
    UNIQUE_CONSTRAINTS.iter().find(|c| message.contains(c.name) || message.contains(c.sqlite_columns)).map(|c| c.name)
}

impl From<DbErr> for DbError {
    fn from(e: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(m)) = e.sql_err() {
            return DbError::Unique { constraint: unique_constraint(&m), source: e };
        }
        if is_conflict(&e) {
            return DbError::Conflict(e);
        }
        if is_unavailable(&e) {
            return DbError::Unavailable(e);
        }
        DbError::Other(e)
    }
}

fn sqlx_error(e: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(x))
        | DbErr::Query(RuntimeErr::SqlxError(x))
        | DbErr::Conn(RuntimeErr::SqlxError(x)) => Some(x.as_ref()),
        _ => None,
    }
}

/// True when `e` means the transaction lost a conflict and may succeed if run again.
pub fn is_conflict(e: &DbErr) -> bool {
    // PostgreSQL serialization failure and deadlock; SQLite BUSY, LOCKED and BUSY_SNAPSHOT (a
    // deferred reader that tried to write after another commit), and their other extended
    // codes (BUSY_RECOVERY, LOCKED_SHAREDCACHE, BUSY_TIMEOUT).
    match sqlx_error(e) {
        Some(sea_orm::sqlx::Error::Database(d)) => {
            matches!(d.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773"))
        }
        _ => false,
    }
}

/// True when the error means the database could not be reached or was too busy, rather than
/// that the statement was wrong.
pub fn is_unavailable(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as X;
    if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    match sqlx_error(e) {
        Some(X::Io(_) | X::PoolTimedOut | X::PoolClosed | X::WorkerCrashed) => true,
        // SQLITE_BUSY / SQLITE_LOCKED outlasting the busy timeout; PostgreSQL admin shutdown.
        Some(X::Database(d)) => {
            matches!(d.code().as_deref(), Some("5" | "6" | "261" | "262" | "517" | "773" | "57P01" | "57P03"))
        }
        _ => false,
    }
}
