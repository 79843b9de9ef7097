//! Transactions: the one way domain code writes.
//!
//! [`transaction`] runs a unit of work in a transaction: it commits when the work returns
//! `Ok`, rolls back when it returns `Err` or panics (the panic then continues), and re-runs
//! the whole work — from the start, in a fresh transaction — when the database reports that
//! the transaction lost a conflict: PostgreSQL serialization failure (`40001`) or deadlock
//! (`40P01`), SQLite busy or locked. Attempts are bounded and spaced by exponential backoff
//! with full jitter ([`crate::resilience::RetryPolicy`]). Because the work may run more than
//! once, it must not have effects outside the transaction: it records domain events on its
//! [`Tx`] instead ([`Tx::record`]), which are written to the outbox just before commit and
//! returned with the result ([`Committed`]) for the caller to publish (`App::write` does).
//! Each attempt starts with no events, so a retried transaction publishes its events once and
//! a rolled-back one none.
//!
//! The work gets a [`Tx`] handle; when it returns, the transaction and the SQLite write turn
//! that belongs to it are taken out of the handle, so a copy kept by mistake can neither write
//! nor stall the process's other writers.
//!
//! Some flows must commit and still refuse (a failed login is counted, a reused refresh token
//! revokes its session): their work returns [`Outcome::CommitThenFail`].
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

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sqlx::sqlite::SqliteConnectOptions,
};

use super::DbError;
use crate::{events::DomainEvent, resilience::RetryPolicy};

/// An open transaction (or savepoint), handed to a unit of work: a cheap handle that runs
/// statements (it implements `ConnectionTrait`) and collects the domain events the work
/// records. When the unit of work ends, [`transaction`] takes the transaction — and the SQLite
/// write turn that belongs to it — out of the handle to commit or roll back; a copy of the
/// handle kept beyond that holds nothing (its statements fail), so it can neither write
/// outside its transaction nor stall the process's other writers.
#[derive(Clone, Debug)]
pub struct Tx(Arc<TxInner>);

#[derive(Debug)]
struct TxInner {
    open: tokio::sync::Mutex<Option<Open>>,
    events: Mutex<Vec<DomainEvent>>,
    backend: DbBackend,
}

#[derive(Debug)]
struct Open {
    conn: DatabaseTransaction,
    /// This process's SQLite write turn, held exactly as long as the transaction (dropped
    /// after `conn`: fields drop in order).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

fn ended() -> DbErr {
    DbErr::Custom("the transaction has ended; a unit of work used its handle after returning".into())
}

impl Tx {
    fn new(conn: DatabaseTransaction, turn: Option<tokio::sync::OwnedMutexGuard<()>>) -> Self {
        let backend = conn.get_database_backend();
        Tx(Arc::new(TxInner {
            open: tokio::sync::Mutex::new(Some(Open { conn, _turn: turn })),
            events: Mutex::new(Vec::new()),
            backend,
        }))
    }

    /// Records a domain event, published once the transaction commits (and never if it rolls
    /// back).
    pub fn record(&self, event: DomainEvent) {
        self.0.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }

    /// Records several domain events.
    pub fn record_all(&self, events: impl IntoIterator<Item = DomainEvent>) {
        self.0.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(events);
    }

    fn take_events(&self) -> Vec<DomainEvent> {
        std::mem::take(&mut *self.0.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Ends the handle: what it held, for committing or rolling back.
    async fn take(&self) -> Option<Open> {
        self.0.open.lock().await.take()
    }

    async fn begin_nested(&self) -> Result<DatabaseTransaction, DbErr> {
        let open = self.0.open.lock().await;
        match &*open {
            Some(o) => o.conn.begin().await,
            None => Err(ended()),
        }
    }
}

#[sea_orm::prelude::async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DbBackend {
        self.0.backend
    }
    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match &*self.0.open.lock().await {
            Some(o) => o.conn.execute_raw(stmt).await,
            None => Err(ended()),
        }
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match &*self.0.open.lock().await {
            Some(o) => o.conn.execute_unprepared(sql).await,
            None => Err(ended()),
        }
    }
    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match &*self.0.open.lock().await {
            Some(o) => o.conn.query_one_raw(stmt).await,
            None => Err(ended()),
        }
    }
    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match &*self.0.open.lock().await {
            Some(o) => o.conn.query_all_raw(stmt).await,
            None => Err(ended()),
        }
    }
    fn support_returning(&self) -> bool {
        matches!(self.0.backend, DbBackend::Postgres | DbBackend::Sqlite)
    }
}

