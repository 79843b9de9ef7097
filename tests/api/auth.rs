//! Registration, login, token rotation, logout, sessions — and the attacks on them.

use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::{Backend, PASSWORD, SECRET, TestApp};

crate::on_both_backends!(
    register_creates_a_firm_admin_and_returns_tokens,
    register_refuses_a_role_in_the_body,
    register_names_every_invalid_field,
    duplicate_email_is_a_conflict,
    wrong_email_and_wrong_password_get_the_same_answer,
    refresh_rotates_the_pair,
    reused_refresh_token_revokes_the_whole_session,
    logout_ends_access_and_refresh_tokens_at_once,
    alg_none_token_is_rejected,
    token_signed_with_another_key_is_rejected,
    expired_token_is_rejected_as_expired,
    non_access_token_type_is_rejected,
    token_of_a_deleted_session_is_rejected,
    sessions_are_listed_and_revocable_by_their_owner_only,
    firm_admins_see_and_end_the_firms_sessions_and_nobody_elses,
    suspended_user_loses_access_immediately,
    every_protected_route_needs_a_token,
);

async fn register_creates_a_firm_admin_and_returns_tokens(b: Backend) {
    let t = TestApp::new(b).await;
    let res = t
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"firmName": "Acme LLP", "email": "Ann@Acme.Test", "password": PASSWORD, "firstName": "Ann", "lastName": "Lee"})),
        )
        .await;
    res.expect(201);
    let d = res.data();
    assert_eq!(d["user"]["role"], "admin");
    assert_eq!(d["user"]["email"], "ann@acme.test");
    assert!(d["user"].get("passwordHash").is_none());
    assert_eq!(d["expiresIn"], 900);
    assert!(d["refreshToken"].as_str().unwrap().starts_with("lfr_"));
    let me = t.get("/api/v1/auth/me", d["accessToken"].as_str().unwrap()).await;
    me.expect(200);
    assert_eq!(me.data()["email"], "ann@acme.test");
    // The password is stored as an argon2id hash, never in clear.
    let rows = t.sql("SELECT password_hash FROM users").await;
    let hash: String = rows[0].try_get("", "password_hash").unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

async fn register_refuses_a_role_in_the_body(b: Backend) {
    let t = TestApp::new(b).await;
    let res = t
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"firmName": "X", "email": "x@x.test", "password": PASSWORD, "firstName": "A", "lastName": "B", "role": "admin"})),
        )
        .await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    assert!(res.body["error"]["message"].as_str().unwrap().contains("role"));
    assert!(t.sql("SELECT id FROM users").await.is_empty(), "nothing may be created");
}

async fn register_names_every_invalid_field(b: Backend) {
    let t = TestApp::new(b).await;
    let res = t
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"firmName": " ", "email": "not-an-email", "password": "short", "firstName": "A", "lastName": "B"})),
        )
        .await;
    res.expect(400);
    let fields: Vec<&str> = res.body["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["firmName", "email", "password"]);
}

async fn duplicate_email_is_a_conflict(b: Backend) {
    let t = TestApp::new(b).await;
    let body = json!({"firmName": "A", "email": "dup@x.test", "password": PASSWORD, "firstName": "A", "lastName": "B"});
    t.call(Method::POST, "/api/v1/auth/register", None, Some(body.clone())).await.expect(201);
    let res = t.call(Method::POST, "/api/v1/auth/register", None, Some(body)).await;
    res.expect(409);
    assert_eq!(res.code(), "CONFLICT");
    assert_eq!(res.body["error"]["details"]["field"], "email");
    assert_eq!(t.sql("SELECT id FROM firms").await.len(), 1, "the second firm must not survive its failed user");
}

