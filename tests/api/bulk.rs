//! Bulk operations: create (with upsert), update and delete of cases, and parties — atomic
//! and partial modes, per-item errors, and per-item audit entries in the same transaction.

use serde_json::{Value, json};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    partial_mode_keeps_the_good_items_and_names_the_bad,
    atomic_mode_writes_nothing_when_one_item_is_bad,
    taken_numbers_fail_skip_or_update,
    bulk_update_and_delete_report_each_item,
    bulk_parties_and_limits,
    atomic_bulk_over_several_chunks_is_whole_or_nothing,
    the_firms_other_writes_during_a_large_bulk_create_all_land,
    one_item_past_the_limit_is_refused_while_the_body_is_read,
);

fn case(number: &str) -> Value {
    json!({"caseNumber": number, "title": format!("Matter {number}"), "type": "civil"})
}

fn mixed() -> Value {
    json!([
        case("B-1"),
        {"caseNumber": "B-2", "title": "  ", "type": "civil"},
        case("B-3"),
        case("B-1"),
        {"caseNumber": "B-4", "title": "Bad type", "type": "nonsense"},
        case("B-5"),
    ])
}

async fn total_cases(t: &TestApp, token: &str) -> u64 {
    t.get("/api/v1/cases?limit=1", token).await.expect(200).body["meta"]["pagination"]["total"].as_u64().unwrap()
}

async fn audit_count(t: &TestApp, action: &str) -> i64 {
    let rows = t.sql(&format!("SELECT COUNT(*) FROM audit_entries WHERE action = '{action}'")).await;
    rows[0].try_get_by_index(0).unwrap()
}

async fn partial_mode_keeps_the_good_items_and_names_the_bad(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Bulk").await;
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({"mode": "partial", "items": mixed()})).await;
    res.expect(200);
    let d = res.data();
    assert_eq!((d["total"].as_u64(), d["succeeded"].as_u64(), d["failed"].as_u64()), (Some(6), Some(3), Some(3)));
    let failed: Vec<u64> = d["errors"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(failed, vec![1, 3, 4]);
    assert_eq!(d["errors"][0]["code"], "VALIDATION_FAILED");
    assert_eq!(d["errors"][1]["code"], "CONFLICT", "a duplicate within the batch: {}", d["errors"][1]);
    let ids = d["ids"].as_array().unwrap();
    assert!(ids[0].is_string() && ids[1].is_null() && ids[2].is_string() && ids[5].is_string());
    assert_eq!(total_cases(&t, &s.token).await, 3);
    // Each item written is audited, and the chain still verifies.
    assert_eq!(audit_count(&t, "case.bulk_create").await, 3);
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
    // A created case reads back like any other, history included.
    let id = ids[2].as_str().unwrap();
    let c = t.get(&format!("/api/v1/cases/{id}"), &s.token).await;
    assert_eq!(c.expect(200).data()["caseNumber"], "B-3");
    let h = t.get(&format!("/api/v1/cases/{id}/history"), &s.token).await;
    assert_eq!(h.expect(200).data()[0]["action"], "case.bulk_create");
}

async fn atomic_mode_writes_nothing_when_one_item_is_bad(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Atomic").await;
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({"items": mixed()})).await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    assert_eq!(res.body["error"]["details"]["errors"].as_array().unwrap().len(), 3);
    assert_eq!(total_cases(&t, &s.token).await, 0);
    assert_eq!(audit_count(&t, "case.bulk_create").await, 0);

    // A conflict found only at write time (the number exists) also leaves nothing behind.
    t.case(&s, "B-3").await;
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({"items": [case("B-10"), case("B-3"), case("B-11")]})).await;
    res.expect(409);
    assert_eq!(res.body["error"]["details"]["errors"][0]["index"], 1);
    assert_eq!(total_cases(&t, &s.token).await, 1);

    let ok = t.post("/api/v1/cases/bulk", &s.token, json!({"items": [case("B-10"), case("B-11")]})).await;
    assert_eq!(ok.expect(200).data()["succeeded"], 2);
    assert_eq!(total_cases(&t, &s.token).await, 3);
}

