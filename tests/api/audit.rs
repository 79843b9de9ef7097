//! The audit trail: every write leaves an entry in its own transaction, entries are
//! append-only, the hash chain catches every kind of tampering, reports and history read it.

use http::Method;
use serde_json::{Value, json};

use lexiflow::{
    audit::{self, Actor, AuditEvent},
    db::{self, TxOptions},
    http::error::ApiError,
    ids::FirmId,
};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    every_write_leaves_an_entry_with_old_and_new_values,
    a_failed_change_leaves_neither_change_nor_entry,
    the_database_refuses_update_and_delete_of_entries,
    an_edited_entry_is_detected,
    a_deleted_entry_is_detected,
    an_inserted_entry_is_detected,
    reordered_entries_are_detected,
    pruning_keeps_the_chain_verifiable_and_is_itself_audited,
    only_admins_read_the_trail_and_history_follows_case_visibility,
    report_totals_by_action_and_actor_as_json_and_csv,
    concurrent_writers_of_one_firm_all_land_in_valid_chains,
    concurrent_appends_to_one_chain_follow_each_other,
    an_append_that_rolled_back_leaves_the_chain_appendable,
    case_history_pages_newest_first_through_more_than_a_thousand_entries,
);

async fn record_on(t: &TestApp, s: &crate::support::Session, case: &str) -> Result<(), ApiError> {
    record_as(t, s, "case", case).await
}

/// A `case.note` entry about `entity_type`/`id`, with non-ASCII and escaped text in it (on
/// PostgreSQL the server hashes it; verification recomputes it in Rust).
async fn record_as(
    t: &TestApp,
    s: &crate::support::Session,
    entity_type: &'static str,
    id: &str,
) -> Result<(), ApiError> {
    let firm = FirmId(s.firm_id.parse().unwrap());
    let id = id.to_owned();
    db::transaction(&t.app.db, TxOptions::write(), |tx| {
        let id = id.clone();
        async move {
            let event = AuditEvent::new("case.note", entity_type, Some(id))
                .changes(json!({"n": {"old": "Müller \"&\" 漢字", "new": "✓\u{0}\n\t€"}}));
            audit::record(&tx, firm, &Actor::system(), event).await?;
            Ok(())
        }
    })
    .await
    .map(|done| done.value)
}

