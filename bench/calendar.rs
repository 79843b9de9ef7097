//! The calendar benchmark (run by `bench/calendar.sh`), each figure with its wall time and the
//! process's CPU time (all threads; the in-process fake provider's share included):
//!
//! 1. **Deadlines.** 10,000 deadlines computed by rule: first the counting alone (FRCP 6(a)
//!    over the shipped rules, holidays built per computation as a request does), then 10,000
//!    `POST /cases/{id}/deadlines/compute` requests through the router, 16 at a time, beside
//!    the same number of `GET /auth/me` (the cheapest authenticated request) in the same run:
//!    the ratio is compute / me in requests per second.
//! 2. **The .ics feed** of a user with 10,000 events: the events are added through
//!    `POST /calendar` (the table grows from empty), then the feed is fetched ROUNDS times.
//! 3. **A sync pass** against a local fake of Google Calendar API v3: 1,000 events pushed
//!    (one job each), then changed at the provider and pulled in one pass (4 pages of 250).
//!
//! Env: DATABASE_URL (SQLite in a temporary directory when unset; a PostgreSQL URL for the
//! scale-out shape, with SCHEMA created fresh), N_DEADLINES (10000), N_EVENTS (10000),
//! N_SYNC (1000), ROUNDS (5).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::body::Body;
use base64::Engine;
use http::{Method, Request};
use http_body_util::BodyExt;
use lexiflow::{
    app::App,
    calendar::{
        deadlines::{self, Trigger},
        holidays::Closed,
    },
    config::{Config, FileConfig},
};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate, matchers::any};

#[global_allocator]
static GLOBAL: lexiflow_alloc::MiMalloc = lexiflow_alloc::MiMalloc;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn num(name: &str, default: usize) -> usize {
    env(name, &default.to_string()).parse().unwrap()
}

/// CPU time this process has used so far (all threads), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

struct Timer(Instant, Duration);

impl Timer {
    fn start() -> Self {
        Timer(Instant::now(), cpu())
    }

    fn stop(self, what: &str, n: usize) -> Duration {
        let wall = self.0.elapsed();
        let cpu = cpu().saturating_sub(self.1);
        println!(
            "{what}: {n} in {:.3} s = {:.0}/s, {:.1} us each; CPU {:.3} s ({:.1} us each)",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / n as f64,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        );
        wall
    }
}

struct Bench {
    app: App,
    router: axum::Router,
}

impl Bench {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path).header("x-forwarded-for", "10.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, bytes)
    }
}

/// Runs `n` calls of `f`, `width` at a time.
async fn many<F, Fut>(n: usize, width: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n).for_each_concurrent(width, f).await;
}

/// A fake of the parts of Google Calendar API v3 and its token endpoint that sync uses:
/// events kept in memory, each change bumping its ETag, listings paged by 250.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

#[derive(Default)]
struct FakeState {
    events: BTreeMap<String, Value>,
    log: Vec<(u64, String)>,
    seq: u64,
}

impl FakeState {
    fn touch(&mut self, id: &str) {
        self.seq += 1;
        self.log.push((self.seq, id.to_owned()));
        let seq = self.seq;
        if let Some(e) = self.events.get_mut(id) {
            e["etag"] = json!(format!("\"{seq}\""));
            e["updated"] = json!(chrono::Utc::now().to_rfc3339());
        }
    }
}

