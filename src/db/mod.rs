//! The data layer: one SeaORM connection over SQLite or PostgreSQL, migrations, write
//! transactions ([`tx`]), bulk statements ([`bulk`]), and its own error ([`DbError`]), which
//! the HTTP side maps to statuses.
//!
//! SQLite runs in WAL mode with a busy timeout and foreign keys on; write transactions start
//! with `BEGIN IMMEDIATE` so a read-then-write transaction takes the write lock up front
//! instead of failing with a busy snapshot when another writer commits in between.

pub mod bulk;
pub mod error;
pub mod tx;

pub use error::DbError;
pub use tx::{
    AfterCommit, Committed, Outcome, Tx, TxError, TxOptions, savepoint, transaction, transaction_outcome,
    transaction_with,
};

use std::time::Duration;

use lexiflow_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbErr,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

/// Opens the pool. The SQLite file's directory is created when missing.
pub async fn connect(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    connect_with(cfg, false).await
}

/// A small pool for the job queue's own bookkeeping (claiming, completing, leases), whose
/// commits do not wait for the disk: PostgreSQL `synchronous_commit = off`, SQLite
/// `synchronous = NORMAL`. A crash can lose the last moments of such commits — a claim or a
/// completion — and the job then simply runs again, which the queue's at-least-once contract
/// (idempotent handlers) already allows; a commit is still lost whole or kept whole. Never
/// use it for domain data: handlers write through the application's pool.
pub async fn connect_for_queue(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let mut queue_cfg = cfg.clone();
    queue_cfg.max_connections = cfg.max_connections.clamp(2, 8);
    connect_with(&queue_cfg, true).await
}

async fn connect_with(cfg: &DatabaseConfig, relaxed_durability: bool) -> Result<DatabaseConnection, DbErr> {
    let url = cfg.url.expose_secret().to_owned();
    let mut opts = ConnectOptions::new(url.clone());
    opts.max_connections(cfg.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if cfg.is_postgres() {
        if let Some(schema) = &cfg.schema {
            opts.set_schema_search_path(schema.clone());
        }
        opts.set_application_name("lexiflow");
        let statement_timeout = format!("{}ms", cfg.statement_timeout.as_millis());
        let lock_timeout = format!("{}ms", cfg.lock_timeout.as_millis());
        opts.map_sqlx_postgres_opts(move |o| {
            let o =
                o.options([("statement_timeout", statement_timeout.as_str()), ("lock_timeout", lock_timeout.as_str())]);
            if relaxed_durability { o.options([("synchronous_commit", "off")]) } else { o }
        });
        opts.map_sqlx_postgres_pool_opts(|o| o.after_release(|conn, _| Box::pin(postgres_released_idle(conn))));
    } else {
        if let Some(path) = sqlite_path(&url)
            && let Some(dir) = std::path::Path::new(&path).parent()
        {
            std::fs::create_dir_all(dir).map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
        }
        let busy_timeout = cfg.lock_timeout;
        // The budget is the process's, not each connection's: any one connection (the
        // writer during an import) may fill all of it, and SQLite's soft heap limit, which
        // is process-wide, makes every connection recycle its least recently used pages
        // instead of allocating once the process's SQLite memory reaches it (see
        // OPERATIONS "Capacity notes"). Negative cache size: KiB rather than pages.
        let budget_kib = u64::from(cfg.sqlite_cache_mib) * 1024;
        let cache_size = format!("-{budget_kib}");
        let soft_heap_limit = (budget_kib * 1024).to_string();
        opts.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(if relaxed_durability { SqliteSynchronous::Normal } else { SqliteSynchronous::Full })
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                .pragma("cache_size", cache_size.clone())
                .pragma("soft_heap_limit", soft_heap_limit.clone())
                .create_if_missing(true)
        });
        opts.map_sqlx_sqlite_pool_opts(guard_sqlite_pool);
    }
    sea_orm::Database::connect(opts).await
}

/// How long after a transaction was dropped mid-flight every PostgreSQL connection released
/// to a pool is checked (see [`postgres_released_idle`]).
const CHECK_RELEASES_FOR: Duration = Duration::from_secs(2);

/// When [`note_dropped_transaction`] was last called: milliseconds since `EPOCH`, plus one
/// (zero: never).
static LAST_DROPPED_TRANSACTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

