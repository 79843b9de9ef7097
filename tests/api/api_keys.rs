//! API keys: shown once and stored as a hash, scopes enforced on reads and writes, audited as
//! the key, rate-limited on their own budget, and refused once revoked, expired or their
//! maker disabled.

use http::Method;
use lexiflow::ratelimit::Quota;
use serde_json::{Value, json};

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    a_key_is_shown_once_and_stored_only_as_a_hash,
    each_scope_opens_only_its_routes,
    revoked_expired_or_orphaned_keys_get_401,
    a_key_is_rate_limited_on_its_own_budget,
    a_key_gets_no_sealed_grant_and_stops_when_its_maker_is_no_admin,
);

async fn make_key(t: &TestApp, admin: &Session, scopes: Value) -> (String, String) {
    let r = t.post("/api/v1/api-keys", &admin.token, json!({"name": "billing bridge", "scopes": scopes})).await;
    r.expect(201);
    (r.data()["key"].as_str().unwrap().to_owned(), r.data()["id"].as_str().unwrap().to_owned())
}

/// A request with `X-API-Key` (or, when `bearer`, as `Authorization: Bearer`).
async fn with_key(
    t: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    bearer: bool,
) -> crate::support::Res {
    if bearer {
        t.call(method, path, Some(key), body).await
    } else {
        t.call_with(method, path, None, body, &[("x-api-key", key)]).await
    }
}

async fn a_key_is_shown_once_and_stored_only_as_a_hash(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Keys").await;
    let (key, id) = make_key(&t, &admin, json!(["cases:read"])).await;
    assert!(key.starts_with("lf_") && key.len() > 50, "{key}");
    // `lf_`, 12 characters of prefix, `_`, the secret (which may itself hold `_`).
    let secret = key[16..].to_owned();

    let list = t.get("/api/v1/api-keys", &admin.token).await;
    list.expect(200);
    let shown = &list.data()[0];
    assert_eq!(shown["id"], id);
    assert_eq!(shown["scopes"], json!(["cases:read"]));
    assert!(shown.get("key").is_none(), "the key is shown once only: {shown}");
    assert!(!list.body.to_string().contains(&secret));

    // Nothing stored holds the key or its secret.
    let rows = t.sql("SELECT prefix, secret_hash, scopes, name FROM api_keys").await;
    assert_eq!(rows.len(), 1);
    for col in ["prefix", "secret_hash", "scopes", "name"] {
        let v: String = rows[0].try_get("", col).unwrap();
        assert!(!v.contains(&secret) && !key.contains(&v) || col == "prefix" || col == "scopes", "{col} = {v}");
    }
    let stored: String = rows[0].try_get("", "secret_hash").unwrap();
    assert_eq!(stored.len(), 64, "a hex SHA-256");

    // Keys cannot make keys, and only admins make them.
    with_key(&t, Method::POST, "/api/v1/api-keys", &key, Some(json!({"name": "x", "scopes": ["cases:read"]})), true)
        .await
        .expect(403);
    let partner = t.user(&admin, "partner").await;
    t.post("/api/v1/api-keys", &partner.token, json!({"name": "x", "scopes": ["cases:read"]})).await.expect(403);
    let bad = t.post("/api/v1/api-keys", &admin.token, json!({"name": "x", "scopes": ["cases:everything"]})).await;
    bad.expect(400);
    assert_eq!(bad.code(), "VALIDATION_FAILED");
}