impl Respond for Fake {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let path = req.url.path().to_owned();
        let q: BTreeMap<String, String> = req.url.query_pairs().into_owned().collect();
        if path == "/token" {
            return ResponseTemplate::new(200).set_body_json(
                json!({"access_token": "bench-access", "refresh_token": "bench-refresh", "token_type": "Bearer", "expires_in": 3599}),
            );
        }
        let events = "/calendar/v3/calendars/primary/events";
        if path == events && req.method == Method::POST {
            let mut e: Value = req.body_json().unwrap();
            let id = format!("e{}", s.events.len() + 1);
            e["id"] = json!(id);
            e["status"] = json!("confirmed");
            s.events.insert(id.clone(), e);
            s.touch(&id);
            return ResponseTemplate::new(200).set_body_json(s.events[&id].clone());
        }
        if path == events && req.method == Method::GET && q.contains_key("privateExtendedProperty") {
            // Finding an event by LexiFlow's id, as Google's events.list documents it.
            let want = q["privateExtendedProperty"].strip_prefix("lexiflowId=").unwrap_or("").to_owned();
            let items: Vec<Value> = s
                .events
                .values()
                .filter(|e| {
                    e["status"] != "cancelled" && e["extendedProperties"]["private"]["lexiflowId"] == want.as_str()
                })
                .cloned()
                .collect();
            return ResponseTemplate::new(200).set_body_json(json!({ "items": items }));
        }
        if path == events && req.method == Method::GET {
            let (since, offset): (u64, usize) = match (q.get("syncToken"), q.get("pageToken")) {
                (_, Some(p)) => {
                    let (a, b) = p.split_once(':').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                }
                (Some(t), None) => (t.trim_start_matches("sync-").parse().unwrap(), 0),
                (None, None) => (0, 0),
            };
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<String> = s
                .log
                .iter()
                .filter(|(q, _)| *q > since)
                .map(|(_, i)| i.clone())
                .filter(|i| seen.insert(i.clone()))
                .collect();
            let items: Vec<Value> = ids.iter().skip(offset).take(250).map(|i| s.events[i].clone()).collect();
            let mut body = json!({"items": items});
            if ids.len() > offset + 250 {
                body["nextPageToken"] = json!(format!("{since}:{}", offset + 250));
            } else {
                body["nextSyncToken"] = json!(format!("sync-{}", s.seq));
            }
            return ResponseTemplate::new(200).set_body_json(body);
        }
        if let Some(id) = path.strip_prefix(&format!("{events}/")) {
            let id = id.to_owned();
            if req.method == Method::PUT {
                let mut e: Value = req.body_json().unwrap();
                e["id"] = json!(id);
                e["status"] = json!("confirmed");
                s.events.insert(id.clone(), e);
                s.touch(&id);
                return ResponseTemplate::new(200).set_body_json(s.events[&id].clone());
            }
            if req.method == Method::GET {
                return ResponseTemplate::new(200).set_body_json(s.events[&id].clone());
            }
        }
        ResponseTemplate::new(404)
    }
}

async fn build(fake_uri: &str, dir: &std::path::Path) -> Bench {
    let mut vars = HashMap::new();
    vars.insert("APP_ENV".to_owned(), "test".to_owned());
    vars.insert("LEXIFLOW_DATA_DIR".to_owned(), dir.display().to_string());
    vars.insert("JWT_SECRET".to_owned(), "bench-secret-that-is-long-enough-for-hs256-0123456789".to_owned());
    vars.insert("WORKER_IN_SERVE".to_owned(), "false".to_owned());
    vars.insert("THROTTLE_LIMIT".to_owned(), "100000000".to_owned());
    if let Ok(url) = std::env::var("DATABASE_URL") {
        vars.insert("DATABASE_URL".to_owned(), url);
    }
    let mut config = Config::from_sources(FileConfig::default(), &vars).unwrap();
    if let Ok(schema) = std::env::var("SCHEMA") {
        config.database.schema = Some(schema);
    }
    config.worker_in_serve = false;
    config.webhooks.allow_private = true;
    config.calendar.token_key = Some(base64::engine::general_purpose::STANDARD.encode([9u8; 32]).into());
    config.calendar.redirect_url = Some("http://app.lexiflow.bench/calendar/connected/{provider}".into());
    config.calendar.google = Some(lexiflow::config::ProviderSettings {
        client_id: "bench".into(),
        client_secret: "bench".to_owned().into(),
        auth_url: format!("{fake_uri}/authorize"),
        token_url: format!("{fake_uri}/token"),
        revoke_url: None,
        api_base: format!("{fake_uri}/calendar/v3"),
    });
    let app = App::build(config).await.unwrap();
    let router = lexiflow::http::router::build(app.clone());
    Bench { app, router }
}

/// Runs the worker until `done` holds; the time it took.
async fn work_until<F, Fut>(b: &Bench, done: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let db = b.app.db.clone();
    let w = lexiflow::jobs::worker(db.clone(), db, &b.app.config, b.app.cache.clone(), b.app.storage.clone()).unwrap();
    let run = tokio::spawn(w.run(stop.clone()));
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(1800), "the worker did not finish in 30 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    run.await.unwrap();
    took
}

