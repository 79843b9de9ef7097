//! `Idempotency-Key` on POST: a retried create returns the first result; a reused key with a
//! different request is refused; a duplicate while the first is served gets 409; concurrent
//! retries create one case.

use http::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Res, Session, TestApp};

crate::on_both_backends!(
    a_retried_create_returns_the_same_case,
    a_key_reused_with_another_request_is_refused,
    concurrent_retries_create_one_case,
    an_unanswered_claim_holds_for_thirty_seconds_then_is_taken_for_abandoned,
);

async fn post_with_key(t: &TestApp, s: &Session, key: &str, body: Value) -> Res {
    t.call_with(Method::POST, "/api/v1/cases", Some(&s.token), Some(body), &[("idempotency-key", key)]).await
}

fn case(number: &str) -> Value {
    json!({"caseNumber": number, "title": "Idempotent", "type": "civil"})
}

async fn count_cases(t: &TestApp, s: &Session) -> u64 {
    let r = t.get("/api/v1/cases?limit=100", &s.token).await;
    r.expect(200);
    r.data().as_array().unwrap().len() as u64
}

async fn a_retried_create_returns_the_same_case(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Idem").await;
    let first = post_with_key(&t, &admin, "create-I-1", case("I-1")).await;
    first.expect(201);
    assert!(first.header("idempotent-replayed").is_none());
    let again = post_with_key(&t, &admin, "create-I-1", case("I-1")).await;
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.data()["id"], first.data()["id"]);
    assert_eq!(again.data(), first.data());
    assert_eq!(count_cases(&t, &admin).await, 1);

    // The handler ran on a task of its own, with the request's context: the audit entry has
    // the request's correlation id.
    let traced = t
        .call_with(
            Method::POST,
            "/api/v1/cases",
            Some(&admin.token),
            Some(case("I-9")),
            &[("idempotency-key", "create-I-9"), ("x-correlation-id", "idem-corr-1")],
        )
        .await;
    traced.expect(201);
    let audit = t.get("/api/v1/audit?action=case.create&limit=100", &admin.token).await;
    let entry = audit.data().as_array().unwrap().iter().find(|e| e["entityId"] == traced.data()["id"]).cloned();
    assert_eq!(entry.expect("the create is audited")["correlationId"], "idem-corr-1");
    // An answered error is the answer too.
    let bad = post_with_key(&t, &admin, "create-bad", json!({"caseNumber": ""})).await;
    bad.expect(400);
    let bad_again = post_with_key(&t, &admin, "create-bad", json!({"caseNumber": ""})).await;
    bad_again.expect(400);
    assert_eq!(bad_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(bad_again.code(), "VALIDATION_FAILED");

    // Keys are per firm: another firm's same key is its own.
    let other = t.register("Idem other").await;
    let theirs = post_with_key(&t, &other, "create-I-1", case("I-1")).await;
    theirs.expect(201);
    assert_ne!(theirs.data()["id"], first.data()["id"]);

    // Keys are per caller too: a colleague who sends the same key and request is refused, and
    // never gets the first caller's answer (a feed token, a new API key's secret, a case they
    // may not see: the handler's checks did not run for them).
    let colleague = t.user(&admin, "staff").await;
    let feed = t
        .call_with(Method::POST, "/api/v1/calendar/feed", Some(&admin.token), None, &[("idempotency-key", "feed-1")])
        .await;
    feed.expect(201);
    let stolen = t
        .call_with(
            Method::POST,
            "/api/v1/calendar/feed",
            Some(&colleague.token),
            None,
            &[("idempotency-key", "feed-1")],
        )
        .await;
    stolen.expect(422);
    assert_eq!(stolen.code(), "IDEMPOTENCY_KEY_REUSED");
    let token = feed.data()["token"].as_str().unwrap().to_owned();
    assert!(!stolen.body.to_string().contains(&token), "{}", stolen.body);
    // A secret shown once is not kept for replays, nor stored: the caller's own retry gets the
    // answer with the secret (and the path that holds it) null.
    let again = t
        .call_with(Method::POST, "/api/v1/calendar/feed", Some(&admin.token), None, &[("idempotency-key", "feed-1")])
        .await;
    again.expect(201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(again.data()["token"].is_null() && again.data()["path"].is_null(), "{}", again.body);
    assert_eq!(again.data()["createdAt"], feed.data()["createdAt"]);
    assert!(!again.body.to_string().contains(&token), "{}", again.body);
    let stored = t.sql("SELECT body FROM idempotency_keys").await;
    for row in &stored {
        let body: Option<String> = row.try_get("", "body").unwrap();
        assert!(!body.unwrap_or_default().contains(&token), "a feed token stored in the clear");
    }
    let theirs = post_with_key(&t, &colleague, "create-I-1", case("I-1")).await;
    theirs.expect(422);

    // A malformed key is refused in our error body.
    let r = post_with_key(&t, &admin, "has space", case("I-2")).await;
    r.expect(400);
    assert_eq!(r.code(), "VALIDATION_FAILED");
}

async fn a_key_reused_with_another_request_is_refused(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Idem reuse").await;
    post_with_key(&t, &admin, "k-1", case("R-1")).await.expect(201);
    let other = post_with_key(&t, &admin, "k-1", case("R-2")).await;
    other.expect(422);
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(count_cases(&t, &admin).await, 1);

    // While the first request is still being served (its answer not yet stored), a duplicate
    // gets 409 and may retry.
    t.sql_exec("UPDATE idempotency_keys SET status_code = NULL, content_type = NULL, body = NULL").await;
    let busy = post_with_key(&t, &admin, "k-1", case("R-1")).await;
    busy.expect(409);
    assert_eq!(busy.code(), "CONFLICT");
}

async fn concurrent_retries_create_one_case(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Idem race").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = t.router.clone();
        let token = admin.token.clone();
        tasks.push(tokio::spawn(async move {
            let req = crate::support::request(
                Method::POST,
                "/api/v1/cases",
                Some(&token),
                Some(case("C-1")),
                &[("idempotency-key", "race-1")],
            );
            let res = tower::ServiceExt::oneshot(router, req).await.unwrap();
            (res.status().as_u16(), res.headers().contains_key("idempotent-replayed"))
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        let (status, replayed) = task.await.unwrap();
        assert!(status == 201 || status == 409, "status {status}");
        if status == 201 && !replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one request created the case");
    assert_eq!(count_cases(&t, &admin).await, 1);
}

/// A claim with no answer is a request still being served (409) until it has gone 30 s without
/// renewal; then its process is taken to have died, and the key serves a retry again.
async fn an_unanswered_claim_holds_for_thirty_seconds_then_is_taken_for_abandoned(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Idem").await;
    post_with_key(&t, &admin, "crash-1", case("S-1")).await.expect(201);
    // As if the process died after claiming and before storing the answer.
    t.sql_exec("UPDATE idempotency_keys SET status_code = NULL, content_type = NULL, body = NULL").await;
    let busy = post_with_key(&t, &admin, "crash-1", case("S-1")).await;
    busy.expect(409);
    assert!(busy.body["error"]["message"].as_str().unwrap().contains("still being served"), "{}", busy.body);
    let older = match b {
        Backend::Sqlite => "UPDATE idempotency_keys SET created_at = datetime(created_at, '-40 seconds')",
        Backend::Postgres => "UPDATE idempotency_keys SET created_at = created_at - interval '40 seconds'",
    };
    t.sql_exec(older).await;
    // Stale: the key is free again (here with another request, which shows the old claim went).
    post_with_key(&t, &admin, "crash-1", case("S-2")).await.expect(201);
}
