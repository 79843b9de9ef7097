//! The realtime gateway, driven by the real npm `socket.io-client` (4.8, pinned in
//! `tests/realtime/package-lock.json`) through `tests/realtime/driver.mjs`: the handshake,
//! access-checked case rooms, events after commit only, sealed material, losing access,
//! durable replay, the polling transport, delivery across instances, and the limits.
//!
//! The driver needs Node.js and `npm ci` in `tests/realtime`. Without them these tests are
//! skipped with a note, unless `LEXIFLOW_REQUIRE_NODE=1` (CI sets it), which makes that a
//! failure.

use std::{collections::VecDeque, path::PathBuf, process::Stdio, sync::atomic::AtomicBool, time::Duration};

use http::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::support::{Backend, SECRET, Session, TestApp, redis_available, redis_url};

crate::on_both_backends!(
    the_handshake_takes_only_a_live_sessions_access_token,
    subscribing_needs_sight_of_the_case,
    committed_writes_reach_followers_and_rolled_back_ones_send_nothing,
    sealed_entries_reach_the_admin_but_not_the_paralegal,
    losing_access_stops_events_and_revoking_the_session_disconnects,
    a_reconnecting_client_gets_exactly_what_it_missed_in_order,
    the_polling_transport_alone_works,
    an_event_committed_on_one_instance_reaches_a_client_on_another,
    connections_and_messages_are_limited_per_user,
    the_connection_limit_counts_every_instance,
    open_sockets_take_their_slots_back_and_closed_ones_do_not,
    a_session_ended_behind_the_cache_cannot_keep_a_socket,
    an_entry_sealed_later_is_not_replayed_to_those_without_the_grant,
);

/// How long an expected message may take.
const WAIT: Duration = Duration::from_secs(3);

fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/realtime")
}

/// Whether the Node driver can run; panics when `LEXIFLOW_REQUIRE_NODE=1` and it cannot.
fn node_available() -> bool {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let ok = driver_dir().join("node_modules/socket.io-client").is_dir()
        && std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    crate::support::tool_available(
        &NOTED,
        ok,
        "node with tests/realtime/node_modules",
        "LEXIFLOW_REQUIRE_NODE",
        "the realtime:: tests",
        "run `npm ci` in tests/realtime",
    )
}

/// One Node process holding any number of Socket.IO clients.
struct Clients {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Reports read while waiting for another one.
    seen: VecDeque<Value>,
    acks: u64,
}

impl Clients {
    async fn start() -> Self {
        let mut child = Command::new("node")
            .arg(driver_dir().join("driver.mjs"))
            .current_dir(driver_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut c = Self { _child: child, stdin, lines, seen: VecDeque::new(), acks: 0 };
        c.expect_where("driver ready", |v| v["event"] == "ready").await;
        c
    }

    async fn send(&mut self, cmd: Value) {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Opens client `id` on `/events` of `base` with `auth` (and `opts`: `transports`, `headers`).
    async fn open(&mut self, id: &str, base: &str, auth: Value, opts: Value) {
        let mut cmd = json!({"op": "connect", "id": id, "url": format!("{base}/events"), "auth": auth});
        if let Some(o) = opts.as_object() {
            for (k, v) in o {
                cmd[k] = v.clone();
            }
        }
        self.send(cmd).await;
    }

    /// Connects `id` with `token` and waits for the `connected` event.
    async fn connect(&mut self, id: &str, base: &str, token: &str) -> Value {
        self.open(id, base, json!({"token": token}), json!({})).await;
        self.expect(id, "connect").await;
        self.expect(id, "connected").await
    }

    async fn close(&mut self, id: &str) {
        self.send(json!({"op": "close", "id": id})).await;
        self.expect(id, "closed").await;
    }

    /// Emits `event` with `data` from `id` and returns the server's ack.
    async fn ask(&mut self, id: &str, event: &str, data: Value) -> Value {
        self.acks += 1;
        let n = self.acks;
        self.send(json!({"op": "emit", "id": id, "event": event, "data": data, "ack": n})).await;
        let r = self.expect_where(&format!("ack {n}"), |v| v["id"] == id && v["ack"] == n).await;
        assert!(r.get("error").is_none(), "no ack: {r}");
        r["reply"].clone()
    }

    /// Waits for the next report matching `pred` (others are kept for later expectations).
    async fn expect_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen: {:?}", self.seen))
                .unwrap()
                .expect("the driver exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            if pred(&v) {
                return v;
            }
            self.seen.push_back(v);
        }
    }

