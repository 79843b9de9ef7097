//! Docket entries: server-assigned gapless numbers under concurrency, sealed and restricted
//! visibility, editing and striking.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    numbers_are_gapless_under_twenty_concurrent_posters,
    sealed_entries_do_not_exist_for_those_who_may_not_see_them,
    entries_are_edited_and_struck_but_never_renumbered,
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

    // Admin and lead attorney see all three.
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

    // A partner who leads the case sees sealed material too (partners have no team role looked
    // up, since they see every case).
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"leadAttorneyId": partner.user_id}))
        .await
        .expect(200);
    assert_eq!(docket(&t, &partner, &case).await.total, 3);
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