/// Every append of these goes to the one chain of one case, at the same time: on PostgreSQL
/// they queue at the head row's lock inside the appending statement.
async fn concurrent_appends_to_one_chain_follow_each_other(b: Backend) {
    let t = std::sync::Arc::new(TestApp::new(b).await);
    let s = std::sync::Arc::new(t.register("Busy").await);
    let case = t.case(&s, "ONE-1").await;
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (t, s, case) = (t.clone(), s.clone(), case.clone());
        tasks.push(tokio::spawn(async move { record_on(&t, &s, &case).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count(&t, "case.note").await, 24);
    let v = verify(&t, &s.token).await;
    assert_eq!(v["valid"], true, "{v}");
    let chain: i32 =
        t.sql("SELECT chain FROM audit_entries WHERE action = 'case.create'").await[0].try_get("", "chain").unwrap();
    let sql = format!("SELECT COUNT(*) AS n FROM audit_entries WHERE action = 'case.note' AND chain = {chain}");
    let notes: i64 = t.sql(&sql).await[0].try_get("", "n").unwrap();
    assert_eq!(notes, 24, "all in the case's chain");

    // A chain nobody has written yet: its first appenders race to create its head.
    let used: Vec<i32> = t
        .sql("SELECT DISTINCT chain FROM audit_entries")
        .await
        .iter()
        .map(|r| r.try_get::<i32>("", "chain").unwrap())
        .collect();
    let fresh = (0..)
        .map(|i| format!("fresh-{i}"))
        .find(|id| !used.contains(&audit::chain::chain_for("matter_note", Some(id))))
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (t, s, fresh) = (t.clone(), s.clone(), fresh.clone());
        tasks.push(tokio::spawn(async move { record_as(&t, &s, "matter_note", &fresh).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count(&t, "case.note").await, 40);
    let v = verify(&t, &s.token).await;
    assert_eq!(v["valid"], true, "{v}");
}

/// An append whose transaction rolls back leaves the chain as it was; on SQLite this
/// process's guess of the head is then stale, and the next append must notice and recover.
async fn an_append_that_rolled_back_leaves_the_chain_appendable(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let case = t.case(&s, "RB-1").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let case_id = case.clone();
    let refused = db::transaction(&t.app.db, TxOptions::write(), |tx| {
        let case_id = case_id.clone();
        async move {
            let event = AuditEvent::new("case.note", "case", Some(case_id));
            audit::record(&tx, firm, &Actor::system(), event).await?;
            Err::<(), _>(ApiError::field("x", "refused after auditing"))
        }
    })
    .await;
    assert!(refused.is_err());
    assert_eq!(count(&t, "case.note").await, 0);
    t.patch(&format!("/api/v1/cases/{case}"), &s.token, json!({"title": "After"})).await.expect(200);
    record_on(&t, &s, &case).await.unwrap();
    assert_eq!(count(&t, "case.update").await, 1);
    assert_eq!(count(&t, "case.note").await, 1);
    let v = verify(&t, &s.token).await;
    assert_eq!(v["valid"], true, "{v}");
}

async fn concurrent_writers_of_one_firm_all_land_in_valid_chains(b: Backend) {
    let t = std::sync::Arc::new(TestApp::new(b).await);
    let s = t.register("Busy").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (t, token) = (t.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            t.post(
                "/api/v1/cases",
                &token,
                json!({"caseNumber": format!("C-{i}"), "title": "Parallel", "type": "civil"}),
            )
            .await
            .status
            .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    assert_eq!(count(&t, "case.create").await, 24);
    let v = verify(&t, &s.token).await;
    assert_eq!(v["valid"], true, "{v}");
}

async fn actions(t: &TestApp, token: &str) -> Vec<Value> {
    let r = t.get("/api/v1/audit?limit=100", token).await;
    r.expect(200);
    r.data().as_array().unwrap().clone()
}

async fn verify(t: &TestApp, token: &str) -> Value {
    let r = t.get("/api/v1/audit/verify", token).await;
    r.expect(200);
    r.data().clone()
}

async fn every_write_leaves_an_entry_with_old_and_new_values(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "A-1").await;
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"status": "discovery"})).await.expect(200);
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    let party = t
        .post(
            &format!("/api/v1/cases/{case}/parties"),
            &admin.token,
            json!({"name": "Jane", "kind": "individual", "type": "plaintiff"}),
        )
        .await;
    party.expect(201);
    let pid = party.data()["id"].as_str().unwrap().to_owned();
    t.patch(&format!("/api/v1/cases/{case}/parties/{pid}"), &admin.token, json!({"name": "Jane Roe"}))
        .await
        .expect(200);
    t.delete(&format!("/api/v1/cases/{case}/parties/{pid}"), &admin.token).await.expect(204);
    t.patch(&format!("/api/v1/users/{}", para.user_id), &admin.token, json!({"role": "attorney"})).await.expect(200);
    t.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": para.email, "password": "not it at all"})))
        .await
        .expect(401);
    t.call(Method::POST, "/api/v1/auth/logout", Some(&para.token), None).await.expect(204);
    t.delete(&format!("/api/v1/cases/{case}"), &admin.token).await.expect(204);

    let entries = actions(&t, &admin.token).await;
    let names: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in [
        "firm.register",
        "user.create",
        "auth.login",
        "case.create",
        "case.update",
        "case.team_add",
        "party.create",
        "party.update",
        "party.delete",
        "user.role_change",
        "auth.login_failed",
        "auth.logout",
        "case.delete",
    ] {
        assert!(names.contains(&want), "no {want} entry in {names:?}");
    }
    let upd = entries.iter().find(|e| e["action"] == "case.update").unwrap();
    assert_eq!(upd["changes"]["status"], json!({"old": "open", "new": "discovery"}));
    assert_eq!(upd["actorId"], admin.user_id.as_str());
    assert_eq!(upd["actorRole"], "admin");
    assert_eq!(upd["caseId"], case.as_str());
    assert!(upd["correlationId"].is_string());
    let role = entries.iter().find(|e| e["action"] == "user.role_change").unwrap();
    assert_eq!(role["changes"]["role"], json!({"old": "paralegal", "new": "attorney"}));
    // Within each chain, sequences are gapless from 1; the chains hold.
    let mut by_chain: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for e in &entries {
        by_chain.entry(e["chain"].as_i64().unwrap()).or_default().push(e["sequence"].as_i64().unwrap());
    }
    assert!(by_chain.len() > 1, "entries should spread over several chains: {by_chain:?}");
    for seqs in by_chain.values_mut() {
        seqs.sort();
        assert_eq!(*seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    }
    // All of one case's changes are in one chain, in order.
    let case_chains: std::collections::BTreeSet<i64> =
        entries.iter().filter(|e| e["entityType"] == "case").map(|e| e["chain"].as_i64().unwrap()).collect();
    assert_eq!(case_chains.len(), 1);
    let v = verify(&t, &admin.token).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["entriesChecked"].as_u64().unwrap() as usize, entries.len());
    // No secret in any entry: passwords and tokens never reach the trail.
    let all = t.sql("SELECT changes FROM audit_entries").await;
    for row in all {
        let c: String = row.try_get("", "changes").unwrap();
        assert!(!c.contains(crate::support::PASSWORD) && !c.contains(&admin.token) && !c.contains("$argon2"), "{c}");
    }
}

async fn count(t: &TestApp, action: &str) -> i64 {
    t.sql(&format!("SELECT COUNT(*) AS n FROM audit_entries WHERE action = '{action}'")).await[0]
        .try_get("", "n")
        .unwrap()
}

async fn a_failed_change_leaves_neither_change_nor_entry(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let case = t.case(&s, "F-1").await;
    let before = count(&t, "case.create").await;
    t.post("/api/v1/cases", &s.token, json!({"caseNumber": "F-1", "title": "dup", "type": "civil"})).await.expect(409);
    assert_eq!(count(&t, "case.create").await, before);
    t.patch(&format!("/api/v1/cases/{case}"), &s.token, json!({"title": "x", "version": 99})).await.expect(412);
    assert_eq!(count(&t, "case.update").await, 0);
    assert_eq!(verify(&t, &s.token).await["valid"], true);
}

async fn the_database_refuses_update_and_delete_of_entries(b: Backend) {
    let t = TestApp::new(b).await;
    t.register("Firm").await;
    let db = &t.app.db;
    let stmt = |sql: &str| sea_orm::Statement::from_string(db.get_database_backend(), sql.to_owned());
    use sea_orm::ConnectionTrait;
    let upd = db.execute_raw(stmt("UPDATE audit_entries SET action = 'nothing.happened'")).await;
    assert!(upd.is_err(), "UPDATE of audit entries was accepted");
    assert!(format!("{:?}", upd.unwrap_err()).contains("append-only"));
    let del = db.execute_raw(stmt("DELETE FROM audit_entries")).await;
    assert!(del.is_err(), "DELETE of audit entries was accepted");
    if b == Backend::Postgres {
        assert!(db.execute_raw(stmt("TRUNCATE audit_entries")).await.is_err(), "TRUNCATE was accepted");
    }
    assert!(t.sql("SELECT COUNT(*) AS n FROM audit_entries").await[0].try_get::<i64>("", "n").unwrap() > 0);
}

/// Tampering as someone with database access would: triggers off first.
async fn tamper(t: &TestApp, b: Backend, sqls: &[&str]) {
    let off: &[&str] = match b {
        Backend::Sqlite => &["DROP TRIGGER audit_entries_no_update", "DROP TRIGGER audit_entries_no_delete"],
        Backend::Postgres => &["ALTER TABLE audit_entries DISABLE TRIGGER USER"],
    };
    for s in off.iter().chain(sqls) {
        t.sql_exec(s).await;
    }
}

/// A firm with one case changed five times: its chain holds at least six entries.
async fn seeded(b: Backend) -> (TestApp, String, i64) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let case = t.case(&s, "T-1").await;
    for i in 0..5 {
        t.patch(&format!("/api/v1/cases/{case}"), &s.token, json!({"title": format!("Title {i}")})).await.expect(200);
    }
    assert_eq!(verify(&t, &s.token).await["valid"], true);
    let chain: i64 = t.sql("SELECT chain FROM audit_entries WHERE action = 'case.create'").await[0]
        .try_get::<i32>("", "chain")
        .unwrap()
        .into();
    (t, s.token, chain)
}

