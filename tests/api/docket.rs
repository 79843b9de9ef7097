//! Docket entries: server-assigned gapless numbers under concurrency, sealed and restricted
//! visibility, editing and striking.

use futures_util::future::join_all;
use http::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    numbers_are_gapless_under_twenty_concurrent_posters,
    sealed_entries_do_not_exist_for_those_who_may_not_see_them,
    entries_are_edited_and_struck_but_never_renumbered,
    partner_who_makes_themselves_lead_still_does_not_see_sealed_entries,
    sealed_access_is_a_per_case_grant_that_only_another_admin_gives,
    unrestricted_entry_keeps_its_restricted_history_from_clients,
    a_team_member_made_a_client_is_treated_as_one,
    a_batch_past_the_limit_is_refused_while_the_body_is_read,
);

fn entry(description: &str) -> Value {
    json!({"type": "filing", "description": description, "entryDate": "2026-11-02"})
}

async fn docket(t: &TestApp, s: &Session, case: &str) -> Res2 {
    let r = t.get(&format!("/api/v1/cases/{case}/docket?limit=100"), &s.token).await;
    r.expect(200);
    let items = r.data().as_array().unwrap().clone();
    Res2 { total: r.body["meta"]["pagination"]["total"].as_u64().unwrap(), items }
}

struct Res2 {
    total: u64,
    items: Vec<Value>,
}

async fn team_add(t: &TestApp, admin: &Session, case: &str, user: &Session, role: &str) {
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": user.user_id, "role": role}))
        .await
        .expect(201);
}

