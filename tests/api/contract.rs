//! The response contract: envelope, error body for every rejection, correlation ids, OpenAPI.

use axum::body::Body;
use http::{Method, Request};
use serde_json::json;

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    success_envelope_carries_meta,
    a_committed_write_says_when_it_committed,
    every_rejection_uses_our_error_body,
    correlation_id_is_echoed_when_sane_and_replaced_when_not,
    oversized_body_is_413_in_our_error_body,
    health_probes_answer_without_a_token,
    health_is_served_from_one_recent_check,
    json_responses_are_compressed_when_the_client_accepts_it,
    compression_can_be_turned_off,
);

async fn success_envelope_carries_meta(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let res = t.get("/api/v1/auth/me", &s.token).await;
    res.expect(200);
    assert_eq!(res.body["success"], true);
    let meta = &res.body["meta"];
    for k in ["correlationId", "timestamp", "path", "method", "responseTimeMs"] {
        assert!(!meta[k].is_null(), "meta.{k} missing: {meta}");
    }
    assert_eq!(meta["path"], "/api/v1/auth/me");
    assert_eq!(meta["method"], "GET");
    assert_eq!(meta["correlationId"], res.header("x-correlation-id").unwrap());
    assert!(res.header("x-response-time").unwrap().ends_with("ms"));
}

async fn a_committed_write_says_when_it_committed(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    // A read commits nothing.
    let res = t.get("/api/v1/auth/me", &s.token).await;
    res.expect(200);
    assert_eq!(res.header("server-timing"), None);
    // A refused write commits nothing.
    let res = t.post("/api/v1/cases", &s.token, json!({"caseNumber": 5, "title": "t", "type": "civil"})).await;
    res.expect(400);
    assert_eq!(res.header("server-timing"), None);
    // A write says when, within the request, it committed.
    let res = t.post("/api/v1/cases", &s.token, json!({"caseNumber": "ST-1", "title": "t", "type": "civil"})).await;
    res.expect(201);
    let timing = res.header("server-timing").unwrap();
    let dur: f64 = timing.strip_prefix("commit;dur=").unwrap().parse().unwrap();
    let total: f64 = res.header("x-response-time").unwrap().trim_end_matches("ms").parse().unwrap();
    assert!(dur > 0.0 && dur <= total, "{timing} against {total} ms");
    // A write rolled back inside its transaction (the case number is taken) commits nothing.
    let res = t.post("/api/v1/cases", &s.token, json!({"caseNumber": "ST-1", "title": "t", "type": "civil"})).await;
    res.expect(409);
    assert_eq!(res.header("server-timing"), None);
    // A wrong password commits its failure count, yet answers like a locked-out address,
    // which commits nothing: no header either way.
    let res = t
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": s.email, "password": "wrong password here"})),
        )
        .await;
    res.expect(401);
    assert_eq!(res.header("server-timing"), None);
}

fn assert_error_body(res: &crate::support::Res, status: u16, code: &str) {
    res.expect(status);
    assert_eq!(res.body["success"], false, "{}", res.body);
    assert_eq!(res.code(), code, "{}", res.body);
    assert!(res.body["error"]["message"].is_string());
    assert!(res.body["error"]["retryable"].is_boolean());
    assert!(res.body["meta"]["correlationId"].is_string());
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert!(res.header("x-correlation-id").is_some());
}

