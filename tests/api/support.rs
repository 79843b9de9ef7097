//! The test harness: a real LexiFlow router over a fresh SQLite file or a fresh PostgreSQL
//! schema, driven in process, with helpers to register firms and create users per role.
//!
//! PostgreSQL tests use `LEXIFLOW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable they are skipped with a
//! note on stderr, unless `LEXIFLOW_REQUIRE_POSTGRES=1`, which turns the skip into a failure
//! (CI sets it, so CI never passes by skipping).

use std::{
    collections::HashMap,
    io::Write,
    net::{TcpStream, ToSocketAddrs},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use lexiflow::{
    app::App,
    config::{Argon2Cost, Config, FileConfig},
    ratelimit::Quota,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
pub const PASSWORD: &str = "correct horse battery staple";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("LEXIFLOW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether the service at `url` answers a TCP connect (probed once per test binary through
/// `cache`). When it does not, `require_var=1` makes that a panic; otherwise the skip is noted
/// once on stderr (`noted`), since the harness would swallow eprintln! on success.
fn service_available(
    cache: &OnceLock<bool>,
    noted: &AtomicBool,
    what: &str,
    url: &str,
    default_port: u16,
    require_var: &str,
    skipped: &str,
) -> bool {
    let ok = *cache.get_or_init(|| {
        let u = url::Url::parse(url).unwrap_or_else(|_| panic!("{what} URL {url} is not a URL"));
        let host = u.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = u.port().unwrap_or(default_port);
        (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    });
    if !ok {
        if std::env::var(require_var).is_ok_and(|v| v == "1") {
            panic!("{require_var}=1 but {what} at {url} is unreachable");
        }
        if !noted.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: {what} at {url} is unreachable; {skipped} are SKIPPED (set {require_var}=1 to fail instead)"
            );
        }
    }
    ok
}

/// Whether a tool the tests drive (Node's Socket.IO client, Python's standardwebhooks) is
/// usable (`ok`). When it is not, `require_var=1` makes that a panic; otherwise the skip is
/// noted once on stderr (through `noted`), with `hint` saying how to get the tool.
pub fn tool_available(noted: &AtomicBool, ok: bool, what: &str, require_var: &str, skipped: &str, hint: &str) -> bool {
    if !ok {
        if std::env::var(require_var).is_ok_and(|v| v == "1") {
            panic!("{require_var}=1 but {what} is not usable ({hint})");
        }
        if !noted.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: {what} is not usable; {skipped} are SKIPPED ({hint}; set {require_var}=1 to fail instead)"
            );
        }
    }
    ok
}

/// The bucket the S3 tests share (each test under its own prefix).
pub const S3_BUCKET: &str = "lexiflow-test";

/// The S3-compatible server the PostgreSQL tests store files in (`LEXIFLOW_TEST_S3_ENDPOINT`),
/// with the test bucket made; None (noted once) when it is not set or not answering, and a
/// panic then when `LEXIFLOW_REQUIRE_S3=1`.
pub async fn s3_endpoint() -> Option<String> {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let endpoint = std::env::var("LEXIFLOW_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty());
    let made = match &endpoint {
        // A plain PUT makes the bucket (the test server does not check signatures); making it
        // again is a no-op.
        Some(e) => reqwest::Client::new()
            .put(format!("{}/{S3_BUCKET}", e.trim_end_matches('/')))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 409),
        None => false,
    };
    tool_available(
        &NOTED,
        made,
        "an S3-compatible server (LEXIFLOW_TEST_S3_ENDPOINT)",
        "LEXIFLOW_REQUIRE_S3",
        "S3 storage (PostgreSQL tests use local files instead)",
        "run tests/services/start.sh and set LEXIFLOW_TEST_S3_ENDPOINT=http://127.0.0.1:5055",
    )
    .then(|| endpoint.unwrap_or_default())
}

/// Whether PostgreSQL tests should run: true when reachable; panics when required but not.
pub async fn postgres_available() -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    static NOTED: AtomicBool = AtomicBool::new(false);
    service_available(
        &REACHABLE,
        &NOTED,
        "PostgreSQL",
        &pg_url(),
        5432,
        "LEXIFLOW_REQUIRE_POSTGRES",
        "the postgres:: tests",
    )
}