async fn wrong_email_and_wrong_password_get_the_same_answer(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let wrong_pw = t
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": s.email, "password": "wrong password!!"})))
        .await;
    let wrong_email = t
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": "nobody@x.test", "password": PASSWORD})))
        .await;
    wrong_pw.expect(401);
    wrong_email.expect(401);
    assert_eq!(wrong_pw.code(), "AUTH_INVALID_CREDENTIALS");
    assert_eq!(wrong_pw.body["error"], wrong_email.body["error"]);
}

async fn refresh_rotates_the_pair(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let res = t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": s.refresh}))).await;
    res.expect(200);
    let new_access = res.data()["accessToken"].as_str().unwrap();
    assert_ne!(res.data()["refreshToken"], s.refresh.as_str());
    t.get("/api/v1/auth/me", new_access).await.expect(200);
    // The old access token of the same session keeps working until it expires.
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
}

async fn reused_refresh_token_revokes_the_whole_session(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let first = t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": s.refresh}))).await;
    first.expect(200);
    let stolen_reuse =
        t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": s.refresh}))).await;
    stolen_reuse.expect(401);
    assert_eq!(stolen_reuse.code(), "AUTH_TOKEN_INVALID");
    // Every token of that login is now dead: the new refresh token and both access tokens.
    let rotated = first.data()["refreshToken"].as_str().unwrap();
    t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": rotated}))).await.expect(401);
    t.get("/api/v1/auth/me", first.data()["accessToken"].as_str().unwrap()).await.expect(401);
    t.get("/api/v1/auth/me", &s.token).await.expect(401);
    // Another login of the same user is untouched.
    let other = t.login(&s.email).await;
    t.get("/api/v1/auth/me", &other.token).await.expect(200);
}

async fn logout_ends_access_and_refresh_tokens_at_once(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    t.call(Method::POST, "/api/v1/auth/logout", Some(&s.token), None).await.expect(204);
    let res = t.get("/api/v1/auth/me", &s.token).await;
    res.expect(401);
    assert_eq!(res.code(), "AUTH_TOKEN_INVALID");
    t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": s.refresh}))).await.expect(401);
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn claims_for(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn alg_none_token_is_rejected(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let claims = claims_for(&s.token);
    for alg in ["none", "None", "NONE"] {
        let forged = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(&claims));
        let res = t.get("/api/v1/auth/me", &forged).await;
        res.expect(401);
        assert_eq!(res.code(), "AUTH_TOKEN_INVALID");
    }
}

async fn token_signed_with_another_key_is_rejected(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let claims = claims_for(&s.token);
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another-secret-entirely-0123456789abcdef"),
    )
    .unwrap();
    t.get("/api/v1/auth/me", &forged).await.expect(401);
    // And HS512 with the right key is still refused: the algorithm is pinned.
    let hs512 =
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    t.get("/api/v1/auth/me", &hs512).await.expect(401);
}

async fn expired_token_is_rejected_as_expired(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let mut claims = claims_for(&s.token);
    let now = chrono::Utc::now().timestamp();
    claims["iat"] = json!(now - 3600);
    claims["exp"] = json!(now - 60);
    let expired =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    let res = t.get("/api/v1/auth/me", &expired).await;
    res.expect(401);
    assert_eq!(res.code(), "AUTH_TOKEN_EXPIRED");
}

async fn non_access_token_type_is_rejected(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let mut claims = claims_for(&s.token);
    claims["type"] = json!("refresh");
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    t.get("/api/v1/auth/me", &token).await.expect(401);
}

async fn token_of_a_deleted_session_is_rejected(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let mut claims = claims_for(&s.token);
    claims["sid"] = json!(uuid::Uuid::now_v7());
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    t.get("/api/v1/auth/me", &token).await.expect(401);
}