async fn chain_len(t: &TestApp, chain: i64) -> i64 {
    t.sql(&format!("SELECT MAX(sequence) AS n FROM audit_entries WHERE chain = {chain}")).await[0]
        .try_get("", "n")
        .unwrap()
}

async fn an_edited_entry_is_detected(b: Backend) {
    let (t, token, chain) = seeded(b).await;
    tamper(&t, b, &[&format!("UPDATE audit_entries SET changes = '{{}}' WHERE chain = {chain} AND sequence = 4")])
        .await;
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["firstInvalidChain"], chain);
    assert_eq!(v["firstInvalidSequence"], 4);
}

async fn a_deleted_entry_is_detected(b: Backend) {
    let (t, token, chain) = seeded(b).await;
    tamper(&t, b, &[&format!("DELETE FROM audit_entries WHERE chain = {chain} AND sequence = 3")]).await;
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["firstInvalidChain"], chain);
    assert_eq!(v["firstInvalidSequence"], 3);
    // Cutting entries off the end is caught by the head.
    let (t, token, chain) = seeded(b).await;
    let last = chain_len(&t, chain).await;
    tamper(&t, b, &[&format!("DELETE FROM audit_entries WHERE chain = {chain} AND sequence = {last}")]).await;
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["firstInvalidSequence"], last);
}

