//! Webhooks: deliveries from committed changes, signed and checked by the `standardwebhooks`
//! package from PyPI (`tests/webhooks/receiver.py`), retried until delivered once, never for
//! sealed material, surviving a crash between commit and delivery; the SSRF guard.
//!
//! The receiver needs Python with `tests/webhooks/requirements.txt` installed: the
//! interpreter named by `LEXIFLOW_TEST_PYTHON` (CI's venv), else `python3`. Without it these
//! tests are skipped with a note, unless `LEXIFLOW_REQUIRE_PYTHON=1` (CI sets it).

use std::{io::Write, process::Stdio, sync::atomic::AtomicBool, time::Duration};

use http::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    signed_deliveries_verify_with_the_standard_webhooks_library,
    a_receiver_failing_three_times_gets_the_delivery_once,
    a_subscription_failing_again_and_again_is_disabled,
    one_firms_failing_endpoint_does_not_open_the_breaker_for_another,
    a_new_or_reenabled_subscription_gets_no_backlog,
    events_pruned_before_their_deliveries_were_made_are_counted,
    a_delivery_survives_the_death_of_the_server_that_committed_the_change,
    private_targets_and_redirects_are_refused,
    a_webhook_secret_key_takes_over_and_survives_a_jwt_secret_rotation,
    reseal_moves_every_subscription_to_the_current_key,
    a_delivery_of_an_entry_sealed_later_is_withheld,
);

/// `lexiflow webhooks reseal`'s work: every subscription, active or not, is sealed again under
/// the current key, once; a key that opens nothing is reported, not written.
async fn reseal_moves_every_subscription_to_the_current_key(b: Backend) {
    use lexiflow::webhooks::{dispatch::seal_all_again, sign::Sealer};
    use secrecy::ExposeSecret;
    let t = app(b).await;
    let admin = t.register("Reseal").await;
    let mut secrets = Vec::new();
    for i in 0..3 {
        secrets.push(subscribe(&t, &admin, &format!("http://127.0.0.1:9/hook{i}"), json!(["case.created"])).await);
    }
    // One rotated (its previous secret too must move), one disabled.
    let (rotated, _) = &secrets[0];
    t.call(Method::POST, &format!("/api/v1/webhooks/{rotated}/rotate-secret"), Some(&admin.token), None)
        .await
        .expect(200);
    t.patch(&format!("/api/v1/webhooks/{}", secrets[1].0), &admin.token, json!({"active": false})).await.expect(200);
    let jwt = t.app.config.auth.jwt_secret.as_ref().unwrap().expose_secret().to_owned();
    let key = "reseal-key-0123456789abcdef-0123456789abcdef";
    let sealer = Sealer::with_older(key, &[&jwt]);
    let r = seal_all_again(&t.app.db, &sealer).await.unwrap();
    assert_eq!((r.moved, r.current, r.unreadable, r.skipped), (3, 0, 0, 0), "{r:?}");
    let rows = t.sql("SELECT secret, previous_secret FROM webhook_subscriptions").await;
    let only_new = Sealer::new(key);
    for row in &rows {
        let secret: String = row.try_get("", "secret").unwrap();
        assert!(only_new.open(&secret).is_some_and(|s| s.starts_with("whsec_")));
        if let Some(prev) = row.try_get::<Option<String>>("", "previous_secret").unwrap() {
            assert!(only_new.open(&prev).is_some(), "the previous secret moved too");
        }
    }
    let again = seal_all_again(&t.app.db, &sealer).await.unwrap();
    assert_eq!((again.moved, again.current), (0, 3));
    // A key that opens none of them: reported, nothing written.
    let r = seal_all_again(&t.app.db, &Sealer::new("an unrelated key, 0123456789abcdef")).await.unwrap();
    assert_eq!((r.moved, r.unreadable), (0, 3));
    assert_eq!(t.sql("SELECT secret FROM webhook_subscriptions").await.len(), 3);
}

/// The stored (sealed) secret of the only subscription.
async fn stored(t: &TestApp) -> String {
    t.sql("SELECT secret FROM webhook_subscriptions").await[0].try_get::<String>("", "secret").unwrap()
}

/// A worker on a changed configuration, and its task (done once it has stopped).
fn worker_with(
    t: &TestApp,
    tweak: impl FnOnce(&mut lexiflow::config::Config),
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let db = t.app.db.clone();
    let mut config = t.app.config.clone();
    tweak(&mut config);
    let w = lexiflow::jobs::worker(db.clone(), db, &config, t.app.cache.clone(), t.app.storage.clone()).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.run(stop.clone()));
    (stop, run)
}