    /// Waits for event `event` on client `id`; returns its first argument (or the report).
    async fn expect(&mut self, id: &str, event: &str) -> Value {
        let r = self.expect_where(&format!("{event} on {id}"), |v| v["id"] == id && v["event"] == event).await;
        r["args"].get(0).cloned().unwrap_or(r)
    }

    /// Names of the events `id` received so far and not yet expected, in order.
    async fn pending(&mut self, id: &str) -> Vec<String> {
        // Drain what has arrived without waiting for more.
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_millis(50), self.lines.next_line()).await {
            self.seen.push_back(serde_json::from_str(&line).unwrap());
        }
        self.seen.iter().filter(|v| v["id"] == id).filter_map(|v| v["event"].as_str().map(str::to_owned)).collect()
    }
}

/// A server on a real port, and a Node process for its clients; None when Node is missing.
async fn setup(b: Backend) -> Option<(TestApp, String, Clients)> {
    setup_with(b, |_| {}).await
}

async fn setup_with(
    b: Backend,
    tweak: impl FnOnce(&mut lexiflow::config::Config),
) -> Option<(TestApp, String, Clients)> {
    if !node_available() {
        return None;
    }
    let t = TestApp::with(b, tweak).await;
    let base = t.serve().await;
    let c = Clients::start().await;
    Some((t, base, c))
}

/// Two instances sharing Redis (under a key prefix of the test's own) and the database, each
/// serving on its own port: `(a, a's base URL, b, b's base URL, clients, prefix)`. None when
/// Node or Redis is not here (a failure instead when they are required).
async fn two_instances_on_redis(
    b: Backend,
    tweak: impl FnOnce(&mut lexiflow::config::Config),
) -> Option<(TestApp, String, TestApp, String, Clients, String)> {
    if !redis_available() {
        return None;
    }
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let (a, base_a, c) = setup_with(b, |cfg| {
        cfg.redis_url = Some(redis_url().into());
        cfg.redis_prefix = prefix.clone();
        tweak(cfg);
    })
    .await?;
    let instance_b = a.sibling().await;
    let base_b = instance_b.serve().await;
    Some((a, base_a, instance_b, base_b, c, prefix))
}

async fn team_add(t: &TestApp, admin: &Session, case: &str, user: &Session, role: &str) {
    t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": user.user_id, "role": role}))
        .await
        .expect(201);
}

