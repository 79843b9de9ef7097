//! The queue's behaviour on SQLite and PostgreSQL: ordering, delays, retries and dead
//! letters, unique keys, transactional enqueue, leases, workers, pause and cron.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use lexiflow_queue::{
    Backoff, JobState, NewJob, Priority, QueueError, Schedule, Worker, admin, cron, enqueue, enqueue_many, lease,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde_json::json;
use support::{Backend, TestDb, eventually};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

async fn state_of(db: &DatabaseConnection, id: lexiflow_queue::JobId) -> JobState {
    admin::get(db, id, Utc::now()).await.unwrap().unwrap().state
}

async fn claim_one(db: &DatabaseConnection, queue: &str, now: DateTime<Utc>) -> Option<lease::Claimed> {
    lease::claim(db, queue, 1, LEASE, "test", now).await.unwrap().into_iter().next()
}

async fn critical_runs_first_then_fifo(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let mut ids = HashMap::new();
    for (name, p) in [
        ("low", Priority::Low),
        ("normal-1", Priority::Normal),
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("normal-2", Priority::Normal),
    ] {
        let id = enqueue(&db, NewJob::new("t", json!({ "name": name })).priority(p)).await.unwrap().unwrap();
        ids.insert(id, name);
    }
    let later = Utc::now() + secs(1);
    let mut order = Vec::new();
    while let Some(c) = claim_one(&db, "default", later).await {
        order.push(ids[&c.job.id]);
    }
    assert_eq!(order, ["critical", "high", "normal-1", "normal-2", "low"]);
    // A batch claim hands jobs out in the same order.
    for p in [Priority::Low, Priority::Critical, Priority::Normal] {
        enqueue(&db, NewJob::new("t", json!({})).priority(p).queue("batch")).await.unwrap();
    }
    let batch = lease::claim(&db, "batch", 10, LEASE, "test", later).await.unwrap();
    let prios: Vec<Priority> = batch.iter().map(|c| c.job.priority).collect();
    assert_eq!(prios, [Priority::Critical, Priority::Normal, Priority::Low]);
    t.drop_schema().await;
}

async fn delayed_job_waits_for_its_time(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let id = enqueue(&db, NewJob::new("t", json!({})).delay(Duration::from_secs(60))).await.unwrap().unwrap();
    let now = Utc::now();
    assert_eq!(state_of(&db, id).await, JobState::Delayed);
    assert!(claim_one(&db, "default", now + secs(30)).await.is_none(), "claimed before its run_at");
    let stats = admin::stats(&db, now).await.unwrap();
    assert_eq!(stats[0].counts.delayed, 1);
    assert_eq!(stats[0].counts.waiting, 0);
    let c = claim_one(&db, "default", now + secs(61)).await.expect("due after its delay");
    assert_eq!(c.job.id, id);
    t.drop_schema().await;
}

async fn retries_follow_the_backoff_schedule_then_die(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let backoff = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(25));
    let id = enqueue(&db, NewJob::new("t", json!({})).max_attempts(4).backoff(backoff)).await.unwrap().unwrap();
    let mut now = Utc::now() + secs(1);
    for attempt in 1..=3u32 {
        let c = claim_one(&db, "default", now).await.expect("due");
        assert_eq!(c.job.attempts, attempt);
        let state = lease::fail(&db, &c.lease, &format!("boom {attempt}"), now).await.unwrap();
        assert_eq!(state, JobState::Failed);
        let job = admin::get(&db, id, now).await.unwrap().unwrap();
        let ceiling = chrono::Duration::from_std(backoff.ceiling(attempt)).unwrap();
        let wait = job.run_at - now;
        assert!(wait >= chrono::Duration::zero() && wait <= ceiling, "attempt {attempt}: waited {wait} > {ceiling}");
        // Not claimable before its retry time (unless the jitter chose zero).
        if wait > chrono::Duration::milliseconds(1) {
            assert!(claim_one(&db, "default", now).await.is_none());
        }
        now = job.run_at + chrono::Duration::milliseconds(1);
    }
    assert_eq!(backoff.ceiling(3), Duration::from_secs(25), "the cap applies from the third retry");
    let c = claim_one(&db, "default", now).await.unwrap();
    assert_eq!(lease::fail(&db, &c.lease, "boom 4", now).await.unwrap(), JobState::Dead);
    let dead = admin::get(&db, id, now).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("boom 4"));
    let history: Vec<(u32, &str)> = dead.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect();
    assert_eq!(history, [(1, "boom 1"), (2, "boom 2"), (3, "boom 3"), (4, "boom 4")]);
    assert!(claim_one(&db, "default", now + secs(3600)).await.is_none(), "dead jobs are not retried on their own");
    let listed = admin::list(&db, "default", JobState::Dead, 10, 0, now).await.unwrap();
    assert_eq!(listed.len(), 1);

    // Retry from the dead-letter state: a fresh set of attempts, history kept.
    assert!(admin::retry(&db, id, now).await.unwrap());
    let c = claim_one(&db, "default", now + secs(1)).await.expect("retried job is due");
    assert_eq!(c.job.attempts, 1);
    assert_eq!(c.job.errors.len(), 4);
    lease::complete(&db, &c.lease, now).await.unwrap();
    assert_eq!(state_of(&db, id).await, JobState::Completed);
    assert!(!admin::retry(&db, id, now).await.unwrap(), "only dead or failed jobs can be retried");
    t.drop_schema().await;
}