/// The Redis the scale-out tests share (`LEXIFLOW_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("LEXIFLOW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether Redis tests should run: true when reachable; panics when `LEXIFLOW_REQUIRE_REDIS=1`
/// and it is not.
pub fn redis_available() -> bool {
    static REACHABLE: OnceLock<bool> = OnceLock::new();
    static NOTED: AtomicBool = AtomicBool::new(false);
    service_available(&REACHABLE, &NOTED, "Redis", &redis_url(), 6379, "LEXIFLOW_REQUIRE_REDIS", "the Redis tests")
}

/// The Redis servers speaking only TLS that `tests/services/start.sh` starts: `url` takes any
/// client, `mtls_url` only one with a certificate from the test CA; `dir` holds `ca.crt`,
/// `client.crt` and `client.key`.
pub struct RedisTlsServers {
    pub url: String,
    pub mtls_url: String,
    pub dir: std::path::PathBuf,
}

/// The TLS Redis servers, from `LEXIFLOW_TEST_REDIS_TLS_URL`, `_MTLS_URL` and `_TLS_DIR`; None
/// (noted once) when they are not set, and a panic then when `LEXIFLOW_REQUIRE_REDIS_TLS=1`.
pub fn redis_tls() -> Option<RedisTlsServers> {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let servers = match (
        var("LEXIFLOW_TEST_REDIS_TLS_URL"),
        var("LEXIFLOW_TEST_REDIS_MTLS_URL"),
        var("LEXIFLOW_TEST_REDIS_TLS_DIR"),
    ) {
        (Some(url), Some(mtls_url), Some(dir)) => {
            Some(RedisTlsServers { url, mtls_url, dir: dir.into() }).filter(|s| s.dir.join("ca.crt").is_file())
        }
        _ => None,
    };
    tool_available(
        &NOTED,
        servers.is_some(),
        "Redis over TLS (LEXIFLOW_TEST_REDIS_TLS_URL, _MTLS_URL, _TLS_DIR)",
        "LEXIFLOW_REQUIRE_REDIS_TLS",
        "the Redis TLS tests",
        "run tests/services/start.sh and set the variables it prints",
    )
    .then_some(servers)
    .flatten()
}

