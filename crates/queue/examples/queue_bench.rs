//! The queue benchmark (run by `bench/queue.sh`): enqueue N no-op jobs in bulk, then process
//! them with one worker at concurrency C, on a fresh SQLite file or PostgreSQL schema.
//!
//! Env: `DATABASE_URL` (`sqlite` for a temporary file, or a PostgreSQL URL), `N` (10000),
//! `BATCH` (1000), `CONCURRENCY` (10).

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lexiflow_migration::{Migrator, MigratorTrait};
use lexiflow_queue::{NewJob, Worker, admin, enqueue_many};
use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env_num("N", 10_000);
    let batch = env_num("BATCH", 1_000);
    let concurrency = env_num("CONCURRENCY", 10);
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite".into());
    let dir = tempfile::tempdir().unwrap();
    let (url, schema, backend) = if url == "sqlite" {
        (format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display()), None, "sqlite")
    } else {
        let schema = format!("qbench_{}", uuid::Uuid::new_v4().simple());
        let admin_db = Database::connect(url.clone()).await.unwrap();
        admin_db.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        admin_db.close().await.unwrap();
        (url, Some(schema), "postgres")
    };
    let mut opts = ConnectOptions::new(url.clone());
    opts.max_connections(16).sqlx_logging(false);
    if let Some(s) = &schema {
        opts.set_schema_search_path(s.clone());
    } else {
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        });
    }
    let db = Database::connect(opts.clone()).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    // The worker's bookkeeping pool, as `lexiflow` opens it (`db::connect_for_queue`):
    // commits that do not wait for the disk, safe under at-least-once delivery, and at most
    // 8 connections (the application pool's default 16, clamped to 2..=8).
    let mut relaxed = opts;
    relaxed.max_connections(8);
    if schema.is_some() {
        relaxed.map_sqlx_postgres_opts(|o| o.options([("synchronous_commit", "off")]));
    } else {
        relaxed.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
        });
    }
    let worker_db = Database::connect(relaxed).await.unwrap();

    let started = Instant::now();
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let k = batch.min(left);
        let jobs: Vec<NewJob> = (0..k).map(|j| NewJob::new("noop", serde_json::json!({ "i": i + j }))).collect();
        enqueue_many(&db, jobs).await.unwrap();
        left -= k;
        i += k;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();

    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let worker = Worker::builder(worker_db)
        .queue("default", concurrency)
        .poll_interval(Duration::from_millis(50))
        .handler("noop", move |_job| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), String>(()) }
        })
        .build();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(worker.run(stop.clone()));
    // Done when every job is recorded completed, not merely handled.
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if done.load(Ordering::Relaxed) >= n {
            let s = admin::stats(&db, chrono::Utc::now()).await.unwrap();
            if s.iter().map(|q| q.counts.completed).sum::<u64>() >= n as u64 {
                break;
            }
        }
    }
    let process_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    run.await.unwrap();
    println!(
        "lexiflow-queue {backend} N={n} enqueue={:.0} jobs/s (bulk {batch}) process={:.0} jobs/s (1 worker, concurrency {concurrency})",
        n as f64 / enqueue_secs,
        n as f64 / process_secs
    );
    if let Some(s) = schema {
        db.execute_unprepared(&format!("DROP SCHEMA {s} CASCADE")).await.unwrap();
    }
}
