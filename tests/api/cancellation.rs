//! Requests dropped mid-flight, as when clients disconnect: no pooled connection is left
//! inside a transaction, no write loses its audit entry, and the server carries on.

use std::{
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use serde_json::json;
use tracing_subscriber::{Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(cancelled_writes_leave_no_connection_in_a_transaction);

/// Warnings the database drivers logged in this test binary (PostgreSQL notices reach the
/// log as `sqlx::postgres::notice` events).
static DRIVER_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut text = Text(format!("{} {}: ", event.metadata().level(), event.metadata().target()));
        event.record(&mut text);
        DRIVER_WARNINGS.lock().unwrap().push(text.0);
    }
}

/// Records the drivers' warnings from here on (once per test binary).
fn capture_driver_warnings() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let only_drivers = Targets::new().with_target("sqlx", tracing::Level::WARN);
        tracing_subscriber::registry().with(Capture.with_filter(only_drivers)).try_init().ok();
    });
}

/// The warnings of `b`'s driver about transaction state: PostgreSQL's "there is already a
/// transaction in progress" (a BEGIN on a connection left inside a transaction) and "there is
/// no transaction in progress" (a ROLLBACK after a COMMIT that went through). Only this test
/// drops requests mid-flight, so any such warning in the binary is its own.
fn transaction_warnings(b: Backend) -> Vec<String> {
    let driver = if b == Backend::Postgres { "sqlx::postgres" } else { "sqlx::sqlite" };
    DRIVER_WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains(driver) && w.contains("transaction in progress"))
        .cloned()
        .collect()
}

/// A random duration in `0..max`.
fn random_up_to(max: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_micros(r % (max.as_micros() as u64).max(1))
}

fn new_case(number: &str) -> serde_json::Value {
    json!({"caseNumber": number, "title": format!("Matter {number}"), "type": "civil"})
}

async fn cancelled_writes_leave_no_connection_in_a_transaction(b: Backend) {
    capture_driver_warnings();
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;

    // How long a create takes here, so the deadlines below fall all over the request: in
    // the authentication, at BEGIN, between statements, at COMMIT.
    let mut took = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        t.post("/api/v1/cases", &s.token, new_case(&format!("WARM-{i}"))).await.expect(201);
        took.push(started.elapsed());
    }
    took.sort();
    let typical = took[took.len() / 2];

    // The storm: hundreds of creates, each dropped at a random moment (the future is
    // dropped, as the server drops a request whose client went away).
    let attempts = 600;
    let cancelled: usize = stream::iter(0..attempts)
        .map(|i| {
            let (t, token) = (&t, &s.token);
            async move {
                let deadline = random_up_to(typical * 3 / 2);
                let call = t.post("/api/v1/cases", token, new_case(&format!("STORM-{i}")));
                usize::from(tokio::time::timeout(deadline, call).await.is_err())
            }
        })
        .buffer_unordered(16)
        .fold(0, |n, c| async move { n + c })
        .await;
    assert!(cancelled >= attempts / 4, "only {cancelled} of {attempts} requests were cancelled; typical {typical:?}");

    // Connections of dropped requests go back to the pool from tasks of their own.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The next 1,000 requests all succeed (a connection inside a stale transaction fails or
    // warns on its next BEGIN; on SQLite a leaked write transaction would hold the lock).
    let failures: Vec<String> = stream::iter(0..1_000)
        .map(|i| {
            let (t, token) = (&t, &s.token);
            async move {
                let res = if i % 4 == 3 {
                    t.get("/api/v1/cases?limit=5", token).await
                } else {
                    t.post("/api/v1/cases", token, new_case(&format!("AFTER-{i}"))).await
                };
                (!res.status.is_success()).then(|| format!("{i}: {} {}", res.status, res.body))
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of the next 1,000 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let warnings = transaction_warnings(b);
    let already = warnings.iter().filter(|w| w.contains("already")).count();
    assert!(
        warnings.is_empty(),
        "after {cancelled} cancelled requests, {already} \"already a transaction in progress\" and {} \"no transaction in \
         progress\" warnings",
        warnings.len() - already
    );

    // Every case has its creation entry and every creation entry its case.
    let t = &t;
    let count = |sql: &'static str| async move {
        let rows = t.sql(sql).await;
        rows[0].try_get_by_index::<i64>(0).unwrap()
    };
    let orphan_cases = count(
        "SELECT COUNT(*) FROM cases c WHERE NOT EXISTS \
         (SELECT 1 FROM audit_entries a WHERE a.case_id = c.id AND a.action = 'case.create')",
    )
    .await;
    let orphan_entries = count(
        "SELECT COUNT(*) FROM audit_entries a WHERE a.action = 'case.create' AND NOT EXISTS \
         (SELECT 1 FROM cases c WHERE c.id = a.case_id)",
    )
    .await;
    assert_eq!((orphan_cases, orphan_entries), (0, 0), "cases without their entry, entries without their case");
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true, "{}", v.body);
}