async fn every_rejection_uses_our_error_body(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let bearer = format!("Bearer {}", s.token);
    let raw = |method: Method, path: &str, ct: Option<&str>, body: &str| {
        let mut r = Request::builder().method(method).uri(path).header("authorization", bearer.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    // Malformed JSON.
    let res = t.send(raw(Method::POST, "/api/v1/cases", Some("application/json"), "{\"caseNumber\": ")).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    // Unknown field.
    let res = t
        .post("/api/v1/cases", &s.token, json!({"caseNumber": "1", "title": "t", "type": "civil", "firmId": "x"}))
        .await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    assert!(res.body["error"]["message"].as_str().unwrap().contains("firmId"));
    // Wrong type.
    let res = t.post("/api/v1/cases", &s.token, json!({"caseNumber": 5, "title": "t", "type": "civil"})).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    // Value outside an enumeration.
    let res = t.post("/api/v1/cases", &s.token, json!({"caseNumber": "5", "title": "t", "type": "maritime"})).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    // Bad UUID in the path.
    let res = t.get("/api/v1/cases/not-a-uuid", &s.token).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    // Wrong content type.
    let res = t.send(raw(Method::POST, "/api/v1/cases", Some("text/plain"), "{}")).await;
    assert_error_body(&res, 415, "UNSUPPORTED_MEDIA_TYPE");
    // No such route.
    let res = t.get("/api/v1/no-such-thing", &s.token).await;
    assert_error_body(&res, 404, "RESOURCE_NOT_FOUND");
    // Wrong method (authenticated, so the method check is reached).
    let res = t.call(Method::PUT, "/api/v1/cases", Some(&s.token), None).await;
    assert_error_body(&res, 405, "METHOD_NOT_ALLOWED");
    // Bad query parameter.
    let res = t.get("/api/v1/cases?limit=abc", &s.token).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    let res = t.get("/api/v1/cases?limit=101", &s.token).await;
    assert_error_body(&res, 400, "VALIDATION_FAILED");
    // Garbage token.
    let res = t.get("/api/v1/cases", "garbage").await;
    assert_error_body(&res, 401, "AUTH_TOKEN_INVALID");
}

async fn correlation_id_is_echoed_when_sane_and_replaced_when_not(b: Backend) {
    let t = TestApp::new(b).await;
    let res = t.call_with(Method::GET, "/health/liveness", None, None, &[("x-correlation-id", "req-123.abc")]).await;
    assert_eq!(res.header("x-correlation-id"), Some("req-123.abc"));
    let res =
        t.call_with(Method::GET, "/api/v1/cases", None, None, &[("x-correlation-id", "evil value\twith spaces")]).await;
    let id = res.header("x-correlation-id").unwrap();
    assert_ne!(id, "evil value\twith spaces");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(res.body["meta"]["correlationId"], id);
    let long = "a".repeat(200);
    let res = t.call_with(Method::GET, "/health/liveness", None, None, &[("x-correlation-id", &long)]).await;
    assert_ne!(res.header("x-correlation-id"), Some(long.as_str()));
}

async fn oversized_body_is_413_in_our_error_body(b: Backend) {
    let t = TestApp::with(b, |c| c.max_json_body = 10_000).await;
    let s = t.register("Firm").await;
    let res = t
        .post("/api/v1/cases", &s.token, json!({"caseNumber": "1", "title": "x".repeat(20_000), "type": "civil"}))
        .await;
    assert_error_body(&res, 413, "PAYLOAD_TOO_LARGE");
}

async fn health_probes_answer_without_a_token(b: Backend) {
    let t = TestApp::new(b).await;
    for path in ["/health", "/health/liveness", "/health/readiness"] {
        let res = t.call(Method::GET, path, None, None).await;
        res.expect(200);
        assert_eq!(res.body["status"], "ok");
    }
    t.app.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    let down = t.call(Method::GET, "/health/readiness", None, None).await;
    down.expect(503);
    // The Terminus body survives: the error middleware does not replace a probe's own JSON.
    assert_eq!(down.body["status"], "error");
    assert_eq!(down.body["error"]["lifecycle"]["status"], "down");
    t.call(Method::GET, "/health/liveness", None, None).await.expect(200);
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let doc = serde_json::to_value(lexiflow::http::router::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/auth/register", &["post"][..]),
        ("/api/v1/auth/login", &["post"]),
        ("/api/v1/auth/refresh", &["post"]),
        ("/api/v1/auth/logout", &["post"]),
        ("/api/v1/auth/me", &["get"]),
        ("/api/v1/auth/sessions", &["get"]),
        ("/api/v1/auth/sessions/{id}", &["delete"]),
        ("/api/v1/sessions", &["get"]),
        ("/api/v1/sessions/{id}", &["delete"]),
        ("/api/v1/admin/breakers", &["get"]),
        ("/api/v1/users", &["get", "post"]),
        ("/api/v1/users/{id}", &["patch"]),
        ("/api/v1/cases", &["get", "post"]),
        ("/api/v1/cases/{id}", &["get", "patch", "delete"]),
        ("/api/v1/cases/{id}/team", &["get", "post"]),
        ("/api/v1/cases/{id}/team/{userId}", &["delete"]),
        ("/api/v1/cases/{id}/parties", &["get", "post"]),
        ("/api/v1/cases/{id}/parties/{partyId}", &["get", "patch", "delete"]),
        ("/api/v1/cases/{id}/documents", &["get", "post"]),
        ("/api/v1/documents/{id}", &["get", "patch", "delete"]),
        ("/api/v1/documents/{id}/versions", &["get", "post"]),
        ("/api/v1/documents/{id}/download", &["get"]),
        ("/api/v1/uploads", &["post"]),
        ("/api/v1/uploads/{id}", &["head", "patch", "delete", "get"]),
        ("/api/v1/calendar", &["get", "post"]),
        ("/api/v1/calendar/upcoming", &["get"]),
        ("/api/v1/calendar/{id}", &["get", "patch", "delete"]),
        ("/api/v1/calendar/rules", &["get", "post"]),
        ("/api/v1/calendar/rules/{ruleId}", &["delete"]),
        ("/api/v1/calendar/closures", &["get", "post"]),
        ("/api/v1/calendar/closures/{day}", &["delete"]),
        ("/api/v1/calendar/feed", &["post", "delete"]),
        ("/api/v1/calendar/feed/{token}", &["get"]),
        ("/api/v1/cases/{id}/deadlines/compute", &["post"]),
        ("/api/v1/calendar/connections", &["get"]),
        ("/api/v1/calendar/connections/{provider}", &["delete"]),
        ("/api/v1/calendar/connections/{provider}/authorize", &["get"]),
        ("/api/v1/calendar/connections/{provider}/callback", &["post"]),
        ("/api/v1/calendar/connections/{provider}/sync", &["post"]),
    ] {
        let entry = paths.get(path).unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(entry.get(*m).is_some(), "{m} {path} missing");
        }
    }
    assert!(doc["components"]["schemas"].get("CaseView").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearerAuth").is_some());
}

#[tokio::test]
async fn swagger_ui_and_openapi_json_are_served_from_the_binary() {
    let t = TestApp::new(Backend::Sqlite).await;
    let res = t.call(Method::GET, "/api/openapi.json", None, None).await;
    res.expect(200);
    assert_eq!(res.body["info"]["title"], "LexiFlow API");
    let res = t.call(Method::GET, "/api/docs/", None, None).await;
    res.expect(200);
    assert!(res.body.as_str().unwrap_or_default().contains("swagger"));
}

async fn health_is_served_from_one_recent_check(b: Backend) {
    let t = TestApp::new(b).await;
    let first = t.call(Method::GET, "/health", None, None).await;
    first.expect(200);
    let latency = |r: &crate::support::Res| r.body["details"]["database"]["latencyMs"].clone();
    assert!(latency(&first).is_number(), "{}", first.body);
    // Calls close together read the same run of the checks: the database was asked once.
    let again = t.call(Method::GET, "/health", None, None).await;
    let ready = t.call(Method::GET, "/health/readiness", None, None).await;
    assert_eq!(again.body, first.body);
    assert_eq!(ready.body["details"]["database"], first.body["details"]["database"]);
    // And the task runs them again within the freshness bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let r = t.call(Method::GET, "/health", None, None).await;
        r.expect(200);
        if r.body != first.body {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the health result was never refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).unwrap();
    out
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut std::io::Cursor::new(b), &mut out).unwrap();
    out
}

async fn json_responses_are_compressed_when_the_client_accepts_it(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    for i in 0..30 {
        t.post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": format!("C-{i}"), "title": format!("Matter {i}"), "type": "civil"}),
        )
        .await
        .expect(201);
    }
    let path = "/api/v1/cases?limit=100";
    let (st, h, plain) = t.raw(Method::GET, path, Some(&s.token), &[]).await;
    assert_eq!(st, 200);
    assert!(h.get("content-encoding").is_none());
    assert!(plain.len() > 1024, "the list is {} bytes", plain.len());
    // A compressible type always says that the answer depends on Accept-Encoding.
    assert!(h.get_all("vary").iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("accept-encoding")));
    let plain: serde_json::Value = serde_json::from_slice(&plain).unwrap();

    for (accept, encoding) in [("gzip", "gzip"), ("br", "br"), ("gzip;q=0.5, br", "br"), ("deflate, gzip", "gzip")] {
        let (st, h, bytes) = t.raw(Method::GET, path, Some(&s.token), &[("accept-encoding", accept)]).await;
        assert_eq!(st, 200);
        assert_eq!(h.get("content-encoding").map(|v| v.to_str().unwrap()), Some(encoding), "{accept}");
        assert!(h.get_all("vary").iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("accept-encoding")));
        let decoded = if encoding == "gzip" { gunzip(&bytes) } else { unbrotli(&bytes) };
        let body: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        // The same page (the meta differs per request).
        assert_eq!(body["data"], plain["data"], "{accept}");
        assert!(bytes.len() * 3 < decoded.len(), "{accept}: {} bytes for {}", bytes.len(), decoded.len());
        // Security headers survive compression.
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    }
    // Small bodies are sent as they are.
    let (_, h, _) = t.raw(Method::GET, "/health/liveness", None, &[("accept-encoding", "gzip")]).await;
    assert!(h.get("content-encoding").is_none());
    // The OpenAPI document, the largest answer, shrinks too.
    let (_, h, bytes) = t.raw(Method::GET, "/api/openapi.json", None, &[("accept-encoding", "gzip")]).await;
    assert_eq!(h.get("content-encoding").unwrap(), "gzip");
    let doc: serde_json::Value = serde_json::from_slice(&gunzip(&bytes)).unwrap();
    assert!(doc["paths"].is_object());
    // Errors keep our error body and can be compressed like any JSON.
    let (st, _, _) =
        t.raw(Method::GET, "/api/v1/cases/not-a-uuid", Some(&s.token), &[("accept-encoding", "gzip")]).await;
    assert!(st.is_client_error());
}

async fn compression_can_be_turned_off(b: Backend) {
    let t = TestApp::with(b, |c| c.compression = false).await;
    let (st, h, bytes) = t.raw(Method::GET, "/api/openapi.json", None, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(st, 200);
    assert!(h.get("content-encoding").is_none());
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
}
