//! The transaction helper: commit, rollback on error and panic, savepoints, and retry of
//! transactions that lose a conflict — on both databases.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use lexiflow::{
    db::{self, TxOptions},
    http::error::{ApiError, ErrorCode},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    work_commits_on_ok_and_rolls_back_on_error_or_panic,
    a_failed_savepoint_rolls_back_only_itself,
    concurrent_increments_each_apply_exactly_once,
);

async fn exec(db: &impl ConnectionTrait, sql: &str) -> Result<(), sea_orm::DbErr> {
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql)).await.map(|_| ())
}

async fn values(db: &DatabaseConnection) -> Vec<(i64, i64)> {
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT id, n FROM tx_probe ORDER BY id"))
        .await
        .unwrap();
    rows.iter().map(|r| (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap())).collect()
}

async fn probe_table(t: &TestApp) -> DatabaseConnection {
    let db = t.app.db.clone();
    let int = if db.get_database_backend() == DbBackend::Postgres { "BIGINT" } else { "INTEGER" };
    exec(&db, &format!("CREATE TABLE tx_probe (id {int} PRIMARY KEY, n {int} NOT NULL)")).await.unwrap();
    exec(&db, "INSERT INTO tx_probe (id, n) VALUES (1, 0), (2, 0)").await.unwrap();
    db
}

fn bump(id: i64) -> String {
    format!("UPDATE tx_probe SET n = n + 1 WHERE id = {id}")
}

async fn work_commits_on_ok_and_rolls_back_on_error_or_panic(b: Backend) {
    let t = TestApp::new(b).await;
    let db = probe_table(&t).await;

    let done = db::transaction(&db, TxOptions::write(), |tx| async move {
        exec(&tx, &bump(1)).await?;
        Ok::<_, ApiError>(())
    })
    .await
    .unwrap();
    assert!(done.events.is_empty(), "no events were recorded");
    assert_eq!(values(&db).await, vec![(1, 1), (2, 0)]);

    let err = db::transaction(&db, TxOptions::write(), |tx| async move {
        exec(&tx, &bump(1)).await?;
        Err::<(), _>(ApiError::field("x", "refused after writing"))
    })
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed);
    assert_eq!(values(&db).await, vec![(1, 1), (2, 0)], "the error rolled the write back");

    let db2 = db.clone();
    let panicked = tokio::spawn(async move {
        db::transaction(&db2, TxOptions::write(), |tx| async move {
            exec(&tx, &bump(2)).await?;
            let fail = true;
            if fail {
                panic!("the work panics after writing");
            }
            Ok::<_, ApiError>(())
        })
        .await
    })
    .await;
    assert!(panicked.is_err_and(|e| e.is_panic()), "the panic carries on");
    assert_eq!(values(&db).await, vec![(1, 1), (2, 0)], "the panic rolled the write back");
}

async fn a_failed_savepoint_rolls_back_only_itself(b: Backend) {
    let t = TestApp::new(b).await;
    let db = probe_table(&t).await;
    let event = |id: &str| {
        use lexiflow::events::{DomainEvent, EventType};
        DomainEvent::new(
            EventType::CaseUpdated,
            lexiflow::ids::FirmId(uuid::Uuid::nil()),
            &lexiflow::audit::Actor::system(),
            id,
        )
    };
    let done = db::transaction(&db, TxOptions::write(), |tx| async move {
        exec(&tx, &bump(1)).await?;
        let inner = db::savepoint(&tx, |sp| async move {
            exec(&sp, &bump(2)).await?;
            sp.record(event("undone"));
            Err::<(), _>(ApiError::field("inner", "fails"))
        })
        .await;
        assert!(inner.is_err());
        db::savepoint(&tx, |sp| async move {
            exec(&sp, &bump(2)).await?;
            exec(&sp, &bump(2)).await?;
            sp.record(event("kept"));
            Ok::<_, ApiError>(())
        })
        .await?;
        Ok::<_, ApiError>(())
    })
    .await
    .unwrap();
    assert_eq!(values(&db).await, vec![(1, 1), (2, 2)], "outer and second savepoint kept, first savepoint undone");
    let kept: Vec<&str> = done.events.iter().map(|e| e.entity_id.as_str()).collect();
    assert_eq!(kept, ["kept"], "a rolled-back savepoint's events go with it");
}

