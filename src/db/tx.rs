//! Transactions: the one way domain code writes.
//!
//! [`transaction`] runs a unit of work in a transaction: it commits when the work returns
//! `Ok`, rolls back when it returns `Err` or panics (the panic then continues), and re-runs
//! the whole work — from the start, in a fresh transaction — when the database reports that
//! the transaction lost a conflict: PostgreSQL serialization failure (`40001`) or deadlock
//! (`40P01`), SQLite busy or locked. Attempts are bounded and spaced by exponential backoff
//! with full jitter ([`crate::resilience::RetryPolicy`]). Because the work may run more than
//! once, it must not have effects outside the transaction (send e-mails, publish events,
//! evict caches) until [`transaction`] has returned: do those after it.
//!
//! [`savepoint`] runs work inside an open transaction as a nested one (`SAVEPOINT`): if it
//! fails, only its own writes are rolled back and the outer transaction carries on.
//!
//! Isolation is selectable on PostgreSQL (read committed by default; row locks and version
//! checks guard the writes). SQLite has one writer at a time and its transactions are
//! serializable; write transactions start with `BEGIN IMMEDIATE` so a read-then-write
//! transaction takes the write lock up front instead of failing on commit. Statement and lock
//! timeouts are set per connection (`DB_STATEMENT_TIMEOUT_MS`, `DB_LOCK_TIMEOUT_MS`); a
//! transaction may tighten them with [`TxOptions::timeout`] (PostgreSQL `SET LOCAL`).
//!
//! SQLite admits one writer at a time. Write transactions of this process take turns at an
//! in-process gate per application pool, in effect per database file (first come, first
//! served), then run on that pool's one writer connection, before `BEGIN IMMEDIATE`,
//! instead of waiting in SQLite's busy handler, which polls in sleeps of up to 100 ms and
//! leaves the lock idle between writers: under 64 concurrent `POST /cases` that made p99
//! about 1.2 s. Other processes on the same file (a `lexiflow import`, say) still meet this
//! one at SQLite's lock, as before.

use std::{future::Future, ops::Deref, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, RuntimeErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait, sqlx::sqlite::SqliteConnectOptions,
};

use crate::{
    http::error::{ApiError, ApiResult},
    resilience::RetryPolicy,
};

/// An open transaction (or savepoint) handed to a unit of work. It dereferences to SeaORM's
/// transaction, so `&*tx` (or `&tx` where a `&impl ConnectionTrait` is expected through
/// auto-deref) runs statements in it. Do not keep it beyond the work's future.
#[derive(Clone, Debug)]
pub struct Tx(Arc<DatabaseTransaction>);

impl Deref for Tx {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.0
    }
}

/// How to run a transaction.
#[derive(Clone, Copy, Debug)]
pub struct TxOptions {
    /// PostgreSQL isolation level; None is the server's default (read committed). SQLite
    /// transactions are always serializable.
    pub isolation: Option<IsolationLevel>,
    /// A read-only transaction (PostgreSQL `READ ONLY`; on SQLite a deferred `BEGIN`).
    pub read_only: bool,
    /// Attempts in all when the transaction loses a conflict (1 = never retry).
    pub attempts: u32,
    /// Tighter statement and lock timeouts for this transaction (PostgreSQL only).
    pub timeout: Option<Duration>,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self { isolation: None, read_only: false, attempts: 5, timeout: None }
    }
}

impl TxOptions {
    /// A read-write transaction with the defaults.
    pub fn write() -> Self {
        Self::default()
    }

    /// PostgreSQL `SERIALIZABLE`: conflicts surface as serialization failures, retried.
    pub fn serializable() -> Self {
        Self { isolation: Some(IsolationLevel::Serializable), ..Self::default() }
    }

    /// A consistent read-only snapshot (PostgreSQL `REPEATABLE READ READ ONLY`).
    pub fn snapshot() -> Self {
        Self { isolation: Some(IsolationLevel::RepeatableRead), read_only: true, ..Self::default() }
    }

    /// Sets the number of attempts.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// Sets a statement and lock timeout for this transaction.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// The backoff between attempts: short, because the conflicting transaction is usually
/// finishing already.
fn backoff() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(250),
        deadline: Duration::from_secs(30),
    }
}

