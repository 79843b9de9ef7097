//! The calendar: events and who sees them, court deadlines computed by rule and recomputed
//! when their trigger moves, reminders that fire once across workers, and the `.ics` feed
//! (checked by Python's `icalendar` parser).

use std::{process::Stdio, sync::atomic::AtomicBool, time::Duration};

use http::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    events_are_created_listed_changed_and_deleted,
    case_team_rules_decide_who_sees_and_changes_an_event,
    deadlines_are_computed_by_rule_created_and_recomputed_when_their_entry_moves,
    deadlines_of_a_sealed_entry_are_hidden_with_it_history_included,
    only_those_who_may_see_a_sealed_entry_may_attend_its_events,
    court_closures_and_firm_rules_move_deadlines,
    a_closure_of_one_court_moves_only_that_courts_deadlines,
    a_reminder_fires_once_across_two_workers_and_follows_a_moved_event,
    a_reminder_due_when_its_event_changed_is_still_sent,
    the_ics_feed_holds_what_the_user_may_see_and_can_be_revoked,
    a_full_ics_feed_keeps_upcoming_deadlines_before_past_events,
);

async fn team_add(t: &TestApp, admin: &Session, case: &str, user: &Session, role: &str) {
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": user.user_id, "role": role}))
        .await
        .expect(201);
}

async fn events_of(t: &TestApp, s: &Session, query: &str) -> Vec<Value> {
    let r = t.get(&format!("/api/v1/calendar?limit=100{query}"), &s.token).await;
    r.expect(200);
    r.data().as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

async fn count_sql(t: &TestApp, sql: &str) -> i64 {
    let rows = t.sql(sql).await;
    rows[0].try_get_by_index::<i64>(0).unwrap()
}

async fn events_are_created_listed_changed_and_deleted(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Calendar").await;
    let case = t.case(&admin, "C-1").await;
    let hearing = json!({
        "caseId": case, "type": "hearing", "title": "Motion hearing",
        "startsAt": "2027-03-02T15:00:00Z", "endsAt": "2027-03-02T16:00:00Z",
        "timeZone": "America/New_York", "location": "Courtroom 4B",
        "attendees": [{"userId": admin.user_id}, {"email": "Opposing@Example.com", "name": "Opposing counsel"}],
        "reminders": [60, 1440],
    });
    let r = t.post("/api/v1/calendar", &admin.token, hearing).await;
    r.expect(201);
    let e = r.data().clone();
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(e["version"], 1);
    assert_eq!(e["reminders"], json!([1440, 60]), "kept in order, earliest first");
    assert_eq!(e["attendees"][1]["email"], "opposing@example.com");
    assert_eq!(e["timeZone"], "America/New_York");

    // An all-day meeting of the firm, and a deadline of the case.
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": "Partners' retreat", "allDay": true,
                   "startDate": "2027-03-10", "endDate": "2027-03-11", "timeZone": "America/Chicago"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.data()["startsAt"], "2027-03-10T06:00:00Z", "midnight in Chicago");
    assert_eq!(r.data()["endsAt"], "2027-03-12T06:00:00Z", "the day after the last, exclusive");
    let deadline = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"caseId": case, "type": "deadline", "title": "Expert reports", "allDay": true, "startDate": "2027-04-01"}),
        )
        .await;
    deadline.expect(201);

    // Bad input names each bad field and changes nothing.
    let before = count_sql(&t, "SELECT COUNT(*) FROM calendar_events").await;
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "hearing", "title": " ", "startsAt": "2027-03-02T15:00:00Z", "endsAt": "2027-03-02T14:00:00Z",
                   "timeZone": "Mars/Olympus", "attendees": [{"userId": admin.user_id, "email": "x@example.com"}],
                   "reminders": [50000]}),
        )
        .await;
    r.expect(400);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let fields: Vec<&str> =
        r.body["error"]["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    for f in ["title", "timeZone", "endsAt", "attendees[0]", "reminders"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "hearing", "title": "x", "startsAt": "2027-03-02T15:00:00Z", "color": "red"}),
        )
        .await;
    r.expect(400);
    assert_eq!(count_sql(&t, "SELECT COUNT(*) FROM calendar_events").await, before);

    // Listing: by range, type and case.
    let all = events_of(&t, &admin, "").await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["id"], id.as_str(), "by start time");
    let march = events_of(&t, &admin, "&from=2027-03-05T00:00:00Z&to=2027-03-31T00:00:00Z").await;
    assert_eq!(march.len(), 1);
    assert_eq!(march[0]["title"], "Partners' retreat");
    assert_eq!(events_of(&t, &admin, "&type=deadline").await.len(), 1);
    assert_eq!(events_of(&t, &admin, &format!("&caseId={case}")).await.len(), 2);
    t.get("/api/v1/calendar?assignee=nobody", &admin.token).await.expect(400);

    // Changing: the version guards, and a stale one is refused.
    let path = format!("/api/v1/calendar/{id}");
    let r = t
        .patch(
            &path,
            &admin.token,
            json!({"startsAt": "2027-03-03T17:00:00Z", "endsAt": "2027-03-03T16:00:00Z", "version": 1}),
        )
        .await;
    r.expect(400);
    let fields = r.body["error"]["details"]["fields"].to_string();
    assert!(fields.contains("endsAt"), "an end before the start is refused: {fields}");
    // Moving the start alone keeps the hour's length.
    let r = t.patch(&path, &admin.token, json!({"startsAt": "2027-03-03T15:00:00Z", "version": 1})).await;
    r.expect(200);
    assert_eq!(r.data()["version"], 2);
    assert_eq!(r.data()["endsAt"], "2027-03-03T16:00:00Z");
    let r = t.patch(&path, &admin.token, json!({"title": "Stale", "version": 1})).await;
    r.expect(412);
    assert_eq!(r.body["error"]["details"]["currentVersion"], 2);
    let r = t.patch(&path, &admin.token, json!({"completed": true, "location": null})).await;
    r.expect(200);
    assert_eq!(r.data()["completed"], true);
    assert!(r.data()["completedAt"].is_string());
    assert!(r.data()["location"].is_null());
    let upcoming = t.get("/api/v1/calendar/upcoming?days=366", &admin.token).await;
    upcoming.expect(200);
    assert!(!ids(upcoming.data().as_array().unwrap()).contains(&id), "completed events are not upcoming");

    // Deleting: gone from the API, kept as a row, audited, and every change was an event.
    t.delete(&path, &admin.token).await.expect(204);
    t.get(&path, &admin.token).await.expect(404);
    assert_eq!(events_of(&t, &admin, "").await.len(), 2);
    let audit = t.get("/api/v1/audit?limit=100", &admin.token).await;
    let actions: Vec<String> =
        audit.data().as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_owned()).collect();
    for a in ["calendar.create", "calendar.update", "calendar.delete"] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
    let kinds = t
        .sql(&format!("SELECT event_type FROM domain_events WHERE entity_id = '{id}' ORDER BY id"))
        .await
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        kinds,
        ["calendar_event.created", "calendar_event.updated", "calendar_event.updated", "calendar_event.deleted"]
    );
    let v = t.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(v.data()["valid"], true);
}

