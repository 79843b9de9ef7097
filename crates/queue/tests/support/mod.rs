//! Test harness: a fresh SQLite file or a fresh PostgreSQL schema per test, migrated with
//! LexiFlow's migrations, and a macro running each test on both backends.
//!
//! PostgreSQL tests use `LEXIFLOW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable they are skipped with a
//! note on stderr, unless `LEXIFLOW_REQUIRE_POSTGRES=1`, which turns the skip into a failure.

// Harness code is test code: a failed set-up should panic the test that needed it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lexiflow_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("LEXIFLOW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static SKIP_NOTED: AtomicBool = AtomicBool::new(false);

/// Whether PostgreSQL tests should run; panics when required but unreachable.
pub fn postgres_available() -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    let ok = *REACHABLE.get_or_init(|| {
        let url = pg_url();
        let rest = url.split("@").last().unwrap_or("127.0.0.1:5432");
        let hostport = rest.split('/').next().unwrap_or("127.0.0.1:5432");
        let hostport = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:5432") };
        hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    });
    if !ok {
        if std::env::var("LEXIFLOW_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("LEXIFLOW_REQUIRE_POSTGRES=1 but PostgreSQL at {} is unreachable", pg_url());
        }
        if !SKIP_NOTED.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: PostgreSQL at {} is unreachable; the postgres:: tests are SKIPPED (set LEXIFLOW_REQUIRE_POSTGRES=1 to fail instead)",
                pg_url()
            );
        }
    }
    ok
}

/// One test's database: connect as many "instances" to it as the test needs.
pub struct TestDb {
    pub backend: Backend,
    url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new(backend: Backend) -> Self {
        let db = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("queue.db").display());
                TestDb { backend, url, schema: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let name = format!("q_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(pg_url()).await.unwrap();
                admin.execute_unprepared(&format!("CREATE SCHEMA {name}")).await.unwrap();
                admin.close().await.unwrap();
                TestDb { backend, url: pg_url(), schema: Some(name), _dir: None }
            }
        };
        let conn = db.connect().await;
        Migrator::up(&conn, None).await.unwrap();
        conn.close().await.unwrap();
        db
    }

    /// The database URL (for child processes).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL schema on the search path, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// A new pool on this database, as a separate instance would have.
    pub async fn connect(&self) -> DatabaseConnection {
        let mut opts = ConnectOptions::new(self.url.clone());
        opts.max_connections(6).min_connections(1).acquire_timeout(Duration::from_secs(10)).sqlx_logging(false);
        if let Some(schema) = &self.schema {
            opts.set_schema_search_path(schema.clone());
        } else {
            opts.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .create_if_missing(true)
            });
        }
        Database::connect(opts).await.unwrap()
    }

    /// Drops the PostgreSQL schema (the SQLite file goes with its temp dir).
    pub async fn drop_schema(self) {
        if let Some(schema) = &self.schema {
            let admin = Database::connect(pg_url()).await.unwrap();
            admin.execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
            admin.close().await.unwrap();
        }
    }
}

/// Runs each listed `async fn name(b: Backend)` once per backend, as `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::support::postgres_available() {
                        super::$name($crate::support::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
