//! Cases: the API round trip, optimistic concurrency, paging, and who may see what.

use std::collections::HashSet;

use http::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    case_round_trip_from_create_to_soft_delete,
    duplicate_case_number_is_a_conflict_within_a_firm_only,
    stale_if_match_or_version_is_412_and_changes_nothing,
    concurrent_updates_with_the_same_version_let_exactly_one_win,
    firm_b_cannot_reach_firm_a_case,
    paralegal_not_on_the_team_sees_nothing,
    paralegal_on_the_team_reads_and_writes_but_cannot_delete,
    client_reads_own_case_and_cannot_write,
    staff_cannot_open_cases,
    offset_paging_reports_totals,
    cursor_paging_neither_skips_nor_repeats_while_others_insert,
    filters_and_search_work_and_treat_wildcards_literally,
    hostile_text_round_trips_and_rich_text_is_cleaned,
    lead_attorney_joins_the_team_and_can_manage_it,
    demoted_lead_no_longer_manages_the_team,
    cached_list_totals_follow_writes_at_once,
    team_rules_are_enforced,
    client_on_the_team_sees_names_and_roles_but_no_email_addresses,
    team_list_shows_only_users_of_the_callers_firm,
);

async fn case_round_trip_from_create_to_soft_delete(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let res = t
        .post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": "1:26-cv-00042", "title": "Doe v. Roe", "type": "civil", "court": "S.D.N.Y.",
                   "filedAt": "2026-01-15T09:30:00Z", "clientName": "Jane Doe"}),
        )
        .await;
    res.expect(201);
    assert_eq!(res.header("etag"), Some("\"1\""));
    let c = res.data().clone();
    assert_eq!(c["status"], "open");
    assert_eq!(c["version"], 1);
    assert_eq!(c["filedAt"], "2026-01-15T09:30:00Z");
    let id = c["id"].as_str().unwrap();

    let got = t.get(&format!("/api/v1/cases/{id}"), &s.token).await;
    got.expect(200);
    assert_eq!(got.data(), &c);

    let upd = t
        .patch(&format!("/api/v1/cases/{id}"), &s.token, json!({"status": "discovery", "court": null, "version": 1}))
        .await;
    upd.expect(200);
    assert_eq!(upd.data()["status"], "discovery");
    assert_eq!(upd.data()["court"], Value::Null);
    assert_eq!(upd.data()["title"], "Doe v. Roe");
    assert_eq!(upd.data()["version"], 2);
    assert_eq!(upd.header("etag"), Some("\"2\""));

    t.delete(&format!("/api/v1/cases/{id}"), &s.token).await.expect(204);
    let gone = t.get(&format!("/api/v1/cases/{id}"), &s.token).await;
    gone.expect(404);
    assert_eq!(gone.code(), "RESOURCE_NOT_FOUND");
    assert_eq!(t.get("/api/v1/cases", &s.token).await.data().as_array().unwrap().len(), 0);
    // Soft: the row is still there for the legal record.
    let rows = t.sql("SELECT id FROM cases WHERE case_number = '1:26-cv-00042' AND deleted_at IS NOT NULL").await;
    assert_eq!(rows.len(), 1);
}

async fn duplicate_case_number_is_a_conflict_within_a_firm_only(b: Backend) {
    let t = TestApp::new(b).await;
    let a = t.register("A").await;
    let other = t.register("B").await;
    t.case(&a, "2026-001").await;
    let res =
        t.post("/api/v1/cases", &a.token, json!({"caseNumber": "2026-001", "title": "Again", "type": "civil"})).await;
    res.expect(409);
    assert_eq!(res.code(), "CONFLICT");
    assert_eq!(res.body["error"]["details"]["field"], "caseNumber");
    // Another firm may use the same number.
    t.case(&other, "2026-001").await;
    // Renaming onto an existing number is a conflict too.
    let second = t.case(&a, "2026-002").await;
    t.patch(&format!("/api/v1/cases/{second}"), &a.token, json!({"caseNumber": "2026-001"})).await.expect(409);
}