/// A large atomic create is written in chunks while the next chunk is being prepared, its
/// audit entries sealed ahead against chain heads locked up front. One row the database
/// refuses in a later chunk must leave nothing of the earlier ones, and the chains and their
/// heads must stay right for the writes that follow.
async fn atomic_bulk_over_several_chunks_is_whole_or_nothing(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Chunks").await;
    let attorney = t.user(&s, "attorney").await;
    // Some chains have entries (and heads) already, others not yet.
    t.case(&s, "C-FIRST").await;
    let items = |prefix: &str| Value::Array((0..10_000).map(|i| case(&format!("{prefix}-{i:05}"))).collect());
    let count = |sql: &'static str| {
        let t = &t;
        async move { t.sql(sql).await[0].try_get_by_index::<i64>(0).unwrap() }
    };

    // The database refuses a row of the second chunk (a stand-in for any failure there).
    if b == Backend::Postgres {
        t.sql_exec(
            "CREATE FUNCTION refuse_case() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.case_number = 'R-07000' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$",
        )
        .await;
        t.sql_exec("CREATE TRIGGER refuse_case BEFORE INSERT ON cases FOR EACH ROW EXECUTE FUNCTION refuse_case()")
            .await;
    } else {
        t.sql_exec(
            "CREATE TRIGGER refuse_case BEFORE INSERT ON cases WHEN NEW.case_number = 'R-07000' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await;
    }
    let teams = count("SELECT COUNT(*) FROM case_team_members").await;
    let res = t.post("/api/v1/cases/bulk", &attorney.token, json!({"items": items("R")})).await;
    assert!(res.status.is_server_error(), "{} {}", res.status, res.body);
    assert_eq!(count("SELECT COUNT(*) FROM cases").await, 1, "nothing of the first chunk stays");
    assert_eq!(count("SELECT COUNT(*) FROM case_team_members").await, teams);
    assert_eq!(audit_count(&t, "case.bulk_create").await, 0);
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
    t.sql_exec(if b == Backend::Postgres { "DROP TRIGGER refuse_case ON cases" } else { "DROP TRIGGER refuse_case" })
        .await;

    // Without the refusal: every case, its team row (the attorney joins the teams of the
    // cases they open) and its entry, in order in the chains.
    let res = t.post("/api/v1/cases/bulk", &attorney.token, json!({"items": items("A")})).await;
    let d = res.expect(200).data();
    assert_eq!((d["succeeded"].as_u64(), d["failed"].as_u64()), (Some(10_000), Some(0)));
    assert_eq!(count("SELECT COUNT(*) FROM cases").await, 10_001);
    assert_eq!(count("SELECT COUNT(*) FROM case_team_members").await, teams + 10_000);
    assert_eq!(audit_count(&t, "case.bulk_create").await, 10_000);
    // Entries made on the producer thread still name the request they came from.
    let unnamed = count(
        "SELECT COUNT(*) FROM audit_entries WHERE action = 'case.bulk_create' \
         AND (correlation_id IS NULL OR actor_id IS NULL)",
    )
    .await;
    assert_eq!(unnamed, 0, "every entry carries the request's correlation id and the actor");
    let last = d["ids"][9_999].as_str().unwrap().to_owned();
    let c = t.get(&format!("/api/v1/cases/{last}"), &attorney.token).await;
    assert_eq!(c.expect(200).data()["caseNumber"], "A-09999");
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
    assert_eq!(v.data()["entriesChecked"].as_u64().unwrap(), count("SELECT COUNT(*) FROM audit_entries").await as u64);
    // The heads were left where the entries end: later writes chain on and verify.
    t.case(&s, "C-AFTER").await;
    let more = t.post("/api/v1/cases/bulk", &s.token, json!({"items": [case("A-10000"), case("A-10001")]})).await;
    more.expect(200);
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
}