async fn sessions_are_listed_and_revocable_by_their_owner_only(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let second = t.login(&s.email).await;
    let list = t.get("/api/v1/auth/sessions", &s.token).await;
    list.expect(200);
    let sessions = list.data().as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|x| x["current"] == true).count(), 1);
    let other_id = sessions.iter().find(|x| x["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();

    // Someone else (another firm's admin) cannot revoke it: it does not exist for them.
    let stranger = t.register("Other").await;
    t.delete(&format!("/api/v1/auth/sessions/{other_id}"), &stranger.token).await.expect(404);
    t.get("/api/v1/auth/me", &second.token).await.expect(200);

    t.delete(&format!("/api/v1/auth/sessions/{other_id}"), &s.token).await.expect(204);
    t.get("/api/v1/auth/me", &second.token).await.expect(401);
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
}

async fn firm_admins_see_and_end_the_firms_sessions_and_nobody_elses(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let att = t.user(&admin, "attorney").await;
    let stranger = t.register("Other").await;
    let list = t.get("/api/v1/sessions", &admin.token).await;
    list.expect(200);
    let sessions = list.data().as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "the admin's and the attorney's, not the other firm's: {sessions:?}");
    let att_session = sessions.iter().find(|s| s["userId"] == att.user_id.as_str()).unwrap();
    assert_eq!(att_session["email"], att.email.as_str());
    assert_eq!(att_session["role"], "attorney");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let att_sid = att_session["id"].as_str().unwrap().to_owned();
    // Only admins, and only their own firm's.
    t.get("/api/v1/sessions", &att.token).await.expect(403);
    t.delete(&format!("/api/v1/sessions/{att_sid}"), &att.token).await.expect(403);
    t.delete(&format!("/api/v1/sessions/{att_sid}"), &stranger.token).await.expect(404);
    t.get("/api/v1/auth/me", &att.token).await.expect(200);
    t.delete(&format!("/api/v1/sessions/{att_sid}"), &admin.token).await.expect(204);
    t.get("/api/v1/auth/me", &att.token).await.expect(401);
    t.delete(&format!("/api/v1/sessions/{att_sid}"), &admin.token).await.expect(404);
    let audit = t.get("/api/v1/audit?action=auth.session_revoked", &admin.token).await;
    let entries = audit.data().as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["entityId"], att_sid.as_str());
    assert_eq!(entries[0]["changes"]["userId"], att.user_id.as_str());
}

async fn suspended_user_loses_access_immediately(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let att = t.user(&admin, "attorney").await;
    t.get("/api/v1/auth/me", &att.token).await.expect(200);
    t.patch(&format!("/api/v1/users/{}", att.user_id), &admin.token, json!({"status": "suspended"})).await.expect(200);
    t.get("/api/v1/auth/me", &att.token).await.expect(401);
    t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": att.refresh}))).await.expect(401);
    let login =
        t.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": att.email, "password": PASSWORD}))).await;
    login.expect(401);
    assert_eq!(login.code(), "AUTH_INVALID_CREDENTIALS");
}

async fn every_protected_route_needs_a_token(b: Backend) {
    let t = TestApp::new(b).await;
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (Method::GET, "/api/v1/auth/me".to_string()),
        (Method::POST, "/api/v1/auth/logout".to_string()),
        (Method::GET, "/api/v1/auth/sessions".to_string()),
        (Method::GET, "/api/v1/users".to_string()),
        (Method::GET, "/api/v1/cases".to_string()),
        (Method::POST, "/api/v1/cases".to_string()),
        (Method::GET, format!("/api/v1/cases/{id}")),
        (Method::PATCH, format!("/api/v1/cases/{id}")),
        (Method::DELETE, format!("/api/v1/cases/{id}")),
        (Method::GET, format!("/api/v1/cases/{id}/team")),
        (Method::GET, format!("/api/v1/cases/{id}/parties")),
        (Method::GET, format!("/api/v1/cases/{id}/parties/{id}")),
    ] {
        let res = t.call(method.clone(), &path, None, None).await;
        assert_eq!(res.status.as_u16(), 401, "{method} {path} answered {}", res.status);
        assert_eq!(res.code(), "AUTH_REQUIRED");
        assert!(res.header("x-correlation-id").is_some());
        assert!(res.header("x-response-time").is_some());
        assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    }
}