async fn the_handshake_takes_only_a_live_sessions_access_token(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Handshake").await;

    c.open("none", &base, json!({}), json!({})).await;
    assert_eq!(c.expect("none", "connect_error").await["message"], "AUTH_REQUIRED");
    c.open("junk", &base, json!({"token": "not.a.token"}), json!({})).await;
    assert_eq!(c.expect("junk", "connect_error").await["message"], "AUTH_TOKEN_INVALID");
    c.open("refresh", &base, json!({"token": admin.refresh}), json!({})).await;
    assert_eq!(c.expect("refresh", "connect_error").await["message"], "AUTH_TOKEN_INVALID");

    // An access token past its expiry, signed with the right key.
    let now = lexiflow::auth::tokens::now_secs();
    let mut claims = t.app.tokens.verify(&admin.token).unwrap();
    (claims.iat, claims.exp) = (now - 600, now - 300);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    c.open("expired", &base, json!({"token": expired}), json!({})).await;
    assert_eq!(c.expect("expired", "connect_error").await["message"], "AUTH_TOKEN_EXPIRED");

    // The header works as well as the auth object, and the socket is told who it is.
    let other = t.user(&admin, "attorney").await;
    let header = json!({"headers": {"Authorization": format!("Bearer {}", other.token)}});
    c.open("header", &base, json!({}), header).await;
    c.expect("header", "connect").await;
    let hello = c.expect("header", "connected").await;
    assert_eq!(hello["userId"], other.user_id);
    assert!(hello["timestamp"].is_string() && hello["message"].is_string());

    // A token whose session ended (logout) is refused, though its signature is fine.
    t.call(Method::POST, "/api/v1/auth/logout", Some(&other.token), None).await.expect(204);
    c.open("ended", &base, json!({"token": other.token}), json!({})).await;
    assert_eq!(c.expect("ended", "connect_error").await["message"], "AUTH_TOKEN_INVALID");
}

async fn subscribing_needs_sight_of_the_case(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Subscribe").await;
    let para = t.user(&admin, "paralegal").await;
    let hidden = t.case(&admin, "H-1").await;
    let visible = t.case(&admin, "V-1").await;
    team_add(&t, &admin, &visible, &para, "paralegal").await;
    let rival = t.register("Rival").await;
    let foreign = t.case(&rival, "R-1").await;

    c.connect("p", &base, &para.token).await;
    let missing = c.ask("p", "subscribe:case", json!({"caseId": uuid::Uuid::now_v7()})).await;
    let other_firm = c.ask("p", "subscribe:case", json!({"caseId": foreign})).await;
    let not_on_team = c.ask("p", "subscribe:case", json!({"caseId": hidden})).await;
    assert_eq!(missing["status"], "error");
    assert_eq!(missing["error"]["code"], "RESOURCE_NOT_FOUND");
    // The same answer for a case of another firm, a hidden one and one that does not exist.
    assert_eq!(other_firm, missing);
    assert_eq!(not_on_team, missing);
    let bad = c.ask("p", "subscribe:case", json!({"caseId": "nope"})).await;
    assert_eq!(bad["error"]["code"], "VALIDATION_FAILED");

    let ok = c.ask("p", "subscribe:case", json!({"caseId": visible})).await;
    assert_eq!(ok["status"], "subscribed");
    assert_eq!(ok["caseId"], visible);

    // Followers get the case's changes; a change to the hidden case reaches nobody here.
    t.patch(&format!("/api/v1/cases/{hidden}"), &admin.token, json!({"title": "Hidden, renamed"})).await.expect(200);
    t.patch(&format!("/api/v1/cases/{visible}"), &admin.token, json!({"title": "Visible, renamed"})).await.expect(200);
    let e = c.expect("p", "case:updated").await;
    assert_eq!(e["caseId"], visible);
    assert_eq!(e["data"]["title"], "Visible, renamed");

    let bye = c.ask("p", "unsubscribe:case", json!({"caseId": visible})).await;
    assert_eq!(bye["status"], "unsubscribed");
    t.patch(&format!("/api/v1/cases/{visible}"), &admin.token, json!({"title": "Unfollowed"})).await.expect(200);
    // The ordered stream: the team notification below comes after the update; no update
    // may come before it.
    let other = t.case(&admin, "V-2").await;
    team_add(&t, &admin, &other, &para, "paralegal").await;
    let n = c.expect("p", "notification").await;
    assert_eq!(n["data"]["kind"], "case.team_added");
    assert!(!c.pending("p").await.contains(&"case:updated".to_owned()));
}