async fn unique_key_dedups_while_pending(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let job = || NewJob::new("sync", json!({})).unique_key("calendar:42");
    let first = enqueue(&db, job()).await.unwrap();
    assert!(first.is_some());
    assert_eq!(enqueue(&db, job()).await.unwrap(), None, "second enqueue with the same key must do nothing");
    // The same key on another queue is a different job.
    assert!(enqueue(&db, job().queue("other")).await.unwrap().is_some());
    // In bulk, duplicates within and across batches are skipped.
    let ids = enqueue_many(
        &db,
        vec![job(), NewJob::new("x", json!({})).unique_key("k2"), NewJob::new("x", json!({})).unique_key("k2")],
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 1);
    // Still held while active.
    let now = Utc::now() + secs(1);
    let mut held = None;
    while let Some(c) = claim_one(&db, "default", now).await {
        if Some(c.job.id) == first {
            held = Some(c);
        }
    }
    let held = held.unwrap();
    assert_eq!(enqueue(&db, job()).await.unwrap(), None);
    // Released once the job is finished.
    lease::complete(&db, &held.lease, now).await.unwrap();
    assert!(enqueue(&db, job()).await.unwrap().is_some());
    t.drop_schema().await;
}

async fn enqueue_follows_the_callers_transaction(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let tx = db.begin().await.unwrap();
    enqueue(&tx, NewJob::new("t", json!({"n": 1}))).await.unwrap().unwrap();
    enqueue_many(&tx, vec![NewJob::new("t", json!({"n": 2})), NewJob::new("t", json!({"n": 3}))]).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(admin::stats(&db, Utc::now()).await.unwrap().is_empty(), "rolled-back jobs must not exist");

    let tx = db.begin().await.unwrap();
    tx.execute_unprepared("CREATE TABLE domain_rows (n INTEGER)").await.unwrap();
    let id = enqueue(&tx, NewJob::new("t", json!({"n": 4}))).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(state_of(&db, id).await, JobState::Waiting);
    t.drop_schema().await;
}

async fn expired_lease_is_reclaimed_and_stale_completion_refused(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let id = enqueue(&db, NewJob::new("t", json!({})).backoff(Backoff::exponential(Duration::ZERO, Duration::ZERO)))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now() + secs(1);
    let stalled = claim_one(&db, "default", now).await.unwrap();
    // Before expiry nothing is reclaimed and nobody else can claim it.
    assert_eq!(lease::reclaim_expired(&db, now + secs(10)).await.unwrap(), 0);
    assert!(claim_one(&db, "default", now + secs(10)).await.is_none());
    // After expiry: a failed attempt, due for retry.
    let later = now + secs(31);
    assert_eq!(lease::reclaim_expired(&db, later).await.unwrap(), 1);
    let job = admin::get(&db, id, later).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.errors.len(), 1);
    assert!(job.last_error.unwrap().contains("lease expired"));
    let fresh = claim_one(&db, "default", later).await.expect("reclaimed job is claimable again");
    assert_eq!(fresh.job.attempts, 2);
    // The stalled worker wakes up: it can neither complete, fail nor extend the job.
    assert!(matches!(lease::complete(&db, &stalled.lease, later).await, Err(QueueError::LeaseLost(_))));
    assert!(matches!(lease::fail(&db, &stalled.lease, "late", later).await, Err(QueueError::LeaseLost(_))));
    assert!(matches!(lease::extend(&db, &stalled.lease, LEASE, later).await, Err(QueueError::LeaseLost(_))));
    lease::complete(&db, &fresh.lease, later).await.unwrap();
    assert_eq!(state_of(&db, id).await, JobState::Completed);
    t.drop_schema().await;
}