/// Single creates of the same firm run while a two-chunk atomic bulk create holds the chain
/// heads, one of them racing the bulk for a number in its second chunk: every write lands or
/// is refused as a conflict — none fails on a lock — exactly one of the racers holds the
/// number, and the chains verify.
async fn the_firms_other_writes_during_a_large_bulk_create_all_land(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Busy").await;
    let attorney = t.user(&s, "attorney").await;
    let items = Value::Array((0..10_000).map(|i| case(&format!("BIG-{i:05}"))).collect());
    let bulk = t.post("/api/v1/cases/bulk", &s.token, json!({ "items": items }));
    let singles = (0..20).map(|i| {
        let (t, a) = (&t, &attorney);
        // The last one races the bulk for a number of its second chunk.
        let number = if i == 19 { "BIG-07000".to_owned() } else { format!("ONE-{i:02}") };
        async move {
            // Spread over the bulk's run, so that some land while it holds the heads.
            tokio::time::sleep(std::time::Duration::from_millis(40 * i)).await;
            t.post("/api/v1/cases", &a.token, case(&number)).await
        }
    });
    let (big, ones) = futures_util::join!(bulk, futures_util::future::join_all(singles));
    for r in &ones[..19] {
        r.expect(201);
    }
    let racer = &ones[19];
    let bulk_won = match (big.status.as_u16(), racer.status.as_u16()) {
        (200, 409) => true,
        (409, 201) => false,
        other => panic!("one of the two must win the number: {other:?} {} {}", big.body, racer.body),
    };
    let total = |sql: &'static str| {
        let t = &t;
        async move { t.sql(sql).await[0].try_get_by_index::<i64>(0).unwrap() }
    };
    let expected: i64 = if bulk_won { 10_000 + 19 } else { 20 };
    assert_eq!(total("SELECT COUNT(*) FROM cases").await, expected);
    assert_eq!(total("SELECT COUNT(*) FROM cases WHERE case_number = 'BIG-07000'").await, 1);
    assert_eq!(audit_count(&t, "case.bulk_create").await, if bulk_won { 10_000 } else { 0 });
    assert_eq!(audit_count(&t, "case.create").await, if bulk_won { 19 } else { 20 });
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
}

async fn taken_numbers_fail_skip_or_update(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Upsert").await;
    let existing = t
        .post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": "U-1", "title": "Matter U-1", "type": "civil", "status": "closed", "court": "Old Court"}),
        )
        .await;
    let existing = existing.expect(201).data()["id"].as_str().unwrap().to_owned();
    let items = json!([{"caseNumber": "U-1", "title": "Renamed", "type": "criminal"}, case("U-2")]);

    let skip = t.post("/api/v1/cases/bulk", &s.token, json!({"onConflict": "skip", "items": items})).await;
    let d = skip.expect(200).data().clone();
    assert_eq!((d["succeeded"].as_u64(), d["skipped"].as_u64()), (Some(1), Some(1)));
    assert_eq!(d["ids"][0], existing.as_str());
    let c = t.get(&format!("/api/v1/cases/{existing}"), &s.token).await;
    assert_eq!(c.expect(200).data()["title"], "Matter U-1", "skip left the case alone");

    let upd = t
        .post(
            "/api/v1/cases/bulk",
            &s.token,
            json!({"onConflict": "update", "items": [{"caseNumber": "U-1", "title": "Renamed", "type": "criminal"}]}),
        )
        .await;
    assert_eq!(upd.expect(200).data()["succeeded"], 1);
    let c = t.get(&format!("/api/v1/cases/{existing}"), &s.token).await;
    let c = c.expect(200).data().clone();
    assert_eq!(
        (c["title"].as_str(), c["type"].as_str(), c["version"].as_i64()),
        (Some("Renamed"), Some("criminal"), Some(2))
    );
    // Fields the item did not carry are left as they were: no court wiped, no case reopened.
    assert_eq!((c["court"].as_str(), c["status"].as_str()), (Some("Old Court"), Some("closed")));

    let fail = t.post("/api/v1/cases/bulk", &s.token, json!({"mode": "partial", "items": [case("U-1")]})).await;
    let d = fail.expect(200).data().clone();
    assert_eq!(d["errors"][0]["code"], "CONFLICT");
    assert_eq!(total_cases(&t, &s.token).await, 2);
}