async fn stale_if_match_or_version_is_412_and_changes_nothing(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "C-1").await;
    let path = format!("/api/v1/cases/{id}");
    t.patch(&path, &s.token, json!({"title": "First edit"})).await.expect(200);
    let res = t
        .call_with(
            Method::PATCH,
            &path,
            Some(&s.token),
            Some(json!({"title": "Lost update"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    res.expect(412);
    assert_eq!(res.code(), "PRECONDITION_FAILED");
    assert_eq!(res.body["error"]["details"]["currentVersion"], 2);
    t.patch(&path, &s.token, json!({"title": "Lost update", "version": 1})).await.expect(412);
    let now = t.get(&path, &s.token).await;
    assert_eq!(now.data()["title"], "First edit");
    assert_eq!(now.data()["version"], 2);
    // The current ETag works.
    t.call_with(Method::PATCH, &path, Some(&s.token), Some(json!({"title": "Second"})), &[("if-match", "\"2\"")])
        .await
        .expect(200);
    // A stale delete is refused as well.
    t.call_with(Method::DELETE, &path, Some(&s.token), None, &[("if-match", "\"1\"")]).await.expect(412);
}

async fn concurrent_updates_with_the_same_version_let_exactly_one_win(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "C-1").await;
    let path = format!("/api/v1/cases/{id}");
    let mut handles = Vec::new();
    for i in 0..8 {
        let router = t.router.clone();
        let (path, token) = (path.clone(), s.token.clone());
        handles.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = http::Request::builder()
                .method(Method::PATCH)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(json!({"title": format!("Writer {i}"), "version": 1}).to_string()))
                .unwrap();
            router.oneshot(req).await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 412), "{statuses:?}");
    assert_eq!(t.get(&path, &s.token).await.data()["version"], 2);
}

async fn firm_b_cannot_reach_firm_a_case(b: Backend) {
    let t = TestApp::new(b).await;
    let a = t.register("A").await;
    let intruder = t.register("B").await;
    let id = t.case(&a, "A-1").await;
    let base = format!("/api/v1/cases/{id}");
    for res in [
        t.get(&base, &intruder.token).await,
        t.patch(&base, &intruder.token, json!({"title": "pwned"})).await,
        t.delete(&base, &intruder.token).await,
        t.get(&format!("{base}/parties"), &intruder.token).await,
        t.post(
            &format!("{base}/parties"),
            &intruder.token,
            json!({"name": "x", "kind": "individual", "type": "witness"}),
        )
        .await,
        t.get(&format!("{base}/team"), &intruder.token).await,
        t.post(&format!("{base}/team"), &intruder.token, json!({"userId": intruder.user_id, "role": "attorney"})).await,
    ] {
        res.expect(404);
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
    }
    assert_eq!(t.get("/api/v1/cases", &intruder.token).await.data().as_array().unwrap().len(), 0);
    assert_eq!(t.get(&base, &a.token).await.data()["title"], "Matter A-1");
}

async fn paralegal_not_on_the_team_sees_nothing(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let id = t.case(&admin, "C-1").await;
    let hidden = t.get(&format!("/api/v1/cases/{id}"), &para.token).await;
    hidden.expect(404);
    let missing = t.get(&format!("/api/v1/cases/{}", uuid::Uuid::now_v7()), &para.token).await;
    assert_eq!(hidden.body["error"], missing.body["error"], "a hidden case must look exactly like a missing one");
    t.patch(&format!("/api/v1/cases/{id}"), &para.token, json!({"title": "x"})).await.expect(404);
    let list = t.get("/api/v1/cases", &para.token).await;
    assert_eq!(list.data().as_array().unwrap().len(), 0);
    assert_eq!(list.body["meta"]["pagination"]["total"], 0);
}

