//! The two-level cache through the API: the case summary report and case-team lookups,
//! read after write across two instances sharing one Redis, and Redis being unreachable.

use http::Method;
use serde_json::json;

use crate::support::{Backend, Session, TestApp, redis_available, redis_url};

crate::on_both_backends!(
    the_summary_counts_what_the_caller_can_see,
    read_after_write_holds_across_two_instances_sharing_redis,
    the_cache_works_in_process_when_redis_is_unreachable,
    the_warm_up_job_fills_the_cache_readers_use,
);

async fn the_warm_up_job_fills_the_cache_readers_use(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Warm").await;
    t.case(&s, "W-1").await;
    let firm: uuid::Uuid = s.firm_id.parse().unwrap();
    lexiflow::reports::warm(&t.app.db, &t.app.cache, firm).await.unwrap();
    let cached = lexiflow::cache::Key::new(format!("report:cases-summary:{firm}:all"));
    let warmed: serde_json::Value = t.app.cache.get(&cached).await.expect("the warm-up stored the summary");
    let read = summary(&t, &s).await;
    assert_eq!(read["generatedAt"], warmed["generatedAt"], "the reader got the warmed summary");
    assert_eq!(read["total"], 1);
}

async fn summary(t: &TestApp, s: &Session) -> serde_json::Value {
    t.get("/api/v1/reports/cases/summary", &s.token).await.expect(200).data().clone()
}

async fn the_summary_counts_what_the_caller_can_see(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Report").await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let now = chrono::Utc::now().to_rfc3339();
    for (n, kind, status) in [("R-1", "civil", "open"), ("R-2", "civil", "closed"), ("R-3", "tax", "open")] {
        let mut body = json!({"caseNumber": n, "title": n, "type": kind, "status": status, "filedAt": now});
        if status == "closed" {
            body["closedAt"] = json!(now);
        }
        t.post("/api/v1/cases", &s.token, body).await.expect(201);
    }
    let d = summary(&t, &s).await;
    assert_eq!(d["total"], 3);
    assert_eq!(d["byStatus"], json!({"closed": 1, "open": 2}));
    assert_eq!(d["byType"], json!({"civil": 2, "tax": 1}));
    let opened = d["openedPerMonth"].as_array().unwrap();
    assert_eq!(opened.len(), 12);
    assert_eq!(opened[11], json!({"month": month, "count": 3}));
    assert_eq!(d["closedPerMonth"][11]["count"], 1);

    // Served from the cache now; a write makes it stale at once.
    let again = summary(&t, &s).await;
    assert_eq!(again["generatedAt"], d["generatedAt"], "the second read is the cached summary");
    t.case(&s, "R-4").await;
    assert_eq!(summary(&t, &s).await["total"], 4);

    // A paralegal sees only their teams' cases.
    let para = t.user(&s, "paralegal").await;
    assert_eq!(summary(&t, &para).await["total"], 0);
    let id = t.case(&s, "R-5").await;
    t.post(&format!("/api/v1/cases/{id}/team"), &s.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    assert_eq!(summary(&t, &para).await["total"], 1, "a team change makes the caller's summary stale");
}

async fn read_after_write_holds_across_two_instances_sharing_redis(b: Backend) {
    if !redis_available() {
        return;
    }
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let a = TestApp::with(b, |c| {
        c.redis_url = Some(redis_url().into());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let bee = a.sibling().await;
    let s = a.register("Two").await;
    let para = a.user(&s, "paralegal").await;

    // B caches the summary and the list total; A writes; B's next read sees the write.
    assert_eq!(summary(&bee, &s).await["total"], 0);
    assert_eq!(summary(&bee, &s).await["total"], 0);
    let total = |r: crate::support::Res| r.body["meta"]["pagination"]["total"].as_u64().unwrap();
    assert_eq!(total(bee.get("/api/v1/cases?limit=1", &s.token).await), 0);
    let id = a.case(&s, "T-1").await;
    assert_eq!(summary(&bee, &s).await["total"], 1, "B sees A's write at once");
    assert_eq!(total(bee.get("/api/v1/cases?limit=1", &s.token).await), 1);
    a.patch(&format!("/api/v1/cases/{id}"), &s.token, json!({"status": "closed"})).await.expect(200);
    assert_eq!(summary(&bee, &s).await["byStatus"], json!({"closed": 1}));

    // Access decisions: B caches the paralegal's membership; A removes them from the team;
    // B refuses at once.
    a.post(&format!("/api/v1/cases/{id}/team"), &s.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    bee.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(200);
    bee.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(200);
    a.delete(&format!("/api/v1/cases/{id}/team/{}", para.user_id), &s.token).await.expect(204);
    bee.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(404);

    // The hits were counted.
    let m = bee.call(Method::GET, "/metrics", None, None).await;
    let text = m.body.as_str().unwrap_or_default();
    assert!(text.contains("lexiflow_cache_requests_total"), "cache metrics exported");
}

async fn the_cache_works_in_process_when_redis_is_unreachable(b: Backend) {
    let t = TestApp::with(b, |c| {
        // Nothing listens on port 1.
        c.redis_url = Some("redis://127.0.0.1:1".into());
        c.redis_prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    })
    .await;
    let s = t.register("NoRedis").await;
    assert_eq!(summary(&t, &s).await["total"], 0);
    t.case(&s, "N-1").await;
    assert_eq!(summary(&t, &s).await["total"], 1);
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(summary(&t, &s).await["total"], 1);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the breaker keeps reads fast without Redis");
}