async fn handler_errors_and_panics_are_failed_attempts(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let panics = enqueue(&db, NewJob::new("panics", json!({})).max_attempts(1)).await.unwrap().unwrap();
    let errs = enqueue(
        &db,
        NewJob::new("errs", json!({})).max_attempts(2).backoff(Backoff::exponential(Duration::ZERO, Duration::ZERO)),
    )
    .await
    .unwrap()
    .unwrap();
    let ok = enqueue(&db, NewJob::new("ok", json!({"to": "ada@example.test"}))).await.unwrap().unwrap();
    let unknown = enqueue(&db, NewJob::new("nobody", json!({})).max_attempts(1)).await.unwrap().unwrap();
    let shutdown = CancellationToken::new();
    let worker = Worker::builder(t.connect().await)
        .poll_interval(Duration::from_millis(50))
        .handler("panics", |_job| async move {
            if true {
                panic!("the printer is on fire");
            }
            Ok::<(), String>(())
        })
        .handler("errs", |job| async move { Err(format!("attempt {} refused", job.attempt)) })
        .handler("ok", |job| async move {
            #[derive(serde::Deserialize)]
            struct Email {
                to: String,
            }
            let email: Email = job.payload().map_err(|e| e.to_string())?;
            assert_eq!(email.to, "ada@example.test");
            Ok::<(), String>(())
        })
        .build();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let settled = eventually(Duration::from_secs(10), || async {
        state_of(&db, panics).await == JobState::Dead
            && state_of(&db, errs).await == JobState::Dead
            && state_of(&db, ok).await == JobState::Completed
            && state_of(&db, unknown).await == JobState::Dead
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
    assert!(settled, "jobs did not settle");
    let p = admin::get(&db, panics, Utc::now()).await.unwrap().unwrap();
    assert!(p.last_error.unwrap().contains("the printer is on fire"));
    let e = admin::get(&db, errs, Utc::now()).await.unwrap().unwrap();
    assert_eq!(
        e.errors.iter().map(|a| a.error.as_str()).collect::<Vec<_>>(),
        ["attempt 1 refused", "attempt 2 refused"]
    );
    let u = admin::get(&db, unknown, Utc::now()).await.unwrap().unwrap();
    assert!(u.last_error.unwrap().contains("no handler"));
    t.drop_schema().await;
}

async fn two_workers_never_run_a_job_twice(b: Backend) {
    // The figure on PostgreSQL (where SKIP LOCKED does the work); fewer on SQLite,
    // whose writers are serialised anyway.
    let jobs_n: usize = if b == Backend::Postgres { 10_000 } else { 2_000 };
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let runs: Arc<Mutex<HashMap<i64, Vec<&'static str>>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    for name in ["a", "b"] {
        let runs = runs.clone();
        let worker = Worker::builder(t.connect().await)
            .id(name)
            .queue("default", 8)
            .poll_interval(Duration::from_millis(50))
            .handler("count", move |job| {
                let runs = runs.clone();
                async move {
                    runs.lock().unwrap().entry(job.id.0).or_default().push(name);
                    Ok::<(), String>(())
                }
            })
            .build();
        handles.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    // Both workers are polling before the first job exists, so both race for every batch
    // (enqueued before, the first worker to start could drain a small queue alone).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs: Vec<NewJob> = (0..jobs_n).map(|n| NewJob::new("count", json!({ "n": n }))).collect();
    let ids = enqueue_many(&db, jobs).await.unwrap();
    assert_eq!(ids.len(), jobs_n);
    let done = eventually(Duration::from_secs(120), || async {
        admin::stats(&db, Utc::now()).await.unwrap()[0].counts.completed == jobs_n as u64
    })
    .await;
    shutdown.cancel();
    for h in handles {
        h.await.unwrap();
    }
    assert!(done, "not every job completed");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), jobs_n);
    let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() != 1).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    for name in ["a", "b"] {
        assert!(runs.values().any(|by| by[0] == name), "worker {name} ran nothing; the race was not exercised");
    }
    let by_worker = admin::list(&db, "default", JobState::Completed, 10, 0, Utc::now()).await.unwrap();
    assert_eq!(by_worker.len(), 10);
    t.drop_schema().await;
}