async fn paralegal_on_the_team_reads_and_writes_but_cannot_delete(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let id = t.case(&admin, "C-1").await;
    t.case(&admin, "C-2").await;
    t.post(&format!("/api/v1/cases/{id}/team"), &admin.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    t.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(200);
    t.patch(&format!("/api/v1/cases/{id}"), &para.token, json!({"judge": "Hon. A. Smith"})).await.expect(200);
    let list = t.get("/api/v1/cases", &para.token).await;
    assert_eq!(list.data().as_array().unwrap().len(), 1, "only the team's case is listed");
    let del = t.delete(&format!("/api/v1/cases/{id}"), &para.token).await;
    del.expect(403);
    assert_eq!(del.code(), "FORBIDDEN");
    // A paralegal opens a case of their own and is on its team.
    let own = t.case(&para, "P-1").await;
    t.get(&format!("/api/v1/cases/{own}"), &para.token).await.expect(200);
}

async fn client_reads_own_case_and_cannot_write(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let client = t.user(&admin, "client").await;
    let id = t.case(&admin, "C-1").await;
    let other = t.case(&admin, "C-2").await;
    t.post(&format!("/api/v1/cases/{id}/team"), &admin.token, json!({"userId": client.user_id, "role": "client"}))
        .await
        .expect(201);
    t.get(&format!("/api/v1/cases/{id}"), &client.token).await.expect(200);
    t.get(&format!("/api/v1/cases/{other}"), &client.token).await.expect(404);
    t.get(&format!("/api/v1/cases/{id}/parties"), &client.token).await.expect(200);
    for res in [
        t.patch(&format!("/api/v1/cases/{id}"), &client.token, json!({"title": "mine now"})).await,
        t.delete(&format!("/api/v1/cases/{id}"), &client.token).await,
        t.post(
            &format!("/api/v1/cases/{id}/parties"),
            &client.token,
            json!({"name": "x", "kind": "individual", "type": "witness"}),
        )
        .await,
        t.post("/api/v1/cases", &client.token, json!({"caseNumber": "X", "title": "x", "type": "civil"})).await,
        t.post(
            &format!("/api/v1/cases/{id}/team"),
            &client.token,
            json!({"userId": client.user_id, "role": "attorney"}),
        )
        .await,
    ] {
        res.expect(403);
        assert_eq!(res.code(), "FORBIDDEN");
    }
    assert_eq!(
        t.get(&format!("/api/v1/cases/{id}"), &admin.token).await.data()["version"],
        2,
        "only the team change moved the version"
    );
}

async fn staff_cannot_open_cases(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let staff = t.user(&admin, "staff").await;
    t.post("/api/v1/cases", &staff.token, json!({"caseNumber": "X", "title": "x", "type": "civil"})).await.expect(403);
}

async fn offset_paging_reports_totals(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    for i in 0..7 {
        t.case(&s, &format!("N-{i}")).await;
    }
    let p1 = t.get("/api/v1/cases?page=1&limit=3&sort=caseNumber", &s.token).await;
    p1.expect(200);
    let pg = &p1.body["meta"]["pagination"];
    assert_eq!(
        (pg["page"].clone(), pg["limit"].clone(), pg["total"].clone(), pg["totalPages"].clone(), pg["hasNext"].clone()),
        (json!(1), json!(3), json!(7), json!(3), json!(true))
    );
    let numbers: Vec<&str> = p1.data().as_array().unwrap().iter().map(|c| c["caseNumber"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["N-0", "N-1", "N-2"]);
    let p3 = t.get("/api/v1/cases?page=3&limit=3&sort=caseNumber", &s.token).await;
    assert_eq!(p3.data().as_array().unwrap().len(), 1);
    assert_eq!(p3.body["meta"]["pagination"]["hasNext"], false);
    t.get("/api/v1/cases?page=1&cursor=", &s.token).await.expect(400);
    t.get("/api/v1/cases?sort=judge", &s.token).await.expect(400);
}

async fn collect_with_cursor(t: &TestApp, token: &str, sort: &str, during: impl AsyncFn(usize)) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        let res = t.get(&format!("/api/v1/cases?limit=4&sort={sort}&cursor={cursor}"), token).await;
        res.expect(200);
        for c in res.data().as_array().unwrap() {
            seen.push(c["caseNumber"].as_str().unwrap().to_owned());
        }
        let pg = &res.body["meta"]["pagination"];
        if pg["hasMore"] != true {
            assert!(pg["nextCursor"].is_null());
            break;
        }
        cursor = pg["nextCursor"].as_str().unwrap().to_owned();
        during(page).await;
    }
    seen
}

