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
    } else {
        if let Some(path) = sqlite_path(&url)
            && let Some(dir) = std::path::Path::new(&path).parent()
        {
            std::fs::create_dir_all(dir).map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
        }
        let busy_timeout = cfg.lock_timeout;
        // Negative: a size in KiB rather than in pages.
        let cache_size = format!("-{}", u64::from(cfg.sqlite_cache_mib) * 1024);
        opts.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(if relaxed_durability { SqliteSynchronous::Normal } else { SqliteSynchronous::Full })
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                .pragma("cache_size", cache_size.clone())
                .create_if_missing(true)
        });
    }
    sea_orm::Database::connect(opts).await
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
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