async fn each_scope_opens_only_its_routes(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Scopes").await;
    let case = t.case(&admin, "K-1").await;
    let (reader, _) = make_key(&t, &admin, json!(["cases:read"])).await;
    let (writer, writer_id) = make_key(&t, &admin, json!(["cases:write"])).await;
    let (auditor, _) = make_key(&t, &admin, json!(["audit:read"])).await;
    let new_case = || {
        Some(json!({"caseNumber": format!("K-{}", uuid::Uuid::new_v4().simple()), "title": "By key", "type": "civil"}))
    };

    for bearer in [true, false] {
        with_key(&t, Method::GET, "/api/v1/cases", &reader, None, bearer).await.expect(200);
        with_key(&t, Method::GET, &format!("/api/v1/cases/{case}"), &reader, None, bearer).await.expect(200);
        let refused = with_key(&t, Method::POST, "/api/v1/cases", &reader, new_case(), bearer).await;
        refused.expect(403);
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("cases:write"));

        with_key(&t, Method::GET, "/api/v1/cases", &writer, None, bearer).await.expect(403);
        with_key(&t, Method::POST, "/api/v1/cases", &writer, new_case(), bearer).await.expect(201);

        with_key(&t, Method::GET, "/api/v1/audit", &auditor, None, bearer).await.expect(200);
        with_key(&t, Method::GET, "/api/v1/cases", &auditor, None, bearer).await.expect(403);
        // Routes no scope opens: users, sessions, the job queue.
        for path in ["/api/v1/users", "/api/v1/auth/sessions", "/api/v1/admin/queues"] {
            with_key(&t, Method::GET, path, &auditor, None, bearer).await.expect(403);
        }
    }

    // webhooks:manage opens the webhook routes and nothing else, and a subscription made or
    // changed by a key carries only what the key may read itself.
    let (hooks, _) = make_key(&t, &admin, json!(["webhooks:manage"])).await;
    with_key(&t, Method::GET, "/api/v1/webhooks", &hooks, None, false).await.expect(200);
    let hook = |events: Value| Some(json!({"url": "https://hooks.example.com/lexiflow", "events": events}));
    for events in
        [json!(["case.*"]), json!(["party.created"]), json!(["document.uploaded"]), json!(["calendar_event.*"])]
    {
        let refused = with_key(&t, Method::POST, "/api/v1/webhooks", &hooks, hook(events.clone()), false).await;
        refused.expect(403);
        assert!(refused.body["error"]["message"].as_str().unwrap().contains(":read"), "{events}: {}", refused.body);
    }
    let (reading_hooks, _) = make_key(&t, &admin, json!(["webhooks:manage", "cases:read"])).await;
    let made = with_key(&t, Method::POST, "/api/v1/webhooks", &reading_hooks, hook(json!(["case.*"])), false).await;
    made.expect(201);
    with_key(&t, Method::POST, "/api/v1/webhooks", &reading_hooks, hook(json!(["document.*"])), false)
        .await
        .expect(403);
    // Nor may a key point an admin's subscription somewhere else, or widen its own.
    let admins = t
        .post(
            "/api/v1/webhooks",
            &admin.token,
            json!({"url": "https://firm.example.com/in", "events": ["docket_entry.*"]}),
        )
        .await;
    admins.expect(201);
    let repoint = Some(json!({"url": "https://hooks.example.com/stolen"}));
    let path = format!("/api/v1/webhooks/{}", admins.data()["id"].as_str().unwrap());
    with_key(&t, Method::PATCH, &path, &hooks, repoint.clone(), false).await.expect(403);
    with_key(&t, Method::PATCH, &path, &reading_hooks, repoint, false).await.expect(200);
    let own = format!("/api/v1/webhooks/{}", made.data()["id"].as_str().unwrap());
    with_key(&t, Method::PATCH, &own, &reading_hooks, Some(json!({"events": ["calendar_event.*"]})), false)
        .await
        .expect(403);
    with_key(&t, Method::GET, "/api/v1/webhooks", &reader, None, false).await.expect(403);
    with_key(&t, Method::GET, "/api/v1/cases", &hooks, None, false).await.expect(403);

    // The writes are audited as the key, not as the admin who made it.
    let r = t.get("/api/v1/audit?action=case.create&limit=100", &admin.token).await;
    r.expect(200);
    let by_key: Vec<&Value> = r.data().as_array().unwrap().iter().filter(|e| e["actorType"] == "api_key").collect();
    assert_eq!(by_key.len(), 2, "{}", r.body);
    assert!(by_key.iter().all(|e| e["actorId"] == writer_id));
}

async fn revoked_expired_or_orphaned_keys_get_401(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Revoke keys").await;
    let (key, id) = make_key(&t, &admin, json!(["cases:read"])).await;
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(200);

    // A wrong secret behind a real prefix, and a malformed key.
    let head = &key[..15];
    let forged = format!("{head}_{}", "A".repeat(43));
    for bad in [forged.as_str(), "lf_nope", "lf_"] {
        let r = with_key(&t, Method::GET, "/api/v1/cases", bad, None, false).await;
        r.expect(401);
        assert_eq!(r.code(), "AUTH_TOKEN_INVALID");
    }

    // Revoked: refused at once, though the key was just checked (and cached).
    t.delete(&format!("/api/v1/api-keys/{id}"), &admin.token).await.expect(204);
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(401);
    let listed = t.get("/api/v1/api-keys", &admin.token).await;
    assert!(listed.data()[0]["revokedAt"].is_string());

    // Expired.
    let (key, id) = make_key(&t, &admin, json!(["cases:read"])).await;
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(200);
    let past = if b == Backend::Postgres { "now() - interval '1 minute'" } else { "'2000-01-01T00:00:00Z'" };
    let id_match = if b == Backend::Postgres {
        format!("id = '{id}'")
    } else {
        format!("lower(hex(id)) = '{}'", id.replace('-', ""))
    };
    t.sql_exec(&format!("UPDATE api_keys SET expires_at = {past} WHERE {id_match}")).await;
    t.app.api_keys.invalidate_all();
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(401);

    // Its maker disabled: the key stops with them.
    let other_admin = t.user(&admin, "admin").await;
    let (key, _) = make_key(&t, &other_admin, json!(["cases:read"])).await;
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(200);
    t.patch(&format!("/api/v1/users/{}", other_admin.user_id), &admin.token, json!({"status": "suspended"}))
        .await
        .expect(200);
    with_key(&t, Method::GET, "/api/v1/cases", &key, None, true).await.expect(401);
}