async fn case_team_rules_decide_who_sees_and_changes_an_event(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Teams").await;
    let on_team = t.user(&admin, "attorney").await;
    let outsider = t.user(&admin, "attorney").await;
    let client = t.user(&admin, "client").await;
    let case = t.case(&admin, "T-1").await;
    team_add(&t, &admin, &case, &on_team, "attorney").await;
    team_add(&t, &admin, &case, &client, "client").await;
    let r = t
        .post(
            "/api/v1/calendar",
            &on_team.token,
            json!({"caseId": case, "type": "court_date", "title": "Trial", "startsAt": "2027-05-01T14:00:00Z"}),
        )
        .await;
    r.expect(201);
    let case_event = r.data()["id"].as_str().unwrap().to_owned();
    // A firm event the outsider attends, and one they do not.
    let r = t
        .post(
            "/api/v1/calendar",
            &on_team.token,
            json!({"type": "meeting", "title": "Strategy", "startsAt": "2027-05-02T14:00:00Z", "attendees": [{"userId": outsider.user_id}]}),
        )
        .await;
    r.expect(201);
    let invited = r.data()["id"].as_str().unwrap().to_owned();
    let r = t
        .post(
            "/api/v1/calendar",
            &on_team.token,
            json!({"type": "meeting", "title": "Private", "startsAt": "2027-05-03T14:00:00Z"}),
        )
        .await;
    r.expect(201);
    let private = r.data()["id"].as_str().unwrap().to_owned();

    // The outsider sees the meeting they attend, not the case's trial nor the private meeting.
    assert_eq!(ids(&events_of(&t, &outsider, "").await), vec![invited.clone()]);
    let r = t.get(&format!("/api/v1/calendar/{case_event}"), &outsider.token).await;
    r.expect(404);
    t.get(&format!("/api/v1/calendar/{private}"), &outsider.token).await.expect(404);
    // Attending is not owning: they may not change it.
    t.patch(&format!("/api/v1/calendar/{invited}"), &outsider.token, json!({"title": "Mine"})).await.expect(403);
    // The client on the team sees the trial, and may not change it or add events.
    assert_eq!(ids(&events_of(&t, &client, "").await), vec![case_event.clone()]);
    t.patch(&format!("/api/v1/calendar/{case_event}"), &client.token, json!({"title": "x"})).await.expect(403);
    t.post(
        "/api/v1/calendar",
        &client.token,
        json!({"type": "meeting", "title": "x", "startsAt": "2027-05-02T14:00:00Z"}),
    )
    .await
    .expect(403);
    // An event of a case the caller does not see looks like a missing case.
    let r = t
        .post(
            "/api/v1/calendar",
            &outsider.token,
            json!({"caseId": case, "type": "hearing", "title": "x", "startsAt": "2027-05-02T14:00:00Z"}),
        )
        .await;
    r.expect(404);
    // Assignees and attendees of a case event must see the case.
    let r = t
        .patch(&format!("/api/v1/calendar/{case_event}"), &on_team.token, json!({"assigneeId": outsider.user_id}))
        .await;
    r.expect(400);
    assert!(r.body.to_string().contains("assigneeId"));
    t.patch(&format!("/api/v1/calendar/{case_event}"), &on_team.token, json!({"assigneeId": on_team.user_id}))
        .await
        .expect(200);
    // The admin sees everything of the firm; another firm sees nothing.
    assert_eq!(events_of(&t, &admin, "").await.len(), 3);
    let other = t.register("Other firm").await;
    assert!(events_of(&t, &other, "").await.is_empty());
    t.get(&format!("/api/v1/calendar/{invited}"), &other.token).await.expect(404);
    // Removed from the team: the trial is gone for them.
    t.delete(&format!("/api/v1/cases/{case}/team/{}", client.user_id), &admin.token).await.expect(204);
    assert!(events_of(&t, &client, "").await.is_empty());
}