/// What a unit of work decided: commit and succeed, or commit and still fail.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// Commit, then return the value.
    Commit(T),
    /// Commit what was written (a counted failure, a revoked session), then return the error.
    CommitThenFail(E),
}

/// A committed transaction's result and the events it recorded, to be published (see
/// `App::write`): dropping it unpublished would lose them for this process's subscribers.
#[must_use = "publish the committed events (App::write does)"]
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub events: Vec<DomainEvent>,
}

/// What runs right after a commit, with the committed events, on the task that committed:
/// a request dropped meanwhile (its client gone) cannot skip it. `App::write` passes one that
/// hands the events to the process's subscribers.
pub type AfterCommit = Arc<dyn Fn(Vec<DomainEvent>) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// An error a unit of work can fail with: made from a [`DbError`], and telling whether the
/// transaction lost a conflict (so it is run again).
pub trait TxError: From<DbError> {
    /// True when the whole transaction may succeed if run again.
    fn is_conflict(&self) -> bool;
}

impl TxError for DbError {
    fn is_conflict(&self) -> bool {
        DbError::is_conflict(self)
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
    /// Who writes, as recorded with its events in the outbox (`App::write` sets its own).
    pub origin: Option<uuid::Uuid>,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self { isolation: None, read_only: false, attempts: 5, timeout: None, origin: None }
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

/// Runs `work` in a transaction on `db` as described in the module documentation, retrying
/// it when the transaction loses a conflict. `work` gets a fresh [`Tx`] each attempt.
pub async fn transaction<T, E, F, Fut>(db: &DatabaseConnection, opts: TxOptions, mut work: F) -> Result<Committed<T>, E>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: TxError,
{
    let done = transaction_outcome(db, opts, |tx| {
        let attempt = work(tx);
        async move { attempt.await.map(Outcome::Commit) }
    })
    .await?;
    match done.value {
        Ok(v) => Ok(Committed { value: v, events: done.events }),
        // Unreachable: the work above never asks to commit and fail.
        Err(e) => Err(e),
    }
}

/// [`transaction`] for work that may commit and still fail ([`Outcome::CommitThenFail`]):
/// the committed events come back either way, with the work's verdict as the value.
pub async fn transaction_outcome<T, E, F, Fut>(
    db: &DatabaseConnection,
    opts: TxOptions,
    work: F,
) -> Result<Committed<Result<T, E>>, E>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<Outcome<T, E>, E>>,
    E: TxError,
{
    transaction_with(db, opts, None, work).await
}

/// [`transaction_outcome`] with `after_commit` run on the committing task (see
/// [`AfterCommit`]); the events are also returned.
pub async fn transaction_with<T, E, F, Fut>(
    db: &DatabaseConnection,
    opts: TxOptions,
    after_commit: Option<AfterCommit>,
    mut work: F,
) -> Result<Committed<Result<T, E>>, E>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<Outcome<T, E>, E>>,
    E: TxError,
{
    let policy = backoff();
    let mut attempt = 1;
    // Told to the pools' guard if this future is dropped before the transaction has ended.
    let mut in_flight = InFlight(true);
    let outcome = loop {
        let result = async {
            let (turn, db) = sqlite_write_turn(db, &opts).await.map_err(E::from)?;
            let conn = begin(db.as_ref(), &opts).await.map_err(|e| E::from(DbError::from(e)))?;
            run(Tx::new(conn, turn), &opts, after_commit.as_ref(), &mut work).await
        }
        .await;
        match result {
            Err(e) if attempt < opts.attempts && e.is_conflict() => {
                metrics::counter!("lexiflow_db_transaction_retries_total").increment(1);
                tracing::debug!(attempt, "transaction lost a conflict; running it again");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                if e.is_conflict() {
                    metrics::counter!("lexiflow_db_transaction_conflicts_exhausted_total").increment(1);
                }
                break Err(e);
            }
            Ok(done) => break Ok(done),
        }
    };
    in_flight.0 = false;
    outcome
}

/// Armed while a transaction runs; dropped armed, the transaction was cancelled midway, and
/// the pools' release guard checks connections with PostgreSQL for a while (see
/// `db::connect_with`).
struct InFlight(bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0 {
            super::note_dropped_transaction();
        }
    }
}

/// Runs `work` as a nested transaction (`SAVEPOINT`) of `tx`: its writes and events are
/// released into `tx` when it returns `Ok`, rolled back alone when it returns `Err` or
/// panics. Not retried by itself: a conflict fails the outer transaction, which
/// [`transaction`] retries.
pub async fn savepoint<T, E, F, Fut>(tx: &Tx, work: F) -> Result<T, E>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<DbError>,
{
    let db_err = |e: DbErr| E::from(DbError::from(e));
    let nested = Tx::new(tx.begin_nested().await.map_err(db_err)?, None);
    let outcome = AssertUnwindSafe(work(nested.clone())).catch_unwind().await;
    let events = nested.take_events();
    let Some(open) = nested.take().await else { return Err(db_err(ended())) };
    match outcome {
        Ok(Ok(value)) => {
            open.conn.commit().await.map_err(db_err)?;
            tx.record_all(events);
            Ok(value)
        }
        Ok(Err(e)) => {
            if let Err(rb) = open.conn.rollback().await {
                tracing::warn!(error = %rb, "savepoint rollback failed");
            }
            Err(e)
        }
        Err(panic) => {
            if let Err(rb) = open.conn.rollback().await {
                tracing::warn!(error = %rb, "savepoint rollback after a panic failed");
            }
            std::panic::resume_unwind(panic)
        }
    }
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
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    db: DatabaseConnection,
}
type Writers = std::sync::Mutex<std::collections::HashMap<usize, Writer>>;
static SQLITE_WRITERS: std::sync::LazyLock<Writers> = std::sync::LazyLock::new(Default::default);

/// A connection to begin on: the caller's pool, or the SQLite file's writer.
enum Conn<'a> {
    Pool(&'a DatabaseConnection),
    Writer(DatabaseConnection),
}

impl AsRef<DatabaseConnection> for Conn<'_> {
    fn as_ref(&self) -> &DatabaseConnection {
        match self {
            Conn::Pool(db) => db,
            Conn::Writer(db) => db,
        }
    }
}

