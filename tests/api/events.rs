//! Domain events: recorded in the writing transaction, written to the outbox with a gapless
//! per-firm sequence, published once after commit (never after a rollback, never twice when a
//! transaction is retried), and seen by other processes through the outbox; and the one bus.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use lexiflow::events::model::event;
use lexiflow::{
    audit::Actor,
    db::{DbError, TxOptions},
    events::{DomainEvent, EventType, Subscriber},
    http::error::ApiError,
    ids::FirmId,
};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::support::{Backend, TestApp};

crate::on_both_backends!(
    every_write_lands_in_the_outbox_with_a_gapless_sequence_per_firm,
    events_are_published_once_after_commit_and_never_after_a_rollback,
    a_write_whose_caller_is_dropped_still_publishes_its_events,
    a_transaction_handle_kept_past_its_work_is_inert,
    writes_by_another_process_reach_this_ones_caches_through_the_outbox,
    concurrent_sequencers_number_each_event_once,
    the_sequencer_numbers_in_write_order_whatever_the_ids,
    tables_that_grew_since_their_statistics_are_analysed,
    retention_prunes_numbered_events_recorded_before_the_cutoff,
);

/// Collects what it is handed.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<DomainEvent>>);

impl Subscriber for Recorder {
    fn name(&self) -> &'static str {
        "test-recorder"
    }
    fn deliver<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, ()> {
        async move { self.0.lock().unwrap().extend(events.iter().cloned()) }.boxed()
    }
}

impl Recorder {
    fn types(&self) -> Vec<EventType> {
        self.0.lock().unwrap().iter().map(|e| e.event_type).collect()
    }
}