async fn cursor_paging_neither_skips_nor_repeats_while_others_insert(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let mut originals = HashSet::new();
    for i in 0..18 {
        // Titles repeat so that sorting by title depends on the id tiebreaker.
        let n = format!("O-{i:02}");
        t.post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": n, "title": format!("Title {}", i % 3), "type": "civil"}),
        )
        .await
        .expect(201);
        originals.insert(n);
    }
    for sort in ["-createdAt", "createdAt", "title", "-title", "caseNumber", "-updatedAt"] {
        let inserted = std::cell::Cell::new(0);
        let seen = collect_with_cursor(&t, &s.token, sort, async |page| {
            // Others insert rows on both sides of the cursor between page fetches.
            for k in 0..2 {
                let n = format!("X-{sort}-{page}-{k}");
                t.post(
                    "/api/v1/cases",
                    &s.token,
                    json!({"caseNumber": n, "title": format!("Title {k}"), "type": "civil"}),
                )
                .await
                .expect(201);
                inserted.set(inserted.get() + 1);
            }
        })
        .await;
        let seen_originals: Vec<&String> = seen.iter().filter(|n| n.starts_with("O-")).collect();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "sort {sort}: a row was repeated: {seen:?}");
        assert_eq!(seen_originals.len(), originals.len(), "sort {sort}: a row was skipped: {seen:?}");
        assert!(inserted.get() > 0);
    }
    // A cursor from one sort is refused by another.
    let res = t.get("/api/v1/cases?limit=2&sort=title&cursor=", &s.token).await;
    let c = res.body["meta"]["pagination"]["nextCursor"].as_str().unwrap().to_owned();
    t.get(&format!("/api/v1/cases?limit=2&sort=caseNumber&cursor={c}"), &s.token).await.expect(400);
    t.get("/api/v1/cases?limit=2&cursor=bm90LWEtY3Vyc29y", &s.token).await.expect(400);
}

async fn filters_and_search_work_and_treat_wildcards_literally(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    for (n, title, ty, status) in [
        ("CV-1", "Acme v. Widget", "civil", "open"),
        ("CR-1", "People v. Acme", "criminal", "trial"),
        ("CV-2", "100% Recovery LLC v. Doe", "civil", "trial"),
        ("TX-1", "In re Estate_Tax", "tax", "open"),
    ] {
        t.post("/api/v1/cases", &s.token, json!({"caseNumber": n, "title": title, "type": ty, "status": status}))
            .await
            .expect(201);
    }
    let numbers = |res: crate::support::Res| -> Vec<String> {
        let mut v: Vec<String> =
            res.data().as_array().unwrap().iter().map(|c| c["caseNumber"].as_str().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(numbers(t.get("/api/v1/cases?type=civil", &s.token).await), ["CV-1", "CV-2"]);
    assert_eq!(numbers(t.get("/api/v1/cases?status=trial", &s.token).await), ["CR-1", "CV-2"]);
    assert_eq!(numbers(t.get("/api/v1/cases?status=trial&type=civil", &s.token).await), ["CV-2"]);
    assert_eq!(numbers(t.get("/api/v1/cases?q=ACME", &s.token).await), ["CR-1", "CV-1"]);
    assert_eq!(numbers(t.get("/api/v1/cases?q=cr-", &s.token).await), ["CR-1"]);
    assert_eq!(numbers(t.get("/api/v1/cases?q=100%25", &s.token).await), ["CV-2"]);
    assert_eq!(numbers(t.get("/api/v1/cases?q=e_t", &s.token).await), ["TX-1"]);
    assert!(numbers(t.get("/api/v1/cases?q=%25", &s.token).await).len() == 1);
    t.get("/api/v1/cases?status=bogus", &s.token).await.expect(400);
}

async fn hostile_text_round_trips_and_rich_text_is_cleaned(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let hostile = [
        "Smith & Wesson v. O'Brien; DROP TABLE cases;--",
        "DROP-OFF SCHEDULE",
        "Robert'); DROP TABLE students;--",
        "<script>alert('x')</script>",
        "\" OR 1=1 --",
        "Müller ./. Société Générale — § 1983 “quoted” 日本語",
        "${jndi:ldap://x}",
        "{{7*7}}",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let res = t
            .post(
                "/api/v1/cases",
                &s.token,
                json!({"caseNumber": format!("H-{i}"), "title": text, "type": "other", "judge": text}),
            )
            .await;
        res.expect(201);
        let id = res.data()["id"].as_str().unwrap().to_owned();
        let got = t.get(&format!("/api/v1/cases/{id}"), &s.token).await;
        assert_eq!(got.data()["title"], *text);
        assert_eq!(got.data()["judge"], *text);
    }
    assert_eq!(t.get("/api/v1/cases?limit=100", &s.token).await.data().as_array().unwrap().len(), hostile.len());
    let res = t
        .post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": "R-1", "title": "Rich", "type": "other",
                   "description": "<p>Keep <b>bold</b> <a href=\"https://court.gov\">link</a></p><script>steal()</script><img src=x onerror=alert(1)><a href=\"javascript:alert(1)\">js</a><p style=\"x\">s</p>"}),
        )
        .await;
    res.expect(201);
    let d = res.data()["description"].as_str().unwrap();
    assert!(d.contains("<b>bold</b>") && d.contains("https://court.gov"), "{d}");
    for bad in ["<script", "onerror", "javascript:", "style=", "<img"] {
        assert!(!d.contains(bad), "{bad} survived: {d}");
    }
    // Control characters are dropped from plain text; tabs and newlines stay.
    let res = t
        .post(
            "/api/v1/cases",
            &s.token,
            json!({"caseNumber": "Z-1", "title": "a\u{0}b\u{1b}[31mc\tline\nnext", "type": "other"}),
        )
        .await;
    assert_eq!(res.data()["title"], "ab[31mc\tline\nnext");
}

