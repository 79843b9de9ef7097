//! The job queue inside LexiFlow: the operator admin API over real queue tables, audited,
//! and the worker `lexiflow serve` runs, with its scheduled housekeeping job.

use std::time::Duration;

use lexiflow_queue::{JobState, NewJob, lease};
use serde_json::json;

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    operators_see_and_steer_the_queues_and_others_cannot,
    the_serve_worker_runs_housekeeping_jobs,
    a_fresh_install_lists_its_queues_with_zero_counts,
);

async fn operators_see_and_steer_the_queues_and_others_cannot(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Ops").await;
    let para = t.user(&admin, "paralegal").await;
    let db = &t.app.db;
    lexiflow_queue::enqueue(db, NewJob::new("report.render", json!({"secret": "client data"})).queue("reports"))
        .await
        .unwrap();
    lexiflow_queue::enqueue(db, NewJob::new("report.render", json!({})).queue("reports")).await.unwrap();
    // A job that fails its only attempt is dead.
    lexiflow_queue::enqueue(db, NewJob::new("report.render", json!({})).queue("doomed").max_attempts(1)).await.unwrap();
    let now = chrono::Utc::now();
    let claimed = lease::claim(db, "doomed", 1, Duration::from_secs(30), "test", now).await.unwrap();
    let state = lease::fail(db, &claimed[0].lease, "boom", now).await.unwrap();
    assert_eq!(state, JobState::Dead);

    let q = t.get("/api/v1/admin/queues", &admin.token).await;
    q.expect(200);
    let reports = q.data().as_array().unwrap().iter().find(|s| s["queue"] == "reports").unwrap().clone();
    assert_eq!(reports["counts"]["waiting"], 2);
    assert_eq!(reports["paused"], false);

    let listed = t.get("/api/v1/admin/queues/reports/jobs?state=waiting", &admin.token).await;
    listed.expect(200);
    let jobs = listed.data().as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.get("payload").is_none()), "payloads must not be shown");
    t.get("/api/v1/admin/queues/reports/jobs?state=bogus", &admin.token).await.expect(400);

    t.call(http::Method::POST, "/api/v1/admin/queues/reports/pause", Some(&admin.token), None).await.expect(204);
    let q = t.get("/api/v1/admin/queues", &admin.token).await;
    assert_eq!(q.data().as_array().unwrap().iter().find(|s| s["queue"] == "reports").unwrap()["paused"], true);
    assert!(
        lease::claim(db, "reports", 5, Duration::from_secs(30), "test", chrono::Utc::now()).await.unwrap().is_empty()
    );
    t.call(http::Method::POST, "/api/v1/admin/queues/reports/resume", Some(&admin.token), None).await.expect(204);

    let dead = t.get("/api/v1/admin/queues/doomed/jobs?state=dead", &admin.token).await;
    let dead_id = dead.data()[0]["id"].as_i64().unwrap();
    assert_eq!(dead.data()[0]["lastError"], "boom");
    t.call(http::Method::POST, &format!("/api/v1/admin/jobs/{dead_id}/retry"), Some(&admin.token), None)
        .await
        .expect(204);
    let again = t.get("/api/v1/admin/queues/doomed/jobs?state=waiting", &admin.token).await;
    assert_eq!(again.data()[0]["id"], dead_id);
    // Dead again, then deleted: a dead job's record can be removed.
    let claimed = lease::claim(db, "doomed", 1, Duration::from_secs(30), "test", chrono::Utc::now()).await.unwrap();
    assert_eq!(lease::fail(db, &claimed[0].lease, "boom", chrono::Utc::now()).await.unwrap(), JobState::Dead);
    t.delete(&format!("/api/v1/admin/jobs/{dead_id}"), &admin.token).await.expect(204);
    assert!(
        t.get("/api/v1/admin/queues/doomed/jobs?state=dead", &admin.token).await.data().as_array().unwrap().is_empty()
    );

    let first = jobs[0]["id"].as_i64().unwrap();
    t.delete(&format!("/api/v1/admin/jobs/{first}"), &admin.token).await.expect(204);
    t.delete(&format!("/api/v1/admin/jobs/{first}"), &admin.token).await.expect(404);

    // The breakers of this process, by dependency and host.
    let probe = lexiflow::resilience::Breaker::for_target("probe", Some("probe.test".into()), Default::default());
    let breakers = t.get("/api/v1/admin/breakers", &admin.token).await;
    breakers.expect(200);
    let listed = breakers.data().as_array().unwrap().clone();
    assert!(listed.iter().all(|b| ["closed", "open", "half_open"].contains(&b["state"].as_str().unwrap())));
    assert!(
        listed.iter().any(|b| b["name"] == "probe" && b["target"] == "probe.test" && b["state"] == "closed"),
        "{listed:?}"
    );
    drop(probe);

    // Other roles, and admins of firms other than the operator's, are refused.
    t.get("/api/v1/admin/breakers", &para.token).await.expect(403);
    t.get("/api/v1/admin/queues", &para.token).await.expect(403);
    t.call(http::Method::POST, "/api/v1/admin/queues/reports/pause", Some(&para.token), None).await.expect(403);
    let hosted = TestApp::with(b, |c| c.operator_firm_id = Some(uuid::Uuid::now_v7())).await;
    let tenant = hosted.register("Tenant").await;
    hosted.get("/api/v1/admin/queues", &tenant.token).await.expect(403);

    // Each change is in the acting admin's audit trail.
    let trail = t.get("/api/v1/audit?limit=100", &admin.token).await;
    let actions: Vec<String> =
        trail.data().as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    for want in ["queue.pause", "queue.resume", "job.retry", "job.cancel"] {
        assert!(actions.iter().any(|a| a == want), "{want} not audited: {actions:?}");
    }
}

