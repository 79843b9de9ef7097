//! End-to-end tests against the real `lexiflow` binary on real sockets: graceful shutdown
//! under a real SIGTERM, log lines free of secrets, OTLP trace export to a stand-in
//! collector, and `promtool check metrics` on a live `/metrics`.
//!
//! Each test starts its own server process (embedded SQLite in a temporary directory, port 0)
//! and learns its address from the server's own "serving" log line — no sleeping until up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod console;

const SECRET: &str = "e2e-secret-that-is-long-enough-for-hs256-0123456789";
const PASSWORD: &str = "correct horse battery staple";

/// A running server process and everything it printed.
struct Server {
    child: Child,
    addr: String,
    output: Arc<Mutex<Vec<String>>>,
    /// The data directory (SQLite file, generated secrets).
    dir: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(extra_env, dir.path());
        s._dir = Some(dir);
        s
    }

    /// A server on an existing data directory (which the caller keeps).
    fn start_in(extra_env: &[(&str, &str)], dir: &std::path::Path) -> Self {
        Self::spawn("serve", "LexiFlow is serving", extra_env, dir)
    }

    /// `lexiflow <command>`, ready once it logs `ready` with its `url` (its address is `addr`).
    fn spawn(command: &str, ready: &str, extra_env: &[(&str, &str)], dir: &std::path::Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lexiflow"));
        cmd.arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_ENV", "development")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LEXIFLOW_DATA_DIR", dir)
            .env("JWT_SECRET", SECRET)
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start lexiflow");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the process never said \"{ready}\"; output: {:?}", output.lock().unwrap()));
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == ready
            {
                break v["url"].as_str().unwrap().trim_start_matches("http://").to_owned();
            }
        };
        Server { child, addr, output, dir: dir.to_owned(), _dir: None }
    }

    fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Res {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Res {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b.as_bytes());
    }
    bytes
}