async fn compute(t: &TestApp, s: &Session, case: &str, body: Value) -> crate::support::Res {
    t.post(&format!("/api/v1/cases/{case}/deadlines/compute"), &s.token, body).await
}

async fn deadlines_are_computed_by_rule_created_and_recomputed_when_their_entry_moves(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Deadlines").await;
    let case = t.case(&admin, "D-1").await;
    // The rules, shipped as data, each naming its source.
    let rules = t.get("/api/v1/calendar/rules", &admin.token).await;
    rules.expect(200);
    let frap = rules.data().as_array().unwrap().iter().find(|r| r["id"] == "frap-4-a-1-A").unwrap().clone();
    assert_eq!(frap["source"], "Fed. R. App. P. 4(a)(1)(A)");
    assert_eq!(frap["builtin"], true);

    // Computing only: July 3, 2026 is Independence Day observed; the period runs to Monday.
    let r = compute(&t, &admin, &case, json!({"ruleId": "frap-4-a-1-A", "triggerDate": "2026-06-03"})).await;
    r.expect(200);
    let d = &r.data()["deadlines"][0];
    assert_eq!(d["dueDate"], "2026-07-06");
    assert_eq!(d["source"], "Fed. R. App. P. 4(a)(1)(A)");
    assert!(d["ruleText"].as_str().unwrap().contains("30 days after entry"));
    assert!(d["steps"].to_string().contains("Independence Day (observed)"));
    assert!(r.data()["events"].as_array().unwrap().is_empty());
    assert_eq!(count_sql(&t, "SELECT COUNT(*) FROM calendar_events").await, 0);
    // 6(d): three days for service by mail, where the period runs from Rule 5(b) service.
    let r = compute(
        &t,
        &admin,
        &case,
        json!({"ruleId": "frcp-33-b-2", "triggerDate": "2026-01-07", "serviceMethod": "mail"}),
    )
    .await;
    assert_eq!(r.expect(200).data()["deadlines"][0]["dueDate"], "2026-02-09");
    // Bad input.
    let r = compute(&t, &admin, &case, json!({"ruleId": "no-such-rule", "triggerDate": "2026-01-07"})).await;
    r.expect(400);
    assert!(r.body.to_string().contains("ruleId"));
    compute(&t, &admin, &case, json!({"ruleId": "frcp-56-b"})).await.expect(400);
    compute(&t, &admin, &case, json!({"ruleId": "frcp-56-b", "triggerDate": "2026-01-07", "serviceMethod": "pigeon"}))
        .await
        .expect(400);

    // Created from a docket entry: the judgment's date is the trigger.
    let entry = t
        .post(
            &format!("/api/v1/cases/{case}/docket"),
            &admin.token,
            json!({"type": "judgment", "description": "Final judgment", "entryDate": "2026-06-03"}),
        )
        .await;
    entry.expect(201);
    let entry_id = entry.data()["id"].as_str().unwrap().to_owned();
    let r = compute(
        &t,
        &admin,
        &case,
        json!({"ruleId": "frap-4-a-1-A", "docketEntryId": entry_id, "create": true, "timeZone": "America/New_York",
               "reminders": [1440], "assigneeId": admin.user_id}),
    )
    .await;
    r.expect(201);
    let ev = r.data()["events"][0].clone();
    let ev_id = ev["id"].as_str().unwrap().to_owned();
    assert_eq!(ev["type"], "deadline");
    assert_eq!(ev["allDay"], true);
    assert_eq!(ev["startDate"], "2026-07-06");
    assert_eq!(ev["docketEntryId"], entry_id.as_str());
    assert_eq!(ev["deadline"]["ruleId"], "frap-4-a-1-A");
    assert_eq!(ev["deadline"]["triggerDate"], "2026-06-03");
    assert_eq!(ev["deadline"]["recompute"], true);

    // The judgment's date is corrected: the deadline follows, audited.
    let r = t
        .patch(&format!("/api/v1/cases/{case}/docket/{entry_id}"), &admin.token, json!({"entryDate": "2026-06-10"}))
        .await;
    r.expect(200);
    let moved = t.get(&format!("/api/v1/calendar/{ev_id}"), &admin.token).await;
    moved.expect(200);
    // June 10 + 30 = July 10, a Friday.
    assert_eq!(moved.data()["startDate"], "2026-07-10");
    assert_eq!(moved.data()["deadline"]["triggerDate"], "2026-06-10");
    assert_eq!(moved.data()["version"], 2);
    let history = t.get(&format!("/api/v1/cases/{case}/history?limit=100"), &admin.token).await;
    assert!(history.body.to_string().contains("calendar.recompute"), "{}", history.body);
    // A docket change that leaves the date alone recomputes nothing.
    t.patch(
        &format!("/api/v1/cases/{case}/docket/{entry_id}"),
        &admin.token,
        json!({"description": "Final judgment (amended)"}),
    )
    .await
    .expect(200);
    assert_eq!(t.get(&format!("/api/v1/calendar/{ev_id}"), &admin.token).await.data()["version"], 2);

    // Moved by hand: the dates are the user's now, and no longer follow the entry.
    let r = t.patch(&format!("/api/v1/calendar/{ev_id}"), &admin.token, json!({"startDate": "2026-07-08"})).await;
    r.expect(200);
    assert_eq!(r.data()["deadline"]["recompute"], false);
    t.patch(&format!("/api/v1/cases/{case}/docket/{entry_id}"), &admin.token, json!({"entryDate": "2026-06-12"}))
        .await
        .expect(200);
    assert_eq!(t.get(&format!("/api/v1/calendar/{ev_id}"), &admin.token).await.data()["startDate"], "2026-07-08");
}