/// This process's turn to write to `db`'s SQLite file, and the connection to write on (see
/// the module documentation); none on PostgreSQL or for a read-only transaction.
async fn sqlite_write_turn<'a>(
    db: &'a DatabaseConnection,
    opts: &TxOptions,
) -> Result<(Option<tokio::sync::OwnedMutexGuard<()>>, Conn<'a>), DbError> {
    if db.get_database_backend() != DbBackend::Sqlite || opts.read_only {
        return Ok((None, Conn::Pool(db)));
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    // A private in-memory database exists only on the connection that opened it.
    if options.get_filename().as_os_str() == ":memory:" {
        return Ok((None, Conn::Pool(db)));
    }
    let key = std::sync::Arc::as_ptr(&options) as usize;
    let (gate, writer) = {
        let mut writers = SQLITE_WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current =
            writers.get(&key).filter(|w| w.of.upgrade().is_some_and(|o| std::sync::Arc::ptr_eq(&o, &options)));
        if current.is_none() {
            writers.retain(|_, w| w.of.strong_count() > 0);
            let pool = super::guard_sqlite_pool(sea_orm::sqlx::sqlite::SqlitePoolOptions::new())
                .max_connections(1)
                .min_connections(0)
                .idle_timeout(Duration::from_secs(30))
                .acquire_timeout(SQLITE_TURN_WAIT)
                .connect_lazy_with((*options).clone());
            let db = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            writers.insert(key, Writer { of: std::sync::Arc::downgrade(&options), gate: Default::default(), db });
        }
        let w = &writers[&key];
        (std::sync::Arc::clone(&w.gate), w.db.clone())
    };
    match tokio::time::timeout(SQLITE_TURN_WAIT, gate.lock_owned()).await {
        Ok(turn) => Ok((Some(turn), Conn::Writer(writer))),
        Err(_) => Err(DbError::Unavailable(DbErr::Custom("timed out waiting for the database write lock".into()))),
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

/// Runs the work once in `tx`, then writes its events to the outbox and commits, or rolls
/// back.
async fn run<T, E, F, Fut>(
    tx: Tx,
    opts: &TxOptions,
    after_commit: Option<&AfterCommit>,
    work: &mut F,
) -> Result<Committed<Result<T, E>>, E>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<Outcome<T, E>, E>>,
    E: TxError,
{
    let outcome = AssertUnwindSafe(work(tx.clone())).catch_unwind().await;
    let mut events = tx.take_events();
    let db_err = |e: DbErr| E::from(DbError::from(e));
    // From here on, copies of the handle the work kept are inert.
    let Some(open) = tx.take().await else {
        return Err(db_err(ended()));
    };
    match outcome {
        Ok(Ok(verdict)) => {
            let origin = opts.origin.unwrap_or_else(crate::events::outbox::anonymous_origin);
            let written = match crate::events::outbox::write(&open.conn, origin, &mut events).await {
                // Calendar copies of events someone may no longer see are taken out by a job
                // committed with the change that took their access away.
                Ok(()) => crate::calendar::sync::access_changed(&open.conn, &events).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                if let Err(rb) = finish(open, None).await {
                    tracing::warn!(error = %rb, "rollback failed; the connection is discarded");
                }
                return Err(db_err(e));
            }
            let published = events.clone();
            finish(open, Some((published, after_commit.cloned()))).await.map_err(db_err)?;
            let value = match verdict {
                Outcome::Commit(v) => Ok(v),
                Outcome::CommitThenFail(e) => Err(e),
            };
            Ok(Committed { value, events })
        }
        Ok(Err(e)) => {
            if let Err(rb) = finish(open, None).await {
                tracing::warn!(error = %rb, "rollback failed; the connection is discarded");
            }
            Err(e)
        }
        Err(panic) => {
            if let Err(rb) = finish(open, None).await {
                tracing::warn!(error = %rb, "rollback after a panic failed; the connection is discarded");
            }
            std::panic::resume_unwind(panic)
        }
    }
}

/// Commits (with `commit`: the events and what runs after) or rolls back, on a task of its
/// own: a request dropped meanwhile (its client gone, its deadline) can cut neither the
/// `COMMIT` or `ROLLBACK` short — cut short, the connection went back to the pool with the
/// transaction's end undecided — nor the post-commit step, so a write that committed always
/// reaches the subscribers (cache invalidation, session eviction). The SQLite write turn is
/// held until the transaction has ended.
async fn finish(open: Open, commit: Option<(Vec<DomainEvent>, Option<AfterCommit>)>) -> Result<(), DbErr> {
    // In the request's span, so what the after-commit step logs keeps its correlation id.
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Open { conn, _turn } = open;
            match commit {
                Some((events, after)) => {
                    conn.commit().await?;
                    drop(_turn);
                    if let Some(after) = after
                        && !events.is_empty()
                    {
                        after(events).await;
                    }
                    Ok(())
                }
                None => conn.rollback().await,
            }
        },
        span,
    ));
    match task.await {
        Ok(ended) => ended,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DbErr::Custom(format!("the transaction's end was cancelled: {e}"))),
    }
}