async fn an_inserted_entry_is_detected(b: Backend) {
    let (t, token, chain) = seeded(b).await;
    // A forged entry copied from a real one, appended after the head.
    let last = chain_len(&t, chain).await;
    // A well-formed id for each backend (SQLite stores UUIDs as 16-byte blobs).
    let id = match b {
        Backend::Sqlite => "randomblob(16)".to_owned(),
        Backend::Postgres => format!("'{}'", uuid::Uuid::now_v7()),
    };
    tamper(
        &t,
        b,
        &[&format!(
            "INSERT INTO audit_entries (id, firm_id, chain, sequence, occurred_at, actor_type, actor_id, actor_role, \
             action, entity_type, entity_id, case_id, changes, correlation_id, ip, user_agent, prev_hash, hash) \
             SELECT {id}, firm_id, chain, sequence + 1, occurred_at, actor_type, actor_id, actor_role, 'case.delete', \
             entity_type, entity_id, case_id, changes, correlation_id, ip, user_agent, hash, hash \
             FROM audit_entries WHERE chain = {chain} AND sequence = {last}"
        )],
    )
    .await;
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["firstInvalidSequence"], last + 1);
}

async fn reordered_entries_are_detected(b: Backend) {
    let (t, token, chain) = seeded(b).await;
    tamper(
        &t,
        b,
        &[
            &format!("UPDATE audit_entries SET sequence = -1 WHERE chain = {chain} AND sequence = 2"),
            &format!("UPDATE audit_entries SET sequence = 2 WHERE chain = {chain} AND sequence = 3"),
            &format!("UPDATE audit_entries SET sequence = 3 WHERE chain = {chain} AND sequence = -1"),
        ],
    )
    .await;
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["firstInvalidSequence"], 2);
}