async fn pause_through_one_instance_stops_another(b: Backend) {
    let t = TestDb::new(b).await;
    let admin_db = t.connect().await; // the instance an operator talks to
    let done: Arc<Mutex<u32>> = Arc::default();
    let shutdown = CancellationToken::new();
    let seen = done.clone();
    let worker = Worker::builder(t.connect().await)
        .queue("mail", 2)
        .poll_interval(Duration::from_millis(50))
        .handler("send", move |_job| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() += 1;
                Ok::<(), String>(())
            }
        })
        .build();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    admin::pause(&admin_db, "mail").await.unwrap();
    assert!(admin::is_paused(&admin_db, "mail").await.unwrap());
    let id = enqueue(&admin_db, NewJob::new("send", json!({})).queue("mail")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*done.lock().unwrap(), 0, "a paused queue's job ran");
    assert_eq!(state_of(&admin_db, id).await, JobState::Waiting);
    let stats = admin::stats(&admin_db, Utc::now()).await.unwrap();
    assert!(stats[0].paused);
    assert_eq!(stats[0].counts.waiting, 1);
    admin::resume(&admin_db, "mail").await.unwrap();
    let ran =
        eventually(Duration::from_secs(5), || async { state_of(&admin_db, id).await == JobState::Completed }).await;
    shutdown.cancel();
    run.await.unwrap();
    assert!(ran, "resumed queue did not run its job");
    assert_eq!(*done.lock().unwrap(), 1);
    t.drop_schema().await;
}

async fn cron_fires_once_per_tick_with_three_schedulers(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let schedule = Schedule::new("reports", "*/5 * * * * *", "Europe/London", NewJob::new("warm", json!({}))).unwrap();
    // Three instances race on the same twenty ticks.
    let base = schedule.next_tick(Utc::now()).unwrap();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let conn = t.connect().await;
        let s = schedule.clone();
        instances.push(tokio::spawn(async move {
            let mut fired = 0;
            for k in 0..20 {
                let tick = base + secs(5 * k);
                let due = s.latest_tick(tick).unwrap();
                assert_eq!(due, tick);
                if cron::fire(&conn, &s, due).await.unwrap() {
                    fired += 1;
                }
            }
            fired
        }));
    }
    let mut total = 0;
    for i in instances {
        total += i.await.unwrap();
    }
    assert_eq!(total, 20, "each tick fires exactly once across instances");
    let stats = admin::stats(&db, Utc::now()).await.unwrap();
    let c = stats[0].counts;
    assert_eq!(c.waiting + c.delayed, 20);

    // And through real workers: three running an every-second schedule fire each tick once.
    let every_second =
        Schedule::new("heartbeat", "* * * * * *", "UTC", NewJob::new("beat", json!({})).queue("beats")).unwrap();
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = Worker::builder(t.connect().await).queue("none", 1).schedule(every_second.clone()).build();
        workers.push(tokio::spawn(w.run(shutdown.clone())));
    }
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let beats = admin::list(&db, "beats", JobState::Waiting, 100, 0, Utc::now()).await.unwrap();
    assert!(beats.len() >= 3, "expected a job per second, got {}", beats.len());
    let mut ticks: Vec<_> = beats.iter().map(|j| j.run_at).collect();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), beats.len(), "a tick fired twice");
    t.drop_schema().await;
}

async fn admin_clean_cancel_and_stats(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let ids = enqueue_many(&db, (0..5).map(|n| NewJob::new("t", json!({ "n": n }))).collect()).await.unwrap();
    let now = Utc::now() + secs(1);
    for _ in 0..3 {
        let c = claim_one(&db, "default", now).await.unwrap();
        lease::complete(&db, &c.lease, now).await.unwrap();
    }
    let stats = admin::stats(&db, now).await.unwrap();
    assert_eq!(stats[0].counts.completed, 3);
    assert_eq!(stats[0].counts.waiting, 2);
    assert_eq!(stats[0].completed_last_hour, 3);
    assert!(stats[0].oldest_waiting_secs.unwrap() >= 0.9);
    // Cancel a waiting job; a completed one cannot be cancelled.
    let waiting = admin::list(&db, "default", JobState::Waiting, 10, 0, now).await.unwrap();
    assert_eq!(waiting.len(), 2);
    assert!(admin::cancel(&db, waiting[0].id).await.unwrap());
    let completed = admin::list(&db, "default", JobState::Completed, 10, 0, now).await.unwrap();
    assert!(!admin::cancel(&db, completed[0].id).await.unwrap());
    // Clean by state and age.
    assert_eq!(admin::clean(&db, "default", JobState::Completed, Duration::from_secs(60), now).await.unwrap(), 0);
    assert_eq!(admin::clean(&db, "default", JobState::Completed, Duration::ZERO, now + secs(1)).await.unwrap(), 3);
    assert!(admin::clean(&db, "default", JobState::Active, Duration::ZERO, now).await.is_err());
    // Retention by count keeps the newest.
    for _ in 0..1 {
        let c = claim_one(&db, "default", now).await.unwrap();
        lease::complete(&db, &c.lease, now).await.unwrap();
    }
    assert_eq!(admin::trim_completed(&db, Duration::from_secs(3600), 0, now).await.unwrap(), 1);
    assert_eq!(ids.len(), 5);
    t.drop_schema().await;
}