async fn committed_writes_reach_followers_and_rolled_back_ones_send_nothing(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Commit").await;
    c.connect("a", &base, &admin.token).await;

    let started = std::time::Instant::now();
    let res = t
        .call_with(
            Method::POST,
            "/api/v1/cases",
            Some(&admin.token),
            Some(json!({"caseNumber": "C-1", "title": "First", "type": "civil"})),
            &[("x-correlation-id", "rt-test-correlation")],
        )
        .await;
    res.expect(201);
    let id = res.data()["id"].as_str().unwrap().to_owned();
    let e = c.expect("a", "case:created").await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(e["type"], "case:created");
    assert_eq!(e["caseId"], id);
    assert_eq!(e["firmId"], admin.firm_id);
    assert_eq!(e["data"]["caseNumber"], "C-1");
    assert_eq!(e["correlationId"], "rt-test-correlation");
    assert!(e["seq"].as_i64().unwrap() >= 1);
    assert!(e["occurredAt"].is_string());

    // A write that fails (a duplicate number) commits nothing and sends nothing: the next
    // event is the next committed write.
    t.post("/api/v1/cases", &admin.token, json!({"caseNumber": "C-1", "title": "Dup", "type": "civil"}))
        .await
        .expect(409);
    t.case(&admin, "C-2").await;
    let next = c.expect("a", "case:created").await;
    assert_eq!(next["data"]["caseNumber"], "C-2");
    assert_eq!(next["seq"].as_i64().unwrap(), e["seq"].as_i64().unwrap() + 1);
}

async fn sealed_entries_reach_the_admin_but_not_the_paralegal(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Sealed RT").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "S-1").await;
    team_add(&t, &admin, &case, &para, "paralegal").await;
    c.connect("admin", &base, &admin.token).await;
    c.connect("para", &base, &para.token).await;
    for who in ["admin", "para"] {
        assert_eq!(c.ask(who, "subscribe:case", json!({"caseId": case})).await["status"], "subscribed");
    }
    let path = format!("/api/v1/cases/{case}/docket");
    t.post(&path, &admin.token, json!({"type": "motion", "description": "Motion to seal", "sealed": true}))
        .await
        .expect(201);
    t.post(&path, &admin.token, json!({"type": "order", "description": "Scheduling order"})).await.expect(201);

    let first = c.expect("admin", "docket:entry:added").await;
    assert_eq!(first["data"]["description"], "Motion to seal");
    assert_eq!(c.expect("admin", "docket:entry:added").await["data"]["description"], "Scheduling order");
    // The paralegal's first docket event is the open entry: the sealed one never came.
    let seen = c.expect("para", "docket:entry:added").await;
    assert_eq!(seen["data"]["description"], "Scheduling order");
    assert!(!c.pending("para").await.contains(&"docket:entry:added".to_owned()));
}

async fn losing_access_stops_events_and_revoking_the_session_disconnects(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Revoke").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "L-1").await;
    team_add(&t, &admin, &case, &para, "paralegal").await;
    c.connect("p", &base, &para.token).await;
    assert_eq!(c.ask("p", "subscribe:case", json!({"caseId": case})).await["status"], "subscribed");

    t.delete(&format!("/api/v1/cases/{case}/team/{}", para.user_id), &admin.token).await.expect(204);
    let n = c.expect("p", "notification").await;
    assert_eq!(n["data"]["kind"], "case.team_removed");
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"title": "After removal"})).await.expect(200);
    // Added back to another case: that notification arrives, the update before it did not.
    let other = t.case(&admin, "L-2").await;
    team_add(&t, &admin, &other, &para, "paralegal").await;
    assert_eq!(c.expect("p", "notification").await["data"]["kind"], "case.team_added");
    assert!(!c.pending("p").await.contains(&"case:updated".to_owned()));

    // Revoking the session (logout) closes its socket within a second.
    let started = std::time::Instant::now();
    t.call(Method::POST, "/api/v1/auth/logout", Some(&para.token), None).await.expect(204);
    let d = c.expect("p", "disconnect").await;
    assert_eq!(d["reason"], "io server disconnect");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