/// Runs each listed `async fn name(b: Backend)` once per backend, as `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::support::postgres_available().await {
                        super::$name($crate::support::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

/// One server under test with its own database.
pub struct TestApp {
    pub app: App,
    pub router: Router,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

/// A response, its body parsed as JSON (Null when empty).
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Res {
    /// `data` of a success envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub refresh: String,
    pub user_id: String,
    pub firm_id: String,
    pub email: String,
}

impl TestApp {
    /// A fresh server on `backend`.
    pub async fn new(backend: Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    /// A fresh server on `backend`, with the configuration adjusted by `tweak`.
    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut env = HashMap::new();
        env.insert("APP_ENV".to_string(), "test".to_string());
        env.insert("LEXIFLOW_DATA_DIR".to_string(), dir.path().display().to_string());
        env.insert("JWT_SECRET".to_string(), SECRET.to_string());
        let mut schema = None;
        if backend == Backend::Postgres {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(pg_url()).await.unwrap();
            admin.execute_unprepared(&format!("CREATE SCHEMA {name}")).await.unwrap();
            admin.close().await.unwrap();
            env.insert("DATABASE_URL".to_string(), pg_url());
            schema = Some(name);
        }
        let mut config = Config::from_sources(FileConfig::default(), &env).unwrap();
        config.database.schema = schema.clone();
        config.database.max_connections = 5;
        // Hashing cost is not under test; keep it cheap so the suite stays fast.
        config.auth.argon2 = Argon2Cost { memory_kib: 1024, iterations: 1, parallelism: 1 };
        // Rate limits and login slow-down are under test only where a test sets them.
        let lots = Quota::per_seconds(1_000_000, 60);
        let t = &mut config.throttle;
        (t.global, t.login_ip, t.login_email, t.register, t.refresh, t.password) = (lots, lots, lots, lots, lots, lots);
        config.security.lockout.slowdown_base = Duration::from_millis(1);
        config.security.lockout.slowdown_max = Duration::from_millis(5);
        if backend == Backend::Postgres
            && let Some(endpoint) = s3_endpoint().await
        {
            // PostgreSQL runs with S3 storage (each test under its own prefix), SQLite with
            // local files: the same tests cover both stores.
            config.files.s3 = Some(lexiflow::storage::S3Settings {
                bucket: S3_BUCKET.into(),
                endpoint: Some(endpoint),
                region: "us-east-1".into(),
                access_key_id: Some("lexiflow-test".into()),
                secret_access_key: Some("lexiflow-test".to_owned().into()),
                allow_http: true,
                prefix: format!("t-{}", uuid::Uuid::new_v4().simple()),
            });
        }
        tweak(&mut config);
        let app = App::build(config).await.unwrap();
        let router = lexiflow::http::router::build(app.clone());
        TestApp { app, router, _dir: dir, schema }
    }

    /// A second instance of the server on the same database (and the same Redis, when this
    /// one uses Redis), as behind a load balancer.
    pub async fn sibling(&self) -> TestApp {
        let app = App::build(self.app.config.clone()).await.unwrap();
        let router = lexiflow::http::router::build(app.clone());
        // The first instance owns the schema and the data directory.
        TestApp { app, router, _dir: tempfile::tempdir().unwrap(), schema: None }
    }

    /// Serves this instance on a real socket (127.0.0.1, a free port) until the test ends;
    /// returns its base URL (`http://127.0.0.1:PORT`). For clients that must speak the wire
    /// protocol themselves (Socket.IO).
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = self.router.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, svc).await });
        format!("http://{addr}")
    }

    /// Sends a request; `token` becomes a bearer header, `body` JSON.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        self.call_with(method, path, token, body, &[]).await
    }

    /// Like [`call`](Self::call), with extra headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Res {
        self.send(request(method, path, token, body, headers)).await
    }

    /// Like [`call_with`](Self::call_with), as if the TCP peer were `peer` (an IP address).
    pub async fn call_from(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut req = request(method, path, token, body, headers);
        let addr = std::net::SocketAddr::new(peer.parse().unwrap(), 40_000);
        req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        self.send(req).await
    }

    /// Sends a request and returns the response's bytes as they came (not decoded).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, axum::body::Bytes) {
        let res = self.router.clone().oneshot(request(method, path, token, None, headers)).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, res.into_body().collect().await.unwrap().to_bytes())
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: Request<Body>) -> Res {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Res { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Res {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Res {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Registers a new firm; returns its admin's session.
    pub async fn register(&self, firm: &str) -> Session {
        let email = format!("admin-{}@{}.test", uuid::Uuid::new_v4().simple(), firm.to_lowercase().replace(' ', "-"));
        let res = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"firmName": firm, "email": email, "password": PASSWORD, "firstName": "Ada", "lastName": "Admin"})),
            )
            .await;
        res.expect(201);
        session_of(&res, &email)
    }

    /// Has `admin` create a user with `role` in their firm, and logs that user in.
    pub async fn user(&self, admin: &Session, role: &str) -> Session {
        let email = format!("{role}-{}@firm.test", uuid::Uuid::new_v4().simple());
        self.post(
            "/api/v1/users",
            &admin.token,
            json!({"email": email, "firstName": "Pat", "lastName": role, "role": role, "password": PASSWORD}),
        )
        .await
        .expect(201);
        self.login(&email).await
    }

    /// Logs in with the standard test password.
    pub async fn login(&self, email: &str) -> Session {
        let res = self
            .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": PASSWORD})))
            .await;
        res.expect(200);
        session_of(&res, email)
    }

    /// Creates a case and returns its id.
    pub async fn case(&self, s: &Session, number: &str) -> String {
        let res = self
            .post(
                "/api/v1/cases",
                &s.token,
                json!({"caseNumber": number, "title": format!("Matter {number}"), "type": "civil"}),
            )
            .await;
        res.expect(201);
        res.data()["id"].as_str().unwrap().to_owned()
    }

    /// Executes a statement directly against this test's database (tampering, set-up).
    pub async fn sql_exec(&self, sql: &str) {
        let db = &self.app.db;
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
    }

    /// Runs SQL directly against this test's database (for checks behind the API's back).
    pub async fn sql(&self, sql: &str) -> Vec<sea_orm::QueryResult> {
        let db = &self.app.db;
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap()
    }
}

/// Builds a request; `token` becomes a bearer header, `body` JSON.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    match body {
        Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn session_of(res: &Res, email: &str) -> Session {
    let d = res.data();
    Session {
        token: d["accessToken"].as_str().unwrap().to_owned(),
        refresh: d["refreshToken"].as_str().unwrap().to_owned(),
        user_id: d["user"]["id"].as_str().unwrap().to_owned(),
        firm_id: d["user"]["firmId"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop the schema from a thread of its own: Drop cannot await.
            let url = pg_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(db) = Database::connect(url).await {
                        let _ = db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                        let _ = db.close().await;
                    }
                });
            })
            .join();
        }
    }
}
