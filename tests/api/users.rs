//! User administration and role rules.

use serde_json::json;

use crate::support::{Backend, PASSWORD, TestApp};

crate::on_both_backends!(
    admin_adds_users_and_others_cannot,
    nobody_changes_their_own_role,
    role_change_applies_at_once_and_stale_version_is_refused,
    users_of_another_firm_are_invisible,
);

async fn admin_adds_users_and_others_cannot(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let partner = t.user(&admin, "partner").await;
    let res = t
        .post(
            "/api/v1/users",
            &partner.token,
            json!({"email": "x@firm.test", "firstName": "X", "lastName": "Y", "role": "admin", "password": PASSWORD}),
        )
        .await;
    res.expect(403);
    assert_eq!(res.code(), "FORBIDDEN");
    t.get("/api/v1/users", &partner.token).await.expect(403);
    let list = t.get("/api/v1/users?limit=10", &admin.token).await;
    list.expect(200);
    assert_eq!(list.data().as_array().unwrap().len(), 2);
    assert_eq!(list.body["meta"]["pagination"]["total"], 2);
    // A role outside the catalogue is refused.
    t.post(
        "/api/v1/users",
        &admin.token,
        json!({"email": "y@firm.test", "firstName": "X", "lastName": "Y", "role": "superuser", "password": PASSWORD}),
    )
    .await
    .expect(400);
}

async fn nobody_changes_their_own_role(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let res = t.patch(&format!("/api/v1/users/{}", admin.user_id), &admin.token, json!({"role": "client"})).await;
    res.expect(403);
    let res = t.patch(&format!("/api/v1/users/{}", admin.user_id), &admin.token, json!({"status": "suspended"})).await;
    res.expect(403);
    let me = t.get("/api/v1/auth/me", &admin.token).await;
    assert_eq!(me.data()["role"], "admin");
    // A non-admin cannot promote themselves either.
    let para = t.user(&admin, "paralegal").await;
    t.patch(&format!("/api/v1/users/{}", para.user_id), &para.token, json!({"role": "admin"})).await.expect(403);
}

async fn role_change_applies_at_once_and_stale_version_is_refused(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let att = t.user(&admin, "attorney").await;
    let path = format!("/api/v1/users/{}", att.user_id);
    let res = t.patch(&path, &admin.token, json!({"role": "partner", "version": 1})).await;
    res.expect(200);
    assert_eq!(res.data()["version"], 2);
    t.patch(&path, &admin.token, json!({"role": "staff", "version": 1})).await.expect(412);
    // The token was issued as attorney; the new role counts from the next request.
    t.get("/api/v1/cases", &att.token).await.expect(200);
    let me = t.get("/api/v1/auth/me", &att.token).await;
    assert_eq!(me.data()["role"], "partner");
}

async fn users_of_another_firm_are_invisible(b: Backend) {
    let t = TestApp::new(b).await;
    let a = t.register("A").await;
    let b_admin = t.register("B").await;
    let res = t.patch(&format!("/api/v1/users/{}", b_admin.user_id), &a.token, json!({"status": "suspended"})).await;
    res.expect(404);
    t.get("/api/v1/auth/me", &b_admin.token).await.expect(200);
    let list = t.get("/api/v1/users", &a.token).await;
    assert!(list.data().as_array().unwrap().iter().all(|u| u["firmId"] == a.firm_id.as_str()));
}