async fn batched_completion_applies_each_lease_and_ignores_lost_ones(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let zero = Backoff::exponential(Duration::ZERO, Duration::ZERO);
    let ids =
        enqueue_many(&db, (0..3).map(|n| NewJob::new("t", json!({ "n": n })).backoff(zero)).collect()).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(lease::complete_many(&db, &[], Utc::now()).await.unwrap().is_empty());
    let now = Utc::now() + secs(1);
    // `a` is claimed first and its lease runs out; `b` and `c` are claimed later, together.
    let a_stale = claim_one(&db, "default", now).await.unwrap();
    let pair = lease::claim(&db, "default", 2, LEASE, "test", now + secs(20)).await.unwrap();
    assert_eq!(pair.len(), 2);
    let later = now + secs(31);
    assert_eq!(lease::reclaim_expired(&db, later).await.unwrap(), 1);
    let a_fresh = claim_one(&db, "default", later).await.expect("reclaimed job is claimable again");
    assert_eq!(a_fresh.job.id, a_stale.job.id);
    // One statement, each job under its own token: the stale lease on `a` changes nothing.
    let batch = [a_stale.lease.clone(), pair[0].lease.clone(), pair[1].lease.clone()];
    let mut recorded = lease::complete_many(&db, &batch, later).await.unwrap();
    recorded.sort();
    let mut expected = vec![pair[0].job.id, pair[1].job.id];
    expected.sort();
    assert_eq!(recorded, expected);
    for c in &pair {
        let job = admin::get(&db, c.job.id, later).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed);
        assert!(job.finished_at.is_some() && job.locked_by.is_none() && job.lease_expires_at.is_none());
    }
    let a = admin::get(&db, a_stale.job.id, later).await.unwrap().unwrap();
    assert_eq!((a.state, a.attempts), (JobState::Active, 2), "the current attempt is untouched");
    // Stale and current lease on the same job in one batch: only the current one applies.
    let both = [a_stale.lease.clone(), a_fresh.lease.clone()];
    assert_eq!(lease::complete_many(&db, &both, later).await.unwrap(), [a_fresh.job.id]);
    assert_eq!(state_of(&db, a_fresh.job.id).await, JobState::Completed);
    // Completing again changes nothing.
    assert!(lease::complete_many(&db, &both, later).await.unwrap().is_empty());
    t.drop_schema().await;
}

async fn release_returns_jobs_without_counting_the_attempt(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let zero = Backoff::exponential(Duration::ZERO, Duration::ZERO);
    let fresh = enqueue(&db, NewJob::new("t", json!({})).priority(Priority::High)).await.unwrap().unwrap();
    let retried = enqueue(&db, NewJob::new("t", json!({})).backoff(zero)).await.unwrap().unwrap();
    let now = Utc::now() + secs(1);
    // `retried` fails once first.
    let mut first = lease::claim(&db, "default", 2, LEASE, "test", now).await.unwrap();
    let c = first.pop().unwrap();
    assert_eq!(c.job.id, retried);
    lease::fail(&db, &c.lease, "boom", now).await.unwrap();
    lease::release(&db, &[first.pop().unwrap().lease]).await.unwrap();
    let held = lease::claim(&db, "default", 2, LEASE, "test", now + secs(1)).await.unwrap();
    assert_eq!(held.len(), 2);
    let leases: Vec<_> = held.iter().map(|c| c.lease.clone()).collect();
    assert_eq!(lease::release(&db, &leases).await.unwrap(), 2);
    let f = admin::get(&db, fresh, now).await.unwrap().unwrap();
    assert_eq!((f.state, f.attempts), (JobState::Waiting, 0));
    assert!(f.started_at.is_none() && f.locked_by.is_none() && f.lease_expires_at.is_none());
    let r = admin::get(&db, retried, now).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts, r.errors.len()), (JobState::Failed, 1, 1), "back to its retry state");
    // A lease already given back (or lost) releases nothing.
    assert_eq!(lease::release(&db, &leases).await.unwrap(), 0);
    // Both are claimable again, counting the attempt they now make.
    let again = lease::claim(&db, "default", 2, LEASE, "test", now + secs(2)).await.unwrap();
    let attempts: Vec<_> = again.iter().map(|c| (c.job.id, c.job.attempts)).collect();
    assert_eq!(attempts, [(fresh, 1), (retried, 2)]);
    t.drop_schema().await;
}