async fn deadlines_of_a_sealed_entry_are_hidden_with_it_history_included(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Sealed deadlines").await;
    let paralegal = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "S-1").await;
    team_add(&t, &admin, &case, &paralegal, "paralegal").await;
    let entry = t
        .post(
            &format!("/api/v1/cases/{case}/docket"),
            &admin.token,
            json!({"type": "order", "description": "Sealed order to respond", "entryDate": "2026-09-01", "sealed": true}),
        )
        .await;
    entry.expect(201);
    let entry_id = entry.data()["id"].as_str().unwrap().to_owned();
    let r =
        compute(&t, &admin, &case, json!({"ruleId": "frcp-12-a-4-A", "docketEntryId": entry_id, "create": true})).await;
    r.expect(201);
    let ev_id = r.data()["events"][0]["id"].as_str().unwrap().to_owned();
    // The paralegal may not see the sealed entry: nor its deadline, nor its history.
    assert!(events_of(&t, &paralegal, "").await.is_empty());
    t.get(&format!("/api/v1/calendar/{ev_id}"), &paralegal.token).await.expect(404);
    let h = t.get(&format!("/api/v1/cases/{case}/history?limit=100"), &paralegal.token).await;
    h.expect(200);
    assert!(!h.body.to_string().contains(&ev_id), "the deadline's history is hidden: {}", h.body);
    // Nor can they compute from it.
    let r = compute(&t, &paralegal, &case, json!({"ruleId": "frcp-12-a-4-A", "docketEntryId": entry_id})).await;
    r.expect(400);
    // The admin sees it all; unsealing shows the event (its history stays hidden: it was sealed).
    assert_eq!(events_of(&t, &admin, "").await.len(), 1);
    t.patch(&format!("/api/v1/cases/{case}/docket/{entry_id}"), &admin.token, json!({"sealed": false}))
        .await
        .expect(200);
    assert_eq!(ids(&events_of(&t, &paralegal, "").await), vec![ev_id.clone()]);
    let h = t.get(&format!("/api/v1/cases/{case}/history?limit=100"), &paralegal.token).await;
    assert!(!h.body.to_string().contains(&ev_id));
}

/// An attendee of an event tied to a sealed docket entry must see the entry: an admin or a
/// holder of a grant for the case. A provider's copy names the attendees (and Google puts a copy
/// in each one's calendar), so one without the grant is refused, in words that keep the seal.
async fn only_those_who_may_see_a_sealed_entry_may_attend_its_events(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Sealed attendees").await;
    let other_admin = t.user(&admin, "admin").await;
    let paralegal = t.user(&admin, "paralegal").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "SA-1").await;
    team_add(&t, &admin, &case, &paralegal, "paralegal").await;
    team_add(&t, &admin, &case, &attorney, "attorney").await;
    let grant = |who: &Session| format!("/api/v1/cases/{case}/sealed-access/{}", who.user_id);
    t.call(Method::PUT, &grant(&attorney), Some(&admin.token), None).await.expect(200);
    let entry = t
        .post(
            &format!("/api/v1/cases/{case}/docket"),
            &admin.token,
            json!({"type": "order", "description": "Sealed order to respond", "entryDate": "2026-09-01", "sealed": true}),
        )
        .await;
    let entry_id = entry.expect(201).data()["id"].as_str().unwrap().to_owned();
    let event = |attendees: Value| {
        json!({"caseId": case, "docketEntryId": entry_id, "type": "deadline", "title": "Respond",
               "allDay": true, "startDate": "2027-06-01", "attendees": attendees})
    };

    // The paralegal sees the case but not the sealed entry: refused, on their place in the list.
    let before = count_sql(&t, "SELECT COUNT(*) FROM calendar_events").await;
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            event(json!([{"userId": attorney.user_id}, {"userId": paralegal.user_id}])),
        )
        .await;
    r.expect(400);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    let fields = r.body["error"]["details"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{}", r.body);
    assert_eq!(fields[0]["field"], "attendees[1].userId");
    assert!(!fields[0]["message"].as_str().unwrap().to_lowercase().contains("seal"), "{}", r.body);
    // An address outside the firm holds no grant either.
    let r = t.post("/api/v1/calendar", &admin.token, event(json!([{"email": "someone@example.com"}]))).await;
    r.expect(400);
    assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "attendees[0].email");
    assert_eq!(count_sql(&t, "SELECT COUNT(*) FROM calendar_events").await, before, "nothing was created");

    // The grant holder and an admin may attend.
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            event(json!([{"userId": attorney.user_id}, {"userId": other_admin.user_id}])),
        )
        .await;
    let id = r.expect(201).data()["id"].as_str().unwrap().to_owned();
    // Added later: refused too, until an admin grants the paralegal sealed access.
    let three = json!({"attendees": [
        {"userId": attorney.user_id}, {"userId": other_admin.user_id}, {"userId": paralegal.user_id}
    ]});
    let r = t.patch(&format!("/api/v1/calendar/{id}"), &admin.token, three.clone()).await;
    r.expect(400);
    assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "attendees[2].userId");
    t.call(Method::PUT, &grant(&paralegal), Some(&admin.token), None).await.expect(200);
    let r = t.patch(&format!("/api/v1/calendar/{id}"), &admin.token, three).await;
    assert_eq!(r.expect(200).data()["attendees"].as_array().map(Vec::len), Some(3));
}