async fn lead_attorney_joins_the_team_and_can_manage_it(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let lead = t.user(&admin, "attorney").await;
    let para = t.user(&admin, "paralegal").await;
    let res = t
        .post(
            "/api/v1/cases",
            &admin.token,
            json!({"caseNumber": "L-1", "title": "Led", "type": "civil", "leadAttorneyId": lead.user_id}),
        )
        .await;
    res.expect(201);
    let id = res.data()["id"].as_str().unwrap().to_owned();
    let team = t.get(&format!("/api/v1/cases/{id}/team"), &lead.token).await;
    team.expect(200);
    let roles: Vec<(String, String)> = team
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["userId"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    assert!(roles.contains(&(lead.user_id.clone(), "lead_attorney".into())), "{roles:?}");
    // The lead manages the team.
    t.post(&format!("/api/v1/cases/{id}/team"), &lead.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(201);
    t.post(&format!("/api/v1/cases/{id}/team"), &lead.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(409);
    t.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(200);
    t.delete(&format!("/api/v1/cases/{id}/team/{}", para.user_id), &lead.token).await.expect(204);
    t.get(&format!("/api/v1/cases/{id}"), &para.token).await.expect(404);
    // Removing the lead clears the case's lead attorney.
    t.delete(&format!("/api/v1/cases/{id}/team/{}", lead.user_id), &admin.token).await.expect(204);
    let c = t.get(&format!("/api/v1/cases/{id}"), &admin.token).await;
    assert_eq!(c.data()["leadAttorneyId"], Value::Null);
    t.get(&format!("/api/v1/cases/{id}"), &lead.token).await.expect(404);
}

async fn cached_list_totals_follow_writes_at_once(b: Backend) {
    let t = TestApp::with(b, |c| c.auth_cache_ttl = std::time::Duration::from_secs(60)).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let total = |token: String, query: &'static str| {
        let t = &t;
        async move {
            t.get(&format!("/api/v1/cases?page=1&limit=5{query}"), &token).await.body["meta"]["pagination"]["total"]
                .clone()
        }
    };
    assert_eq!(total(admin.token.clone(), "").await, 0);
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(t.case(&admin, &format!("TOT-{i}")).await);
        }
        v
    };
    assert_eq!(total(admin.token.clone(), "").await, 3);
    assert_eq!(total(admin.token.clone(), "&status=open").await, 3);
    t.patch(&format!("/api/v1/cases/{}", ids[0]), &admin.token, json!({"status": "closed"})).await.expect(200);
    assert_eq!(total(admin.token.clone(), "&status=open").await, 2);
    t.delete(&format!("/api/v1/cases/{}", ids[1]), &admin.token).await.expect(204);
    assert_eq!(total(admin.token.clone(), "").await, 2);
    // A team-limited caller has a total of their own, which follows team changes.
    assert_eq!(total(para.token.clone(), "").await, 0);
    t.post(
        &format!("/api/v1/cases/{}/team", ids[2]),
        &admin.token,
        json!({"userId": para.user_id, "role": "paralegal"}),
    )
    .await
    .expect(201);
    assert_eq!(total(para.token.clone(), "").await, 1);
}

