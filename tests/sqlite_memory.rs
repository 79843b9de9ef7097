//! SQLite's memory is one budget for the process: every connection may cache up to it, and
//! the process-wide soft heap limit equals it, so connections recycle pages once together
//! they hold that much.
//!
//! A test binary of its own: the soft heap limit is global to the process, and any other
//! test opening a SQLite pool at the same moment would set it to its own budget.

use std::collections::HashMap;

use lexiflow::{
    app::App,
    config::{Config, FileConfig},
};
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test]
async fn sqlite_memory_is_one_budget_for_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = [
        ("APP_ENV", "test".to_owned()),
        ("LEXIFLOW_DATA_DIR", dir.path().display().to_string()),
        ("JWT_SECRET", "test-secret-that-is-long-enough-for-hs256-0123456789".to_owned()),
        ("DB_SQLITE_CACHE_MIB", "3".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::from_sources(FileConfig::default(), &env).unwrap();
    let app = App::build(config).await.unwrap();
    let one = |sql: &'static str| {
        let db = app.db.clone();
        async move {
            let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    assert_eq!(one("PRAGMA soft_heap_limit").await, 3 * 1024 * 1024);
    assert_eq!(one("PRAGMA cache_size").await, -3 * 1024, "negative: KiB");
}