/// Shutdown mid-stream: every job whose handler succeeded is recorded completed before `run`
/// returns (the batched completions are flushed), and no job is left active: jobs claimed
/// ahead and never started go back unstarted, their attempt not counted.
async fn shutdown_records_completions_and_returns_read_ahead(b: Backend) {
    let jobs_n: u64 = 3_000;
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    enqueue_many(&db, (0..jobs_n).map(|n| NewJob::new("count", json!({ "n": n }))).collect()).await.unwrap();
    let handled: Arc<Mutex<u64>> = Arc::default();
    let seen = handled.clone();
    let shutdown = CancellationToken::new();
    let worker = Worker::builder(t.connect().await)
        .queue("default", 10)
        .poll_interval(Duration::from_millis(50))
        .handler("count", move |_job| {
            *seen.lock().unwrap() += 1;
            async { Ok::<(), String>(()) }
        })
        .build();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let started = eventually(Duration::from_secs(30), || async { *handled.lock().unwrap() >= jobs_n / 3 }).await;
    shutdown.cancel();
    run.await.unwrap();
    assert!(started, "the worker did not get going");
    let handled = *handled.lock().unwrap();
    let c = admin::stats(&db, Utc::now()).await.unwrap()[0].counts;
    assert_eq!(c.active, 0, "jobs left active after shutdown");
    assert_eq!(c.completed, handled, "every handled job is recorded, and only those");
    assert_eq!(c.waiting, jobs_n - handled);
    let waiting = admin::list(&db, "default", JobState::Waiting, 10_000, 0, Utc::now()).await.unwrap();
    assert!(waiting.iter().all(|j| j.attempts == 0 && j.errors.is_empty()), "an unstarted job was charged an attempt");
    t.drop_schema().await;
}

/// Read-ahead jobs stuck behind a slow job go back to the queue before their lease runs out:
/// every job runs once, none is charged a lost lease. The lease is 1.8 s: with 600 ms a CI
/// machine under the whole suite's load once let a finished job's completion wait in its
/// batch past the lease, so it was reclaimed and ran again (at-least-once, as documented).
async fn read_ahead_behind_a_slow_job_is_not_charged_an_attempt(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let mut jobs: Vec<NewJob> =
        (0..300).map(|n| NewJob::new("fast", json!({ "n": n })).priority(Priority::Critical)).collect();
    jobs.push(NewJob::new("slow", json!({})).priority(Priority::High));
    jobs.extend((0..30).map(|n| NewJob::new("fast", json!({ "n": n })).priority(Priority::Normal)));
    enqueue_many(&db, jobs).await.unwrap();
    let runs: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let (fast_runs, slow_runs) = (runs.clone(), runs.clone());
    let shutdown = CancellationToken::new();
    let worker = Worker::builder(t.connect().await)
        .queue("default", 1)
        .lease(Duration::from_millis(1_800))
        .maintenance_interval(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(50))
        .handler("fast", move |job| {
            *fast_runs.lock().unwrap().entry(job.id.0).or_default() += 1;
            async { Ok::<(), String>(()) }
        })
        .handler("slow", move |job| {
            *slow_runs.lock().unwrap().entry(job.id.0).or_default() += 1;
            // Longer than the lease: the job's own heartbeat keeps it; jobs read ahead wait.
            async {
                tokio::time::sleep(Duration::from_millis(4_000)).await;
                Ok::<(), String>(())
            }
        })
        .build();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let done = eventually(Duration::from_secs(30), || async {
        admin::stats(&db, Utc::now()).await.unwrap()[0].counts.completed == 331
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
    assert!(done, "not every job completed");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 331);
    assert!(runs.values().all(|&n| n == 1), "a job ran twice");
    let completed = admin::list(&db, "default", JobState::Completed, 1_000, 0, Utc::now()).await.unwrap();
    let charged: Vec<_> = completed.iter().filter(|j| j.attempts != 1 || !j.errors.is_empty()).collect();
    assert!(charged.is_empty(), "jobs charged an extra attempt: {charged:?}");
    t.drop_schema().await;
}

/// How a test stops the first attempt's lease from being renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrokenRenewal {
    /// The database refuses the renewal (a trigger raises an error on it).
    Refused,
    /// The renewal waits on a lock the test holds until after the lease has expired.
    Blocked,
}