async fn numbers_are_gapless_under_twenty_concurrent_posters(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Docket").await;
    let case = t.case(&s, "D-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    // Twenty posters at once, three entries each (one at a time), plus one posting a batch.
    let posters = (0..20).map(|p| {
        let (t, s, path) = (&t, &s, &path);
        async move {
            for i in 0..3 {
                t.post(path, &s.token, entry(&format!("poster {p} entry {i}"))).await.expect(201);
            }
        }
    });
    let batch = async {
        let r = t.post(&path, &s.token, json!([entry("batch 1"), entry("batch 2"), entry("batch 3")])).await;
        let seqs: Vec<i64> =
            r.expect(201).data().as_array().unwrap().iter().map(|e| e["sequenceNumber"].as_i64().unwrap()).collect();
        assert_eq!(seqs[1], seqs[0] + 1, "a batch is numbered in order, without interleaving");
        assert_eq!(seqs[2], seqs[0] + 2);
    };
    let (_, ()) = futures_util::join!(join_all(posters), batch);
    let d = docket(&t, &s, &case).await;
    assert_eq!(d.total, 63);
    let seqs: Vec<i64> = d.items.iter().map(|e| e["sequenceNumber"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=63).collect::<Vec<_>>(), "1..N, no gap, no duplicate, in order");
}

async fn sealed_entries_do_not_exist_for_those_who_may_not_see_them(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Sealed").await;
    let lead = t.user(&admin, "attorney").await;
    let paralegal = t.user(&admin, "paralegal").await;
    let partner = t.user(&admin, "partner").await;
    let client = t.user(&admin, "client").await;
    let case = t.case(&admin, "S-1").await;
    team_add(&t, &admin, &case, &lead, "lead_attorney").await;
    team_add(&t, &admin, &case, &paralegal, "paralegal").await;
    team_add(&t, &admin, &case, &client, "client").await;
    let path = format!("/api/v1/cases/{case}/docket");

    t.post(&path, &admin.token, entry("Complaint")).await.expect(201);
    let sealed = t
        .post(
            &path,
            &admin.token,
            json!({"type": "motion", "description": "Motion to seal", "text": "<p>secret</p>", "sealed": true}),
        )
        .await;
    let sealed_id = sealed.expect(201).data()["id"].as_str().unwrap().to_owned();
    t.post(&path, &admin.token, json!({"type": "correspondence", "description": "Internal note", "restricted": true}))
        .await
        .expect(201);

    // The admin sees all three, and so does the lead attorney once an admin grants it.
    t.call(Method::PUT, &format!("/api/v1/cases/{case}/sealed-access/{}", lead.user_id), Some(&admin.token), None)
        .await
        .expect(200);
    for who in [&admin, &lead] {
        let d = docket(&t, who, &case).await;
        assert_eq!(d.total, 3);
        t.get(&format!("{path}/{sealed_id}"), &who.token).await.expect(200);
    }
    // A paralegal and a partner: the sealed entry is not in the list, not counted, not gettable,
    // and its history is not in the case's history.
    for who in [&paralegal, &partner] {
        let d = docket(&t, who, &case).await;
        assert_eq!(d.total, 2, "counts leave it out");
        assert!(d.items.iter().all(|e| e["id"] != sealed_id.as_str()));
        let r = t.get(&format!("{path}/{sealed_id}"), &who.token).await;
        r.expect(404);
        assert_eq!(r.code(), "RESOURCE_NOT_FOUND");
        t.patch(&format!("{path}/{sealed_id}"), &who.token, json!({"description": "x"})).await.expect(404);
        let h = t.get(&format!("/api/v1/cases/{case}/history"), &who.token).await;
        let h = h.expect(200).data().as_array().unwrap().clone();
        assert!(h.iter().all(|e| e["entityId"] != sealed_id.as_str()), "no trace in the history");
        assert!(!h.iter().any(|e| e.to_string().contains("secret")));
        // Nor may they seal.
        t.post(&path, &who.token, json!({"type": "order", "description": "x", "sealed": true})).await.expect(403);
    }
    // A client sees neither the sealed nor the restricted entry.
    let d = docket(&t, &client, &case).await;
    assert_eq!(d.total, 1);
    assert_eq!(d.items[0]["description"], "Complaint");

    // Unsealing makes the entry visible, but not its sealed history.
    t.patch(&format!("{path}/{sealed_id}"), &admin.token, json!({"sealed": false})).await.expect(200);
    t.get(&format!("{path}/{sealed_id}"), &paralegal.token).await.expect(200);
    let h = t.get(&format!("/api/v1/cases/{case}/history"), &paralegal.token).await;
    assert!(!h.expect(200).body.to_string().contains("secret"), "the once-sealed entry's history stays hidden");
}

async fn entries_are_edited_and_struck_but_never_renumbered(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Edits").await;
    let case = t.case(&s, "E-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let first = t.post(&path, &s.token, entry("First")).await;
    let first = first.expect(201).data().clone();
    assert_eq!(first["sequenceNumber"], 1);
    let id = first["id"].as_str().unwrap();

    // The number is the server's: a client cannot set it, on create or on update.
    let r = t.post(&path, &s.token, json!({"type": "filing", "description": "x", "sequenceNumber": 7})).await;
    r.expect(400);
    t.patch(&format!("{path}/{id}"), &s.token, json!({"sequenceNumber": 9})).await.expect(400);
    t.post(&path, &s.token, json!({"type": "nonsense", "description": "x"})).await.expect(400);
    t.post(&path, &s.token, json!({"type": "order", "description": " "})).await.expect(400);

    let r = t.patch(&format!("{path}/{id}"), &s.token, json!({"description": "First, corrected", "version": 1})).await;
    let e = r.expect(200).data().clone();
    assert_eq!((e["version"].as_i64(), e["sequenceNumber"].as_i64()), (Some(2), Some(1)));
    t.patch(&format!("{path}/{id}"), &s.token, json!({"description": "stale", "version": 1})).await.expect(412);

    t.post(&path, &s.token, entry("Second")).await.expect(201);
    t.delete(&format!("{path}/{id}"), &s.token).await.expect(204);
    t.get(&format!("{path}/{id}"), &s.token).await.expect(404);
    let third = t.post(&path, &s.token, entry("Third")).await;
    assert_eq!(third.expect(201).data()["sequenceNumber"], 3, "a struck entry's number is not reused");
    let d = docket(&t, &s, &case).await;
    let seqs: Vec<i64> = d.items.iter().map(|e| e["sequenceNumber"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3]);
    let h = t.get(&format!("/api/v1/cases/{case}/history"), &s.token).await;
    let actions: Vec<String> =
        h.expect(200).data().as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    assert!(actions.contains(&"docket.delete".to_owned()) && actions.contains(&"docket.update".to_owned()));
}

fn sealed_access(case: &str, user: &Session) -> String {
    format!("/api/v1/cases/{case}/sealed-access/{}", user.user_id)
}

async fn history(t: &TestApp, s: &Session, case: &str) -> String {
    let h = t.get(&format!("/api/v1/cases/{case}/history?limit=100"), &s.token).await;
    h.expect(200).body.to_string()
}

async fn partner_who_makes_themselves_lead_still_does_not_see_sealed_entries(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Self Lead").await;
    let partner = t.user(&admin, "partner").await;
    let case = t.case(&admin, "SL-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let sealed = t
        .post(
            &path,
            &admin.token,
            json!({"type": "motion", "description": "Under seal", "text": "<p>secret</p>", "sealed": true}),
        )
        .await;
    let sealed_id = sealed.expect(201).data()["id"].as_str().unwrap().to_owned();

    // The partner may edit the case, so they may name themselves its lead attorney…
    t.patch(&format!("/api/v1/cases/{case}"), &partner.token, json!({"leadAttorneyId": partner.user_id}))
        .await
        .expect(200);
    // …but leading a case is not a grant: the sealed entry still does not exist for them.
    assert_eq!(docket(&t, &partner, &case).await.total, 0);
    t.get(&format!("{path}/{sealed_id}"), &partner.token).await.expect(404);
    assert!(!history(&t, &partner, &case).await.contains("secret"));
    t.post(&path, &partner.token, json!({"type": "order", "description": "x", "sealed": true})).await.expect(403);
    // Nor can they grant it to themselves.
    let r = t.call(Method::PUT, &sealed_access(&case, &partner), Some(&partner.token), None).await;
    r.expect(403);
    assert_eq!(r.code(), "FORBIDDEN");
    assert_eq!(docket(&t, &partner, &case).await.total, 0);
}

async fn sealed_access_is_a_per_case_grant_that_only_another_admin_gives(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Grants").await;
    let admin2 = t.user(&admin, "admin").await;
    let attorney = t.user(&admin, "attorney").await;
    let partner = t.user(&admin, "partner").await;
    let stranger = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "G-1").await;
    let other_case = t.case(&admin, "G-2").await;
    team_add(&t, &admin, &case, &attorney, "attorney").await;
    team_add(&t, &admin, &other_case, &attorney, "attorney").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let sealed = t.post(&path, &admin.token, json!({"type": "motion", "description": "Sealed", "sealed": true})).await;
    let sealed_id = sealed.expect(201).data()["id"].as_str().unwrap().to_owned();
    t.post(
        &format!("/api/v1/cases/{other_case}/docket"),
        &admin.token,
        json!({"type": "order", "description": "S2", "sealed": true}),
    )
    .await
    .expect(201);
    let entry_path = format!("{path}/{sealed_id}");
    // The attorney reads once without a grant (and so warms any cache of their access).
    t.get(&entry_path, &attorney.token).await.expect(404);

    // Only an admin grants: not a partner, not the team member themselves.
    for who in [&partner, &attorney] {
        let r = t.call(Method::PUT, &sealed_access(&case, &attorney), Some(&who.token), None).await;
        r.expect(403);
        assert_eq!(r.code(), "FORBIDDEN");
    }
    // An admin cannot grant it to themselves either.
    let r = t.call(Method::PUT, &sealed_access(&case, &admin), Some(&admin.token), None).await;
    r.expect(403);
    assert_eq!(r.code(), "FORBIDDEN");
    // The grantee must be able to see the case.
    t.call(Method::PUT, &sealed_access(&case, &stranger), Some(&admin.token), None).await.expect(400);
    // Another firm's admin cannot reach this case, and this firm's admin cannot grant to their users.
    let other = t.register("Elsewhere").await;
    let outsider = t.user(&other, "partner").await;
    let r = t.call(Method::PUT, &sealed_access(&case, &attorney), Some(&other.token), None).await;
    r.expect(404);
    assert_eq!(r.code(), "RESOURCE_NOT_FOUND");
    t.get(&format!("/api/v1/cases/{case}/sealed-access"), &other.token).await.expect(404);
    t.call(Method::PUT, &sealed_access(&case, &outsider), Some(&admin.token), None).await.expect(400);
    assert_eq!(docket(&t, &attorney, &case).await.total, 0, "none of the refused grants took");

    // Another admin grants it: the attorney sees the sealed entry on this case only.
    let g = t.call(Method::PUT, &sealed_access(&case, &attorney), Some(&admin2.token), None).await;
    let g = g.expect(200).data().clone();
    assert_eq!(g["userId"], attorney.user_id.as_str());
    assert_eq!(g["grantedBy"], admin2.user_id.as_str());
    t.get(&entry_path, &attorney.token).await.expect(200);
    assert_eq!(docket(&t, &attorney, &case).await.total, 1);
    assert_eq!(docket(&t, &attorney, &other_case).await.total, 0, "a grant is per case");
    // The grant is in the case's history for those who see sealed material only.
    assert!(history(&t, &attorney, &case).await.contains("case.sealed_access_grant"));
    assert!(!history(&t, &partner, &case).await.contains("sealed_access"));
    // Granting again changes nothing.
    t.call(Method::PUT, &sealed_access(&case, &attorney), Some(&admin.token), None).await.expect(200);
    let list = t.get(&format!("/api/v1/cases/{case}/sealed-access"), &admin.token).await;
    let list = list.expect(200).data().as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["userId"], attorney.user_id.as_str());
    t.get(&format!("/api/v1/cases/{case}/sealed-access"), &partner.token).await.expect(403);
    // Only an admin revokes.
    t.delete(&sealed_access(&case, &attorney), &attorney.token).await.expect(403);

    // Revoking takes effect at once, also on another instance that has just served the entry.
    let sibling = t.sibling().await;
    sibling.get(&entry_path, &attorney.token).await.expect(200);
    t.delete(&sealed_access(&case, &attorney), &admin.token).await.expect(204);
    t.get(&entry_path, &attorney.token).await.expect(404);
    sibling.get(&entry_path, &attorney.token).await.expect(404);
    assert_eq!(docket(&t, &attorney, &case).await.total, 0);
    t.delete(&sealed_access(&case, &attorney), &admin.token).await.expect(404);

    // Each grant and revoke is on the record, once.
    let audit = t.get("/api/v1/audit?limit=100", &admin.token).await;
    let audit = audit.expect(200).data().as_array().unwrap().clone();
    let of = |action: &str| audit.iter().filter(|e| e["action"] == action).cloned().collect::<Vec<_>>();
    let grants = of("case.sealed_access_grant");
    assert_eq!(grants.len(), 1, "{audit:?}");
    assert_eq!(grants[0]["entityId"], attorney.user_id.as_str());
    assert_eq!(grants[0]["caseId"], case.as_str());
    assert_eq!(grants[0]["actorId"], admin2.user_id.as_str());
    assert_eq!(of("case.sealed_access_revoke").len(), 1);
}

async fn unrestricted_entry_keeps_its_restricted_history_from_clients(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Restricted").await;
    let client = t.user(&admin, "client").await;
    let paralegal = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "R-1").await;
    team_add(&t, &admin, &case, &client, "client").await;
    team_add(&t, &admin, &case, &paralegal, "paralegal").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let e = t
        .post(&path, &admin.token, json!({"type": "correspondence", "description": "Strategy memo", "text": "<p>settle below 40k</p>", "restricted": true}))
        .await;
    let id = e.expect(201).data()["id"].as_str().unwrap().to_owned();
    t.patch(&format!("{path}/{id}"), &admin.token, json!({"description": "Memo", "text": "<p>public summary</p>"}))
        .await
        .expect(200);
    t.get(&format!("{path}/{id}"), &client.token).await.expect(404);

    // Lifting the restriction shows the entry as it is now, not what it said while restricted.
    t.patch(&format!("{path}/{id}"), &admin.token, json!({"restricted": false})).await.expect(200);
    let now = t.get(&format!("{path}/{id}"), &client.token).await;
    assert_eq!(now.expect(200).data()["description"], "Memo");
    let h = history(&t, &client, &case).await;
    assert!(!h.contains("settle below") && !h.contains("Strategy memo"), "{h}");
    assert!(!h.contains(&id), "none of its history reaches the client");
    // Restricting it again and lifting it again changes nothing for the client.
    t.patch(&format!("{path}/{id}"), &admin.token, json!({"restricted": true})).await.expect(200);
    t.patch(&format!("{path}/{id}"), &admin.token, json!({"restricted": false})).await.expect(200);
    assert!(!history(&t, &client, &case).await.contains(&id));
    // Staff on the case still read the whole history.
    assert!(history(&t, &paralegal, &case).await.contains("settle below"));
}