async fn court_closures_and_firm_rules_move_deadlines(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Closures").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "K-1").await;
    team_add(&t, &admin, &case, &attorney, "attorney").await;
    // 2026-01-09 + 21 days = Friday 2026-01-30.
    let r =
        compute(&t, &admin, &case, json!({"ruleId": "frcp-12-a-1-A-i", "triggerDate": "2026-01-09", "create": true}))
            .await;
    r.expect(201);
    let ev = r.data()["events"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["events"][0]["startDate"], "2026-01-30");
    // Only admins and partners record closures.
    t.post("/api/v1/calendar/closures", &attorney.token, json!({"day": "2026-01-30", "name": "Snow"}))
        .await
        .expect(403);
    let r = t
        .post(
            "/api/v1/calendar/closures",
            &admin.token,
            json!({"day": "2026-01-30", "name": "Courthouse closed: snow"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.data()["recomputed"], 1);
    let e = t.get(&format!("/api/v1/calendar/{ev}"), &admin.token).await;
    assert_eq!(e.data()["startDate"], "2026-02-02", "the closure is a legal holiday: on to Monday");
    assert!(e.data()["deadline"]["steps"].to_string().contains("a day the court is closed"));
    let list = t.get("/api/v1/calendar/closures?from=2026-01-01&to=2026-12-31", &admin.token).await;
    assert_eq!(list.data()[0]["name"], "Courthouse closed: snow");
    // Removing it moves the deadline back.
    let r = t.delete("/api/v1/calendar/closures/2026-01-30", &admin.token).await;
    r.expect(200);
    assert_eq!(t.get(&format!("/api/v1/calendar/{ev}"), &admin.token).await.data()["startDate"], "2026-01-30");
    t.delete("/api/v1/calendar/closures/2026-01-30", &admin.token).await.expect(404);

    // A firm's own rule: a local rule counted in days before a hearing.
    let rule = json!({"id": "local-7-1-b", "name": "Opposition brief", "source": "Local Civ. R. 7.1(b)",
                      "text": "Opposition papers must be filed at least 10 days before the hearing.",
                      "trigger": "the hearing", "amount": 10, "unit": "days", "direction": "before"});
    t.post("/api/v1/calendar/rules", &attorney.token, rule.clone()).await.expect(403);
    t.post("/api/v1/calendar/rules", &admin.token, rule.clone()).await.expect(201);
    t.post("/api/v1/calendar/rules", &admin.token, rule).await.expect(409);
    let clash = json!({"id": "frcp-56-b", "name": "x", "source": "x", "text": "x", "trigger": "x", "amount": 1, "unit": "days", "direction": "after"});
    t.post("/api/v1/calendar/rules", &admin.token, clash).await.expect(400);
    let bad = json!({"id": "bad-one", "name": "x", "source": "x", "text": "x", "trigger": "x", "amount": 0, "unit": "days", "direction": "after"});
    t.post("/api/v1/calendar/rules", &admin.token, bad).await.expect(400);
    // Hearing Wednesday 2026-11-25: 10 days before is Sunday 11-15, so back to Friday 11-13.
    let r = compute(&t, &attorney, &case, json!({"ruleId": "local-7-1-b", "triggerDate": "2026-11-25"})).await;
    assert_eq!(r.expect(200).data()["deadlines"][0]["dueDate"], "2026-11-13");
    // Another firm cannot use it.
    let other = t.register("Other").await;
    let other_case = t.case(&other, "O-1").await;
    compute(&t, &other, &other_case, json!({"ruleId": "local-7-1-b", "triggerDate": "2026-11-25"})).await.expect(400);
    t.delete("/api/v1/calendar/rules/local-7-1-b", &admin.token).await.expect(204);
    t.delete("/api/v1/calendar/rules/local-7-1-b", &admin.token).await.expect(404);
}

/// A closure recorded for one court is a legal holiday for that court's cases only: a state
/// court's snow day must not push a federal case's deadline later than its rule allows.
async fn a_closure_of_one_court_moves_only_that_courts_deadlines(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Courts").await;
    let case_in = |number: &'static str, court: &'static str| {
        let (t, token) = (&t, admin.token.clone());
        async move {
            let r = t
                .post(
                    "/api/v1/cases",
                    &token,
                    json!({"caseNumber": number, "title": number, "type": "civil", "court": court}),
                )
                .await;
            r.expect(201);
            r.data()["id"].as_str().unwrap().to_owned()
        }
    };
    let state = case_in("ST-1", "Superior Court of Vermont").await;
    let federal = case_in("FD-1", "D. Vt.").await;
    let deadline = |case: String| {
        let (t, admin) = (&t, &admin);
        async move {
            let body = json!({"ruleId": "frcp-12-a-1-A-i", "triggerDate": "2026-01-09", "create": true});
            let r = compute(t, admin, &case, body).await;
            r.expect(201);
            r.data()["events"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    // 2026-01-09 + 21 days = Friday 2026-01-30, for both.
    let (in_state, in_federal) = (deadline(state.clone()).await, deadline(federal.clone()).await);
    let start = |id: String| {
        let (t, admin) = (&t, &admin);
        async move { t.get(&format!("/api/v1/calendar/{id}"), &admin.token).await.data()["startDate"].clone() }
    };
    let r = t
        .post(
            "/api/v1/calendar/closures",
            &admin.token,
            json!({"day": "2026-01-30", "name": "Snow", "court": "  superior court of VERMONT "}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.data()["closure"]["court"], "superior court of VERMONT");
    assert_eq!(start(in_state.clone()).await, "2026-02-02", "the state court was closed: on to Monday");
    assert_eq!(start(in_federal.clone()).await, "2026-01-30", "the federal court was open");
    // Computing afresh follows the same rule.
    let r = compute(&t, &admin, &federal, json!({"ruleId": "frcp-12-a-1-A-i", "triggerDate": "2026-01-09"})).await;
    assert_eq!(r.expect(200).data()["deadlines"][0]["dueDate"], "2026-01-30");
    // A closure of every court on the same day is a closure of its own.
    t.post("/api/v1/calendar/closures", &admin.token, json!({"day": "2026-01-30", "name": "Storm"})).await.expect(201);
    assert_eq!(start(in_federal.clone()).await, "2026-02-02");
    // The same court written otherwise is the same closure, renamed.
    let again = json!({"day": "2026-01-30", "name": "Snow, still", "court": "Superior Court of Vermont"});
    t.post("/api/v1/calendar/closures", &admin.token, again).await.expect(201);
    let list = t.get("/api/v1/calendar/closures?from=2026-01-30&to=2026-01-30", &admin.token).await;
    assert_eq!(list.data().as_array().unwrap().len(), 2, "{}", list.body);
    // Removing the firm-wide one leaves the state court's.
    t.delete("/api/v1/calendar/closures/2026-01-30", &admin.token).await.expect(200);
    assert_eq!(start(in_federal.clone()).await, "2026-01-30");
    assert_eq!(start(in_state.clone()).await, "2026-02-02");
    // A case moved to the closed court has its deadlines counted again, there and then.
    let moved =
        t.patch(&format!("/api/v1/cases/{federal}"), &admin.token, json!({"court": "superior court of vermont"})).await;
    moved.expect(200);
    assert_eq!(start(in_federal.clone()).await, "2026-02-02");
    let path = "/api/v1/calendar/closures/2026-01-30?court=SUPERIOR%20COURT%20OF%20VERMONT";
    t.delete(path, &admin.token).await.expect(200);
    t.delete(path, &admin.token).await.expect(404);
    assert_eq!(start(in_state).await, "2026-01-30");
    assert_eq!(start(in_federal).await, "2026-01-30");
}

async fn a_reminder_fires_once_across_two_workers_and_follows_a_moved_event(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Reminders").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "R-1").await;
    team_add(&t, &admin, &case, &attorney, "attorney").await;
    // Due 3 s from now: the start is a minute and 3 s away, the reminder a minute before.
    let start = chrono::Utc::now() + chrono::Duration::seconds(63);
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"caseId": case, "type": "hearing", "title": "Status conference", "startsAt": start,
                   "assigneeId": attorney.user_id, "reminders": [1]}),
        )
        .await;
    r.expect(201);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    // A second event, moved a day later: its first reminder must not fire.
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": "Moved", "startsAt": start, "reminders": [1]}),
        )
        .await;
    r.expect(201);
    let moved = r.data()["id"].as_str().unwrap().to_owned();
    t.patch(&format!("/api/v1/calendar/{moved}"), &admin.token, json!({"startsAt": start + chrono::Duration::days(1)}))
        .await
        .expect(200);

    let stop = tokio_util::sync::CancellationToken::new();
    let runs = vec![start_worker(&t, &stop), start_worker(&t, &stop)];
    let sent = "SELECT COUNT(*) FROM domain_events WHERE event_type = 'calendar_event.reminder'";
    wait_for_one(&t, sent, Duration::from_secs(30), "the reminder never fired").await;
    // Time for a second delivery, were there one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for r in runs {
        r.await.unwrap();
    }
    assert_eq!(count_sql(&t, sent).await, 1, "one reminder, though two workers ran");
    let rows = t.sql("SELECT entity_id, data FROM domain_events WHERE event_type = 'calendar_event.reminder'").await;
    assert_eq!(rows[0].try_get_by_index::<String>(0).unwrap(), id, "the moved event's old reminder stayed silent");
    let data: Value = serde_json::from_str(&rows[0].try_get_by_index::<String>(1).unwrap()).unwrap();
    assert_eq!(data["userIds"], json!([attorney.user_id]), "to the assignee");
    assert_eq!(data["minutesBefore"], 1);
    assert_eq!(count_sql(&t, "SELECT COUNT(*) FROM calendar_reminders_sent").await, 1);
    // The moved event's reminder waits for its new time.
    let pending = count_sql(
        &t,
        "SELECT COUNT(*) FROM queue_jobs WHERE job_type = 'calendar.remind' AND state NOT IN ('completed', 'failed', 'dead')",
    )
    .await;
    assert_eq!(pending, 1, "the moved event's new reminder, and nothing else, is still to come");
}

/// A job worker on the test's database until `stop` is cancelled.
fn start_worker(t: &TestApp, stop: &tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    let db = t.app.db.clone();
    let w = lexiflow::jobs::worker(db.clone(), db, &t.app.config, t.app.cache.clone(), t.app.storage.clone()).unwrap();
    tokio::spawn(w.run(stop.clone()))
}

/// Waits (at most `within`) until the count `sql` is not zero.
async fn wait_for_one(t: &TestApp, sql: &str, within: Duration, why: &str) {
    let deadline = std::time::Instant::now() + within;
    while count_sql(t, sql).await == 0 {
        assert!(std::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A reminder that fell due while no worker ran, its event changed before the job ran (a
/// new version, whose own schedule skips reminders already due): sent all the same, once.
async fn a_reminder_due_when_its_event_changed_is_still_sent(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Late reminders").await;
    let start = chrono::Utc::now() + chrono::Duration::seconds(62);
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": "Filing call", "startsAt": start, "reminders": [1]}),
        )
        .await;
    r.expect(201);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    // Due in 2 s; no worker runs until after the change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.patch(&format!("/api/v1/calendar/{id}"), &admin.token, json!({"title": "Filing call (moved room)"}))
        .await
        .expect(200);
    let stop = tokio_util::sync::CancellationToken::new();
    let run = start_worker(&t, &stop);
    let sent = "SELECT COUNT(*) FROM domain_events WHERE event_type = 'calendar_event.reminder'";
    wait_for_one(&t, sent, Duration::from_secs(20), "the reminder was lost with the version it was scheduled for")
        .await;
    // Another change now schedules nothing more: it was sent.
    t.patch(&format!("/api/v1/calendar/{id}"), &admin.token, json!({"title": "Filing call (room 2)"}))
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    run.await.unwrap();
    assert_eq!(count_sql(&t, sent).await, 1, "sent once");
}

fn python() -> String {
    std::env::var("LEXIFLOW_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_available() -> bool {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let ok = std::process::Command::new(python())
        .args(["-c", "import icalendar"])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::support::tool_available(
        &NOTED,
        ok,
        &format!("{} with icalendar", python()),
        "LEXIFLOW_REQUIRE_PYTHON",
        "the calendar:: .ics parse check",
        "pip install -r tests/calendar/requirements.txt, or set LEXIFLOW_TEST_PYTHON",
    )
}

/// Parses `ics` with Python's `icalendar`; its summary of the events.
async fn parse_ics(ics: &str) -> Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/calendar/parse_ics.py");
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(ics.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "icalendar refused the feed: {}\n{ics}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn the_ics_feed_holds_what_the_user_may_see_and_can_be_revoked(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Feed").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "F-1").await;
    let hidden_case = t.case(&admin, "F-2").await;
    team_add(&t, &admin, &case, &attorney, "attorney").await;
    let soon = chrono::Utc::now() + chrono::Duration::days(3);
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"caseId": case, "type": "hearing", "title": "Hearing; with, commas \\ and a very long title that will need folding at seventy-five octets per line",
                   "description": "Line one\nLine two", "startsAt": soon, "endsAt": soon + chrono::Duration::hours(1), "reminders": [30]}),
        )
        .await;
    r.expect(201);
    let visible = r.data()["id"].as_str().unwrap().to_owned();
    compute(
        &t,
        &admin,
        &case,
        json!({"ruleId": "frcp-56-b", "triggerDate": chrono::Utc::now().date_naive(), "create": true}),
    )
    .await
    .expect(201);
    t.post(
        "/api/v1/calendar",
        &admin.token,
        json!({"caseId": hidden_case, "type": "hearing", "title": "Not for the attorney", "startsAt": soon}),
    )
    .await
    .expect(201);

    let r = t.post("/api/v1/calendar/feed", &attorney.token, json!({})).await;
    r.expect(201);
    let path = r.data()["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/api/v1/calendar/feed/lfcal_") && path.ends_with(".ics"));
    // No bearer token: the path is the key.
    let (status, headers, body) = t.raw(Method::GET, &path, None, &[]).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/calendar"));
    let ics = String::from_utf8(body.to_vec()).unwrap();
    assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
    assert_eq!(ics.matches("\r\nPRODID:").count(), 1, "one PRODID (RFC 5545 3.6)");
    assert_eq!(ics.matches("\r\nVERSION:2.0\r\n").count(), 1);
    assert!(ics.contains(&format!("UID:{visible}@lexiflow")));
    assert!(!ics.contains("Not for the attorney"));
    assert!(ics.lines().all(|l| l.len() <= 75), "lines are folded at 75 octets");
    if python_available() {
        let parsed = parse_ics(&ics).await;
        let events = parsed["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{parsed}");
        let hearing = events.iter().find(|e| e["uid"] == format!("{visible}@lexiflow").as_str()).unwrap();
        assert!(hearing["summary"].as_str().unwrap().starts_with("Hearing; with, commas \\ and"), "{hearing}");
        assert_eq!(hearing["allDay"], false);
        assert_eq!(hearing["alarms"], 1);
        let deadline = events.iter().find(|e| e["allDay"] == true).unwrap();
        assert!(deadline["summary"].as_str().unwrap().contains("Fed. R. Civ. P. 56(b)"));
    }
    // A new feed revokes the old; revoking leaves none.
    let r = t.post("/api/v1/calendar/feed", &attorney.token, json!({})).await;
    let second = r.expect(201).data()["path"].as_str().unwrap().to_owned();
    assert_eq!(t.raw(Method::GET, &path, None, &[]).await.0, 404);
    assert_eq!(t.raw(Method::GET, &second, None, &[]).await.0, 200);
    t.delete("/api/v1/calendar/feed", &attorney.token).await.expect(204);
    assert_eq!(t.raw(Method::GET, &second, None, &[]).await.0, 404);
    assert_eq!(t.raw(Method::GET, "/api/v1/calendar/feed/lfcal_guess.ics", None, &[]).await.0, 404);
    // A disabled user's feed stops at once.
    let r = t.post("/api/v1/calendar/feed", &attorney.token, json!({})).await;
    let third = r.expect(201).data()["path"].as_str().unwrap().to_owned();
    t.patch(&format!("/api/v1/users/{}", attorney.user_id), &admin.token, json!({"status": "suspended"}))
        .await
        .expect(200);
    assert_eq!(t.raw(Method::GET, &third, None, &[]).await.0, 404);
}