/// The handshake may read the session cache, which on another instance can be up to
/// `AUTH_CACHE_TTL_MS` behind a revocation: the socket's rooms are decided again from the
/// database, so a session that ended meanwhile gets no socket.
async fn a_session_ended_behind_the_cache_cannot_keep_a_socket(b: Backend) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let Some((t, base, mut c)) = setup_with(b, |cfg| cfg.auth_cache_ttl = Duration::from_secs(60)).await else {
        return;
    };
    let admin = t.register("Behind the cache").await;
    let para = t.user(&admin, "paralegal").await;
    // The first connection puts the session in the cache.
    c.connect("first", &base, &para.token).await;
    c.close("first").await;
    // Ended in the database only, as another instance's revocation looks here until its
    // eviction arrives.
    let sid = t.app.tokens.verify(&para.token).unwrap().sid;
    use lexiflow::auth::model::session;
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(chrono::Utc::now()))
        .filter(session::Column::Id.eq(sid))
        .exec(&t.app.db)
        .await
        .unwrap();
    c.open("second", &base, json!({"token": para.token}), json!({})).await;
    let d = c.expect("second", "disconnect").await;
    assert_eq!(d["reason"], "io server disconnect", "{d}");
    // A role changed behind the cache ends the socket too (the client reconnects with it).
    let att = t.user(&admin, "attorney").await;
    c.connect("att", &base, &att.token).await;
    c.close("att").await;
    t.sql_exec(&format!("UPDATE users SET role = 'paralegal' WHERE email = '{}'", att.email.replace('\'', "''"))).await;
    c.open("att2", &base, json!({"token": att.token}), json!({})).await;
    assert_eq!(c.expect("att2", "disconnect").await["reason"], "io server disconnect");
}

/// An entry filed open and sealed afterwards: a follower without the grant who subscribes
/// with `since` from before it was filed is not sent what it held.
async fn an_entry_sealed_later_is_not_replayed_to_those_without_the_grant(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Sealed later").await;
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "SL-1").await;
    team_add(&t, &admin, &case, &para, "paralegal").await;
    c.connect("admin", &base, &admin.token).await;
    assert_eq!(c.ask("admin", "subscribe:case", json!({"caseId": case})).await["status"], "subscribed");
    c.connect("p", &base, &para.token).await;
    let firm = lexiflow::ids::FirmId(admin.firm_id.parse().unwrap());
    lexiflow::events::outbox::sequence_firm(&t.app.db, firm.0).await.unwrap();
    let head = lexiflow::events::outbox::heads(&t.app.db).await.unwrap()[&firm];
    let path = format!("/api/v1/cases/{case}/docket");
    let filed = t.post(&path, &admin.token, json!({"type": "motion", "description": "Settlement terms"})).await;
    let id = filed.expect(201).data()["id"].as_str().unwrap().to_owned();
    t.patch(&format!("{path}/{id}"), &admin.token, json!({"sealed": true, "version": 1})).await.expect(200);
    // Once the admin has both, the feed is past them: the follower's subscription replays.
    assert_eq!(c.expect("admin", "docket:entry:added").await["data"]["description"], "Settlement terms");
    c.expect("admin", "docket:entry:updated").await;
    let ack = c.ask("p", "subscribe:case", json!({"caseId": case, "since": head})).await;
    assert_eq!(ack["status"], "subscribed", "{ack}");
    assert_eq!(ack["replayed"], 0, "{ack}");
    let pending = c.pending("p").await;
    assert!(!pending.iter().any(|e| e.starts_with("docket:")), "{pending:?}");
    // The admin, subscribing again from the same point, still gets both.
    c.connect("admin2", &base, &admin.token).await;
    let ack = c.ask("admin2", "subscribe:case", json!({"caseId": case, "since": head})).await;
    assert_eq!(ack["replayed"], 2, "{ack}");
}

