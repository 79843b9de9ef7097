//! Operations: Prometheus metrics and their JSON and system views, the metrics token, health
//! probes with their checks, and readiness following the database down and back up.

use std::time::Duration;

use crate::{
    chaos::ChaosProxy,
    support::{Backend, TestApp, postgres_available},
};
use http::Method;
use serde_json::json;

crate::on_both_backends!(
    metrics_carry_the_required_families_and_route_templates_not_raw_paths,
    metrics_json_and_system_views_answer,
    metrics_token_guards_the_metrics_routes,
    health_reports_database_memory_and_disk,
    the_worker_probes_follow_the_claim_loop_sigterm_and_the_database,
);

/// The worker's probe router (`lexiflow worker` with `WORKER_HEALTH_PORT`; the binary itself is
/// driven in tests/e2e): readiness follows SIGTERM and the database, liveness the claim loop.
async fn the_worker_probes_follow_the_claim_loop_sigterm_and_the_database(b: Backend) {
    use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};
    use tower::ServiceExt;
    let t = TestApp::new(b).await;
    let probe = |db: sea_orm::DatabaseConnection, ended: &Arc<AtomicBool>, stopping: &Arc<AtomicBool>| {
        lexiflow::jobs::probe::router(lexiflow::jobs::probe::Probe {
            db,
            cache: t.app.cache.clone(),
            metrics_token: None,
            ended: ended.clone(),
            stopping: stopping.clone(),
        })
    };
    let get = |router: axum::Router, path: &str| {
        let req = http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        async move {
            let r = router.oneshot(req).await.unwrap();
            let status = r.status().as_u16();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()["status"].clone())
        }
    };
    let (ended, stopping) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let router = probe(t.app.db.clone(), &ended, &stopping);
    assert_eq!(get(router.clone(), "/health/liveness").await, (200, json!("ok")));
    assert_eq!(get(router.clone(), "/health/readiness").await, (200, json!("ready")));
    // SIGTERM: not ready at once, still alive while jobs drain.
    stopping.store(true, Ordering::Release);
    assert_eq!(get(router.clone(), "/health/readiness").await, (503, json!("stopping")));
    assert_eq!(get(router.clone(), "/health/liveness").await, (200, json!("ok")));
    ended.store(true, Ordering::Release);
    assert_eq!(get(router.clone(), "/health/liveness").await, (503, json!("stopped")));
    // A database that does not answer: not ready.
    let (ended, stopping) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let closed = lexiflow::db::connect(&t.app.config.database).await.unwrap();
    closed.clone().close().await.unwrap();
    let router = probe(closed, &ended, &stopping);
    assert_eq!(get(router.clone(), "/health/readiness").await, (503, json!("database unavailable")));
    assert_eq!(get(router, "/health/liveness").await, (200, json!("ok")));
}