async fn read_response(stream: &mut TcpStream) -> Res {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Res { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Res {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string());
    stream.write_all(&request_bytes(method, path, headers, body.as_deref())).await.unwrap();
    read_response(&mut stream).await
}

async fn register(addr: &str) -> (String, String) {
    let r = call(
        addr,
        "POST",
        "/api/v1/auth/register",
        &[],
        Some(json!({"firmName": "E2E LLP", "email": "ada@e2e.test", "password": PASSWORD,
                    "firstName": "Ada", "lastName": "Doe"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let d = r.json()["data"].clone();
    (d["accessToken"].as_str().unwrap().to_owned(), d["refreshToken"].as_str().unwrap().to_owned())
}

/// The server turns transparent huge pages off for itself (its allocator's 1 GiB arena would
/// otherwise be backed by 2 MiB pages; decision 0012), and still serves.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_without_transparent_huge_pages() {
    let server = Server::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
    // Kernels before 6.0 do not report the flag; there is nothing to read it from.
    if let Some(line) = thp {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    let live = call(&server.addr, "GET", "/health/liveness", &[], None).await;
    assert_eq!(live.status, 200, "{}", live.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_503_drains_in_flight_requests_and_exits_zero() {
    let mut server = Server::start(&[("SHUTDOWN_DRAIN_SECONDS", "1"), ("SHUTDOWN_GRACE_SECONDS", "20")]);
    let addr = server.addr.clone();
    let (token, _) = register(&addr).await;
    let ready = call(&addr, "GET", "/health/readiness", &[], None).await;
    assert_eq!(ready.status, 200);
    assert!(ready.header("x-correlation-id").is_some());

    // A request whose body is half sent when the signal arrives.
    let body = json!({"caseNumber": "SIG-1", "title": "In flight", "type": "civil"}).to_string();
    let auth = format!("Bearer {token}");
    let bytes = request_bytes("POST", "/api/v1/cases", &[("Authorization", &auth)], Some(&body));
    let split = bytes.len() - 10;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(&bytes[..split]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.sigterm();
    // Readiness turns 503 at once, while the server still answers.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = call(&addr, "GET", "/health/readiness", &[], None).await;
        if r.status == 503 {
            assert_eq!(r.json()["error"]["lifecycle"]["status"], "down");
            break;
        }
        assert!(Instant::now() < deadline, "readiness never turned 503");
    }
    // After the drain delay the listener closes: new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after the drain delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The in-flight request still completes.
    slow.write_all(&bytes[split..]).await.unwrap();
    let res = read_response(&mut slow).await;
    assert_eq!(res.status, 201, "{}", res.body);

    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}; output:\n{}", server.output());
}

/// On PostgreSQL the in-process job worker holds a LISTEN connection; shutting down must stop
/// the worker before closing the pool, or the process never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_postgres_with_the_job_worker_exits_zero() {
    let base = std::env::var("LEXIFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Ok(admin) = sea_orm::Database::connect(base.clone()).await else {
        assert_ne!(
            std::env::var("LEXIFLOW_REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "PostgreSQL is required but unreachable"
        );
        return;
    };
    use sea_orm::ConnectionTrait;
    let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    let mut server = Server::start(&[("DATABASE_URL", url.as_str()), ("SHUTDOWN_DRAIN_SECONDS", "0")]);
    register(&server.addr.clone()).await;
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}; output:\n{}", server.output());
    assert!(server.output().contains("queue worker stopped"));
    admin.execute_unprepared(&format!("DROP DATABASE {name}")).await.unwrap();
}

/// `lexiflow worker` with `WORKER_HEALTH_PORT`: liveness and readiness answer, the metrics need
/// the token and show the queues, there is no API, and on SIGTERM the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_probes_and_metrics_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The schema and a firm come from a short-lived server on the same SQLite file.
    let server = Server::start_in(&[], dir.path());
    register(&server.addr).await;
    drop(server);
    let mut worker = Server::spawn(
        "worker",
        "worker probes listening",
        &[
            ("WORKER_HEALTH_PORT", "0"),
            ("METRICS_TOKEN", "probe-metrics-token-0123456789abcdef"),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
        ],
        dir.path(),
    );
    let addr = worker.addr.clone();
    let live = call(&addr, "GET", "/health/liveness", &[], None).await;
    assert_eq!((live.status, live.json()["status"].as_str()), (200, Some("ok")), "{live:?}");
    let ready = call(&addr, "GET", "/health/readiness", &[], None).await;
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")), "{ready:?}");
    assert_eq!(call(&addr, "GET", "/metrics", &[], None).await.status, 401, "the metrics need the token");
    let m =
        call(&addr, "GET", "/metrics", &[("Authorization", "Bearer probe-metrics-token-0123456789abcdef")], None).await;
    assert_eq!(m.status, 200);
    // The worker's own process and pools (queue families appear once the tables hold jobs).
    assert!(m.body.contains("lexiflow_build_info") && m.body.contains("lexiflow_db_pool_connections"), "{}", m.body);
    assert_eq!(call(&addr, "GET", "/api/v1/cases", &[], None).await.status, 404, "probes only: no API here");
    // What readiness says while stopping is tested on the router (tests/api, operations).
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}; output:\n{}", worker.output());
    assert!(worker.output().contains("worker stopped"));
}

/// `lexiflow webhooks reseal`: with `WEBHOOK_SECRET_KEY` set, the secrets sealed under
/// `JWT_SECRET` move (exit 0); run again with an unrelated key and another `JWT_SECRET`, none
/// opens and it exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reseal_cli_moves_secrets_and_exits_non_zero_on_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&[("WEBHOOK_ALLOW_PRIVATE", "true")], dir.path());
    let (token, _) = register(&server.addr).await;
    let auth = format!("Bearer {token}");
    let r = call(
        &server.addr,
        "POST",
        "/api/v1/webhooks",
        &[("Authorization", &auth)],
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["case.created"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    drop(server);
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lexiflow"));
        cmd.args(["webhooks", "reseal"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_ENV", "development")
            .env("LEXIFLOW_DATA_DIR", dir.path())
            .env("LOG_FORMAT", "json");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let key = "reseal-cli-key-0123456789abcdef-0123456789";
    let out = run(&[("JWT_SECRET", SECRET), ("WEBHOOK_SECRET_KEY", key)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\"moved\":1") && text.contains("\"unreadable\":0"), "{text}");
    let out = run(&[
        ("JWT_SECRET", "another-jwt-secret-0123456789abcdef-0123"),
        ("WEBHOOK_SECRET_KEY", "an unrelated key 0123456789abcdef"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("\"unreadable\":1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_token_or_cookie_reaches_any_log_line() {
    let mut server = Server::start(&[("LOG_LEVEL", "trace"), ("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = server.addr.clone();
    let (token, refresh) = register(&addr).await;
    let bearer = format!("Bearer {token}");
    let cookie = "session=cookie-value-that-must-not-be-logged-77";
    call(&addr, "GET", "/api/v1/auth/me", &[("Authorization", &bearer), ("Cookie", cookie)], None).await;
    call(&addr, "POST", "/api/v1/auth/login", &[], Some(json!({"email": "ada@e2e.test", "password": PASSWORD}))).await;
    let wrong = "wrong-password-that-must-not-be-logged";
    call(&addr, "POST", "/api/v1/auth/login", &[], Some(json!({"email": "ada@e2e.test", "password": wrong}))).await;
    let r = call(&addr, "POST", "/api/v1/auth/refresh", &[], Some(json!({"refreshToken": refresh}))).await;
    let new_refresh = r.json()["data"]["refreshToken"].as_str().unwrap().to_owned();
    // Reuse the rotated token: a warning is logged, without the token.
    call(&addr, "POST", "/api/v1/auth/refresh", &[], Some(json!({"refreshToken": refresh}))).await;
    call(&addr, "POST", "/api/v1/auth/logout", &[("Authorization", &bearer)], None).await;
    // A malformed body that contains a password: the error is logged, the body is not.
    call(&addr, "POST", "/api/v1/auth/login", &[], Some(json!({"email": 1, "password": wrong}))).await;
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(15)).success());

    let out = server.output();
    assert!(out.contains("\"message\":\"request\""), "no request lines were logged at all:\n{out}");
    for secret in
        [PASSWORD, wrong, token.as_str(), refresh.as_str(), new_refresh.as_str(), "cookie-value-that-must-not", SECRET]
    {
        assert!(!out.contains(secret), "a secret ({}…) appears in the logs", &secret[..8.min(secret.len())]);
    }
    assert!(!out.to_lowercase().contains("authorization"), "an Authorization header was logged");
    // Request lines carry what an operator needs.
    let line = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v["route"] == "/api/v1/auth/me")
        .expect("a request line for /auth/me");
    for field in ["correlation_id", "method", "route", "status", "latency_ms", "firm_id", "user_id"] {
        assert!(!line[field].is_null(), "{field} missing from {line}");
    }
}

/// What the stand-in collector received: content type and body of each export.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/HTTP collector: records every export it receives.
async fn stand_in_collector() -> (String, Received) {
    use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
    let received: Received = Arc::default();
    async fn traces(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        r.lock().unwrap().push((ct, body.to_vec()));
        ""
    }
    let app = Router::new().route("/v1/traces", post(traces)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_join_the_callers_trace() {
    let (collector, received) = stand_in_collector().await;
    let mut server = Server::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector), ("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = server.addr.clone();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let r = call(&addr, "GET", "/health/liveness", &[("traceparent", &traceparent)], None).await;
    assert_eq!(r.status, 200);
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    // The request line carries the caller's trace id.
    assert!(server.output().contains(trace_id), "trace id not in the logs");

    let got = received.lock().unwrap().clone();
    assert!(!got.is_empty(), "the collector received nothing");
    let want: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let found = got.iter().any(|(ct, body)| {
        ct.starts_with("application/x-protobuf")
            && body.windows(16).any(|w| w == want.as_slice())
            && body.windows(b"/health/liveness".len()).any(|w| w == b"/health/liveness")
    });
    assert!(found, "no exported span carried the caller's trace id and the route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_cli_exits_non_zero_when_the_chain_is_broken() {
    let mut server = Server::start(&[("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = server.addr.clone();
    let (token, _) = register(&addr).await;
    let auth = format!("Bearer {token}");
    for i in 0..3 {
        let body = json!({"caseNumber": format!("CLI-{i}"), "title": "Audited", "type": "civil"});
        assert_eq!(call(&addr, "POST", "/api/v1/cases", &[("Authorization", &auth)], Some(body)).await.status, 201);
    }
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let dir = server.dir.clone();
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_lexiflow"))
            .args(["audit", "verify"])
            .env("LEXIFLOW_DATA_DIR", &dir)
            .env("JWT_SECRET", SECRET)
            .env("LOG_LEVEL", "warn")
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"valid\":true"));

    // Someone with access to the database file edits an entry.
    let url = format!("sqlite://{}?mode=rw", dir.join("lexiflow.db").display());
    let db = sea_orm::Database::connect(url).await.unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("DROP TRIGGER audit_entries_no_update").await.unwrap();
    db.execute_unprepared(
        "UPDATE audit_entries SET action = 'case.view' WHERE id = (SELECT id FROM audit_entries WHERE action = 'case.create' LIMIT 1)",
    )
    .await
    .unwrap();
    db.close().await.unwrap();
    let broken = verify();
    assert_eq!(broken.status.code(), Some(1), "{}", String::from_utf8_lossy(&broken.stdout));
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.contains("\"valid\":false") && out.contains("\"firstInvalidSequence\":"), "{out}");
}

fn promtool_required() -> bool {
    std::env::var("LEXIFLOW_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_live_metrics_after_real_traffic() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(!promtool_required(), "promtool is required (LEXIFLOW_REQUIRE_PROMTOOL=1) but not installed");
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"NOTE: promtool not found; promtool_accepts_the_live_metrics_after_real_traffic SKIPPED\n",
        );
        return;
    }
    let server = Server::start(&[("THROTTLE_LIMIT", "3"), ("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = server.addr.clone();
    let (token, _) = register(&addr).await;
    let bearer = format!("Bearer {token}");
    for _ in 0..5 {
        call(&addr, "GET", "/api/v1/cases", &[("Authorization", &bearer)], None).await;
        call(&addr, "GET", "/api/v1/nowhere", &[], None).await;
    }
    let metrics = call(&addr, "GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("lexiflow_rate_limit_refusals_total"));
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool complained:\n{said}");
    drop(server);
}

/// `lexiflow import cases FILE.csv`: imports, prints its report as JSON, writes rejected rows
/// with their line numbers, and exits 1 when an atomic import was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_cli_imports_reports_rejects_and_exits_non_zero_when_refused() {
    let mut server = Server::start(&[("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = server.addr.clone();
    let (token, _) = register(&addr).await;
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let dir = server.dir.clone();
    let import = |file: &std::path::Path, mode: &str| {
        Command::new(env!("CARGO_BIN_EXE_lexiflow"))
            .args(["import", "cases"])
            .arg(file)
            .args(["--as", "ada@e2e.test", "--mode", mode])
            .env("LEXIFLOW_DATA_DIR", &dir)
            .env("JWT_SECRET", SECRET)
            .env("LOG_LEVEL", "warn")
            .output()
            .unwrap()
    };
    let good = dir.join("good.csv");
    std::fs::write(&good, "caseNumber,title,type\nCLI-1,First,civil\nCLI-2,Second,tax\n").unwrap();
    let out = import(&good, "atomic");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["imported"].as_u64(), report["committed"].as_bool()), (Some(2), Some(true)), "{report}");

    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "caseNumber,title,type\nCLI-3,Third,civil\nCLI-4,,civil\n").unwrap();
    let out = import(&bad, "atomic");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let rejects = std::fs::read_to_string(dir.join("bad.rejects.csv")).unwrap();
    assert!(rejects.lines().nth(1).is_some_and(|l| l.starts_with("3,VALIDATION_FAILED")), "{rejects}");

    // What the import wrote is what the server serves.
    let again = Server::start_in(&[("SHUTDOWN_DRAIN_SECONDS", "0")], &dir);
    let r = call(&again.addr, "GET", "/api/v1/cases?limit=10", &[("Authorization", &format!("Bearer {token}"))], None)
        .await;
    assert_eq!(r.json()["meta"]["pagination"]["total"], 2, "{}", r.body);
}