async fn a_reconnecting_client_gets_exactly_what_it_missed_in_order(b: Backend) {
    let Some((t, base, mut c)) = setup_with(b, |cfg| cfg.realtime.replay_max = 5).await else { return };
    let admin = t.register("Replay").await;
    c.connect("a", &base, &admin.token).await;
    t.case(&admin, "R-0").await;
    let last = c.expect("a", "case:created").await["seq"].as_i64().unwrap();
    c.close("a").await;

    for n in 1..=3 {
        t.case(&admin, &format!("R-{n}")).await;
    }
    c.open("b", &base, json!({"token": admin.token, "lastSeq": last}), json!({})).await;
    c.expect("b", "connected").await;
    let mut seqs = Vec::new();
    for n in 1..=3 {
        let e = c.expect("b", "case:created").await;
        assert_eq!(e["data"]["caseNumber"], format!("R-{n}"));
        seqs.push(e["seq"].as_i64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > last, "{seqs:?} after {last}");
    // Then live, with nothing repeated.
    t.case(&admin, "R-4").await;
    assert_eq!(c.expect("b", "case:created").await["data"]["caseNumber"], "R-4");
    assert!(!c.pending("b").await.contains(&"case:created".to_owned()));

    // Further behind than the window: told to resync instead.
    for n in 5..=6 {
        t.case(&admin, &format!("R-{n}")).await;
        assert_eq!(c.expect("b", "case:created").await["data"]["caseNumber"], format!("R-{n}"));
    }
    c.open("late", &base, json!({"token": admin.token, "lastSeq": 0}), json!({})).await;
    let r = c.expect("late", "resync").await;
    assert_eq!(r["status"], "resync");
    assert!(r["seq"].as_i64().unwrap() > 5);
    assert!(!c.pending("late").await.contains(&"case:created".to_owned()));

    // `since` on a subscription replays the case's own missed events.
    let para = t.user(&admin, "paralegal").await;
    let case = t.case(&admin, "R-7").await;
    team_add(&t, &admin, &case, &para, "paralegal").await;
    c.connect("p", &base, &para.token).await;
    let firm = lexiflow::ids::FirmId(admin.firm_id.parse().unwrap());
    // On PostgreSQL the sequencer numbers committed events a moment after their commit: number
    // what is committed now (the team change above), so the head read next is past it and the
    // replay holds only the update below.
    lexiflow::events::outbox::sequence_firm(&t.app.db, firm.0).await.unwrap();
    let head = lexiflow::events::outbox::heads(&t.app.db).await.unwrap()[&firm];
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"title": "Missed"})).await.expect(200);
    // Once the admin has it, the feed is past it: the follower gets it from the replay.
    c.expect_where("the admin's update", |v| v["id"] == "b" && v["args"][0]["data"]["title"] == "Missed").await;
    let ack = c.ask("p", "subscribe:case", json!({"caseId": case, "since": head})).await;
    assert_eq!(ack["status"], "subscribed");
    assert_eq!(ack["replayed"], 1, "{ack}");
    assert_eq!(c.expect("p", "case:updated").await["data"]["title"], "Missed");
    assert!(!c.pending("p").await.contains(&"case:updated".to_owned()));
}

async fn the_polling_transport_alone_works(b: Backend) {
    let Some((t, base, mut c)) = setup(b).await else { return };
    let admin = t.register("Polling").await;
    let case = t.case(&admin, "P-1").await;
    c.open("poll", &base, json!({"token": admin.token}), json!({"transports": ["polling"]})).await;
    assert_eq!(c.expect("poll", "connect").await["transport"], "polling");
    c.expect("poll", "connected").await;
    assert_eq!(c.ask("poll", "subscribe:case", json!({"caseId": case})).await["status"], "subscribed");
    t.patch(&format!("/api/v1/cases/{case}"), &admin.token, json!({"title": "Polled"})).await.expect(200);
    assert_eq!(c.expect("poll", "case:updated").await["data"]["title"], "Polled");
}