/// Sixteen transactions increment the same rows at once; every one is applied exactly once,
/// whatever the database made some of them retry.
async fn concurrent_increments_each_apply_exactly_once(b: Backend) {
    let t = TestApp::new(b).await;
    let db = probe_table(&t).await;
    let runs = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (db, runs) = (db.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            db::transaction(&db, TxOptions::serializable().attempts(50), |tx| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Read, think, write: under SERIALIZABLE the losers fail and are re-run.
                    let r = tx
                        .query_one_raw(Statement::from_string(
                            tx.get_database_backend(),
                            "SELECT n FROM tx_probe WHERE id = 1",
                        ))
                        .await?
                        .unwrap();
                    let n: i64 = r.try_get_by_index(0).unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    exec(&tx, &format!("UPDATE tx_probe SET n = {} WHERE id = 1", n + 1)).await?;
                    exec(&tx, &bump(2)).await?;
                    Ok::<_, ApiError>(())
                }
            })
            .await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap().events.is_empty(), "no events were recorded");
    }
    assert_eq!(values(&db).await, vec![(1, 16), (2, 16)]);
    assert!(runs.load(Ordering::SeqCst) >= 16);
}

/// On PostgreSQL, two transactions that lock the same two rows in opposite order deadlock;
/// the one the server aborts (40P01) is run again, and both end up applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_deadlock_is_retried() {
    if !crate::support::postgres_available().await {
        return;
    }
    let t = TestApp::new(Backend::Postgres).await;
    let db = probe_table(&t).await;
    let runs = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for (first, second) in [(1, 2), (2, 1)] {
        let (db, runs, barrier) = (db.clone(), runs.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            db::transaction(&db, TxOptions::write().attempts(5), |tx| {
                let (runs, barrier) = (runs.clone(), barrier.clone());
                async move {
                    let attempt = runs.fetch_add(1, Ordering::SeqCst);
                    exec(&tx, &bump(first)).await?;
                    if attempt < 2 {
                        // Both hold their first row before either asks for its second.
                        barrier.wait().await;
                    }
                    exec(&tx, &bump(second)).await?;
                    Ok::<_, ApiError>(())
                }
            })
            .await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap().events.is_empty(), "no events were recorded");
    }
    assert_eq!(values(&db).await, vec![(1, 2), (2, 2)], "each transaction applied exactly once");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one of the two was run again after the deadlock");
}

/// On SQLite, a writer that cannot get the write lock within the lock timeout (SQLITE_BUSY)
/// is run again rather than failed. The lock is held by a writer outside the in-process gate
/// (as another process would).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_busy_is_retried() {
    let t = TestApp::with(Backend::Sqlite, |c| c.database.lock_timeout = Duration::from_millis(1)).await;
    let db = probe_table(&t).await;
    let holder = sea_orm::TransactionTrait::begin_with_options(
        &db,
        sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    exec(&holder, &bump(2)).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let started = std::time::Instant::now();
    let writer = {
        let (db, runs) = (db.clone(), runs.clone());
        tokio::spawn(async move {
            db::transaction(&db, TxOptions::write().attempts(500), |tx| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    exec(&tx, &bump(1)).await?;
                    Ok::<_, ApiError>(())
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!writer.is_finished(), "the writer got past a held write lock");
    holder.commit().await.unwrap();
    assert!(writer.await.unwrap().unwrap().events.is_empty(), "no events were recorded");
    // It may wait only 1 ms for the lock, which was held 150 ms: without the retry it would
    // have failed with SQLITE_BUSY. It failed at BEGIN IMMEDIATE, before its work ran, so the
    // work ran once.
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(values(&db).await, vec![(1, 1), (2, 1)]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// On SQLite, this process's writers take turns at the in-process gate instead of meeting at
/// SQLite's lock: with a 1 ms lock timeout and no retries, 16 concurrent writers that each
/// hold the lock 5 ms all succeed (without the gate, most would fail with SQLITE_BUSY).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_writers_of_one_process_take_turns() {
    let t = TestApp::with(Backend::Sqlite, |c| c.database.lock_timeout = Duration::from_millis(1)).await;
    let db = probe_table(&t).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db::transaction(&db, TxOptions::write().attempts(1), |tx| async move {
                exec(&tx, &bump(1)).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, ApiError>(())
            })
            .await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap().events.is_empty(), "no events were recorded");
    }
    assert_eq!(values(&db).await, vec![(1, 16), (2, 0)]);
}
