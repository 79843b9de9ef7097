//! The response contract: envelope, error body for every rejection, correlation ids, OpenAPI.

use axum::body::Body;
use http::{Method, Request};
use serde_json::json;

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    success_envelope_carries_meta,
    every_rejection_uses_our_error_body,
    correlation_id_is_echoed_when_sane_and_replaced_when_not,
    oversized_body_is_413_in_our_error_body,
    health_probes_answer_without_a_token,
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
        ("/api/v1/users", &["get", "post"]),
        ("/api/v1/users/{id}", &["patch"]),
        ("/api/v1/cases", &["get", "post"]),
        ("/api/v1/cases/{id}", &["get", "patch", "delete"]),
        ("/api/v1/cases/{id}/team", &["get", "post"]),
        ("/api/v1/cases/{id}/team/{userId}", &["delete"]),
        ("/api/v1/cases/{id}/parties", &["get", "post"]),
        ("/api/v1/cases/{id}/parties/{partyId}", &["get", "patch", "delete"]),
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