async fn a_key_is_rate_limited_on_its_own_budget(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.throttle.global = Quota::per_seconds(4, 60);
        // No cache of checked keys: the budget must not depend on it.
        c.auth_cache_ttl = std::time::Duration::ZERO;
    })
    .await;
    let admin = t.register("Budget").await;
    let (key, _) = make_key(&t, &admin, json!(["cases:read"])).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(with_key(&t, Method::GET, "/api/v1/cases", &key, None, false).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    // The admin's own budget is untouched by the key's (register and key creation used two).
    t.get("/api/v1/cases", &admin.token).await.expect(200);
    // Made-up keys, each with another prefix, and a real prefix with a wrong secret: all count
    // against the address (at most three left of its four), not against fresh budgets or the
    // key's. And the valid key, its own budget spent, is not let in through the address's.
    let head = &key[..15];
    let mut presented: Vec<String> = (0..4).map(|i| format!("lf_made{i:0>8}_{}", "A".repeat(43))).collect();
    presented.push(format!("{head}_{}", "B".repeat(43)));
    let mut statuses = Vec::new();
    for p in &presented {
        statuses.push(with_key(&t, Method::GET, "/api/v1/cases", p, None, false).await.status.as_u16());
    }
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 2, "{statuses:?}");
}

/// A key acts for its maker, an admin, as a partner: never with the maker's sealed-access
/// grants (keys see no sealed material), and not at all once the maker is no admin.
async fn a_key_gets_no_sealed_grant_and_stops_when_its_maker_is_no_admin(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Key grants").await;
    let maker = t.user(&admin, "admin").await;
    let case = t.case(&admin, "KG-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let sealed =
        t.post(&path, &admin.token, json!({"type": "motion", "description": "Under seal", "sealed": true})).await;
    let sealed_id = sealed.expect(201).data()["id"].as_str().unwrap().to_owned();
    t.post(&path, &admin.token, json!({"type": "order", "description": "Open"})).await.expect(201);
    // A deadline computed from the sealed entry.
    t.post(
        &format!("/api/v1/cases/{case}/deadlines/compute"),
        &admin.token,
        json!({"ruleId": "frcp-56-b", "triggerDate": "2027-01-04", "create": true, "docketEntryId": sealed_id}),
    )
    .await
    .expect(201);
    // Another admin grants the maker sealed access on the case.
    t.call(Method::PUT, &format!("/api/v1/cases/{case}/sealed-access/{}", maker.user_id), Some(&admin.token), None)
        .await
        .expect(200);
    let (key, _) = make_key(&t, &maker, json!(["cases:read", "documents:read", "calendar:read"])).await;
    let listed = with_key(&t, Method::GET, &format!("{path}?limit=100"), &key, None, false).await;
    listed.expect(200);
    let items = listed.data().as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!(items[0]["description"], "Open");
    // Nor its deadline on the calendar, which the maker's session sees.
    let events = format!("/api/v1/calendar?caseId={case}");
    let own = t.get(&events, &maker.token).await;
    assert_eq!(own.data().as_array().unwrap().len(), 1, "{}", own.body);
    let by_key = with_key(&t, Method::GET, &events, &key, None, false).await;
    by_key.expect(200);
    assert_eq!(by_key.data().as_array().unwrap().len(), 0, "{}", by_key.body);

    // A case's documents are governed by the documents scopes, not the cases ones.
    let docs = format!("/api/v1/cases/{case}/documents");
    with_key(&t, Method::GET, &docs, &key, None, false).await.expect(200);
    let (cases_only, _) = make_key(&t, &maker, json!(["cases:read", "cases:write"])).await;
    let r = with_key(&t, Method::GET, &docs, &cases_only, None, false).await;
    r.expect(403);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("documents:read"), "{}", r.body);

    // The maker demoted: the key stops at once, though it was just checked (and cached).
    t.patch(&format!("/api/v1/users/{}", maker.user_id), &admin.token, json!({"role": "attorney", "version": 1}))
        .await
        .expect(200);
    let r = with_key(&t, Method::GET, "/api/v1/cases", &key, None, false).await;
    r.expect(401);
}
