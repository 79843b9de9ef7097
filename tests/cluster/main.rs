//! The scale-out proof, with real processes: three `lexiflow serve` and one `lexiflow worker`
//! (the binary Cargo just built) on one PostgreSQL database of their own, one Redis (under a
//! key prefix of their own), one S3-compatible bucket (moto) and clamd.
//!
//! - `a_cluster_shares_limits_cache_sockets_uploads_jobs_and_webhooks`: one rate-limit budget
//!   across instances, read-after-write through the cache on any instance, a Socket.IO client
//!   on C receiving a write made through A, a tus upload started on A finished on B, each cron
//!   tick fired once, each job run once and each webhook delivered once.
//! - `kill_nine_under_write_load_loses_nothing`: a bounded loop of `kill -9` of a random
//!   instance or the worker while writers, an uploader and webhook deliveries run; afterwards
//!   every acknowledged write is there, the audit chain verifies, no job is lost or dead, no
//!   upload is corrupted, and no webhook delivery is lost or ran twice at once.
//! - `outages_of_each_dependency_are_survived_and_recovered_from`: PostgreSQL, Redis, clamd and
//!   S3 cut in turn (through TCP proxies the test controls, so the shared servers stay up for
//!   other suites): readiness and the API answer 503 in our body while PostgreSQL is gone,
//!   the API keeps serving without Redis, uploads follow the scan policy without clamd and fail
//!   cleanly then resume without S3; each recovers without a restart.
//!
//! They need PostgreSQL, Redis, the S3 server and clamd (`tests/services/start.sh`) and Node
//! with `npm ci` in `tests/realtime`. Missing, they are skipped with a note, unless one of the
//! `LEXIFLOW_REQUIRE_*` variables CI sets says it is required; then that is a failure. The
//! tests run one at a time (each cluster is four processes on a two-core machine).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../shared/chaos.rs"]
mod chaos;
#[path = "../shared/ports.rs"]
mod ports;

use std::{
    collections::{HashMap, HashSet},
    fs::OpenOptions,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use chaos::ChaosProxy;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdin, ChildStdout},
};

const SECRET: &str = "cluster-secret-that-is-long-enough-for-hs256-0123456789";
const PASSWORD: &str = "correct horse battery staple";
const BUCKET: &str = "lexiflow-test";
const MIB: usize = 1024 * 1024;

/// One cluster test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The services and tools, or a skip.

struct Services {
    pg: String,
    redis: String,
    s3: String,
    clamd: String,
}

fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

fn tcp_open(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_ok()
}

fn host_port(url: &str, default_port: u16) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(default_port))
}

/// The services every cluster test needs; None (with a note) when one is missing and none is
/// required, a panic when a required one is missing.
async fn services(needs_node: bool) -> Option<Services> {
    let pg = std::env::var("LEXIFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis = std::env::var("LEXIFLOW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let s3 = std::env::var("LEXIFLOW_TEST_S3_ENDPOINT").unwrap_or_default();
    let clamd = std::env::var("LEXIFLOW_TEST_CLAMD").unwrap_or_default();
    let node = !needs_node
        || driver_dir().join("node_modules/socket.io-client").is_dir()
            && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let s3_ok = !s3.is_empty()
        && reqwest::Client::new()
            .put(format!("{}/{BUCKET}", s3.trim_end_matches('/')))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 409);
    let checks = [
        ("PostgreSQL", "LEXIFLOW_REQUIRE_POSTGRES", tcp_open(&host_port(&pg, 5432))),
        ("Redis", "LEXIFLOW_REQUIRE_REDIS", tcp_open(&host_port(&redis, 6379))),
        ("an S3 server (LEXIFLOW_TEST_S3_ENDPOINT)", "LEXIFLOW_REQUIRE_S3", s3_ok),
        ("clamd (LEXIFLOW_TEST_CLAMD)", "LEXIFLOW_REQUIRE_CLAMD", !clamd.is_empty() && tcp_open(&clamd)),
        ("node with tests/realtime/node_modules", "LEXIFLOW_REQUIRE_NODE", node),
    ];
    let mut missing = Vec::new();
    for (what, var, ok) in checks {
        assert!(ok || !required(var), "{what} is required ({var}=1) but not available");
        if !ok {
            missing.push(what);
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "note: skipping the cluster tests: {} not available (run tests/services/start.sh, npm ci in tests/realtime)",
            missing.join(", ")
        );
        return None;
    }
    Some(Services { pg, redis, s3, clamd })
}

fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/realtime")
}

// ---------------------------------------------------------------------------------------------
// Processes.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Serve,
    Worker,
}

struct Proc {
    name: String,
    role: Role,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// Where this start's output begins in the log (it is appended to across restarts).
    log_from: usize,
    data: PathBuf,
}