/// Waits (bounded) until every outbox row has its number: on PostgreSQL the sequencer runs
/// just after each commit.
async fn numbered(t: &TestApp) {
    for _ in 0..200 {
        let left = t.sql("SELECT COUNT(*) FROM domain_events WHERE seq IS NULL").await;
        let n: i64 = left[0].try_get_by_index(0).unwrap();
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("outbox rows were left unnumbered");
}

/// A firm's outbox rows in sequence order.
async fn rows(t: &TestApp, firm: &str) -> Vec<event::Model> {
    event::Entity::find()
        .filter(event::Column::FirmId.eq(uuid::Uuid::parse_str(firm).unwrap()))
        .order_by_asc(event::Column::Seq)
        .all(&t.app.db)
        .await
        .unwrap()
}

/// Concurrent single writes, a bulk create, a party, docket entries and a team change in two
/// firms: each firm's outbox numbers are exactly 1..=n, and each write's event is there with
/// its type, case and public view.
async fn every_write_lands_in_the_outbox_with_a_gapless_sequence_per_firm(b: Backend) {
    let t = TestApp::new(b).await;
    let a = t.register("Alpha").await;
    let z = t.register("Zulu").await;
    let mut writes = Vec::new();
    for i in 0..12 {
        let (t, a, z) = (&t, &a, &z);
        writes.push(async move {
            t.case(a, &format!("A-{i}")).await;
            t.case(z, &format!("Z-{i}")).await;
        });
    }
    futures_util::future::join_all(writes).await;
    let items: Vec<_> =
        (0..30).map(|i| json!({"caseNumber": format!("AB-{i}"), "title": "Bulk", "type": "civil"})).collect();
    t.post("/api/v1/cases/bulk", &a.token, json!({"items": items})).await.expect(200);
    let case = t.case(&a, "A-X").await;
    t.post(
        &format!("/api/v1/cases/{case}/parties"),
        &a.token,
        json!({"name": "Smith & Wesson", "type": "plaintiff", "kind": "organization"}),
    )
    .await
    .expect(201);
    t.post(
        &format!("/api/v1/cases/{case}/docket"),
        &a.token,
        json!({"type": "filing", "description": "Complaint", "entryDate": "2026-01-05"}),
    )
    .await
    .expect(201);
    t.call(lexiflow_delete(), &format!("/api/v1/cases/{case}"), Some(&a.token), None).await.expect(204);
    numbered(&t).await;

    let mut alpha = Vec::new();
    for (s, expected_cases) in [(&a, 12 + 30 + 1), (&z, 12)] {
        let got = rows(&t, &s.firm_id).await;
        let numbers: Vec<i64> = got.iter().map(|r| r.seq.unwrap()).collect();
        assert_eq!(numbers, (1..=got.len() as i64).collect::<Vec<_>>(), "gapless and increasing");
        let created = got.iter().filter(|r| r.event_type == "case.created").count();
        assert_eq!(created, expected_cases);
        if s.firm_id == a.firm_id {
            alpha = got;
        }
    }
    let case = uuid::Uuid::parse_str(&case).unwrap();
    let of_case: Vec<&event::Model> = alpha.iter().filter(|r| r.case_id == Some(case)).collect();
    let kinds: Vec<&str> = of_case.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(kinds.first().copied(), Some("case.created"));
    assert!(kinds.contains(&"party.created"), "{kinds:?}");
    assert!(kinds.contains(&"docket_entry.created"), "{kinds:?}");
    assert_eq!(kinds.last().copied(), Some("case.deleted"), "{kinds:?}");
    let data: serde_json::Value = serde_json::from_str(&of_case[0].data).unwrap();
    assert_eq!(data["caseNumber"], "A-X", "the public view travels with the event");
}

fn lexiflow_delete() -> http::Method {
    http::Method::DELETE
}

/// A request dropped while its write commits (its client gone, its deadline) must not skip
/// the publishing: caches would keep what the write changed, sessions it revoked would stay
/// cached, and on PostgreSQL the sequencer would not be told.
async fn a_write_whose_caller_is_dropped_still_publishes_its_events(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Dropped").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let recorder = Arc::new(Recorder::default());
    t.app.events.subscribe(recorder.clone());
    // Writes whose callers go away sooner or later: some before their commit (nothing is
    // written, nothing owed), some while it runs, some after.
    for i in 0..40u64 {
        let app = t.app.clone();
        let id = format!("dropped-{i}");
        let write = tokio::spawn(async move {
            app.write(TxOptions::write(), |tx| {
                let id = id.clone();
                async move {
                    tx.record(DomainEvent::new(EventType::CaseUpdated, firm, &Actor::system(), &id));
                    Ok::<_, ApiError>(())
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_micros(250 * i)).await;
        write.abort();
        let _ = write.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows =
        event::Entity::find().filter(event::Column::EntityId.starts_with("dropped-")).all(&t.app.db).await.unwrap();
    assert!(!rows.is_empty(), "some of the writes committed");
    let published: Vec<String> = recorder.0.lock().unwrap().iter().map(|e| e.entity_id.clone()).collect();
    for r in &rows {
        assert!(published.contains(&r.entity_id), "{} committed but was not published", r.entity_id);
    }
    numbered(&t).await;
}

/// A work that fails records nothing; a work that loses a conflict and is run again publishes
/// its event once (from the attempt that committed); a refusal after commit publishes.
async fn events_are_published_once_after_commit_and_never_after_a_rollback(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let recorder = Arc::new(Recorder::default());
    t.app.events.subscribe(recorder.clone());
    let event = |id: &str| DomainEvent::new(EventType::CaseUpdated, firm, &Actor::system(), id);

    // Rolled back: nothing published, nothing in the outbox.
    let failed = t
        .app
        .write(TxOptions::write(), |tx| {
            let e = event("rolled-back");
            async move {
                tx.record(e);
                Err::<(), _>(ApiError::forbidden("no"))
            }
        })
        .await;
    assert!(failed.is_err());
    assert!(recorder.types().is_empty());

    // Lost a conflict on the first attempt, committed on the second: published once.
    let attempts = Arc::new(Mutex::new(0));
    t.app
        .write(TxOptions::write(), |tx| {
            let (e, attempts) = (event("retried"), attempts.clone());
            async move {
                tx.record(e);
                let mut n = attempts.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    return Err(ApiError::from(DbError::Conflict(DbErr::Custom(
                        "simulated serialization failure".into(),
                    ))));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(*attempts.lock().unwrap(), 2, "the first attempt was retried");
    assert_eq!(recorder.types(), [EventType::CaseUpdated]);

    // Committed and refused: published.
    let refused = t
        .app
        .write_outcome(TxOptions::write(), |tx| {
            let e = event("committed-then-refused");
            async move {
                tx.record(e);
                Ok(lexiflow::db::Outcome::<(), _>::CommitThenFail(ApiError::forbidden("refused after commit")))
            }
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(recorder.types().len(), 2);
    let mut stored: Vec<String> = rows(&t, &s.firm_id)
        .await
        .into_iter()
        .filter(|r| r.event_type == "case.updated")
        .map(|r| r.entity_id)
        .collect();
    stored.sort();
    assert_eq!(stored, ["committed-then-refused", "retried"]);
}

/// A unit of work that smuggles its handle out cannot use it after returning, and other
/// writers are not held up by it (on SQLite the write turn went with the transaction).
async fn a_transaction_handle_kept_past_its_work_is_inert(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let kept = Arc::new(Mutex::new(None));
    t.app
        .write(TxOptions::write(), |tx| {
            let kept = kept.clone();
            async move {
                *kept.lock().unwrap() = Some(tx);
                Ok(())
            }
        })
        .await
        .unwrap();
    let tx = kept.lock().unwrap().take().unwrap();
    let used = sea_orm::ConnectionTrait::execute_unprepared(&tx, "UPDATE firms SET name = name").await;
    assert!(used.is_err(), "a kept handle still ran a statement");
    let created = tokio::time::timeout(Duration::from_secs(5), t.case(&s, "AFTER-1")).await;
    assert!(created.is_ok(), "a kept handle stalled the next writer");
    drop(tx);
}

/// `lexiflow import` run beside a serving process (another `App` on the same database, no
/// Redis between them): the server's cached list total follows within a few of its outbox
/// polls, instead of staying stale for the cache's lifetime.
async fn writes_by_another_process_reach_this_ones_caches_through_the_outbox(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.events.tail_every = Duration::from_millis(100);
        c.cache.local_ttl = Duration::from_secs(600);
        c.cache.default_ttl = Duration::from_secs(600);
    })
    .await;
    let s = t.register("Firm").await;
    t.case(&s, "BEFORE-1").await;
    let listed = t.get("/api/v1/cases?page=1&limit=10", &s.token).await;
    listed.expect(200);
    assert_eq!(listed.body["meta"]["pagination"]["total"], 1);
    // The "import process": its own App on the same database.
    let importer = t.sibling().await;
    let items: Vec<_> =
        (0..25).map(|i| json!({"caseNumber": format!("IMP-{i}"), "title": "Imported", "type": "civil"})).collect();
    importer.post("/api/v1/cases/bulk", &s.token, json!({"items": items})).await.expect(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = t.get("/api/v1/cases?page=1&limit=10", &s.token).await;
        if r.body["meta"]["pagination"]["total"] == 26 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server's total stayed stale: {}", r.body["meta"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writers that commit without sequencing (a crash right after commit, in effect), then four
/// sequencers at once, as several instances and the sweep job would run them: every event
/// gets exactly one number, 1..=n, in id order within each run.
/// A change committed after another is numbered after it, even when its id sorts first (its
/// instance's clock a little behind the other's: ids are UUIDv7, stamped by the writer).
async fn the_sequencer_numbers_in_write_order_whatever_the_ids(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Clocks").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let write = |entity: &'static str, id: uuid::Uuid| {
        let db = t.app.db.clone();
        async move {
            let _committed = lexiflow::db::transaction(&db, TxOptions::write(), |tx| async move {
                let mut e = DomainEvent::new(EventType::CaseUpdated, firm, &Actor::system(), entity);
                e.id = id;
                tx.record(e);
                Ok::<_, ApiError>(())
            })
            .await
            .unwrap();
        }
    };
    // The first change, then one made after its commit on an instance whose clock is behind.
    let first = uuid::Uuid::now_v7();
    write("created", first).await;
    let behind = uuid::Uuid::from_u128(first.as_u128() - (1u128 << 80));
    assert!(behind < first);
    write("updated", behind).await;
    lexiflow::events::outbox::sequence_firm(&t.app.db, firm.0).await.unwrap();
    numbered(&t).await;
    let order: Vec<String> = rows(&t, &s.firm_id)
        .await
        .into_iter()
        .filter(|r| r.entity_id == "created" || r.entity_id == "updated")
        .map(|r| r.entity_id)
        .collect();
    assert_eq!(order, ["created", "updated"], "numbered in the order they were written");
}

async fn concurrent_sequencers_number_each_event_once(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let mut writers = Vec::new();
    for w in 0..8 {
        let db = t.app.db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let done = lexiflow::db::transaction(&db, TxOptions::write(), |tx| async move {
                    tx.record(DomainEvent::new(EventType::CaseUpdated, firm, &Actor::system(), format!("{w}-{i}")));
                    Ok::<_, ApiError>(())
                })
                .await
                .unwrap();
                assert_eq!(done.events.len(), 1);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut sequencers = Vec::new();
    for _ in 0..4 {
        let db = t.app.db.clone();
        sequencers.push(tokio::spawn(async move { lexiflow::events::outbox::sequence_firm(&db, firm.0).await }));
    }
    let mut numbered = 0;
    for q in sequencers {
        numbered += q.await.unwrap().unwrap();
    }
    let got = rows(&t, &s.firm_id).await;
    let of_test: Vec<&event::Model> = got.iter().filter(|r| r.event_type == "case.updated").collect();
    assert_eq!(of_test.len(), 200);
    let numbers: Vec<i64> = got.iter().map(|r| r.seq.expect("every event numbered")).collect();
    assert_eq!(numbers, (1..=got.len() as i64).collect::<Vec<_>>(), "gapless, each number once");
    if b == Backend::Postgres {
        assert!(numbered >= 200, "the sequencers numbered the unnumbered rows ({numbered})");
    }
}

/// The `db.analyze` job's check: a table that grew by 1,200 rows since it was last analysed
/// (never, here) is analysed; right after, it is not again. SQLite needs none of it.
async fn tables_that_grew_since_their_statistics_are_analysed(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let firm = FirmId(s.firm_id.parse().unwrap());
    let done = lexiflow::db::transaction(&t.app.db, TxOptions::write(), |tx| async move {
        tx.record_all(
            (0..1_200).map(|i| DomainEvent::new(EventType::CaseUpdated, firm, &Actor::system(), format!("e{i}"))),
        );
        Ok::<_, ApiError>(())
    })
    .await
    .unwrap();
    assert_eq!(done.events.len(), 1_200);
    // The statistics collector counts the inserts a moment after the commit.
    let mut analysed = Vec::new();
    for _ in 0..40 {
        analysed = lexiflow::db::bulk::analyze_stale(&t.app.db, &["domain_events"]).await.unwrap();
        if !analysed.is_empty() || b == Backend::Sqlite {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if b == Backend::Postgres {
        assert_eq!(analysed, ["domain_events"]);
        let again = lexiflow::db::bulk::analyze_stale(&t.app.db, &["domain_events"]).await.unwrap();
        assert!(again.is_empty(), "analysed again with current statistics");
    } else {
        assert!(analysed.is_empty());
    }
}

/// The `events.prune` job's deletion: numbered events recorded before the cutoff go, later
/// ones stay.
async fn retention_prunes_numbered_events_recorded_before_the_cutoff(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    t.case(&s, "OLD-1").await;
    numbered(&t).await;
    let kept_before = rows(&t, &s.firm_id).await.len();
    assert!(kept_before > 0);
    let day = chrono::Duration::days(1);
    let pruned = lexiflow::events::outbox::prune(&t.app.db, chrono::Utc::now() - day).await.unwrap();
    assert_eq!(pruned, 0, "nothing is a day old");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.case(&s, "NEW-1").await;
    numbered(&t).await;
    let pruned = lexiflow::events::outbox::prune(&t.app.db, cutoff).await.unwrap();
    assert_eq!(pruned as usize, kept_before);
    let left = rows(&t, &s.firm_id).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_type, "case.created");
}