/// Secrets sealed under the `JWT_SECRET`-derived key (the default) are sealed again under
/// `WEBHOOK_SECRET_KEY` at their next delivery; after that, rotating `JWT_SECRET` no longer
/// touches webhook signing. Every delivery verifies with the subscriber's secret.
async fn a_webhook_secret_key_takes_over_and_survives_a_jwt_secret_rotation(b: Backend) {
    if !python_available() {
        return;
    }
    use secrecy::ExposeSecret;
    let t = app(b).await;
    let admin = t.register("Keys").await;
    let mut rx = Receiver::start(&[]).await;
    let (_, secret) = subscribe(&t, &admin, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    let jwt = t.app.config.auth.jwt_secret.as_ref().unwrap().expose_secret().to_owned();
    let key = "webhook-sealing-key-0123456789abcdef-0123456789";
    let before = stored(&t).await;
    assert!(lexiflow::webhooks::sign::Sealer::new(&jwt).open(&before).is_some());

    // The new key is set (JWT_SECRET unchanged): the delivery verifies, and the secret is
    // sealed again under the new key alone.
    let (stop, run) = worker_with(&t, |c| c.webhook_secret_key = Some(key.to_owned().into()));
    t.case(&admin, "K-1").await;
    let got = rx.next().await;
    assert_eq!(got["verified"], true, "{got}");
    // Stopped before the next change, so the next delivery is the second worker's.
    stop.cancel();
    run.await.unwrap();
    let after = stored(&t).await;
    assert_ne!(after, before);
    assert_eq!(lexiflow::webhooks::sign::Sealer::new(key).open(&after).as_deref(), Some(secret.as_str()));
    assert!(lexiflow::webhooks::sign::Sealer::new(&jwt).open(&after).is_none(), "no longer under JWT_SECRET");

    // JWT_SECRET rotated: webhook signing goes on.
    let (stop, _run) = worker_with(&t, |c| {
        c.webhook_secret_key = Some(key.to_owned().into());
        c.auth.jwt_secret = Some("a-brand-new-jwt-secret-after-an-incident-0123456789".to_owned().into());
    });
    t.case(&admin, "K-2").await;
    let got = rx.next().await;
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["body"]["data"]["caseNumber"], "K-2");
    stop.cancel();
}

const WAIT: Duration = Duration::from_secs(10);