/// One execution of a handler: when it started, and when its future finished or was dropped.
#[derive(Clone, Debug)]
struct Execution {
    attempt: u32,
    start: std::time::Instant,
    end: Option<std::time::Instant>,
    ended_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// Marks its execution ended when the handler's future is dropped, finished or cancelled.
struct EndOnDrop(Arc<Mutex<Vec<Execution>>>, usize);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let mut runs = self.0.lock().unwrap();
        runs[self.1].end = Some(std::time::Instant::now());
        runs[self.1].ended_at = Some(Utc::now());
    }
}

async fn refuse_lease_renewals(db: &DatabaseConnection, b: Backend) {
    let sql: &[&str] = match b {
        Backend::Sqlite => &["CREATE TRIGGER refuse_renewal BEFORE UPDATE OF lease_expires_at ON queue_jobs \
             WHEN OLD.state = 'active' AND NEW.state = 'active' AND NEW.lease_expires_at IS NOT OLD.lease_expires_at \
             BEGIN SELECT RAISE(ABORT, 'lease renewal refused by the test'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_renewal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF OLD.state = 'active' AND NEW.state = 'active' \
                AND NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN \
               RAISE EXCEPTION 'lease renewal refused by the test'; \
             END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_renewal BEFORE UPDATE ON queue_jobs FOR EACH ROW EXECUTE FUNCTION refuse_renewal()",
        ],
    };
    for s in sql {
        db.execute_unprepared(s).await.unwrap();
    }
}

/// A job whose first attempt outlives its lease while the lease cannot be renewed: the
/// handler is cancelled before the lease expires (not recorded complete), another attempt
/// runs after the lease is reclaimed, and no two executions of the job overlap in time.
async fn unrenewable_lease_cancels_the_handler_before_expiry(b: Backend, broken: BrokenRenewal) {
    const LEASE: Duration = Duration::from_secs(3);
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    if broken == BrokenRenewal::Refused {
        refuse_lease_renewals(&db, b).await;
    }
    let zero = Backoff::exponential(Duration::ZERO, Duration::ZERO);
    let id = enqueue(&db, NewJob::new("long", json!({})).backoff(zero)).await.unwrap().unwrap();
    let runs: Arc<Mutex<Vec<Execution>>> = Arc::default();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<DateTime<Utc>>();
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let (runs, started_tx, probe) = (runs.clone(), started_tx.clone(), t.connect().await);
        let worker = Worker::builder(t.connect().await)
            .id(name)
            .queue("default", 2)
            .lease(LEASE)
            .maintenance_interval(Duration::from_millis(100))
            .poll_interval(Duration::from_millis(50))
            .drain_timeout(Duration::from_secs(1))
            .handler("long", move |job| {
                let (runs, started_tx, probe) = (runs.clone(), started_tx.clone(), probe.clone());
                async move {
                    let index = {
                        let mut runs = runs.lock().unwrap();
                        runs.push(Execution {
                            attempt: job.attempt,
                            start: std::time::Instant::now(),
                            end: None,
                            ended_at: None,
                            lease_expires_at: None,
                        });
                        runs.len() - 1
                    };
                    let _end = EndOnDrop(runs.clone(), index);
                    let expires = admin::get(&probe, job.id, Utc::now()).await.unwrap().unwrap().lease_expires_at;
                    runs.lock().unwrap()[index].lease_expires_at = expires;
                    let _ = started_tx.send(expires.unwrap());
                    // The first attempt would run far longer than its lease; a retry is quick.
                    let work = if job.attempt == 1 { LEASE * 20 } else { Duration::from_millis(50) };
                    tokio::time::sleep(work).await;
                    Ok::<(), String>(())
                }
            })
            .build();
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let expires = tokio::time::timeout(Duration::from_secs(10), started_rx.recv()).await.unwrap().unwrap();
    if broken == BrokenRenewal::Blocked {
        // Hold the job's row (PostgreSQL) or the write lock (SQLite) until the lease has
        // expired: the renewal sent meanwhile waits for it.
        let locker = t.connect().await;
        let tx = match b {
            Backend::Sqlite => locker
                .begin_with_options(sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await
                .unwrap(),
            Backend::Postgres => {
                let tx = locker.begin().await.unwrap();
                tx.execute_unprepared(&format!("SELECT id FROM queue_jobs WHERE id = {} FOR UPDATE", id.0))
                    .await
                    .unwrap();
                tx
            }
        };
        while Utc::now() < expires + chrono::Duration::milliseconds(300) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.rollback().await.unwrap();
    }
    let completed =
        eventually(Duration::from_secs(20), || async { state_of(&db, id).await == JobState::Completed }).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let mut runs = runs.lock().unwrap().clone();
    runs.sort_by_key(|r| r.start);
    let first = &runs[0];
    assert_eq!(first.attempt, 1);
    let (ended, expired) = (first.ended_at.expect("the first attempt never ended"), first.lease_expires_at.unwrap());
    assert!(ended < expired, "the first attempt ran until {ended}, past its lease's expiry at {expired}: {runs:#?}");
    for pair in runs.windows(2) {
        assert!(pair[0].end.unwrap() <= pair[1].start, "two executions of the job overlapped: {runs:#?}");
    }
    assert!(completed, "the job was not retried to completion: {runs:#?}");
    let job = admin::get(&db, id, Utc::now()).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2, "{runs:#?}");
    assert!(job.errors[0].error.contains("lease expired"), "the cancelled attempt was not left to its lease: {job:?}");
    t.drop_schema().await;
}