/// A role change leaves the user's places on teams as they were: a paralegal on a team whose
/// firm role becomes client must be treated as a client there (no restricted material, no
/// changes), not as the paralegal they were.
async fn a_team_member_made_a_client_is_treated_as_one(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Made client").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "MC-1").await;
    team_add(&t, &admin, &case, &para, "paralegal").await;
    let path = format!("/api/v1/cases/{case}/docket");
    t.post(&path, &admin.token, entry("Open filing")).await.expect(201);
    let internal = t
        .post(
            &path,
            &admin.token,
            json!({"type": "correspondence", "description": "Internal note", "restricted": true}),
        )
        .await;
    let internal_id = internal.expect(201).data()["id"].as_str().unwrap().to_owned();
    assert_eq!(docket(&t, &para, &case).await.total, 2);

    t.patch(&format!("/api/v1/users/{}", para.user_id), &admin.token, json!({"role": "client", "version": 1}))
        .await
        .expect(200);
    let d = docket(&t, &para, &case).await;
    assert_eq!(d.total, 1, "{:?}", d.items);
    assert_eq!(d.items[0]["description"], "Open filing");
    t.get(&format!("{path}/{internal_id}"), &para.token).await.expect(404);
    t.post(&path, &para.token, entry("By a client")).await.expect(403);
}

/// A batch is counted as the body is read: one entry past the limit fails there, with a
/// message naming the limit. One entry and anything else are told apart as before.
async fn a_batch_past_the_limit_is_refused_while_the_body_is_read(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Batch").await;
    let case = t.case(&s, "B-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let res = t.post(&path, &s.token, Value::Array(vec![json!({}); 1_001])).await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    let message = res.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("at most 1000 entries per request"), "{}", res.body);

    let res = t.post(&path, &s.token, json!(42)).await;
    res.expect(400);
    assert_eq!(res.body["error"]["details"]["fields"][0]["field"], "body", "{}", res.body);
    t.post(&path, &s.token, json!([])).await.expect(400);

    t.post(&path, &s.token, json!([entry("one of a batch")])).await.expect(201);
    t.post(&path, &s.token, entry("on its own")).await.expect(201);
    assert_eq!(docket(&t, &s, &case).await.total, 2);
}