fn python() -> String {
    std::env::var("LEXIFLOW_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_available() -> bool {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let ok = std::process::Command::new(python())
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::support::tool_available(
        &NOTED,
        ok,
        &format!("{} with standardwebhooks", python()),
        "LEXIFLOW_REQUIRE_PYTHON",
        "the webhooks:: tests",
        "pip install -r tests/webhooks/requirements.txt, or set LEXIFLOW_TEST_PYTHON",
    )
}

/// The Python receiver.
struct Receiver {
    _child: Child,
    stdin: tokio::process::ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
}

impl Receiver {
    async fn start(args: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let url = format!("http://127.0.0.1:{}/hook", first["port"]);
        Self { _child: child, stdin, lines, url }
    }

    async fn secret(&mut self, secret: &str) {
        self.stdin.write_all(format!("{secret}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next request the receiver reported.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("no delivery arrived in time")
            .unwrap()
            .expect("the receiver exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Requests that arrive within `d` (expected: none).
    async fn quiet_for(&mut self, d: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(d, self.lines.next_line()).await {
            got.push(serde_json::from_str(&line).unwrap());
        }
        got
    }
}

async fn app(b: Backend) -> TestApp {
    TestApp::with(b, |c| {
        c.webhooks.allow_private = true;
        c.webhooks.retry_base = Duration::from_millis(50);
        c.webhooks.poll_every = Duration::from_millis(100);
    })
    .await
}

/// Runs the job worker (which sends deliveries) until the token is cancelled.
fn worker(t: &TestApp) -> CancellationToken {
    worker_with(t, |_| {}).0
}

async fn subscribe(t: &TestApp, admin: &Session, url: &str, events: Value) -> (String, String) {
    let r =
        t.post("/api/v1/webhooks", &admin.token, json!({"url": url, "events": events, "description": "tests"})).await;
    r.expect(201);
    (r.data()["id"].as_str().unwrap().to_owned(), r.data()["secret"].as_str().unwrap().to_owned())
}

async fn signed_deliveries_verify_with_the_standard_webhooks_library(b: Backend) {
    if !python_available() {
        return;
    }
    let t = app(b).await;
    let admin = t.register("Hooks").await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = subscribe(&t, &admin, &rx.url, json!(["case.*", "docket_entry.*"])).await;
    assert!(secret.starts_with("whsec_"));
    // The secret is shown once: never again, and not stored in clear.
    let shown = t.get(&format!("/api/v1/webhooks/{id}"), &admin.token).await;
    assert!(shown.data().get("secret").is_none());
    let stored = t.sql("SELECT secret FROM webhook_subscriptions").await;
    let stored: String = stored[0].try_get("", "secret").unwrap();
    assert!(!stored.contains(secret.trim_start_matches("whsec_")));
    rx.secret(&secret).await;
    let stop = worker(&t);

    let case = t.case(&admin, "W-1").await;
    let got = rx.next().await;
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["body"]["type"], "case.created");
    assert_eq!(got["body"]["data"]["caseNumber"], "W-1");
    assert_eq!(got["body"]["caseId"], case);

    // Sealed material is never sent: only the open entry arrives.
    let path = format!("/api/v1/cases/{case}/docket");
    t.post(&path, &admin.token, json!({"type": "motion", "description": "Sealed motion", "sealed": true}))
        .await
        .expect(201);
    t.post(&path, &admin.token, json!({"type": "order", "description": "Open order"})).await.expect(201);
    let got = rx.next().await;
    assert_eq!(got["body"]["type"], "docket_entry.created");
    assert_eq!(got["body"]["data"]["description"], "Open order");
    assert!(rx.quiet_for(Duration::from_millis(500)).await.is_empty());
    let log = t.get(&format!("/api/v1/webhooks/{id}/deliveries"), &admin.token).await;
    let log = log.data().as_array().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|d| d["status"] == "delivered" && d["lastStatusCode"] == 200));

    // A test send, then a rotation: the old secret still verifies during the grace period.
    let test = t.call(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&admin.token), None).await;
    test.expect(200);
    assert_eq!(test.data()["delivered"], true);
    assert_eq!(rx.next().await["body"]["type"], "webhook.test");
    let rotated = t.call(Method::POST, &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&admin.token), None).await;
    rotated.expect(200);
    assert_ne!(rotated.data()["secret"], secret);
    t.call(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&admin.token), None).await.expect(200);
    let got = rx.next().await;
    assert_eq!(got["verified"], true, "the old secret still verifies: {got}");
    assert_eq!(got["signature"].as_str().unwrap().split(' ').count(), 2);
    stop.cancel();
}

async fn a_receiver_failing_three_times_gets_the_delivery_once(b: Backend) {
    if !python_available() {
        return;
    }
    let t = app(b).await;
    let admin = t.register("Retries").await;
    let mut rx = Receiver::start(&["--fail", "3"]).await;
    let (id, secret) = subscribe(&t, &admin, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    let stop = worker(&t);
    t.case(&admin, "R-1").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(rx.next().await);
    }
    assert_eq!(seen.iter().map(|r| r["status"].as_i64().unwrap()).collect::<Vec<_>>(), [500, 500, 500, 200]);
    assert!(seen.iter().all(|r| r["id"] == seen[0]["id"] && r["verified"] == true), "{seen:?}");
    assert!(rx.quiet_for(Duration::from_millis(500)).await.is_empty(), "delivered once");
    let log = t.get(&format!("/api/v1/webhooks/{id}/deliveries"), &admin.token).await;
    let d = &log.data()[0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 4);
    stop.cancel();
}

