//! A worker killed with SIGKILL mid-job (a real child process): the job is reclaimed after
//! its lease, run by another worker, and completed exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use lexiflow_queue::{JobState, NewJob, admin, enqueue};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use support::{Backend, TestDb, eventually};

crate::on_both_backends!(a_worker_killed_mid_job_loses_nothing_and_runs_nothing_twice);

fn spawn(t: &TestDb, id: &str, hang: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_queue-crash-worker"));
    cmd.env("DATABASE_URL", t.url()).env("WORKER_ID", id).env("HANG", if hang { "1" } else { "0" });
    if let Some(s) = t.schema() {
        cmd.env("SCHEMA", s);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

async fn phases(db: &DatabaseConnection) -> Vec<(String, String)> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT phase, worker FROM crash_runs ORDER BY phase, worker",
        ))
        .await
        .unwrap();
    rows.iter().map(|r| (r.try_get("", "phase").unwrap(), r.try_get("", "worker").unwrap())).collect()
}

async fn a_worker_killed_mid_job_loses_nothing_and_runs_nothing_twice(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    db.execute_unprepared(
        "CREATE TABLE crash_runs (job_id BIGINT NOT NULL, phase TEXT NOT NULL, worker TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let id = enqueue(&db, NewJob::new("crash.step", json!({})).max_attempts(5)).await.unwrap().unwrap();

    let mut doomed = spawn(&t, "doomed", true);
    let started = eventually(Duration::from_secs(30), || async { !phases(&db).await.is_empty() }).await;
    assert!(started, "the first worker never started the job");
    // The process dies mid-job: no cleanup, no lease release.
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    assert_eq!(admin::get(&db, id, chrono::Utc::now()).await.unwrap().unwrap().state, JobState::Active);

    let mut rescuer = spawn(&t, "rescuer", false);
    let done = eventually(Duration::from_secs(30), || async {
        admin::get(&db, id, chrono::Utc::now()).await.unwrap().unwrap().state == JobState::Completed
    })
    .await;
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();
    assert!(done, "the job was not completed after the lease expired");
    let job = admin::get(&db, id, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2, "one attempt lost with the killed worker, one completed");
    assert_eq!(
        phases(&db).await,
        [
            ("finished".to_owned(), "rescuer".to_owned()),
            ("started".to_owned(), "doomed".to_owned()),
            ("started".to_owned(), "rescuer".to_owned()),
        ]
    );
    t.drop_schema().await;
}