async fn an_event_committed_on_one_instance_reaches_a_client_on_another(b: Backend) {
    // With Redis (when it answers) the instances wake each other; without it they still
    // deliver, from the shared outbox, within the poll interval.
    let with_redis = redis_available();
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let Some((a, _, mut c)) = setup_with(b, |cfg| {
        if with_redis {
            cfg.redis_url = Some(redis_url().into());
            cfg.redis_prefix = prefix.clone();
        }
    })
    .await
    else {
        return;
    };
    let instance_b = a.sibling().await;
    let base_b = instance_b.serve().await;
    let admin = a.register("Cluster").await;
    c.connect("on-b", &base_b, &admin.token).await;
    let started = std::time::Instant::now();
    a.case(&admin, "X-1").await;
    let e = c.expect("on-b", "case:created").await;
    assert_eq!(e["data"]["caseNumber"], "X-1");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());

    // Revoking on A closes the socket on B.
    let started = std::time::Instant::now();
    a.call(Method::POST, "/api/v1/auth/logout", Some(&admin.token), None).await.expect(204);
    assert_eq!(c.expect("on-b", "disconnect").await["reason"], "io server disconnect");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

async fn connections_and_messages_are_limited_per_user(b: Backend) {
    let Some((t, base, mut c)) = setup_with(b, |cfg| {
        cfg.realtime.max_connections_per_user = 2;
        cfg.realtime.messages_per_minute = 3;
        cfg.realtime.max_cases_per_socket = 1;
    })
    .await
    else {
        return;
    };
    let admin = t.register("Limits").await;
    let one = t.case(&admin, "M-1").await;
    let two = t.case(&admin, "M-2").await;
    c.connect("1", &base, &admin.token).await;
    c.connect("2", &base, &admin.token).await;
    c.open("3", &base, json!({"token": admin.token}), json!({})).await;
    assert_eq!(c.expect("3", "connect_error").await["message"], "RATE_LIMIT_EXCEEDED");

    assert_eq!(c.ask("1", "subscribe:case", json!({"caseId": one})).await["status"], "subscribed");
    let over = c.ask("1", "subscribe:case", json!({"caseId": two})).await;
    assert_eq!(over["error"]["code"], "RATE_LIMIT_EXCEEDED", "{over}");
    // The message budget is the user's, over both sockets: this is the third message.
    assert_eq!(c.ask("2", "subscribe:case", json!({"caseId": two})).await["status"], "subscribed");
    let spent = c.ask("2", "unsubscribe:case", json!({"caseId": two})).await;
    assert_eq!(spent["error"]["code"], "RATE_LIMIT_EXCEEDED", "{spent}");

    // A message over REALTIME_MAX_MESSAGE_BYTES (64 KiB) closes the WebSocket; a malformed
    // `lastSeq` is ignored, not a refusal.
    let huge = "x".repeat(100_000);
    c.send(json!({"op": "emit", "id": "1", "event": "subscribe:case", "data": {"caseId": huge}})).await;
    assert_eq!(c.expect("1", "disconnect").await["reason"], "transport close");
    c.open("4", &base, json!({"token": admin.token, "lastSeq": "yesterday"}), json!({})).await;
    c.expect("4", "connected").await;
}