async fn a_subscription_failing_again_and_again_is_disabled(b: Backend) {
    if !python_available() {
        return;
    }
    let t = TestApp::with(b, |c| {
        c.webhooks.allow_private = true;
        c.webhooks.retry_base = Duration::from_millis(50);
        c.webhooks.poll_every = Duration::from_millis(100);
        c.webhooks.disable_after = 3;
    })
    .await;
    let admin = t.register("Disable").await;
    let mut rx = Receiver::start(&["--fail", "1000"]).await;
    let (id, secret) = subscribe(&t, &admin, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    let stop = worker(&t);
    t.case(&admin, "D-1").await;
    for _ in 0..3 {
        assert_eq!(rx.next().await["status"], 500);
    }
    assert!(rx.quiet_for(Duration::from_millis(600)).await.is_empty(), "no attempt after it was disabled");
    let w = t.get(&format!("/api/v1/webhooks/{id}"), &admin.token).await;
    assert_eq!(w.data()["active"], false);
    assert!(w.data()["disabledReason"].as_str().unwrap().contains("3 consecutive"));
    let log = t.get(&format!("/api/v1/webhooks/{id}/deliveries"), &admin.token).await;
    assert_eq!(log.data()[0]["status"], "failed");
    // Audited as the system's doing.
    let a = t.get("/api/v1/audit?action=webhook.disabled", &admin.token).await;
    assert_eq!(a.data().as_array().unwrap().len(), 1);
    stop.cancel();
}

/// Breakers are per firm and per host and port: a firm whose endpoint on a receiver's host is
/// down (or a firm that points one there to break it on purpose) opens only its own.
async fn one_firms_failing_endpoint_does_not_open_the_breaker_for_another(b: Backend) {
    if !python_available() {
        return;
    }
    let t = app(b).await;
    let mut rx = Receiver::start(&[]).await;
    let victim = t.register("Victim").await;
    let (victim_hook, secret) = subscribe(&t, &victim, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    // The attacker's endpoint: the same host, a closed port, and another of its own on the
    // receiver's very address that it breaks too.
    let attacker = t.register("Attacker").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (dead, _) = subscribe(&t, &attacker, &format!("http://127.0.0.1:{closed}/hook"), json!(["case.created"])).await;
    let test = |token: String, id: String| {
        let t = &t;
        async move {
            let r = t.call(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&token), None).await;
            r.expect(200);
            r.data().clone()
        }
    };
    let mut opened = false;
    for _ in 0..10 {
        let r = test(attacker.token.clone(), dead.clone()).await;
        assert_eq!(r["delivered"], false);
        if r["error"].as_str().unwrap().contains("circuit breaker") {
            opened = true;
            break;
        }
    }
    assert!(opened, "the attacker's own breaker opens");
    let r = test(victim.token.clone(), victim_hook).await;
    assert_eq!(r["delivered"], true, "the victim's receiver on the same host is still called: {r}");
    assert_eq!(rx.next().await["body"]["type"], "webhook.test");
}

/// The deliveries of a subscription, oldest first, once the dispatcher has made `n` of them.
async fn deliveries(t: &TestApp, admin: &Session, id: &str, n: usize) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let log = t.get(&format!("/api/v1/webhooks/{id}/deliveries"), &admin.token).await;
        let mut log = log.data().as_array().unwrap().clone();
        if log.len() >= n || started.elapsed() > WAIT {
            log.sort_by(|a, b| a["createdAt"].as_str().cmp(&b["createdAt"].as_str()));
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dispatcher behind by more than the outbox's retention finds numbers without rows: those
/// events cannot be sent any more, and that is counted and logged, not passed over unseen.
async fn events_pruned_before_their_deliveries_were_made_are_counted(b: Backend) {
    let t = app(b).await;
    let admin = t.register("Pruned").await;
    let (id, _) = subscribe(&t, &admin, "http://127.0.0.1:9/p", json!(["case.created"])).await;
    t.case(&admin, "P-1").await;
    t.case(&admin, "P-2").await;
    assert_eq!(deliveries(&t, &admin, &id, 2).await.len(), 2);
    // As if the dispatcher had stopped before P-1 and retention then pruned P-1's event.
    let firm = admin.firm_id.clone();
    let p1 = "SELECT e.seq FROM domain_events e JOIN webhook_deliveries d ON d.event_id = e.id               WHERE d.payload LIKE '%\"P-1\"%'";
    let seq: i64 = t.sql(p1).await[0].try_get_by_index(0).unwrap();
    t.sql_exec("DELETE FROM webhook_deliveries WHERE payload LIKE '%\"P-1\"%'").await;
    t.sql_exec(&format!("DELETE FROM domain_events WHERE seq = {seq} AND firm_id = '{firm}'")).await;
    t.sql_exec(&format!("UPDATE webhook_cursors SET seq = {} WHERE firm_id = '{firm}'", seq - 1)).await;
    t.case(&admin, "P-3").await;
    let got = deliveries(&t, &admin, &id, 2).await;
    assert_eq!(got.len(), 2, "P-2's delivery is not made twice, P-3's is made: {got:?}");
    let started = std::time::Instant::now();
    loop {
        let m = t.call(Method::GET, "/metrics", None, None).await;
        if m.body.as_str().unwrap_or_default().contains("lexiflow_webhook_events_missed_total") {
            break;
        }
        assert!(started.elapsed() < WAIT, "the pruned event was passed over unseen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A firm whose only subscription is disabled keeps its cursor where it was; a subscription
/// made (or turned back on) later starts from then, not from that old place.
async fn a_new_or_reenabled_subscription_gets_no_backlog(b: Backend) {
    let t = app(b).await;
    let admin = t.register("Backlog").await;
    // No worker runs: the dispatcher makes deliveries, nothing sends them.
    let (first, _) = subscribe(&t, &admin, "http://127.0.0.1:9/a", json!(["case.created"])).await;
    let number = |d: &Value| d["payload"]["data"]["caseNumber"].as_str().map(str::to_owned);
    t.case(&admin, "B-1").await;
    assert_eq!(deliveries(&t, &admin, &first, 1).await.len(), 1);
    let path = format!("/api/v1/webhooks/{first}");
    t.patch(&path, &admin.token, json!({"active": false})).await.expect(200);
    t.case(&admin, "B-2").await;
    let (second, _) = subscribe(&t, &admin, "http://127.0.0.1:9/b", json!(["case.created"])).await;
    t.case(&admin, "B-3").await;
    let got = deliveries(&t, &admin, &second, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    // The list may not carry payloads; the event's case number is then read from the table.
    if let Some(n) = number(&got[0]) {
        assert_eq!(n, "B-3");
    }
    // Turned back on: from then on, nothing of what happened while it was off.
    t.patch(&path, &admin.token, json!({"active": true})).await.expect(200);
    t.case(&admin, "B-4").await;
    let both = deliveries(&t, &admin, &second, 2).await;
    assert_eq!(both.len(), 2, "{both:?}");
    let first_log = deliveries(&t, &admin, &first, 2).await;
    assert_eq!(first_log.len(), 2, "B-1, then B-4 only: {first_log:?}");
    let rows = t.sql("SELECT payload FROM webhook_deliveries").await;
    let mut numbers: Vec<String> = rows
        .iter()
        .map(|r| {
            let p: String = r.try_get("", "payload").unwrap();
            serde_json::from_str::<Value>(&p).unwrap()["data"]["caseNumber"].as_str().unwrap().to_owned()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["B-1", "B-3", "B-4", "B-4"], "B-2 went to nobody");

    // A firm's subscriptions are bounded (they share the delivery workers with every firm).
    for i in 2..lexiflow::webhooks::MAX_SUBSCRIPTIONS {
        subscribe(&t, &admin, &format!("http://127.0.0.1:9/{i}"), json!(["case.created"])).await;
    }
    let r = t
        .post("/api/v1/webhooks", &admin.token, json!({"url": "http://127.0.0.1:9/over", "events": ["case.created"]}))
        .await;
    r.expect(409);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("at most"), "{}", r.body);
}

async fn a_delivery_survives_the_death_of_the_server_that_committed_the_change(b: Backend) {
    if !python_available() {
        return;
    }
    let t = app(b).await;
    let admin = t.register("Crash").await;
    let mut rx = Receiver::start(&[]).await;
    let (_, secret) = subscribe(&t, &admin, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    // The change commits on an instance that runs no worker, which then goes away with
    // whatever it had in memory; its event is in the outbox, committed with the change.
    let dying = t.sibling().await;
    dying.case(&admin, "C-1").await;
    drop(dying);
    // The instance that stays (with a worker) delivers it, once, whichever dispatcher made
    // the delivery.
    let stop = worker(&t);
    let got = rx.next().await;
    assert_eq!(got["body"]["data"]["caseNumber"], "C-1");
    assert!(rx.quiet_for(Duration::from_millis(700)).await.is_empty(), "delivered once");
    stop.cancel();
}

async fn private_targets_and_redirects_are_refused(b: Backend) {
    // The guard as deployed: private targets not allowed.
    let strict = TestApp::new(b).await;
    let admin = strict.register("SSRF").await;
    for url in [
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "ftp://example.com/hook",
    ] {
        let r = strict.post("/api/v1/webhooks", &admin.token, json!({"url": url, "events": ["case.created"]})).await;
        r.expect(400);
        assert_eq!(r.code(), "VALIDATION_FAILED", "{url}");
    }
    // A name that resolves to loopback is refused when resolved, on the address checked.
    let out = lexiflow::outbound::Outbound::new(lexiflow::outbound::OutboundConfig::default()).unwrap();
    // This machine's own name resolves to a loopback address (from /etc/hosts).
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
    let loops = match tokio::net::lookup_host((host.as_str(), 9)).await {
        Ok(mut addrs) => addrs.next().is_some_and(|a| lexiflow::outbound::forbidden(a.ip()).is_some()),
        Err(_) => false,
    };
    if loops {
        let url = url::Url::parse(&format!("http://{host}:9/x")).unwrap();
        let err = out.post("test", uuid::Uuid::nil(), &url, &[], bytes::Bytes::new()).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{url}: {err}");
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: {host:?} does not resolve to a private address here; the resolver check was skipped"
        );
    }

    // A redirect is never followed, even to an address that would be allowed.
    if !python_available() {
        return;
    }
    let t = app(b).await;
    let admin = t.register("Redirects").await;
    let mut inside = Receiver::start(&[]).await;
    let mut rx = Receiver::start(&["--redirect", &inside.url]).await;
    let (id, secret) = subscribe(&t, &admin, &rx.url, json!(["case.created"])).await;
    rx.secret(&secret).await;
    inside.secret(&secret).await;
    let stop = worker(&t);
    t.case(&admin, "X-1").await;
    assert_eq!(rx.next().await["status"], 302);
    assert!(inside.quiet_for(Duration::from_millis(500)).await.is_empty(), "the redirect was followed");
    let log = t.get(&format!("/api/v1/webhooks/{id}/deliveries"), &admin.token).await;
    assert_eq!(log.data()[0]["lastStatusCode"], 302);
    assert_ne!(log.data()[0]["status"], "delivered");
    stop.cancel();
}

/// A delivery queued while its docket entry was open, the entry sealed before it went out: the
/// stored copy is replaced, the delivery cancelled, and redelivery refused.
async fn a_delivery_of_an_entry_sealed_later_is_withheld(b: Backend) {
    let t = app(b).await;
    let admin = t.register("Withheld").await;
    // No worker runs: the dispatcher makes the delivery, nothing sends it.
    let (id, _) = subscribe(&t, &admin, "http://127.0.0.1:9/hook", json!(["docket_entry.*"])).await;
    let case = t.case(&admin, "W-1").await;
    let path = format!("/api/v1/cases/{case}/docket");
    let filed = t.post(&path, &admin.token, json!({"type": "motion", "description": "Settlement terms"})).await;
    let entry = filed.expect(201).data()["id"].as_str().unwrap().to_owned();
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let log = t.get(&deliveries, &admin.token).await;
        if let Some(d) = log.data().as_array().and_then(|a| a.first()).cloned() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "the dispatcher made no delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let stored: String = t.sql("SELECT payload FROM webhook_deliveries").await[0].try_get_by_index(0).unwrap();
    assert!(stored.contains("Settlement terms"));

    t.patch(&format!("{path}/{entry}"), &admin.token, json!({"sealed": true, "version": 1})).await.expect(200);
    let log = t.get(&deliveries, &admin.token).await;
    let d = &log.data()[0];
    assert_eq!(d["status"], "cancelled", "{d}");
    assert!(d["lastError"].as_str().unwrap().starts_with("withheld"), "{d}");
    let stored: String = t.sql("SELECT payload FROM webhook_deliveries").await[0].try_get_by_index(0).unwrap();
    assert_eq!(stored, lexiflow::webhooks::WITHHELD);
    let again = t
        .call(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/deliveries/{}/redeliver", d["id"].as_str().unwrap()),
            Some(&admin.token),
            None,
        )
        .await;
    again.expect(409);
    // The sealing's own event is not sent either (webhooks never carry sealed material): once
    // the dispatcher has passed it, there is still one delivery.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = t.sql("SELECT (SELECT MAX(seq) FROM event_heads) - (SELECT MAX(seq) FROM webhook_cursors)").await;
        if rows[0].try_get_by_index::<i64>(0).unwrap() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the dispatcher did not pass the sealing's event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(t.get(&deliveries, &admin.token).await.data().as_array().unwrap().len(), 1);
}