async fn metrics_carry_the_required_families_and_route_templates_not_raw_paths(b: Backend) {
    let t = TestApp::with(b, |c| c.throttle.login_ip = lexiflow::ratelimit::Quota::per_seconds(1, 60)).await;
    let s = t.register("Firm").await;
    let id = t.case(&s, "M-1").await;
    t.get(&format!("/api/v1/cases/{id}"), &s.token).await.expect(200);
    t.call(Method::GET, "/api/v1/cases", None, None).await.expect(401);
    let login = json!({"email": "x@y.test", "password": "wrong password"});
    t.call_from("192.0.2.1", Method::POST, "/api/v1/auth/login", None, Some(login.clone()), &[]).await.expect(401);
    t.call_from("192.0.2.1", Method::POST, "/api/v1/auth/login", None, Some(login), &[]).await.expect(429);

    let res = t.call(Method::GET, "/metrics", None, None).await;
    res.expect(200);
    assert!(res.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.body.as_str().expect("Prometheus text, not JSON").to_owned();
    for family in [
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE http_server_active_requests gauge",
        "# TYPE lexiflow_db_pool_connections gauge",
        "# TYPE lexiflow_db_pool_max_connections gauge",
        "# TYPE lexiflow_db_pool_acquire_wait_seconds gauge",
        "# TYPE lexiflow_rate_limit_refusals_total counter",
        "# TYPE lexiflow_auth_failures_total counter",
        "# TYPE lexiflow_build_info gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(text.contains(family), "missing {family:?} in:\n{text}");
    }
    assert!(
        text.contains(
            r#"http_server_request_duration_seconds_bucket{method="GET",route="/api/v1/cases/{id}",status="200",le="#
        ),
        "no histogram series for the route template"
    );
    assert!(text.contains(r#"lexiflow_rate_limit_refusals_total{policy="login"}"#));
    assert!(text.contains(r#"lexiflow_auth_failures_total{reason="missing"}"#));
    assert!(text.contains(r#"lexiflow_build_info{version=""#));
    // Route templates only: no raw id (and so no unbounded label values) anywhere.
    assert!(!text.contains(&id), "a raw path leaked into the metrics");
    // Every family has help text.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
    }
}

async fn metrics_json_and_system_views_answer(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
    let j = t.call(Method::GET, "/metrics/json", None, None).await;
    j.expect(200);
    let fam = &j.data()["http_server_request_duration_seconds"];
    assert_eq!(fam["type"], "histogram");
    assert!(fam["samples"].as_array().unwrap().iter().any(|s| s["labels"]["route"] == "/api/v1/auth/me"));
    let sys = t.call(Method::GET, "/metrics/system", None, None).await;
    sys.expect(200);
    let d = sys.data();
    assert!(d["memory"]["totalBytes"].as_u64().unwrap() > 0);
    assert!(d["process"]["residentBytes"].as_u64().unwrap() > 0);
    assert!(d["disk"]["availableBytes"].as_u64().unwrap() > 0);
    assert!(d["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert!(d["cpu"]["loadAverage"]["1m"].is_number());
}

async fn metrics_token_guards_the_metrics_routes(b: Backend) {
    let t = TestApp::with(b, |c| c.metrics_token = Some("scrape-secret-1234".to_string().into())).await;
    for path in ["/metrics", "/metrics/json", "/metrics/system"] {
        let r = t.call(Method::GET, path, None, None).await;
        r.expect(401);
        assert_eq!(r.code(), "AUTH_REQUIRED");
        t.call(Method::GET, path, Some("wrong-token"), None).await.expect(401);
        t.call(Method::GET, path, Some("scrape-secret-1234"), None).await.expect(200);
    }
}

async fn health_reports_database_memory_and_disk(b: Backend) {
    let t = TestApp::new(b).await;
    let h = t.call(Method::GET, "/health", None, None).await;
    h.expect(200);
    assert_eq!(h.body["status"], "ok");
    for check in ["database", "memory", "disk_data", "disk_uploads", "lifecycle"] {
        assert_eq!(h.body["details"][check]["status"], "up", "{check}: {}", h.body);
    }
    assert!(h.body["details"]["memory"]["residentBytes"].as_u64().unwrap() > 0);
    // Thresholds turn a check down (and the whole report 503) without a restart.
    let tight = TestApp::with(b, |c| {
        c.ops.memory_max_bytes = 1;
        c.ops.disk_min_free_bytes = u64::MAX;
    })
    .await;
    let h = tight.call(Method::GET, "/health", None, None).await;
    h.expect(503);
    assert_eq!(h.body["status"], "error");
    assert_eq!(h.body["error"]["memory"]["status"], "down");
    assert_eq!(h.body["error"]["disk_data"]["status"], "down");
    // Readiness does not depend on memory or disk.
    tight.call(Method::GET, "/health/readiness", None, None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_postgres_is_unreachable_and_200_when_it_returns() {
    if !postgres_available().await {
        return;
    }
    let pg = url::Url::parse(&crate::support::pg_url()).unwrap();
    let upstream = format!("{}:{}", pg.host_str().unwrap(), pg.port().unwrap_or(5432));
    let proxy = ChaosProxy::start(upstream).await;
    let mut via_proxy = pg.clone();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let t = TestApp::with(Backend::Postgres, |c| c.database.url = via_proxy.to_string().into()).await;
    t.call(Method::GET, "/health/readiness", None, None).await.expect(200);

    proxy.cut().await;
    // Probes are served from a result at most a second old: readiness turns 503 within it.
    let cut = std::time::Instant::now();
    let down = loop {
        let r = t.call(Method::GET, "/health/readiness", None, None).await;
        if r.status == 503 {
            break r;
        }
        assert!(cut.elapsed() < Duration::from_millis(1500), "readiness still 200 after {:?}", cut.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(down.body["error"]["database"]["status"], "down");
    // The API answers in our error body, as a dependency outage, not a client error.
    let s = t.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": "a@b.test", "password": "x"}))).await;
    assert_eq!(s.status.as_u16(), 503, "{}", s.body);
    assert_eq!(s.code(), "DEPENDENCY_UNAVAILABLE");

    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = t.call(Method::GET, "/health/readiness", None, None).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readiness did not recover: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_at_once_on_a_new_database_migrate_it_once() {
    use lexiflow_migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    if !postgres_available().await {
        return;
    }
    let template = TestApp::new(Backend::Postgres).await;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(crate::support::pg_url()).await.unwrap();
    admin.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let mut config = template.app.config.clone();
    config.database.schema = Some(schema.clone());
    config.worker_in_serve = false;
    // Four instances start together against the empty schema: without the migration lock
    // they race to create the same tables and some fail.
    let started = futures_util::future::join_all((0..4).map(|_| lexiflow::app::App::build(config.clone()))).await;
    for (i, s) in started.iter().enumerate() {
        assert!(s.is_ok(), "instance {i} did not start: {:?}", s.as_ref().err());
    }
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT version FROM {schema}.seaql_migrations"),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), lexiflow_migration::Migrator::migrations().len(), "each migration applied once");
    admin.execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

/// TLS to PostgreSQL: `sslmode=require` in `DATABASE_URL` encrypts every pooled connection
/// (the local server has Debian's self-signed certificate), and `verify-full` checks the
/// server's certificate against the system's roots, so the self-signed one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_use_tls_when_the_url_asks_and_verify_it_when_told() {
    if !postgres_available().await {
        return;
    }
    let tls_on = |mode: &str| {
        let mut u = url::Url::parse(&crate::support::pg_url()).unwrap();
        u.query_pairs_mut().append_pair("sslmode", mode);
        u.to_string()
    };
    let require = tls_on("require");
    let t = TestApp::with(Backend::Postgres, |c| c.database.url = require.clone().into()).await;
    let rows = t.sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await;
    assert!(rows[0].try_get::<bool>("", "ssl").unwrap(), "the connection is not encrypted");
    let s = t.register("Tls").await;
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
    let mut strict = t.app.config.database.clone();
    strict.url = tls_on("verify-full").into();
    assert!(lexiflow::db::connect(&strict).await.is_err(), "a self-signed certificate passed verify-full");
}