async fn pruning_keeps_the_chain_verifiable_and_is_itself_audited(b: Backend) {
    let (t, token, _) = seeded(b).await;
    let firm: uuid::Uuid = t.sql("SELECT firm_id FROM audit_heads").await[0].try_get("", "firm_id").unwrap();
    let total: i64 = t.sql("SELECT COUNT(*) AS n FROM audit_entries").await[0].try_get("", "n").unwrap();
    let chains: i64 = t.sql("SELECT COUNT(DISTINCT chain) AS n FROM audit_entries").await[0].try_get("", "n").unwrap();
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(5);
    let removed = lexiflow::audit::chain::prune(&t.app.db, firm, cutoff).await.unwrap();
    // Everything but each chain's newest entry went; the prune itself is audited.
    assert_eq!(removed as i64, total - chains);
    let v = verify(&t, &token).await;
    assert_eq!(v["valid"], true, "{v}");
    let left: i64 = t.sql("SELECT COUNT(*) AS n FROM audit_entries").await[0].try_get("", "n").unwrap();
    assert_eq!(v["entriesChecked"].as_i64().unwrap(), left);
    assert!(left <= chains + 1);
    let entries = actions(&t, &token).await;
    assert_eq!(entries[0]["action"], "audit.prune");
    assert_eq!(entries[0]["actorType"], "system");
    assert_eq!(entries[0]["changes"]["removedEntries"], removed);
    // New writes keep chaining from the head.
    let s2 = t.get("/api/v1/auth/me", &token).await;
    s2.expect(200);
    t.post("/api/v1/cases", &token, json!({"caseNumber": "P-1", "title": "after", "type": "civil"})).await.expect(201);
    assert_eq!(verify(&t, &token).await["valid"], true);
}

async fn only_admins_read_the_trail_and_history_follows_case_visibility(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let outsider = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "H-1").await;
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    t.patch(&format!("/api/v1/cases/{case}"), &para.token, json!({"title": "Renamed"})).await.expect(200);
    for path in ["/api/v1/audit", "/api/v1/audit/verify"] {
        t.get(path, &para.token).await.expect(403);
    }
    let h = t.get(&format!("/api/v1/cases/{case}/history"), &para.token).await;
    h.expect(200);
    let acts: Vec<&str> = h.data().as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(acts, ["case.update", "case.team_add", "case.create"], "newest first");
    t.get(&format!("/api/v1/cases/{case}/history"), &outsider.token).await.expect(404);
    // Another firm's admin sees nothing of this firm.
    let other = t.register("Other").await;
    let theirs = actions(&t, &other.token).await;
    assert!(theirs.iter().all(|e| e["caseId"] != case.as_str()));
    t.get(&format!("/api/v1/cases/{case}/history"), &other.token).await.expect(404);
}

async fn report_totals_by_action_and_actor_as_json_and_csv(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    for i in 0..3 {
        t.case(&s, &format!("R-{i}")).await;
    }
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = t.get(&format!("/api/v1/audit/report?from={from}&to={to}"), &s.token).await;
    r.expect(200);
    let d = r.data();
    let creates = d["byAction"].as_array().unwrap().iter().find(|a| a["action"] == "case.create").unwrap();
    assert_eq!(creates["count"], 3);
    assert_eq!(d["total"].as_u64().unwrap() as usize, d["entries"].as_array().unwrap().len());
    assert_eq!(d["chain"]["valid"], true);
    assert!(d["byActor"].as_array().unwrap().iter().any(|a| a["actorId"] == s.user_id.as_str()));

    let csv = t.get(&format!("/api/v1/audit/report?from={from}&to={to}&format=csv"), &s.token).await;
    csv.expect(200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.header("content-disposition").unwrap().contains("attachment"));
    let text = csv.body.as_str().unwrap();
    assert!(text.contains("\"byAction\",\"case.create\",\"3\""), "{text}");
    // The entries' header and rows line up, column for column.
    let lines: Vec<&str> = text.lines().collect();
    let h = lines.iter().position(|l| l.starts_with("\"chain\",\"sequence\",\"occurredAt\"")).expect("entries header");
    // Fields of one CSV line: commas outside quotes separate; "" inside quotes is a quote.
    let columns = |l: &str| {
        let (mut n, mut quoted) = (1, false);
        for c in l.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => n += 1,
                _ => {}
            }
        }
        n
    };
    assert!(lines.len() > h + 3);
    for row in &lines[h + 1..] {
        assert_eq!(columns(row), columns(lines[h]), "{row}");
    }
    t.get(&format!("/api/v1/audit/report?from={to}&to={from}"), &s.token).await.expect(400);
    t.get(&format!("/api/v1/audit/report?from={from}&to={to}&format=xml"), &s.token).await.expect(400);
}