impl Proc {
    fn spawn(&mut self, env: &[(String, String)]) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.log_from = log.metadata().unwrap().len() as usize;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lexiflow"));
        cmd.arg(match self.role {
            Role::Serve => "serve",
            Role::Worker => "worker",
        })
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", self.port.to_string())
        .env("LEXIFLOW_DATA_DIR", &self.data)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start lexiflow"));
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// `kill -9`: no signal handler runs, nothing is flushed.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits until the process serves (readiness 200) or, for the worker, says it runs.
    async fn ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(self.alive(), "{} exited while starting:\n{}", self.name, tail(&self.log_text()));
            let ok = match self.role {
                Role::Serve => http
                    .get(format!("{}/health/readiness", self.base()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200),
                Role::Worker => self.log_text().get(self.log_from..).is_some_and(|l| l.contains("job worker running")),
            };
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "{} never got ready:\n{}", self.name, tail(&self.log_text()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// How a cluster is set up.
struct Shape {
    serves: usize,
    /// Extra environment for every process.
    env: Vec<(&'static str, String)>,
    /// Put TCP proxies between the processes and PostgreSQL, Redis, S3 and clamd.
    proxied: bool,
}

struct Proxies {
    pg: ChaosProxy,
    redis: ChaosProxy,
    s3: ChaosProxy,
    clamd: ChaosProxy,
}

struct Cluster {
    procs: Vec<Proc>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// The cluster's own database, for the checks that read the tables.
    db: DatabaseConnection,
    admin: DatabaseConnection,
    db_name: String,
    proxies: Option<Proxies>,
    /// Set by `stop`; otherwise `Drop` cleans up.
    stopped: bool,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(svc: &Services, shape: Shape) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin = Database::connect(svc.pg.clone()).await.expect("PostgreSQL");
        let db_name = format!("cluster_{}", uuid::Uuid::new_v4().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE {db_name}")).await.unwrap();
        let mut direct = url::Url::parse(&svc.pg).unwrap();
        direct.set_path(&db_name);
        let db = Database::connect(direct.to_string()).await.unwrap();
        let proxies = if shape.proxied {
            Some(Proxies {
                pg: ChaosProxy::start(host_port(&svc.pg, 5432)).await,
                redis: ChaosProxy::start(host_port(&svc.redis, 6379)).await,
                s3: ChaosProxy::start(host_port(&svc.s3, 80)).await,
                clamd: ChaosProxy::start(svc.clamd.clone()).await,
            })
        } else {
            None
        };
        let (mut pg_url, mut redis_url, mut s3_url) =
            (direct.clone(), url::Url::parse(&svc.redis).unwrap(), url::Url::parse(&svc.s3).unwrap());
        let mut clamd = svc.clamd.clone();
        if let Some(p) = &proxies {
            pg_url.set_port(Some(p.pg.port)).unwrap();
            pg_url.set_host(Some("127.0.0.1")).unwrap();
            redis_url.set_port(Some(p.redis.port)).unwrap();
            redis_url.set_host(Some("127.0.0.1")).unwrap();
            s3_url.set_port(Some(p.s3.port)).unwrap();
            s3_url.set_host(Some("127.0.0.1")).unwrap();
            clamd = format!("127.0.0.1:{}", p.clamd.port);
        }
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut env: Vec<(String, String)> = [
            ("APP_ENV", "development".to_owned()),
            ("HOST", "127.0.0.1".to_owned()),
            ("JWT_SECRET", SECRET.to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("DATABASE_URL", pg_url.to_string()),
            ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
            ("REDIS_URL", redis_url.to_string()),
            ("REDIS_PREFIX", format!("cluster-{tag}:")),
            ("S3_BUCKET", BUCKET.to_owned()),
            ("S3_ENDPOINT", s3_url.to_string().trim_end_matches('/').to_owned()),
            ("S3_ALLOW_HTTP", "true".to_owned()),
            ("S3_ACCESS_KEY_ID", "lexiflow-test".to_owned()),
            ("S3_SECRET_ACCESS_KEY", "lexiflow-test".to_owned()),
            ("S3_PREFIX", format!("cluster-{tag}")),
            ("CLAMD_ADDR", clamd),
            ("CLAMD_TIMEOUT_MS", "5000".to_owned()),
            ("WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("WEBHOOK_POLL_MS", "100".to_owned()),
            ("WEBHOOK_RETRY_BASE_MS", "200".to_owned()),
            ("SHUTDOWN_DRAIN_SECONDS", "0".to_owned()),
            ("REALTIME_POLL_MS", "100".to_owned()),
            ("EVENTS_TAIL_MS", "200".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in shape.env {
            env.retain(|(e, _)| e != k);
            env.push((k.to_owned(), v));
        }
        let mut procs = Vec::new();
        for i in 0..shape.serves {
            procs.push(Proc {
                name: format!("serve-{}", (b'A' + i as u8) as char),
                role: Role::Serve,
                port: ports::free_port(),
                child: None,
                log_from: 0,
                log: dir.path().join(format!("serve-{i}.log")),
                data: dir.path().join(format!("serve-{i}")),
            });
        }
        procs.push(Proc {
            name: "worker".into(),
            role: Role::Worker,
            port: ports::free_port(),
            child: None,
            log_from: 0,
            log: dir.path().join("worker.log"),
            data: dir.path().join("worker"),
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        // All four start at once on the new database: the migration lock makes one migrate it.
        for p in &mut procs {
            std::fs::create_dir_all(&p.data).unwrap();
            p.spawn(&env);
        }
        for p in &mut procs {
            p.ready(&http).await;
        }
        Cluster { procs, env, http, db, admin, db_name, proxies, stopped: false, _dir: dir }
    }

    fn serve(&self, i: usize) -> String {
        self.procs[i].base()
    }

    fn serves(&self) -> usize {
        self.procs.len() - 1
    }

    async fn restart(&mut self, i: usize) {
        let env = self.env.clone();
        let http = self.http.clone();
        let p = &mut self.procs[i];
        p.spawn(&env);
        p.ready(&http).await;
    }

    async fn count(&self, sql: &str) -> i64 {
        let row =
            self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    /// Every process's log, for a failure message.
    fn logs(&self) -> String {
        self.procs.iter().map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text()))).collect::<Vec<_>>().join("\n")
    }

    async fn stop(mut self) {
        for p in &mut self.procs {
            p.kill9();
        }
        self.db.clone().close().await.ok();
        self.admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)).await.ok();
        self.stopped = true;
    }
}

impl Drop for Cluster {
    /// A failed assertion unwinds past `stop`: kill the processes and drop the database anyway
    /// (on a thread of its own, since this may run inside the test's runtime).
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for p in &mut self.procs {
            p.kill9();
        }
        let (admin, name) = (self.admin.clone(), self.db_name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok();
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

struct Res {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    bytes: Vec<u8>,
}

impl Res {
    fn data(&self) -> &Value {
        &self.body["data"]
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> Result<Res, reqwest::Error> {
    let mut b = http.request(method, url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    if let Some(body) = body {
        b = b.body(body);
    }
    let r = b.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await?.to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Res { status, headers, body, bytes })
}

async fn json_call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> Result<Res, reqwest::Error> {
    let mut h = headers.to_vec();
    if body.is_some() {
        h.push(("content-type", "application/json".into()));
    }
    send(http, method, url, token, &h, body.map(|b| serde_json::to_vec(&b).unwrap())).await
}

/// A call that must get an answer.
async fn call(http: &reqwest::Client, method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> Res {
    json_call(http, method, url, token, body, &[]).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Registers a firm; returns its admin's access token.
async fn register(http: &reqwest::Client, base: &str, firm: &str) -> String {
    let email = format!("admin-{}@{}.test", uuid::Uuid::new_v4().simple(), firm.to_lowercase());
    let r = call(
        http,
        Method::POST,
        &format!("{base}/api/v1/auth/register"),
        None,
        Some(json!({"firmName": firm, "email": email, "password": PASSWORD, "firstName": "Ada", "lastName": "Admin"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.data()["accessToken"].as_str().unwrap().to_owned()
}

/// Has the admin create a user with `role` and logs them in; returns their token.
async fn user(http: &reqwest::Client, base: &str, admin: &str, role: &str) -> String {
    let email = format!("{role}-{}@firm.test", uuid::Uuid::new_v4().simple());
    let r = call(
        http,
        Method::POST,
        &format!("{base}/api/v1/users"),
        Some(admin),
        Some(json!({"email": email, "firstName": "Pat", "lastName": role, "role": role, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(
        http,
        Method::POST,
        &format!("{base}/api/v1/auth/login"),
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.data()["accessToken"].as_str().unwrap().to_owned()
}

async fn create_case(http: &reqwest::Client, base: &str, token: &str, number: &str) -> Result<Res, reqwest::Error> {
    json_call(
        http,
        Method::POST,
        &format!("{base}/api/v1/cases"),
        Some(token),
        Some(json!({"caseNumber": number, "title": format!("Matter {number}"), "type": "civil"})),
        &[],
    )
    .await
}

/// Distinct bytes for upload `n` (a PDF header, then a pseudo-random stream), so no two
/// uploads share a hash and deduplication cannot hide a corrupted one.
fn file_bytes(n: u64, len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn tus_headers(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![("tus-resumable", "1.0.0".to_owned())];
    h.extend_from_slice(extra);
    h
}

/// Creates a tus upload of `len` bytes for `case` through `base`; returns its URL path.
async fn tus_create(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    case: &str,
    name: &str,
    len: usize,
) -> Result<String, String> {
    let meta = format!("filename {},filetype {},caseId {}", b64(name), b64("application/pdf"), b64(case));
    let r = send(
        http,
        Method::POST,
        &format!("{base}/api/v1/uploads"),
        Some(token),
        &tus_headers(&[("upload-length", len.to_string()), ("upload-metadata", meta)]),
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    if r.status != 201 {
        return Err(format!("create: {} {}", r.status, r.body));
    }
    let loc = r.header("location").unwrap();
    Ok(loc.find("/api/").map_or(loc, |i| &loc[i..]).to_owned())
}

async fn tus_patch(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    offset: usize,
    bytes: &[u8],
) -> Result<Res, reqwest::Error> {
    send(
        http,
        Method::PATCH,
        &format!("{base}{path}"),
        Some(token),
        &tus_headers(&[
            ("upload-offset", offset.to_string()),
            ("content-type", "application/offset+octet-stream".into()),
        ]),
        Some(bytes.to_vec()),
    )
    .await
}

async fn tus_offset(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Result<usize, String> {
    let r = send(http, Method::HEAD, &format!("{base}{path}"), Some(token), &tus_headers(&[]), None)
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HEAD {}", r.status));
    }
    Ok(r.header("upload-offset").unwrap().parse().unwrap())
}

/// Files a finished upload as a document of `case`; returns the document's id.
async fn file_document(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    case: &str,
    upload_path: &str,
    key: &str,
) -> Result<String, String> {
    let upload = upload_path.rsplit('/').next().unwrap();
    let r = json_call(
        http,
        Method::POST,
        &format!("{base}/api/v1/cases/{case}/documents"),
        Some(token),
        Some(json!({"uploadId": upload, "title": format!("Exhibit {key}"), "type": "evidence"})),
        &[("idempotency-key", key.to_owned())],
    )
    .await
    .map_err(|e| e.to_string())?;
    if r.status != 201 {
        return Err(format!("file: {} {}", r.status, r.body));
    }
    Ok(r.data()["id"].as_str().unwrap().to_owned())
}

/// Polls `check` until it holds, at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver that counts.

#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    kind: String,
    case_id: Option<String>,
    from: Instant,
    to: Instant,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Delivery>>>);

impl Received {
    fn all(&self) -> Vec<Delivery> {
        self.0.lock().unwrap().clone()
    }

    fn cases_created(&self) -> HashSet<String> {
        self.all().into_iter().filter(|d| d.kind == "case.created").filter_map(|d| d.case_id).collect()
    }
}

/// Starts the receiver; returns its URL. It takes 30 ms to answer, so two deliveries of one
/// event running at once would overlap in time.
async fn receiver() -> (String, Received) {
    async fn hook(State(r): State<Received>, headers: HeaderMap, body: axum::body::Bytes) -> &'static str {
        let from = Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        r.0.lock().unwrap().push(Delivery {
            id: headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
            kind: v["type"].as_str().unwrap_or_default().to_owned(),
            case_id: v["caseId"].as_str().map(str::to_owned),
            from,
            to: Instant::now(),
        });
        "ok"
    }
    let r = Received::default();
    let app = Router::new().route("/hook", post(hook)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

/// Deliveries of one event (one `webhook-id`) that ran at the same time.
fn overlapping(d: &[Delivery]) -> usize {
    let mut by_id: HashMap<&str, Vec<&Delivery>> = HashMap::new();
    for x in d {
        by_id.entry(&x.id).or_default().push(x);
    }
    by_id
        .values()
        .map(|v| {
            let mut n = 0;
            for (i, a) in v.iter().enumerate() {
                for b in &v[i + 1..] {
                    if a.from < b.to && b.from < a.to {
                        n += 1;
                    }
                }
            }
            n
        })
        .sum()
}

async fn subscribe(http: &reqwest::Client, base: &str, admin: &str, url: &str, events: Value) {
    let r = call(
        http,
        Method::POST,
        &format!("{base}/api/v1/webhooks"),
        Some(admin),
        Some(json!({"url": url, "events": events, "description": "cluster"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// The real Socket.IO client, through tests/realtime/driver.mjs.

struct Sockets {
    _child: tokio::process::Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sockets {
    async fn start() -> Self {
        let mut child = tokio::process::Command::new("node")
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
        let mut s = Self { _child: child, stdin, lines };
        s.expect(|v| v["event"] == "ready", "driver ready").await;
        s
    }

    async fn send(&mut self, cmd: Value) {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn expect(&mut self, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap()
                .expect("the driver exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The cluster shares what it must.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_shares_limits_cache_sockets_uploads_jobs_and_webhooks() {
    let Some(svc) = services(true).await else { return };
    let _one = SERIAL.lock().await;
    let started = Instant::now();
    let c = Cluster::start(
        &svc,
        Shape {
            serves: 3,
            env: vec![
                ("THROTTLE_LIMIT", "300".into()),
                ("THROTTLE_TTL", "60000".into()),
                // Every 2 s, so a minute's run sees many ticks.
                ("REPORT_WARM_CRON", "*/2 * * * * *".into()),
                ("SCAN_REQUIRED", "true".into()),
            ],
            proxied: false,
        },
    )
    .await;
    let http = c.http.clone();
    let (a, b, cc) = (c.serve(0), c.serve(1), c.serve(2));
    let admin = register(&http, &a, "Cluster").await;
    let (hook_url, received) = receiver().await;
    subscribe(&http, &b, &admin, &hook_url, json!(["case.created"])).await;

    // One rate-limit budget: 700 requests spread over three instances, with a budget of 300 a
    // minute. Per-instance budgets would let all 700 through.
    let limited = user(&http, &a, &admin, "paralegal").await;
    let mut allowed = [0u32; 3];
    let mut refused = [0u32; 3];
    let burst = Instant::now();
    for i in 0..700 {
        let r = call(&http, Method::GET, &format!("{}/api/v1/auth/me", c.serve(i % 3)), Some(&limited), None).await;
        match r.status {
            200 => allowed[i % 3] += 1,
            429 => refused[i % 3] += 1,
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    let total: u32 = allowed.iter().sum();
    // GCRA refills a request every 200 ms while the loop runs: 300, plus what refilled meanwhile.
    let refilled = (burst.elapsed().as_secs_f64() / 0.2).ceil() as u32 + 2;
    assert!(
        (300..=300 + refilled).contains(&total),
        "allowed {allowed:?}, refused {refused:?} in {:?}",
        burst.elapsed()
    );
    assert!(refused.iter().all(|&n| n > 0), "every instance refused once the shared budget ran out: {refused:?}");

    // Read-after-write through the cache on any instance.
    let r = create_case(&http, &a, &admin, "CL-1").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let case = r.data()["id"].as_str().unwrap().to_owned();
    for base in [&a, &b, &cc] {
        let r = call(&http, Method::GET, &format!("{base}/api/v1/cases/{case}"), Some(&admin), None).await;
        assert_eq!(r.data()["title"], "Matter CL-1");
    }

    // A Socket.IO client on C hears a write made through A.
    let mut sockets = Sockets::start().await;
    sockets.send(json!({"op": "connect", "id": "c", "url": format!("{cc}/events"), "auth": {"token": admin}})).await;
    sockets.expect(|v| v["id"] == "c" && v["event"] == "connected", "connected on C").await;
    sockets.send(json!({"op": "emit", "id": "c", "event": "subscribe:case", "data": {"caseId": case}, "ack": 1})).await;
    let ack = sockets.expect(|v| v["ack"] == 1, "subscribe ack").await;
    assert_eq!(ack["reply"]["status"], "subscribed", "{ack}");

    for (n, (writer, reader)) in [(&b, &cc), (&cc, &a), (&a, &b)].into_iter().enumerate() {
        let title = format!("Edited {n}");
        let r = call(
            &http,
            Method::PATCH,
            &format!("{writer}/api/v1/cases/{case}"),
            Some(&admin),
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = call(&http, Method::GET, &format!("{reader}/api/v1/cases/{case}"), Some(&admin), None).await;
        assert_eq!(r.data()["title"], title.as_str(), "a stale read on another instance");
        if n == 2 {
            // Written through A: C's socket gets it.
            let ev = sockets
                .expect(
                    |v| {
                        v["id"] == "c"
                            && v["event"] == "case:updated"
                            && v["args"][0]["data"]["title"] == title.as_str()
                    },
                    "case:updated on C",
                )
                .await;
            assert_eq!(ev["args"][0]["caseId"], case.as_str());
        }
    }

    // A tus upload started on A finishes on B (S3 multipart state in the row), is filed on C,
    // scanned by clamd in some worker, and downloads byte for byte from A.
    let bytes = file_bytes(1, 11 * MIB + 123);
    let path = tus_create(&http, &a, &admin, &case, "exhibit.pdf", bytes.len()).await.unwrap();
    let first = 5 * MIB + 7;
    let r = tus_patch(&http, &a, &admin, &path, 0, &bytes[..first]).await.unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(tus_offset(&http, &b, &admin, &path).await.unwrap(), first);
    let r = tus_patch(&http, &b, &admin, &path, first, &bytes[first..]).await.unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let doc = file_document(&http, &cc, &admin, &case, &path, "cluster-doc-1").await.unwrap();
    let scanned = eventually(Duration::from_secs(60), || async {
        let r = call(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}"), Some(&admin), None).await;
        r.data()["latest"]["scanStatus"] == "clean"
    })
    .await;
    assert!(scanned, "the document was never scanned clean\n{}", c.logs());
    let r = send(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}/download"), Some(&admin), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.bytes == bytes, "the download differs from the upload");

    // Webhooks: 30 cases created round-robin through the three instances, each delivered once.
    let mut created = vec![case.clone()];
    for n in 0..30 {
        let r = create_case(&http, &c.serve(n % 3), &admin, &format!("CL-W{n}")).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        created.push(r.data()["id"].as_str().unwrap().to_owned());
    }
    let all = eventually(Duration::from_secs(60), || async { received.cases_created().len() >= created.len() }).await;
    assert!(all, "deliveries missing: got {} of {}\n{}", received.cases_created().len(), created.len(), c.logs());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = received.all();
    let ids: HashSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "an event was delivered more than once");
    assert_eq!(got.len(), created.len());

    // Cron: one job per tick of the 2-second schedule over four workers, and no tick skipped.
    let enough = eventually(Duration::from_secs(60), || async {
        c.count("SELECT COUNT(*) FROM queue_cron_ticks WHERE schedule = 'report-warm'").await >= 12
    })
    .await;
    assert!(enough, "the 2-second schedule did not tick\n{}", c.logs());
    let duplicate_ticks = c
        .count(
            "SELECT COUNT(*) FROM (SELECT run_at FROM queue_jobs WHERE job_type = 'reports.warm' \
             GROUP BY run_at HAVING COUNT(*) > 1) d",
        )
        .await;
    assert_eq!(duplicate_ticks, 0, "a tick fired twice");
    let ticks = c.count("SELECT COUNT(*) FROM queue_cron_ticks WHERE schedule = 'report-warm'").await;
    let warm = c.count("SELECT COUNT(*) FROM queue_jobs WHERE job_type = 'reports.warm'").await;
    assert!(warm >= ticks, "a tick without its job: {ticks} ticks, {warm} jobs");
    let skipped = c
        .count(
            "SELECT (EXTRACT(EPOCH FROM MAX(tick_at) - MIN(tick_at))::bigint / 2 + 1) - COUNT(*) \
             FROM queue_cron_ticks WHERE schedule = 'report-warm'",
        )
        .await;
    // A scheduler fires only the latest due tick, so a tick is skipped only if all four
    // workers were stalled for its whole 2 s; allow one such under a loaded machine.
    assert!(skipped <= 1, "{skipped} of {ticks} ticks were skipped");
    let window = started.elapsed().as_secs();
    // The cron jobs and the deliveries ran once each (a scan may legitimately be retried if
    // clamd is slow under load, so file jobs are not counted here).
    let rerun = c
        .count(
            "SELECT COUNT(*) FROM queue_jobs WHERE queue IN ('maintenance', 'webhooks') AND (attempts > 1 OR state = 'dead')",
        )
        .await;
    assert_eq!(rerun, 0, "a job ran more than once");
    let deliveries = c.count("SELECT COUNT(*) FROM queue_jobs WHERE queue = 'webhooks' AND state = 'completed'").await;
    assert_eq!(deliveries, created.len() as i64);
    eprintln!(
        "cluster: rate limit allowed {allowed:?} refused {refused:?}; {ticks} cron ticks in {window} s, each one job, {skipped} skipped; \
         {} webhooks delivered once each; upload A->B {} bytes intact",
        got.len(),
        bytes.len()
    );
    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 under write load.

/// A small xorshift generator, seeded from the clock (printed, so a failing run can be redone
/// with `LEXIFLOW_CLUSTER_SEED`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<(String, String)>>,
    unanswered: AtomicU64,
    refused: AtomicU64,
    uploads: Mutex<Vec<(String, u64, usize)>>,
    upload_errors: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_write_load_loses_nothing() {
    let Some(svc) = services(false).await else { return };
    let _one = SERIAL.lock().await;
    let rounds: u32 = std::env::var("LEXIFLOW_CLUSTER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed = std::env::var("LEXIFLOW_CLUSTER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("kill -9 loop: seed {seed}, {rounds} kills");
    let mut rng = Rng(seed);
    let mut c = Cluster::start(
        &svc,
        Shape {
            serves: 3,
            env: vec![
                ("THROTTLE_LIMIT", "1000000".into()),
                ("QUEUE_LEASE_SECONDS", "6".into()),
                ("UPLOAD_LEASE_SECONDS", "4".into()),
                ("WEBHOOK_MAX_ATTEMPTS", "20".into()),
            ],
            proxied: false,
        },
    )
    .await;
    let http = c.http.clone();
    let bases: Arc<Vec<String>> = Arc::new((0..c.serves()).map(|i| c.serve(i)).collect());
    let admin = register(&http, &bases[0], "Crash").await;
    let (hook_url, received) = receiver().await;
    subscribe(&http, &bases[0], &admin, &hook_url, json!(["case.created", "document.*"])).await;
    let r = create_case(&http, &bases[0], &admin, "K-DOCS").await.unwrap();
    let doc_case = r.data()["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = tokio::task::JoinSet::new();
    // Four writers creating cases through whichever instance comes next.
    for w in 0..4u64 {
        let (http, bases, admin, stop, tally) =
            (http.clone(), bases.clone(), admin.clone(), stop.clone(), tally.clone());
        load.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let number = format!("K-{w}-{n}");
                match create_case(&http, &bases[((w + n) % bases.len() as u64) as usize], &admin, &number).await {
                    Ok(r) if r.status == 201 => {
                        tally.acked.lock().unwrap().push((r.data()["id"].as_str().unwrap().to_owned(), number))
                    }
                    Ok(_) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.unanswered.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    // One uploader: 6 MiB files in 2 MiB PATCHes, each PATCH to the next instance; after a
    // failed PATCH it asks another instance for the offset and goes on from there.
    {
        let (http, bases, admin, stop, tally, case) =
            (http.clone(), bases.clone(), admin.clone(), stop.clone(), tally.clone(), doc_case.clone());
        load.spawn(async move {
            let mut turn = 0usize;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let len = 6 * MIB + n as usize;
                let bytes = file_bytes(1000 + n, len);
                let mut next = || {
                    turn += 1;
                    bases[turn % bases.len()].clone()
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                let path = loop {
                    match tus_create(&http, &next(), &admin, &case, &format!("k{n}.pdf"), len).await {
                        Ok(p) => break Some(p),
                        Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                        Err(e) => {
                            tally.upload_errors.lock().unwrap().push(e);
                            break None;
                        }
                    }
                };
                let Some(path) = path else { continue };
                let mut offset = 0;
                let mut failed = None;
                while offset < len {
                    if Instant::now() > deadline {
                        failed = Some(format!("upload {n} stuck at {offset}"));
                        break;
                    }
                    let end = (offset + 2 * MIB).min(len);
                    match tus_patch(&http, &next(), &admin, &path, offset, &bytes[offset..end]).await {
                        Ok(r) if r.status == 204 => offset = r.header("upload-offset").unwrap().parse().unwrap(),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if let Ok(o) = tus_offset(&http, &next(), &admin, &path).await {
                                offset = o;
                            }
                        }
                    }
                }
                if let Some(e) = failed {
                    tally.upload_errors.lock().unwrap().push(e);
                    continue;
                }
                let key = format!("k-doc-{seed}-{n}");
                let doc = loop {
                    match file_document(&http, &next(), &admin, &case, &path, &key).await {
                        Ok(d) => break Some(d),
                        Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
                        Err(e) => {
                            tally.upload_errors.lock().unwrap().push(e);
                            break None;
                        }
                    }
                };
                if let Some(doc) = doc {
                    tally.uploads.lock().unwrap().push((doc, 1000 + n, len));
                }
            }
        });
    }

    // The killer: every 1.5 to 4 s, kill -9 a random instance or the worker, restart it.
    let mut kills: HashMap<String, u32> = HashMap::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(1_500 + rng.below(2_500))).await;
        let victim = rng.below(c.procs.len() as u64) as usize;
        c.procs[victim].kill9();
        *kills.entry(c.procs[victim].name.clone()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        c.restart(victim).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }
    let acked = tally.acked.lock().unwrap().clone();
    let uploads = tally.uploads.lock().unwrap().clone();
    let upload_errors = tally.upload_errors.lock().unwrap().clone();
    assert!(upload_errors.is_empty(), "uploads failed: {upload_errors:?}\n{}", c.logs());
    assert!(!uploads.is_empty(), "no upload was filed under the kills\n{}", c.logs());
    assert!(acked.len() > 100, "too little load to prove anything: {} acknowledged writes", acked.len());

    // Every acknowledged write is there, through every instance.
    let mut missing = Vec::new();
    for (i, (id, number)) in acked.iter().enumerate() {
        let r = call(&http, Method::GET, &format!("{}/api/v1/cases/{id}", bases[i % bases.len()]), Some(&admin), None)
            .await;
        if r.status != 200 || r.data()["caseNumber"] != number.as_str() {
            missing.push(number.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");

    // No upload corrupted: each filed document downloads as sent, and is scanned.
    for (doc, seed, len) in &uploads {
        let r =
            send(&http, Method::GET, &format!("{}/api/v1/documents/{doc}/download", bases[0]), Some(&admin), &[], None)
                .await
                .unwrap();
        assert_eq!(r.status, 200, "{doc}: {}", r.body);
        assert!(r.bytes == file_bytes(*seed, *len), "document {doc} differs from what was uploaded");
    }

    // Every job finishes: none left active, failed or due, none dead. Leases of killed
    // processes expire after 6 s and are reclaimed; the sequencer numbers events a killed
    // instance left unnumbered within a minute.
    let acked_ids: HashSet<&str> = acked.iter().map(|(id, _)| id.as_str()).collect();
    let drained = eventually(Duration::from_secs(150), || async {
        let delivered = received.cases_created();
        acked_ids.iter().all(|id| delivered.contains(*id))
            && c.count(
                "SELECT COUNT(*) FROM queue_jobs WHERE state IN ('active', 'failed') OR (state = 'waiting' AND run_at <= now())",
            )
            .await
                == 0
    })
    .await;
    let dead = c.count("SELECT COUNT(*) FROM queue_jobs WHERE state = 'dead'").await;
    let jobs = c.count("SELECT COUNT(*) FROM queue_jobs").await;
    let retried = c.count("SELECT COUNT(*) FROM queue_jobs WHERE attempts > 1").await;
    let delivered = received.cases_created();
    let lost: Vec<&String> = acked.iter().map(|(id, _)| id).filter(|id| !delivered.contains(*id)).collect();
    let all = received.all();
    let distinct: HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let at_once = overlapping(&all);
    let scanned = c.count("SELECT COUNT(*) FROM blobs WHERE scan_status = 'clean'").await;
    eprintln!(
        "kill -9 loop (seed {seed}): kills {kills:?}; writes acknowledged {}, unanswered {}, refused {}; \
         acknowledged lost {}; uploads filed {} (all byte-identical), {} versions scanned clean; \
         jobs {jobs} ({retried} retried after a kill, {dead} dead); webhook deliveries {} for {} events \
         ({} repeated, {at_once} at once), case.created lost {}",
        acked.len(),
        tally.unanswered.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        missing.len(),
        uploads.len(),
        scanned,
        all.len(),
        distinct.len(),
        all.len() - distinct.len(),
        lost.len()
    );
    assert!(drained, "jobs or deliveries did not drain\n{}", c.logs());
    assert_eq!(dead, 0, "jobs died");
    assert!(lost.is_empty(), "webhook deliveries lost for {} acknowledged cases", lost.len());
    assert_eq!(at_once, 0, "one event was being delivered twice at the same time");
    assert_eq!(scanned as usize, uploads.len(), "not every uploaded version was scanned");

    // The audit chain verifies after all of it.
    let r = call(&http, Method::GET, &format!("{}/api/v1/audit/verify", bases[1]), Some(&admin), None).await;
    assert_eq!(r.data()["valid"], true, "{}", r.body);
    assert!(r.data()["entriesChecked"].as_u64().unwrap() >= acked.len() as u64);
    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Outages.

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let r = send(http, Method::GET, &format!("{base}/metrics"), None, &[], None).await.ok()?;
    let text = String::from_utf8(r.bytes).ok()?;
    text.lines().find(|l| l.starts_with(name) && !l.starts_with('#')).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outages_of_each_dependency_are_survived_and_recovered_from() {
    let Some(svc) = services(false).await else { return };
    let _one = SERIAL.lock().await;
    let c = Cluster::start(
        &svc,
        Shape {
            serves: 2,
            env: vec![("SCAN_REQUIRED", "true".into()), ("THROTTLE_LIMIT", "1000000".into())],
            proxied: true,
        },
    )
    .await;
    let http = c.http.clone();
    let px = c.proxies.as_ref().unwrap();
    let (a, b) = (c.serve(0), c.serve(1));
    let admin = register(&http, &a, "Outage").await;
    let r = create_case(&http, &a, &admin, "O-1").await.unwrap();
    let case = r.data()["id"].as_str().unwrap().to_owned();

    // PostgreSQL stopped: readiness 503 on both instances, the API 503 in our error body.
    px.pg.cut().await;
    for base in [&a, &b] {
        let down = eventually(Duration::from_secs(10), || async {
            send(&http, Method::GET, &format!("{base}/health/readiness"), None, &[], None)
                .await
                .is_ok_and(|r| r.status == 503)
        })
        .await;
        assert!(down, "{base}: readiness stayed 200 without PostgreSQL");
    }
    let api_down = eventually(Duration::from_secs(10), || async {
        let r = call(&http, Method::GET, &format!("{b}/api/v1/cases/{case}"), Some(&admin), None).await;
        r.status == 503 && r.body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    })
    .await;
    assert!(api_down, "the API did not answer 503 DEPENDENCY_UNAVAILABLE without PostgreSQL");
    let r = create_case(&http, &a, &admin, "O-LOST").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["success"], false);
    px.pg.restore();
    for base in [&a, &b] {
        let up = eventually(Duration::from_secs(30), || async {
            send(&http, Method::GET, &format!("{base}/health/readiness"), None, &[], None)
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(up, "{base}: readiness did not recover without a restart\n{}", c.logs());
    }
    let r = create_case(&http, &b, &admin, "O-2").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(&http, Method::GET, &format!("{a}/api/v1/cases?limit=100"), Some(&admin), None).await;
    let numbers: Vec<&str> = r.data().as_array().unwrap().iter().filter_map(|c| c["caseNumber"].as_str()).collect();
    assert!(numbers.contains(&"O-2") && !numbers.contains(&"O-LOST"), "{numbers:?}");

    // Redis stopped: the API keeps serving through its fallbacks, then uses Redis again.
    px.redis.cut().await;
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let t = Instant::now();
        let r = call(&http, Method::GET, &format!("{}/api/v1/cases/{case}", [&a, &b][i % 2]), Some(&admin), None).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(slowest < Duration::from_secs(3), "a request took {slowest:?} without Redis");
    let r = call(
        &http,
        Method::PATCH,
        &format!("{a}/api/v1/cases/{case}"),
        Some(&admin),
        Some(json!({"title": "Without Redis"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let degraded = metric(&http, &a, "lexiflow_rate_limit_degraded").await;
    assert_eq!(degraded, Some(1.0), "the limiter did not report running without Redis");
    px.redis.restore();
    let back = eventually(Duration::from_secs(30), || async {
        call(&http, Method::GET, &format!("{a}/api/v1/auth/me"), Some(&admin), None).await;
        metric(&http, &a, "lexiflow_rate_limit_degraded").await == Some(0.0)
    })
    .await;
    assert!(back, "Redis was not used again after it returned");
    // The write made without Redis is what both instances read once it is back.
    let fresh = eventually(Duration::from_secs(15), || async {
        call(&http, Method::GET, &format!("{b}/api/v1/cases/{case}"), Some(&admin), None).await.data()["title"]
            == "Without Redis"
    })
    .await;
    assert!(fresh, "B kept a stale copy after Redis returned");

    // clamd stopped, with SCAN_REQUIRED: a new document stays pending and is not served; once
    // clamd answers again a retry scans it and it is served.
    px.clamd.cut().await;
    let bytes = file_bytes(7, MIB + 5);
    let path = tus_create(&http, &a, &admin, &case, "scan.pdf", bytes.len()).await.unwrap();
    assert_eq!(tus_patch(&http, &b, &admin, &path, 0, &bytes).await.unwrap().status, 204);
    let doc = file_document(&http, &a, &admin, &case, &path, "outage-scan").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = call(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}"), Some(&admin), None).await;
    assert_eq!(r.data()["latest"]["scanStatus"], "pending", "{}", r.body);
    let r = send(&http, Method::GET, &format!("{b}/api/v1/documents/{doc}/download"), Some(&admin), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 409, "served unscanned: {}", r.body);
    assert_eq!(r.body["error"]["code"], "FILE_NOT_SCANNED");
    px.clamd.restore();
    let clean =
        eventually(Duration::from_secs(120), || async {
            call(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}"), Some(&admin), None).await.data()["latest"]
                ["scanStatus"]
                == "clean"
        })
        .await;
    assert!(clean, "the document was not scanned after clamd returned\n{}", c.logs());
    let r = send(&http, Method::GET, &format!("{b}/api/v1/documents/{doc}/download"), Some(&admin), &[], None)
        .await
        .unwrap();
    assert!(r.status == 200 && r.bytes == bytes);

    // S3 stopped: a PATCH fails cleanly (503 in our body, offset unchanged), the upload resumes
    // from HEAD once S3 is back, and the file is intact.
    let bytes = file_bytes(8, 12 * MIB + 9);
    let path = tus_create(&http, &a, &admin, &case, "s3.pdf", bytes.len()).await.unwrap();
    let first = 5 * MIB + 1;
    assert_eq!(tus_patch(&http, &a, &admin, &path, 0, &bytes[..first]).await.unwrap().status, 204);
    px.s3.cut().await;
    let t = Instant::now();
    let r = tus_patch(&http, &b, &admin, &path, first, &bytes[first..]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "DEPENDENCY_UNAVAILABLE");
    assert!(t.elapsed() < Duration::from_secs(20), "the PATCH took {:?} to fail", t.elapsed());
    let at = tus_offset(&http, &a, &admin, &path).await.unwrap();
    assert!(at >= first && at <= bytes.len(), "offset {at}");
    px.s3.restore();
    let mut at = tus_offset(&http, &b, &admin, &path).await.unwrap();
    while at < bytes.len() {
        let r = tus_patch(&http, &a, &admin, &path, at, &bytes[at..]).await.unwrap();
        assert_eq!(r.status, 204, "resume at {at}: {}", r.body);
        at = r.header("upload-offset").unwrap().parse().unwrap();
    }
    let doc = file_document(&http, &b, &admin, &case, &path, "outage-s3").await.unwrap();
    let clean =
        eventually(Duration::from_secs(60), || async {
            call(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}"), Some(&admin), None).await.data()["latest"]
                ["scanStatus"]
                == "clean"
        })
        .await;
    assert!(clean, "the resumed upload was not scanned\n{}", c.logs());
    let r = send(&http, Method::GET, &format!("{a}/api/v1/documents/{doc}/download"), Some(&admin), &[], None)
        .await
        .unwrap();
    assert!(r.status == 200 && r.bytes == bytes, "the resumed upload is not intact");
    c.stop().await;
}