/// Tells the pools' guard that a transaction was dropped before it ended (its request was
/// cancelled): connections released from now on are checked for a while.
pub(crate) fn note_dropped_transaction() {
    let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
    LAST_DROPPED_TRANSACTION.store(now.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
}

fn transaction_dropped_lately() -> bool {
    match LAST_DROPPED_TRANSACTION.load(std::sync::atomic::Ordering::Relaxed) {
        0 => false,
        at => EPOCH.elapsed().as_millis() < u128::from(at) + CHECK_RELEASES_FOR.as_millis(),
    }
}

/// The pool's guard against reusing a connection left inside a transaction: a request
/// dropped at the wrong moment (a client that went away) could leave its connection in a
/// transaction nothing would end — sqlx 0.9.0 did so when the drop came during `BEGIN`
/// (sqlx issues 4385 and 4393) — and the next borrower's statements then ran inside it:
/// autocommit writes lost with it, or every statement failing with 25P02 after an error.
///
/// On release, after any rollback queued by the dropped transaction has run, PostgreSQL
/// itself is asked whether the session is idle; a connection that is not (or that fails to
/// answer, as in an aborted transaction) is closed instead of being pooled. The question is
/// one round trip in the simple query protocol: the first statement of an implicit
/// transaction starts it, so the two timestamps are equal exactly when no transaction was
/// open before. Asked on every release it cost about 9% of `POST /cases` throughput (3,725
/// against 4,088 per second, medians of 12 alternating in-process rounds), so it is asked
/// only within [`CHECK_RELEASES_FOR`] of a transaction dropped mid-flight
/// ([`note_dropped_transaction`], called by [`transaction`]), which is when such a
/// connection can come back; a transaction still counted by sqlx is always refused.
async fn postgres_released_idle(conn: &mut sea_orm::sqlx::PgConnection) -> Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::{Connection, Row};
    if !conn.is_in_transaction() && !transaction_dropped_lately() {
        return Ok(true);
    }
    let idle = !conn.is_in_transaction()
        && sea_orm::sqlx::raw_sql("SELECT transaction_timestamp() = statement_timestamp()")
            .fetch_one(&mut *conn)
            .await?
            .try_get::<bool, _>(0)?;
    if !idle {
        metrics::counter!("lexiflow_db_connections_discarded_in_transaction_total").increment(1);
        tracing::warn!("a database connection came back to the pool inside a transaction; closed, not reused");
    }
    Ok(idle)
}

/// The same guard for a SQLite pool (the application's, and the writer of each file, see
/// [`tx`]): a connection whose transaction is still open once the rollback queued by a
/// dropped transaction has run is closed. SQLite transactions are tracked by sqlx's worker
/// thread, which runs each command to its end even when the caller is gone, so its count is
/// the connection's true state; the ping only waits for queued commands, and only when a
/// transaction was still counted.
pub(crate) fn guard_sqlite_pool(
    o: sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite>,
) -> sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite> {
    use sea_orm::sqlx::Connection;
    o.after_release(|conn, _| {
        Box::pin(async move {
            if !conn.is_in_transaction() {
                return Ok(true);
            }
            conn.ping().await?;
            let idle = !conn.is_in_transaction();
            if !idle {
                metrics::counter!("lexiflow_db_connections_discarded_in_transaction_total").increment(1);
                tracing::warn!("a database connection came back to the pool inside a transaction; closed, not reused");
            }
            Ok(idle)
        })
    })
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Namespace of the PostgreSQL advisory lock that migrations take ("LF").
const MIGRATION_LOCK: i32 = 0x4C46;

/// Applies every pending migration. On PostgreSQL several instances may start at once against
/// a new database: each takes a session advisory lock (keyed by the schema) on a connection of
/// its own, outside the pool (a pool of one must still be free to migrate), held until done;
/// one migrates and the others wait, then find nothing left to apply. SQLite is one file behind
/// one process's write lock.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::sqlx::Connection;
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    let schema: String = db
        .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SELECT current_schema()::text"))
        .await?
        .and_then(|r| r.try_get_by_index::<String>(0).ok())
        .unwrap_or_else(|| "public".into());
    let sql_err = |e: sea_orm::sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()));
    let options = db.get_postgres_connection_pool().connect_options();
    let mut held = sea_orm::sqlx::postgres::PgConnection::connect_with(&options).await.map_err(sql_err)?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(MIGRATION_LOCK)
        .bind(&schema)
        .execute(&mut held)
        .await
        .map_err(sql_err)?;
    let result = Migrator::up(db, None).await;
    // Closing the connection releases the session lock whatever happened above.
    if let Err(e) = held.close().await {
        tracing::warn!(error = %e, "closing the migration lock's connection failed; the server ends its session");
    }
    result
}

/// Runs `SELECT 1` with a timeout: the readiness probe's database check.
pub async fn ping(db: &DatabaseConnection, timeout: Duration) -> Result<(), String> {
    let stmt = sea_orm::Statement::from_string(db.get_database_backend(), "SELECT 1");
    match tokio::time::timeout(timeout, db.execute_raw(stmt)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            // The detail can name hosts and users: it goes to the log, not to the public probe.
            tracing::warn!(error = %e, "database health check failed");
            Err("the database did not answer the check query".into())
        }
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// `s` as a LIKE pattern that matches it literally: `%`, `_` and `\` escaped with `\` (use
/// with `LikeExpr::escape('\\')`), so a user's text cannot widen the match.
pub fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A statement written once with `?` placeholders, for both databases: on PostgreSQL each `?`
/// becomes `$1`, `$2`, … in order. For plain SQL without `?` inside string literals.
pub fn portable(backend: sea_orm::DbBackend, sql: &str, values: Vec<sea_orm::Value>) -> sea_orm::Statement {
    let sql = if backend == sea_orm::DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
}