/// True when `e` means the transaction lost a conflict and may succeed if run again.
pub fn is_conflict(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as X;
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(x))
        | DbErr::Query(RuntimeErr::SqlxError(x))
        | DbErr::Conn(RuntimeErr::SqlxError(x)) => {
            match x.as_ref() {
                // PostgreSQL serialization failure and deadlock; SQLite BUSY, LOCKED and
                // BUSY_SNAPSHOT (a deferred reader that tried to write after another commit), and
                // their other extended codes (BUSY_RECOVERY, LOCKED_SHAREDCACHE, BUSY_TIMEOUT).
                X::Database(d) => {
                    matches!(d.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773"))
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// True when an operation's error came from a database conflict worth retrying (the whole
/// transaction, not the step: a bulk operation's per-item savepoint hands such errors up).
pub fn retryable(e: &ApiError) -> bool {
    e.cause.as_ref().and_then(|c| c.downcast_ref::<DbErr>()).is_some_and(is_conflict)
}

/// Runs `work` in a transaction on `db` as described in the module documentation, retrying
/// it when the transaction loses a conflict. `work` gets a fresh [`Tx`] each attempt.
pub async fn transaction<T, F, Fut>(db: &DatabaseConnection, opts: TxOptions, mut work: F) -> ApiResult<T>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let policy = backoff();
    let mut attempt = 1;
    // Told to the pools' guard if this future is dropped before the transaction has ended.
    let mut in_flight = InFlight(true);
    let outcome = loop {
        let result = {
            let turn = sqlite_write_turn(db, &opts).await?;
            let db = turn.as_ref().map_or(db, |t| &t.1);
            match begin(db, &opts).await {
                Ok(tx) => run(tx, &mut work).await,
                Err(e) => Err(ApiError::from(e)),
            }
        };
        match result {
            Err(e) if attempt < opts.attempts && retryable(&e) => {
                metrics::counter!("lexiflow_db_transaction_retries_total").increment(1);
                tracing::debug!(attempt, error = %e, "transaction lost a conflict; running it again");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                if retryable(&e) {
                    metrics::counter!("lexiflow_db_transaction_conflicts_exhausted_total").increment(1);
                }
                break Err(e);
            }
            ok => break ok,
        }
    };
    in_flight.0 = false;
    outcome
}

/// Armed while [`transaction`] runs; dropped armed, the transaction was cancelled midway.
struct InFlight(bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0 {
            super::note_dropped_transaction();
        }
    }
}

/// Runs `work` as a nested transaction (`SAVEPOINT`) of `tx`: its writes are released into
/// `tx` when it returns `Ok`, rolled back alone when it returns `Err` or panics. Not
/// retried by itself: a conflict fails the outer transaction, which [`transaction`] retries.
pub async fn savepoint<T, F, Fut>(tx: &DatabaseTransaction, work: F) -> ApiResult<T>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let nested = tx.begin().await?;
    let mut once = Some(work);
    run(nested, &mut |t| {
        // `run` calls its work exactly once.
        let w = once.take();
        async move {
            match w {
                Some(w) => w(t).await,
                None => Err(ApiError::internal(DbErr::Custom("a savepoint's work ran twice".into()))),
            }
        }
    })
    .await
}

/// How long a SQLite writer waits for its turn before giving up with 503 (the same as the
/// default statement timeout; a request's own deadline usually ends the wait first).
const SQLITE_TURN_WAIT: Duration = Duration::from_secs(30);

/// A SQLite file's writer: the gate its write transactions take turns at, and the one
/// connection they all run on (a pool of one, opened with the application pool's options).
/// One connection keeps its page cache warm: a connection must drop its cached pages when
/// another connection has written since its last transaction, and re-read every page it
/// touches, which made each audited write re-read the audit table's seven B-trees.
///
/// Writers belong to an application pool (keyed by its connect options, held weakly): a pool
/// opened with other options (the queue's relaxed durability, another `App` on the same file)
/// gets its own writer, and a closed pool's writer is dropped with the next new one.
struct Writer {
    /// The application pool's options; dead once that pool is gone.
    of: std::sync::Weak<SqliteConnectOptions>,
    gate: Arc<tokio::sync::Mutex<()>>,
    db: DatabaseConnection,
}
type Writers = std::sync::Mutex<std::collections::HashMap<usize, Writer>>;
static SQLITE_WRITERS: std::sync::LazyLock<Writers> = std::sync::LazyLock::new(Default::default);

/// This process's turn to write to `db`'s SQLite file, and the connection to write on (see
/// the module documentation); none on PostgreSQL or for a read-only transaction.
async fn sqlite_write_turn(
    db: &DatabaseConnection,
    opts: &TxOptions,
) -> ApiResult<Option<(tokio::sync::OwnedMutexGuard<()>, DatabaseConnection)>> {
    if db.get_database_backend() != DbBackend::Sqlite || opts.read_only {
        return Ok(None);
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    // A private in-memory database exists only on the connection that opened it.
    if options.get_filename().as_os_str() == ":memory:" {
        return Ok(None);
    }
    let key = Arc::as_ptr(&options) as usize;
    let (gate, writer) = {
        let mut writers = SQLITE_WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = writers.get(&key).filter(|w| w.of.upgrade().is_some_and(|o| Arc::ptr_eq(&o, &options)));
        if current.is_none() {
            writers.retain(|_, w| w.of.strong_count() > 0);
            let pool = super::guard_sqlite_pool(sea_orm::sqlx::sqlite::SqlitePoolOptions::new())
                .max_connections(1)
                .min_connections(0)
                .idle_timeout(Duration::from_secs(30))
                .acquire_timeout(SQLITE_TURN_WAIT)
                .connect_lazy_with((*options).clone());
            let db = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            writers.insert(key, Writer { of: Arc::downgrade(&options), gate: Arc::default(), db });
        }
        let w = &writers[&key];
        (Arc::clone(&w.gate), w.db.clone())
    };
    match tokio::time::timeout(SQLITE_TURN_WAIT, gate.lock_owned()).await {
        Ok(turn) => Ok(Some((turn, writer))),
        Err(_) => Err(ApiError::unavailable(DbErr::Custom("timed out waiting for the database write lock".into()))),
    }
}

async fn begin(db: &DatabaseConnection, opts: &TxOptions) -> Result<DatabaseTransaction, DbErr> {
    let backend = db.get_database_backend();
    let options = TransactionOptions {
        isolation_level: if backend == DbBackend::Postgres { opts.isolation } else { None },
        access_mode: (opts.read_only && backend == DbBackend::Postgres).then_some(AccessMode::ReadOnly),
        sqlite_transaction_mode: (backend == DbBackend::Sqlite && !opts.read_only)
            .then_some(SqliteTransactionMode::Immediate),
    };
    let tx = db.begin_with_options(options).await?;
    if let (Some(t), DbBackend::Postgres) = (opts.timeout, backend) {
        let ms = t.as_millis().max(1);
        tx.execute_unprepared(&format!("SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")).await?;
    }
    Ok(tx)
}

/// Runs the work once in `tx`, then commits or rolls back.
async fn run<T, F, Fut>(tx: DatabaseTransaction, work: &mut F) -> ApiResult<T>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let handle = Tx(Arc::new(tx));
    let outcome = AssertUnwindSafe(work(handle.clone())).catch_unwind().await;
    let tx = match Arc::try_unwrap(handle.0) {
        Ok(tx) => tx,
        // The work kept a handle (spawned a task with it, say): the transaction cannot be
        // finished here. Dropping the last handle rolls it back.
        Err(_) => {
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
            return Err(ApiError::internal(DbErr::Custom(
                "a unit of work kept its transaction after returning; rolled back".into(),
            )));
        }
    };
    let commit = matches!(outcome, Ok(Ok(_)));
    let ended = finish(tx, commit).await;
    match outcome {
        Ok(Ok(value)) => {
            ended?;
            Ok(value)
        }
        Ok(Err(e)) => {
            if let Err(rb) = ended {
                tracing::warn!(error = %rb, "rollback failed; the connection is discarded");
            }
            Err(e)
        }
        Err(panic) => {
            if let Err(rb) = ended {
                tracing::warn!(error = %rb, "rollback after a panic failed; the connection is discarded");
            }
            std::panic::resume_unwind(panic)
        }
    }
}

/// Commits or rolls back `tx` on a task of its own, so that a request dropped meanwhile (its
/// client went away) does not cut the `COMMIT` or `ROLLBACK` short: cut short, the dropped
/// transaction queued a second `ROLLBACK` behind a `COMMIT` that went through ("there is no
/// transaction in progress"), and whether the write was kept depended on the moment of the
/// drop. Now a unit of work that reached its end is committed whole, response sent or not.
async fn finish(tx: DatabaseTransaction, commit: bool) -> Result<(), DbErr> {
    let task = tokio::spawn(async move { if commit { tx.commit().await } else { tx.rollback().await } });
    match task.await {
        Ok(ended) => ended,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DbErr::Custom(format!("the transaction's end was cancelled: {e}"))),
    }
}