async fn bulk_update_and_delete_report_each_item(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Changes").await;
    let a = t.case(&s, "C-1").await;
    let c2 = t.case(&s, "C-2").await;
    let c3 = t.case(&s, "C-3").await;
    let missing = uuid::Uuid::now_v7().to_string();
    let res = t
        .patch(
            "/api/v1/cases/bulk",
            &s.token,
            json!({"mode": "partial", "items": [
                {"id": a, "title": "First, renamed"},
                {"id": missing, "title": "Nobody"},
                {"id": c2, "title": "Stale", "version": 7},
                {"title": "no id"},
            ]}),
        )
        .await;
    let d = res.expect(200).data().clone();
    assert_eq!(d["succeeded"], 1);
    let codes: Vec<&str> = d["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["RESOURCE_NOT_FOUND", "PRECONDITION_FAILED", "VALIDATION_FAILED"]);
    assert_eq!(t.get(&format!("/api/v1/cases/{a}"), &s.token).await.data()["title"], "First, renamed");

    // Atomic: one stale item and none of the changes stay.
    let res = t
        .patch(
            "/api/v1/cases/bulk",
            &s.token,
            json!({"items": [{"id": c3, "title": "Would change"}, {"id": c2, "title": "Stale", "version": 7}]}),
        )
        .await;
    res.expect(400);
    assert_eq!(t.get(&format!("/api/v1/cases/{c3}"), &s.token).await.data()["title"], "Matter C-3");

    let del = t.post("/api/v1/cases/bulk/delete", &s.token, json!({"ids": [a, c3]})).await;
    assert_eq!(del.expect(200).data()["succeeded"], 2);
    assert_eq!(total_cases(&t, &s.token).await, 1);
    let soft = t.sql("SELECT COUNT(*) FROM cases WHERE deleted_at IS NOT NULL").await;
    assert_eq!(soft[0].try_get_by_index::<i64>(0).unwrap(), 2, "soft delete keeps the rows");

    // Hard delete: admins only, and not while the case has parties.
    t.post(
        &format!("/api/v1/cases/{c2}/parties"),
        &s.token,
        json!({"name": "Acme", "kind": "organization", "type": "plaintiff"}),
    )
    .await
    .expect(201);
    let lone = t.case(&s, "C-4").await;
    let hard = t
        .post("/api/v1/cases/bulk/delete", &s.token, json!({"mode": "partial", "hard": true, "ids": [c2, lone]}))
        .await;
    let d = hard.expect(200).data().clone();
    assert_eq!((d["succeeded"].as_u64(), d["errors"][0]["index"].as_u64()), (Some(1), Some(0)));
    assert_eq!(d["errors"][0]["code"], "CONFLICT");
    let gone = t.sql("SELECT COUNT(*) FROM cases WHERE case_number = 'C-4'").await;
    assert_eq!(gone[0].try_get_by_index::<i64>(0).unwrap(), 0);
    assert_eq!(audit_count(&t, "case.purge").await, 1);
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true);
}

async fn bulk_parties_and_limits(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Parties").await;
    let id = t.case(&s, "P-1").await;
    let res = t
        .post(
            &format!("/api/v1/cases/{id}/parties/bulk"),
            &s.token,
            json!({"mode": "partial", "items": [
                {"name": "Acme", "kind": "organization", "type": "plaintiff"},
                {"name": "Bad mail", "kind": "individual", "type": "witness", "email": "not-an-address"},
                {"name": "Jo", "kind": "individual", "type": "defendant", "counsel": "Smith LLP"},
            ]}),
        )
        .await;
    let d = res.expect(200).data().clone();
    assert_eq!((d["succeeded"].as_u64(), d["errors"][0]["index"].as_u64()), (Some(2), Some(1)), "{d}");
    let list = t.get(&format!("/api/v1/cases/{id}/parties"), &s.token).await;
    assert_eq!(list.expect(200).body["meta"]["pagination"]["total"], 2);
    assert_eq!(audit_count(&t, "party.bulk_create").await, 2);

    // A client may not open cases, in bulk either.
    let client = t.user(&s, "client").await;
    t.post("/api/v1/cases/bulk", &client.token, json!({"items": [case("X-1")]})).await.expect(403);
    // At most 10,000 items.
    let many: Vec<Value> = (0..10_001).map(|i| case(&format!("M-{i}"))).collect();
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({"items": many})).await;
    res.expect(400);
    // An unknown lead attorney fails its item only.
    let res = t
        .post(
            "/api/v1/cases/bulk",
            &s.token,
            json!({"mode": "partial", "items": [
                {"caseNumber": "L-1", "title": "Led", "type": "civil", "leadAttorneyId": uuid::Uuid::now_v7()},
                case("L-2"),
            ]}),
        )
        .await;
    let d = res.expect(200).data().clone();
    assert_eq!((d["succeeded"].as_u64(), d["errors"][0]["index"].as_u64()), (Some(1), Some(0)));
}