async fn the_serve_worker_runs_housekeeping_jobs(b: Backend) {
    let t = TestApp::with(b, |c| c.audit_retention_days = Some(3650)).await;
    let admin = t.register("Ops").await;
    let db = t.app.db.clone();
    let job = NewJob::new(lexiflow::jobs::AUDIT_RETENTION, json!({})).queue(lexiflow::jobs::MAINTENANCE);
    let id = lexiflow_queue::enqueue(&db, job).await.unwrap().unwrap();
    let worker =
        lexiflow::jobs::worker(db.clone(), db.clone(), &t.app.config, t.app.cache.clone(), t.app.storage.clone())
            .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = lexiflow_queue::admin::get(&db, id, chrono::Utc::now()).await.unwrap().unwrap();
        if j.state == JobState::Completed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the retention job never completed: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await.unwrap();
    // Nothing is old enough to prune, and the chain is intact.
    let v = t.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(v.data()["valid"], true);
}

async fn a_fresh_install_lists_its_queues_with_zero_counts(b: Backend) {
    // No job has ever been enqueued, and this process runs no worker: the queues LexiFlow
    // defines are listed all the same.
    let t = TestApp::with(b, |c| c.worker_in_serve = false).await;
    let admin = t.register("Ops").await;
    let q = t.get("/api/v1/admin/queues", &admin.token).await;
    q.expect(200);
    let queues = q.data().as_array().unwrap().clone();
    let maintenance = queues
        .iter()
        .find(|s| s["queue"] == lexiflow::jobs::MAINTENANCE)
        .unwrap_or_else(|| panic!("the maintenance queue is not listed: {queues:?}"));
    let zero = json!({"waiting": 0, "delayed": 0, "active": 0, "completed": 0, "failed": 0, "dead": 0});
    assert_eq!(maintenance["counts"], zero);
    assert_eq!(maintenance["paused"], false);
    assert_eq!(maintenance["completedLastHour"], 0);
    assert!(maintenance["oldestWaitingSecs"].is_null());
    // A queue that has jobs is listed beside it, once each.
    lexiflow_queue::enqueue(&t.app.db, NewJob::new("report.render", json!({})).queue("reports")).await.unwrap();
    let q = t.get("/api/v1/admin/queues", &admin.token).await;
    let names: Vec<&str> = q.data().as_array().unwrap().iter().map(|s| s["queue"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            lexiflow::calendar::reminders::QUEUE,
            lexiflow::calendar::sync::QUEUE,
            lexiflow::uploads::QUEUE,
            lexiflow::jobs::MAINTENANCE,
            "reports",
            lexiflow::webhooks::dispatch::QUEUE
        ]
    );
}