async fn the_connection_limit_counts_every_instance(b: Backend) {
    // Each instance alone would admit two; with Redis the two instances share the count.
    let Some((a, base_a, _b, base_b, mut c, _)) =
        two_instances_on_redis(b, |cfg| cfg.realtime.max_connections_per_user = 2).await
    else {
        return;
    };
    let admin = a.register("Slots").await;
    c.connect("a1", &base_a, &admin.token).await;
    c.connect("b1", &base_b, &admin.token).await;
    for (id, base) in [("a2", &base_a), ("b2", &base_b)] {
        c.open(id, base, json!({"token": admin.token}), json!({})).await;
        assert_eq!(c.expect(id, "connect_error").await["message"], "RATE_LIMIT_EXCEEDED", "{id}");
    }

    // A socket closed on B gives its slot back: A admits one more, and only one.
    c.close("b1").await;
    let mut admitted = None;
    for i in 0..30 {
        let id = format!("a-retry-{i}");
        c.open(&id, &base_a, json!({"token": admin.token}), json!({})).await;
        let r = c
            .expect_where(&id, |v| {
                v["id"] == id.as_str() && (v["event"] == "connected" || v["event"] == "connect_error")
            })
            .await;
        if r["event"] == "connected" {
            admitted = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "the closed socket's slot was never given back");
    c.open("b3", &base_b, json!({"token": admin.token}), json!({})).await;
    assert_eq!(c.expect("b3", "connect_error").await["message"], "RATE_LIMIT_EXCEEDED");
}

async fn open_sockets_take_their_slots_back_and_closed_ones_do_not(b: Backend) {
    // Renewals every 200 ms instead of 30 s: the gateway's renewal loop, end to end.
    let Some((a, base_a, _b, base_b, mut c, prefix)) = two_instances_on_redis(b, |cfg| {
        cfg.realtime.max_connections_per_user = 1;
        cfg.realtime.slot_renew_every = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let admin = a.register("Renewals").await;
    c.connect("a1", &base_a, &admin.token).await;
    // Redis loses the slot (a restart without persistence): A's next renewal puts it back, so B
    // still refuses the user's second socket.
    let mut conn = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}rt:conns:{}", admin.user_id);
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held: i64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(held, 1, "the renewal did not put the open socket's slot back");
    c.open("b1", &base_b, json!({"token": admin.token}), json!({})).await;
    assert_eq!(c.expect("b1", "connect_error").await["message"], "RATE_LIMIT_EXCEEDED");
    // Closed, the socket gives its slot back, and renewals after that do not bring it back.
    c.close("a1").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held: i64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(held, 0, "a closed socket's slot is still held");
    c.connect("b2", &base_b, &admin.token).await;
}

/// The slots behind `the_connection_limit_counts_every_instance`, on Redis alone: a dead
/// instance's slots lapse, and a renewal puts back slots Redis lost (a restart, or sockets
/// admitted while it did not answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_slots_lapse_and_renewals_put_lost_ones_back() {
    use lexiflow::{realtime::slots::Slots, redis_link::RedisLink, resilience::BreakerConfig};
    if !redis_available() {
        return;
    }
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let link = || std::sync::Arc::new(RedisLink::new(&redis_url(), prefix.clone(), BreakerConfig::default()).unwrap());
    let user = uuid::Uuid::now_v7();
    // Instance A dies holding the user's only slot: B is refused until it lapses.
    let (link_a, link_b) = (link(), link());
    // Connected before the clock starts, so the first refusal below is well inside the TTL.
    link_a.ping().await.unwrap();
    link_b.ping().await.unwrap();
    let a = Slots::new(Some(link_a)).with_ttl(Duration::from_secs(2));
    let b = Slots::new(Some(link_b));
    assert!(a.take(user, "a1", 1, 0).await);
    assert!(!b.take(user, "b1", 1, 0).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(b.take(user, "b1", 1, 0).await, "a dead instance's slot did not lapse");
    b.give_back(user, "b1").await;

    // Redis loses A's slot; A's next renewal puts it back, and the limit holds again.
    let a = Slots::new(Some(link()));
    assert!(a.take(user, "a2", 1, 0).await);
    let mut conn = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{prefix}rt:conns:{user}")).query_async(&mut conn).await.unwrap();
    a.renew(&[(user, "a2".to_owned())]).await;
    assert!(!b.take(user, "b2", 1, 0).await, "the renewal did not put the lost slot back");
    // Given back, it is free for B.
    a.give_back(user, "a2").await;
    assert!(b.take(user, "b2", 1, 0).await);
}