async fn refused_lease_renewal_cancels_the_handler_before_expiry(b: Backend) {
    unrenewable_lease_cancels_the_handler_before_expiry(b, BrokenRenewal::Refused).await;
}

async fn blocked_lease_renewal_cancels_the_handler_before_expiry(b: Backend) {
    unrenewable_lease_cancels_the_handler_before_expiry(b, BrokenRenewal::Blocked).await;
}

/// A worker's queues and its schedules' queues are known before any job exists, and
/// `stats_including` lists them with zero counts beside the queues that have jobs.
async fn known_queues_are_listed_before_their_first_job(b: Backend) {
    let t = TestDb::new(b).await;
    let db = t.connect().await;
    let tick = Schedule::new("nightly", "0 3 * * *", "UTC", NewJob::new("sweep", json!({})).queue("sweeps")).unwrap();
    let builder = Worker::builder(t.connect().await).queue("mail", 2).queue("mail", 1).schedule(tick);
    assert_eq!(builder.known_queues(), ["mail", "sweeps"]);
    assert_eq!(Worker::builder(t.connect().await).known_queues(), ["default"]);
    assert!(admin::stats(&db, Utc::now()).await.unwrap().is_empty());
    enqueue(&db, NewJob::new("t", json!({})).queue("mail")).await.unwrap();
    enqueue(&db, NewJob::new("t", json!({})).queue("other")).await.unwrap();
    let stats = admin::stats_including(&db, &builder.known_queues(), Utc::now()).await.unwrap();
    let listed: Vec<(&str, u64)> = stats.iter().map(|s| (s.queue.as_str(), s.counts.waiting)).collect();
    assert_eq!(listed, [("mail", 1), ("other", 1), ("sweeps", 0)]);
    let sweeps = &stats[2];
    assert_eq!((sweeps.counts, sweeps.paused, sweeps.completed_last_hour), (Default::default(), false, 0));
    t.drop_schema().await;
}

on_both_backends!(
    critical_runs_first_then_fifo,
    delayed_job_waits_for_its_time,
    retries_follow_the_backoff_schedule_then_die,
    unique_key_dedups_while_pending,
    enqueue_follows_the_callers_transaction,
    expired_lease_is_reclaimed_and_stale_completion_refused,
    handler_errors_and_panics_are_failed_attempts,
    two_workers_never_run_a_job_twice,
    pause_through_one_instance_stops_another,
    cron_fires_once_per_tick_with_three_schedulers,
    admin_clean_cancel_and_stats,
    batched_completion_applies_each_lease_and_ignores_lost_ones,
    release_returns_jobs_without_counting_the_attempt,
    shutdown_records_completions_and_returns_read_ahead,
    read_ahead_behind_a_slow_job_is_not_charged_an_attempt,
    refused_lease_renewal_cancels_the_handler_before_expiry,
    blocked_lease_renewal_cancels_the_handler_before_expiry,
    known_queues_are_listed_before_their_first_job,
);
