//! A worker process for the queue's crash test (`tests/crash.rs`), not for production: it
//! runs jobs of type `crash.step`, recording each start and finish in the table
//! `crash_runs`, and with `HANG=1` never finishes — so the test can SIGKILL it mid-job and
//! check that another worker picks the job up after its lease and completes it once.
//!
//! Env: `DATABASE_URL`, `SCHEMA` (PostgreSQL search path), `WORKER_ID`, `HANG`.

#![allow(clippy::print_stdout, clippy::expect_used)]

use std::time::Duration;

use lexiflow_queue::Worker;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio_util::sync::CancellationToken;

async fn record(db: &DatabaseConnection, job: i64, phase: &str, worker: &str) -> Result<(), sea_orm::DbErr> {
    let sql = format!("INSERT INTO crash_runs (job_id, phase, worker) VALUES ({job}, '{phase}', '{worker}')");
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql)).await.map(|_| ())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(4).sqlx_logging(false);
    if let Ok(schema) = std::env::var("SCHEMA") {
        opts.set_schema_search_path(schema);
    }
    let db = Database::connect(opts).await.expect("connect");
    let id = std::env::var("WORKER_ID").unwrap_or_else(|_| "crash".into());
    let hang = std::env::var("HANG").is_ok_and(|v| v == "1");
    let (db2, id2) = (db.clone(), id.clone());
    let worker = Worker::builder(db)
        .id(id.clone())
        .queue("default", 1)
        .lease(Duration::from_secs(2))
        .maintenance_interval(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(100))
        .handler("crash.step", move |job| {
            let (db, id) = (db2.clone(), id2.clone());
            async move {
                record(&db, job.id.0, "started", &id).await.map_err(|e| e.to_string())?;
                if hang {
                    // Killed here by the test, mid-job.
                    std::future::pending::<()>().await;
                }
                record(&db, job.id.0, "finished", &id).await.map_err(|e| e.to_string())
            }
        })
        .build();
    println!("worker {id} ready");
    worker.run(CancellationToken::new()).await;
}