async fn demoted_lead_no_longer_manages_the_team(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let lead = t.user(&admin, "attorney").await;
    let para = t.user(&admin, "paralegal").await;
    let res = t
        .post(
            "/api/v1/cases",
            &admin.token,
            json!({"caseNumber": "D-1", "title": "Demotion", "type": "civil", "leadAttorneyId": lead.user_id}),
        )
        .await;
    res.expect(201);
    let id = res.data()["id"].as_str().unwrap().to_owned();
    t.patch(&format!("/api/v1/users/{}", lead.user_id), &admin.token, json!({"role": "paralegal"})).await.expect(200);
    // Still on the team (so the case stays visible), but a paralegal does not manage it.
    t.get(&format!("/api/v1/cases/{id}"), &lead.token).await.expect(200);
    t.post(&format!("/api/v1/cases/{id}/team"), &lead.token, json!({"userId": para.user_id, "role": "paralegal"}))
        .await
        .expect(403);
    t.delete(&format!("/api/v1/cases/{id}"), &lead.token).await.expect(403);
}

async fn team_rules_are_enforced(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let client = t.user(&admin, "client").await;
    let outsider = t.register("Other").await;
    let id = t.case(&admin, "T-1").await;
    let team = format!("/api/v1/cases/{id}/team");
    t.post(&team, &admin.token, json!({"userId": para.user_id, "role": "lead_attorney"})).await.expect(400);
    t.post(&team, &admin.token, json!({"userId": client.user_id, "role": "attorney"})).await.expect(400);
    t.post(&team, &admin.token, json!({"userId": para.user_id, "role": "client"})).await.expect(400);
    t.post(&team, &admin.token, json!({"userId": outsider.user_id, "role": "attorney"})).await.expect(400);
    t.patch(&format!("/api/v1/cases/{id}"), &admin.token, json!({"leadAttorneyId": para.user_id})).await.expect(400);
    t.delete(&format!("{team}/{}", para.user_id), &admin.token).await.expect(404);
    // Reaching a team through a case of another firm is a 404, not a way in.
    let foreign = t.case(&outsider, "F-1").await;
    t.post(
        &format!("/api/v1/cases/{foreign}/team"),
        &admin.token,
        json!({"userId": para.user_id, "role": "paralegal"}),
    )
    .await
    .expect(404);
}

async fn client_on_the_team_sees_names_and_roles_but_no_email_addresses(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let attorney = t.user(&admin, "attorney").await;
    let client = t.user(&admin, "client").await;
    let id = t.case(&admin, "C-1").await;
    let team = format!("/api/v1/cases/{id}/team");
    t.post(&team, &admin.token, json!({"userId": attorney.user_id, "role": "attorney"})).await.expect(201);
    t.post(&team, &admin.token, json!({"userId": client.user_id, "role": "client"})).await.expect(201);

    let seen = t.get(&team, &client.token).await;
    let body = seen.expect(200).body.to_string();
    assert!(!body.contains(&attorney.email) && !body.contains(&client.email), "{body}");
    assert!(!body.contains("\"email\""), "{body}");
    let members = seen.data().as_array().unwrap();
    assert_eq!(members.len(), 3, "the creator, the attorney and the client");
    for m in members {
        assert!(
            m["userId"].is_string() && m["role"].is_string() && m["firstName"].is_string() && m["lastName"].is_string()
        );
    }
    // Staff on the case still see the addresses.
    let staff = t.get(&team, &attorney.token).await;
    assert!(staff.expect(200).body.to_string().contains(&client.email));
}

async fn team_list_shows_only_users_of_the_callers_firm(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Firm").await;
    let para = t.user(&admin, "paralegal").await;
    let other = t.register("Other").await;
    let foreign = t.user(&other, "attorney").await;
    let id = t.case(&admin, "X-1").await;
    let team = format!("/api/v1/cases/{id}/team");
    t.post(&team, &admin.token, json!({"userId": para.user_id, "role": "paralegal"})).await.expect(201);
    // A membership row naming another firm's user (the API refuses to make one; an import or a
    // bug could), written behind the API's back.
    t.sql_exec(&format!(
        "INSERT INTO case_team_members (case_id, user_id, firm_id, role, added_by, added_at) \
         SELECT c.id, u.id, c.firm_id, 'attorney', c.created_by, c.created_at FROM cases c, users u \
         WHERE c.case_number = 'X-1' AND u.email = '{}'",
        foreign.email
    ))
    .await;
    let r = t.get(&team, &admin.token).await;
    let body = r.expect(200).body.to_string();
    assert!(!body.contains(&foreign.email) && !body.contains(&foreign.user_id), "{body}");
    assert_eq!(r.data().as_array().unwrap().len(), 2, "the creator and the paralegal");
}