async fn count(b: &Bench, sql: &str) -> i64 {
    let db = &b.app.db;
    let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

fn main() {
    // As the `lexiflow` binary does: the allocator configured before any other thread exists
    // (THP off, freed memory returned at once), so the figures are the shipped process's.
    lexiflow_alloc::configure();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime").block_on(run());
}

async fn run() {
    let (n_deadlines, n_events, n_sync, rounds) =
        (num("N_DEADLINES", 10_000), num("N_EVENTS", 10_000), num("N_SYNC", 1_000), num("ROUNDS", 5));
    let server = MockServer::start().await;
    let fake = Fake::default();
    Mock::given(any()).respond_with(fake.clone()).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let b = build(&server.uri(), dir.path()).await;
    let backend = format!("{:?}", b.app.db.get_database_backend());
    println!(
        "== calendar benchmark on {backend}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (status, r, _) = b
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"firmName": "Bench LLP", "email": "admin@bench.test", "password": "Bench-password-1234!",
                        "firstName": "Ada", "lastName": "Admin"})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let token = r["data"]["accessToken"].as_str().unwrap().to_owned();
    let (status, r, _) = b
        .call(
            Method::POST,
            "/api/v1/cases",
            Some(&token),
            Some(json!({"caseNumber": "B-1", "title": "Bench v. Mark", "type": "civil"})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let case = r["data"]["id"].as_str().unwrap().to_owned();

    // 1. Deadlines.
    let rules = deadlines::builtin();
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let t = Timer::start();
    let mut last = start;
    for i in 0..n_deadlines {
        let rule = &rules[i % rules.len()];
        let trigger = start + chrono::Duration::days((i % 730) as i64);
        let (a, z) = deadlines::years(rule, trigger);
        let closed = Closed::new(a, z, []);
        last = deadlines::compute(rule, Trigger::Day(trigger), Some(deadlines::ServiceMethod::Mail), &closed)
            .unwrap()
            .due_date;
    }
    t.stop("deadlines counted (FRCP 6(a), holidays built each time)", n_deadlines);
    assert!(last > start);
    let me = Timer::start();
    many(n_deadlines, 16, |_| async {
        let (s, _, _) = b.call(Method::GET, "/api/v1/auth/me", Some(&token), None).await;
        assert_eq!(s, 200);
    })
    .await;
    let me_wall = me.stop("baseline: GET /auth/me through the router", n_deadlines);
    let c = Timer::start();
    let path = format!("/api/v1/cases/{case}/deadlines/compute");
    many(n_deadlines, 16, |i| {
        let (b, token, path) = (&b, &token, &path);
        async move {
            let rule = &rules[i % rules.len()];
            let trigger = start + chrono::Duration::days((i % 730) as i64);
            let (s, r, _) = b
                .call(
                    Method::POST,
                    path,
                    Some(token),
                    Some(json!({"ruleId": rule.id, "triggerDate": trigger, "serviceMethod": "mail"})),
                )
                .await;
            assert_eq!(s, 200, "{r}");
        }
    })
    .await;
    let compute_wall = c.stop("POST /cases/{id}/deadlines/compute through the router", n_deadlines);
    println!("ratio compute/me (requests per second): {:.2}", me_wall.as_secs_f64() / compute_wall.as_secs_f64());

    // 2. The .ics feed of 10,000 events, added through the API as the table grows.
    let add = Timer::start();
    many(n_events, 16, |i| {
        let (b, token, case) = (&b, &token, &case);
        async move {
            let at = chrono::Utc::now() + chrono::Duration::hours(i as i64);
            let body = if i % 3 == 0 {
                json!({"caseId": case, "type": "deadline", "title": format!("Deadline {i}"), "allDay": true, "startDate": at.date_naive(), "reminders": [1440]})
            } else {
                json!({"caseId": case, "type": "hearing", "title": format!("Hearing {i}"), "startsAt": at, "endsAt": at + chrono::Duration::minutes(30),
                       "location": "Courtroom 2", "description": "Bring the exhibits.", "reminders": [60, 15]})
            };
            let (s, r, _) = b.call(Method::POST, "/api/v1/calendar", Some(token), Some(body)).await;
            assert_eq!(s, 201, "{r}");
        }
    })
    .await;
    add.stop("events added through POST /calendar (16 at a time)", n_events);
    let (s, r, _) = b.call(Method::POST, "/api/v1/calendar/feed", Some(&token), Some(json!({}))).await;
    assert_eq!(s, 201, "{r}");
    let feed = r["data"]["path"].as_str().unwrap().to_owned();
    let mut times = Vec::new();
    let mut size = 0;
    let cpu_before = cpu();
    for _ in 0..rounds {
        let t = Instant::now();
        let (s, _, bytes) = b.call(Method::GET, &feed, None, None).await;
        assert_eq!(s, 200);
        times.push(t.elapsed());
        size = bytes.len();
    }
    let cpu_each = cpu().saturating_sub(cpu_before) / rounds as u32;
    times.sort();
    println!(
        ".ics feed of {n_events} events: median {:.1} ms (min {:.1}, max {:.1}) over {rounds} fetches, {:.1} MB, CPU {:.1} ms per fetch",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        size as f64 / 1e6,
        cpu_each.as_secs_f64() * 1e3
    );

    // 3. A sync pass against the fake: an attorney who is on none of the events above
    //    connects (so the backfill has nothing to push), adds N_SYNC events, which are pushed;
    //    then all are changed at the provider and pulled in one pass.
    let password = "Bench-password-1234!";
    let (s, r, _) = b
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&token),
            Some(json!({"email": "sync@bench.test", "firstName": "Sam", "lastName": "Sync", "role": "attorney", "password": password})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, r, _) = b
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": "sync@bench.test", "password": password})))
        .await;
    assert_eq!(s, 200, "{r}");
    let token = r["data"]["accessToken"].as_str().unwrap().to_owned();
    let (s, r, _) = b.call(Method::GET, "/api/v1/calendar/connections/google/authorize", Some(&token), None).await;
    assert_eq!(s, 302, "{r}");
    let url = url::Url::parse(r["data"]["authorizationUrl"].as_str().unwrap()).unwrap();
    let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let (s, r, _) = b
        .call(
            Method::POST,
            "/api/v1/calendar/connections/google/callback",
            Some(&token),
            Some(serde_json::json!({ "code": "bench", "state": state })),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    work_until(&b, || async {
        count(&b, "SELECT COUNT(*) FROM queue_jobs WHERE job_type LIKE 'calendar.%' AND job_type <> 'calendar.remind' AND state NOT IN ('completed', 'dead', 'failed')").await == 0
    })
    .await;
    assert_eq!(fake.0.lock().unwrap().events.len(), 0, "the backfill had nothing to push");
    let mut ids = Vec::new();
    for i in 0..n_sync {
        let at = chrono::Utc::now() + chrono::Duration::days(2) + chrono::Duration::minutes(i as i64);
        let (s, r, _) = b
            .call(
                Method::POST,
                "/api/v1/calendar",
                Some(&token),
                Some(json!({"type": "meeting", "title": format!("Sync {i}"), "startsAt": at, "endsAt": at + chrono::Duration::minutes(30)})),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        ids.push(r["data"]["id"].as_str().unwrap().to_owned());
    }
    let total = n_sync;
    let cpu_before = cpu();
    let pushed = work_until(&b, || async { fake.0.lock().unwrap().events.len() >= total }).await;
    println!(
        "push: {n_sync} events in {:.2} s = {:.0}/s, CPU {:.2} s",
        pushed.as_secs_f64(),
        n_sync as f64 / pushed.as_secs_f64(),
        cpu().saturating_sub(cpu_before).as_secs_f64()
    );
    {
        let mut s = fake.0.lock().unwrap();
        let remote: Vec<String> = s
            .events
            .iter()
            .filter(|(_, e)| e["summary"].as_str().is_some_and(|t| t.starts_with("Sync ")))
            .map(|(k, _)| k.clone())
            .collect();
        for id in remote {
            let title = format!("{} (moved)", s.events[&id]["summary"].as_str().unwrap());
            s.events.get_mut(&id).unwrap()["summary"] = json!(title);
            s.touch(&id);
        }
    }
    let (s, _, _) =
        b.call(Method::POST, "/api/v1/calendar/connections/google/sync", Some(&token), Some(json!({}))).await;
    assert_eq!(s, 202);
    let cpu_before = cpu();
    let pulled = work_until(&b, || async {
        count(&b, "SELECT COUNT(*) FROM calendar_events WHERE title LIKE 'Sync % (moved)'").await >= n_sync as i64
            && count(&b, "SELECT COUNT(*) FROM queue_jobs WHERE job_type = 'calendar.pull' AND state NOT IN ('completed', 'dead', 'failed')").await == 0
    })
    .await;
    println!(
        "pull: {n_sync} changed events in one pass in {:.2} s = {:.0}/s, CPU {:.2} s",
        pulled.as_secs_f64(),
        n_sync as f64 / pulled.as_secs_f64(),
        cpu().saturating_sub(cpu_before).as_secs_f64()
    );
    assert_eq!(ids.len(), n_sync);
}