#[test]
fn csv_fields_cannot_smuggle_formulas_into_a_spreadsheet() {
    use lexiflow::audit::http::csv_field;
    assert_eq!(csv_field("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
    assert_eq!(csv_field("+1"), "\"'+1\"");
    assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
    assert_eq!(csv_field("plain, text"), "\"plain, text\"");
}

/// Every page of `case`'s history as `s` sees it, following `nextCursor` to the end; checks
/// that each page but the last is full.
async fn history_pages(t: &TestApp, s: &crate::support::Session, case: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/api/v1/cases/{case}/history?limit={limit}"),
            Some(c) => format!("/api/v1/cases/{case}/history?limit={limit}&cursor={c}"),
        };
        let r = t.get(&path, &s.token).await;
        r.expect(200);
        let page = r.data().as_array().unwrap().clone();
        let meta = &r.body["meta"]["pagination"];
        assert_eq!(meta["limit"], limit);
        out.extend(page.iter().cloned());
        if meta["hasMore"] == true {
            assert_eq!(page.len(), limit, "only the last page may be short: hidden entries are filtered in the query");
            cursor = Some(meta["nextCursor"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(meta["nextCursor"], Value::Null);
            return out;
        }
    }
}

fn assert_newest_first_without_duplicates(entries: &[Value]) {
    let keys: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = entries
        .iter()
        .map(|e| {
            (
                chrono::DateTime::parse_from_rfc3339(e["occurredAt"].as_str().unwrap()).unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(w[0] > w[1], "newest first, each entry once: {:?} then {:?}", w[0], w[1]);
    }
}

async fn case_history_pages_newest_first_through_more_than_a_thousand_entries(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Long History").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "LH-1").await;
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    let docket = format!("/api/v1/cases/{case}/docket");
    let batch = |n: usize, sealed: bool, tag: &str| {
        Value::Array(
            (0..n).map(|i| json!({"type": "filing", "description": format!("{tag} {i}"), "sealed": sealed})).collect(),
        )
    };
    t.post(&docket, &admin.token, batch(1_000, false, "open")).await.expect(201);
    let sealed = t.post(&docket, &admin.token, batch(37, true, "sealed")).await;
    let sealed_ids: std::collections::HashSet<String> =
        sealed.expect(201).data().as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    t.post(&docket, &admin.token, batch(50, false, "later")).await.expect(201);
    let one_sealed = sealed_ids.iter().next().unwrap();
    t.patch(&format!("{docket}/{one_sealed}"), &admin.token, json!({"description": "sealed, edited"}))
        .await
        .expect(200);
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"title": "Renamed"})).await.expect(200);

    // The admin pages through every entry of the case, newest first.
    let all: i64 =
        t.sql("SELECT COUNT(*) AS n FROM audit_entries WHERE case_id IS NOT NULL").await[0].try_get("", "n").unwrap();
    assert_eq!(all, 1 + 1 + 1_000 + 37 + 50 + 1 + 1);
    let seen = history_pages(&t, &admin, &case, 100).await;
    assert_eq!(seen.len() as i64, all, "no entry missed");
    assert_newest_first_without_duplicates(&seen);
    assert_eq!(seen[0]["action"], "case.update");
    assert_eq!(seen.last().unwrap()["action"], "case.create");

    // The paralegal pages through the same history without any sealed entry on any page.
    let theirs = history_pages(&t, &para, &case, 100).await;
    assert_newest_first_without_duplicates(&theirs);
    assert!(theirs.iter().all(|e| !sealed_ids.contains(e["entityId"].as_str().unwrap_or(""))));
    assert_eq!(theirs.len() as i64, all - 37 - 1, "everything but the sealed entries' creation and edit");
    // A cursor made for another list is refused.
    let r = t.get(&format!("/api/v1/cases/{case}/history?cursor=bm9wZQ"), &para.token).await;
    r.expect(400);
}
