//! Parties of a case.

use http::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    party_round_trip,
    party_urls_must_be_http_and_emails_valid,
    party_urls_are_stored_parsed_and_normalised,
    stale_party_update_is_412,
    parties_of_a_hidden_case_are_hidden,
    bulk_parties_past_the_limit_are_refused_while_the_body_is_read,
);

async fn party_round_trip(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "P-1").await;
    let base = format!("/api/v1/cases/{id}/parties");
    let res = t
        .post(
            &base,
            &s.token,
            json!({"name": "Acme Corp.", "kind": "organization", "type": "defendant", "counsel": "Baker & McKenzie",
                   "website": "https://acme.test", "email": "legal@acme.test", "notes": "<p>Served <i>3 May</i></p><script>x()</script>"}),
        )
        .await;
    res.expect(201);
    let party = res.data().clone();
    assert_eq!(party["type"], "defendant");
    assert_eq!(party["notes"], "<p>Served <i>3 May</i></p>");
    let pid = party["id"].as_str().unwrap();
    t.post(&base, &s.token, json!({"name": "Jane Roe", "kind": "individual", "type": "plaintiff"})).await.expect(201);

    let list = t.get(&base, &s.token).await;
    list.expect(200);
    assert_eq!(list.data().as_array().unwrap().len(), 2);
    assert_eq!(list.body["meta"]["pagination"]["total"], 2);

    let upd = t
        .patch(&format!("{base}/{pid}"), &s.token, json!({"role": "Manufacturer", "website": null, "version": 1}))
        .await;
    upd.expect(200);
    assert_eq!(upd.data()["role"], "Manufacturer");
    assert!(upd.data()["website"].is_null());
    assert_eq!(upd.data()["counsel"], "Baker & McKenzie");
    assert_eq!(upd.data()["version"], 2);

    t.delete(&format!("{base}/{pid}"), &s.token).await.expect(204);
    t.get(&format!("{base}/{pid}"), &s.token).await.expect(404);
    assert_eq!(t.get(&base, &s.token).await.data().as_array().unwrap().len(), 1);
    // A party id under another case is not found.
    let other = t.case(&s, "P-2").await;
    let jane = list.data().as_array().unwrap().iter().find(|p| p["name"] == "Jane Roe").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.get(&format!("/api/v1/cases/{other}/parties/{jane}"), &s.token).await.expect(404);
}

async fn party_urls_must_be_http_and_emails_valid(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "P-1").await;
    let base = format!("/api/v1/cases/{id}/parties");
    for url in [
        "javascript:alert(1)",
        "data:text/html,<script>x</script>",
        "ftp://files.test",
        "file:///etc/passwd",
        "not a url",
    ] {
        let res = t
            .post(&base, &s.token, json!({"name": "X", "kind": "individual", "type": "witness", "website": url}))
            .await;
        res.expect(400);
        assert_eq!(res.body["error"]["details"]["fields"][0]["field"], "website");
    }
    let res =
        t.post(&base, &s.token, json!({"name": "X", "kind": "individual", "type": "witness", "email": "nope"})).await;
    res.expect(400);
    assert_eq!(t.get(&base, &s.token).await.data().as_array().unwrap().len(), 0, "nothing was stored");
}

async fn party_urls_are_stored_parsed_and_normalised(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "P-1").await;
    let base = format!("/api/v1/cases/{id}/parties");
    // Scheme and host lower-cased, the default port dropped, the space percent-encoded.
    let res = t
        .post(
            &base,
            &s.token,
            json!({"name": "X", "kind": "individual", "type": "witness", "website": "  HTTP://Example.COM:80/a b"}),
        )
        .await;
    res.expect(201);
    assert_eq!(res.data()["website"], "http://example.com/a%20b");
    let path = format!("{base}/{}", res.data()["id"].as_str().unwrap());
    let upd = t.patch(&path, &s.token, json!({"website": "https://Court.GOV:443"})).await;
    upd.expect(200);
    assert_eq!(upd.data()["website"], "https://court.gov/");
    // What is stored is the normalised form, not only what the response shows.
    let rows = t.sql("SELECT website FROM parties").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].try_get::<Option<String>>("", "website").unwrap().as_deref(), Some("https://court.gov/"));
    assert_eq!(t.get(&path, &s.token).await.data()["website"], "https://court.gov/");
    // Bulk creates store the same form.
    let res = t
        .post(
            &format!("{base}/bulk"),
            &s.token,
            json!({"items": [{"name": "Y", "kind": "individual", "type": "witness", "website": "HTTPS://Acme.Test:8443/Ünïcode?q=a b"}]}),
        )
        .await;
    res.expect(200);
    let pid = res.data()["ids"][0].as_str().unwrap();
    assert_eq!(
        t.get(&format!("{base}/{pid}"), &s.token).await.data()["website"],
        "https://acme.test:8443/%C3%9Cn%C3%AFcode?q=a%20b"
    );
}

async fn stale_party_update_is_412(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "P-1").await;
    let res = t
        .post(
            &format!("/api/v1/cases/{id}/parties"),
            &s.token,
            json!({"name": "A", "kind": "individual", "type": "witness"}),
        )
        .await;
    let path = format!("/api/v1/cases/{id}/parties/{}", res.data()["id"].as_str().unwrap());
    t.patch(&path, &s.token, json!({"name": "B"})).await.expect(200);
    let stale =
        t.call_with(Method::PATCH, &path, Some(&s.token), Some(json!({"name": "C"})), &[("if-match", "\"1\"")]).await;
    stale.expect(412);
    assert_eq!(t.get(&path, &s.token).await.data()["name"], "B");
}

async fn parties_of_a_hidden_case_are_hidden(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let id = t.case(&admin, "P-1").await;
    let res = t
        .post(
            &format!("/api/v1/cases/{id}/parties"),
            &admin.token,
            json!({"name": "A", "kind": "individual", "type": "witness"}),
        )
        .await;
    let pid = res.data()["id"].as_str().unwrap().to_owned();
    t.get(&format!("/api/v1/cases/{id}/parties"), &para.token).await.expect(404);
    t.get(&format!("/api/v1/cases/{id}/parties/{pid}"), &para.token).await.expect(404);
    t.patch(&format!("/api/v1/cases/{id}/parties/{pid}"), &para.token, json!({"name": "x"})).await.expect(404);
    t.delete(&format!("/api/v1/cases/{id}/parties/{pid}"), &para.token).await.expect(404);
}

/// The items of a bulk body are counted as it is read: one past the limit fails there, with
/// a message naming the limit.
async fn bulk_parties_past_the_limit_are_refused_while_the_body_is_read(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "P-1").await;
    let items = Value::Array(vec![json!({}); 10_001]);
    let res = t.post(&format!("/api/v1/cases/{id}/parties/bulk"), &s.token, json!({ "items": items })).await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    let message = res.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("at most 10000 items per request"), "{}", res.body);
}