/// The items are counted as the body is read: one past the limit fails there, however small
/// they are, with a message naming the limit, and so does an item that holds too much. A
/// role that may not open cases is refused before the body is read at all.
async fn one_item_past_the_limit_is_refused_while_the_body_is_read(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Limits").await;
    let message = |res: &crate::support::Res| res.body["error"]["message"].as_str().unwrap_or("").to_owned();

    let tiny = |n: usize| Value::Array(vec![json!({}); n]);
    let over = json!({ "items": tiny(10_001) });
    let res = t.post("/api/v1/cases/bulk", &s.token, over.clone()).await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    assert_eq!(message(&res), "items: at most 10000 items per request", "the error names the field, as before");
    assert_eq!(res.body["error"]["details"]["fields"][0]["field"], "items");
    let res = t.patch("/api/v1/cases/bulk", &s.token, over.clone()).await;
    res.expect(400);
    assert!(message(&res).contains("at most 10000 items per request"), "{}", res.body);

    // One item of a hundred values is refused as a whole body, however few the items.
    let fat = Value::Array(vec![json!(0); 100]);
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({ "items": [fat] })).await;
    res.expect(400);
    assert_eq!(res.code(), "VALIDATION_FAILED");
    assert!(message(&res).contains("at most 64 values"), "{}", res.body);

    // The limit itself is read through to the items, each `{}` then failing on its own.
    let res = t.post("/api/v1/cases/bulk", &s.token, json!({ "items": tiny(10_000) })).await;
    res.expect(400);
    assert!(message(&res).contains("10000 of 10000 items failed"), "{}", message(&res));

    let client = t.user(&s, "client").await;
    t.post("/api/v1/cases/bulk", &client.token, over).await.expect(403);
    assert_eq!(total_cases(&t, &s.token).await, 0);
}

/// The existence check of a bulk create keeps probing the index as the table grows, even on
/// a connection that planned it when the table was tiny (PostgreSQL's generic plans are made
/// once, with the table's size at the time, and kept: the `IN ($2, …)` form then scanned the
/// whole table on every later check). Counted by PostgreSQL's sequential scans of `cases`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bulk_existence_check_probes_the_index_as_the_table_grows() {
    if !crate::support::postgres_available().await {
        return;
    }
    // One connection, so every check below runs the same prepared statement.
    let t = TestApp::with(Backend::Postgres, |c| c.database.max_connections = 1).await;
    let s = t.register("Firm").await;
    let batch =
        |prefix: &str, n: usize| json!({"items": (0..n).map(|i| case(&format!("{prefix}-{i}"))).collect::<Vec<_>>()});
    let bulk = |body: Value| {
        let t = &t;
        let token = s.token.clone();
        async move { t.post("/api/v1/cases/bulk", &token, body).await.expect(200).data()["succeeded"].clone() }
    };
    // A tiny table, analysed as such, and more than five checks planned against it.
    bulk(batch("SMALL", 60)).await;
    t.sql_exec("ANALYZE cases").await;
    for round in 0..7 {
        bulk(batch(&format!("R{round}"), 10)).await;
    }
    // Then the table grows a hundredfold.
    bulk(batch("BIG", 10_000)).await;
    let seq_scans = || async {
        // Statistics reach the view at most once a second per backend.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        let rows = t.sql("SELECT pg_stat_force_next_flush()").await;
        drop(rows);
        let rows = t.sql("SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'cases'::regclass").await;
        rows[0].try_get_by_index::<i64>(0).unwrap()
    };
    let before = seq_scans().await;
    for round in 0..3 {
        assert_eq!(bulk(batch(&format!("LATE{round}"), 10)).await, 10);
    }
    let after = seq_scans().await;
    assert_eq!(after - before, 0, "the existence checks scanned the whole table of 10,130 cases");
}