/// Creates a one-hour deadline of the firm starting at `starts`; its id.
async fn deadline_at(t: &TestApp, s: &Session, title: &str, starts: chrono::DateTime<chrono::Utc>) -> String {
    let r = t
        .post(
            "/api/v1/calendar",
            &s.token,
            json!({"type": "deadline", "title": title, "startsAt": starts, "endsAt": starts + chrono::Duration::hours(1)}),
        )
        .await;
    r.expect(201).data()["id"].as_str().unwrap().to_owned()
}

/// The ids of the events a feed of at most `cap` holds for `p`, in the order chosen.
async fn feed_ids(t: &TestApp, p: &lexiflow::auth::Principal, cap: u64) -> Vec<String> {
    let rows = lexiflow::calendar::ics::feed_events(&t.app.db, p, cap).await.unwrap();
    rows.into_iter().map(|m| m.id.to_string()).collect()
}

/// Past events never crowd an upcoming deadline out of a full feed: the events not over yet go
/// in first (the earliest, when even they are too many), then the most recently ended past ones
/// fill what room is left. Checked with a small cap on the function the feed uses.
async fn a_full_ics_feed_keeps_upcoming_deadlines_before_past_events(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Full feed").await;
    let now = chrono::Utc::now();
    let days = chrono::Duration::days;
    let past_10 = deadline_at(&t, &admin, "Ten days ago", now - days(10)).await;
    let past_20 = deadline_at(&t, &admin, "Twenty days ago", now - days(20)).await;
    let past_30 = deadline_at(&t, &admin, "Thirty days ago", now - days(30)).await;
    let too_old = deadline_at(&t, &admin, "Over a year ago", now - days(400)).await;
    let due = deadline_at(&t, &admin, "Reply brief due", now + days(5)).await;
    let p = lexiflow::auth::Principal {
        user_id: lexiflow::ids::UserId(admin.user_id.parse().unwrap()),
        firm_id: lexiflow::ids::FirmId(admin.firm_id.parse().unwrap()),
        role: lexiflow::users::model::Role::Admin,
        session_id: lexiflow::ids::SessionId::new(),
        api_key: None,
    };
    // Three past events would fill a feed of three: the deadline still goes in, and the most
    // recently ended past ones take the room left.
    assert_eq!(feed_ids(&t, &p, 3).await, vec![due.clone(), past_10.clone(), past_20.clone()]);
    // Room for all: everything that ended within the year, and nothing older.
    let all = feed_ids(&t, &p, 100).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&past_30) && !all.contains(&too_old), "{all:?}");
    // More upcoming events than room: the earliest are kept, and no past one.
    let sooner = deadline_at(&t, &admin, "Motion due", now + days(2)).await;
    assert_eq!(feed_ids(&t, &p, 1).await, vec![sooner.clone()]);
    assert_eq!(feed_ids(&t, &p, 2).await, vec![sooner, due]);
    // The feed itself holds the same, at its real cap.
    assert_eq!(feed_ids(&t, &p, lexiflow::calendar::ics::MAX_EVENTS).await.len(), 5);
}
