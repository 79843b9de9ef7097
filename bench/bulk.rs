//! The bulk and report benchmark (run by `bench/bulk.sh`).
//!
//! 1. Bulk insert of N cases (default 100,000) through LexiFlow's bulk path — validation,
//!    the insert, and one audit entry per case, in one transaction — on PostgreSQL and on
//!    SQLite; beside it, in the same run, PostgreSQL's own `\copy` of the same case rows
//!    from CSV into an identical, freshly migrated table (the ceiling: no validation, no
//!    audit). Prints rows/s and the ratio ours / `\copy` (target >= 0.70) and SQLite rows/s
//!    (target >= 100,000).
//!    A second ceiling, also in the same run: `\copy` of every row the bulk path wrote
//!    (the cases, their team members and their audit entries, exported from our schema)
//!    into another fresh schema, in cases per second — what the database itself needs for
//!    the same writes, so the cost of our path proper is visible apart from the extra rows
//!    that auditing and case teams require.
//! 2. The case summary report over those cases, uncached (computed from the database each
//!    time) versus through the cache, per call.
//! 3. The import shape: 100,000 cases in ten `POST /cases/bulk` requests of 10,000 through
//!    the HTTP router (in process), on a fresh database, printing the time of each request.
//!    The table grows tenfold during the run, so a query plan made while it was nearly empty
//!    shows here; the last request may take at most 1.5 times the first.
//!
//! Env: N (100000), ROUNDS (3), BACKENDS (postgres,sqlite: either or both), SHAPES (bulk,import: either or both), PG_URL (postgres://postgres@127.0.0.1:5432/test), PSQL (psql).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::Write,
    time::{Duration, Instant},
};

use lexiflow::{
    app::App,
    auth::Principal,
    cases::{
        bulk::{self, BulkMode, CreateOptions, OnConflict},
        model::{CaseStatus, CaseType},
        ops::CreateCase,
    },
    config::{Config, FileConfig},
    ids::{FirmId, SessionId, UserId},
    reports,
    users::model::Role,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use tower::ServiceExt;
use uuid::Uuid;

#[global_allocator]
static GLOBAL: lexiflow_alloc::MiMalloc = lexiflow_alloc::MiMalloc;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn items(n: usize) -> Vec<CreateCase> {
    let statuses = [CaseStatus::Open, CaseStatus::Active, CaseStatus::Discovery, CaseStatus::Closed];
    let types = [CaseType::Civil, CaseType::Criminal, CaseType::Family, CaseType::Corporate];
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| CreateCase {
            case_number: format!("BULK-{i:07}"),
            title: format!("Matter number {i}: Someone v. Someone Else"),
            case_type: types[i % types.len()],
            status: Some(statuses[i % statuses.len()]),
            description: None,
            court: Some(format!("District Court {}", i % 50)),
            jurisdiction: Some("State".into()),
            judge: Some(format!("Hon. Judge {}", i % 30)),
            filed_at: Some(now - chrono::Duration::days((i % 700) as i64)),
            closed_at: None,
            client_name: Some(format!("Client {i}")),
            lead_attorney_id: None,
        })
        .collect()
}

/// A fresh, migrated LexiFlow on `url` (a new PostgreSQL schema, or a new SQLite file).
async fn app(url: &str, dir: &std::path::Path, schema: Option<&str>) -> App {
    let mut vars = HashMap::new();
    vars.insert("APP_ENV".to_owned(), "test".to_owned());
    vars.insert("LEXIFLOW_DATA_DIR".to_owned(), dir.display().to_string());
    vars.insert("JWT_SECRET".to_owned(), "bench-secret-that-is-long-enough-for-hs256-0123456789".to_owned());
    vars.insert("DATABASE_URL".to_owned(), url.to_owned());
    if let Ok(mib) = std::env::var("DB_SQLITE_CACHE_MIB") {
        vars.insert("DB_SQLITE_CACHE_MIB".to_owned(), mib);
    }
    let mut config = Config::from_sources(FileConfig::default(), &vars).unwrap();
    config.database.schema = schema.map(str::to_owned);
    App::build(config).await.unwrap()
}

async fn firm(app: &App) -> Principal {
    let firm = Uuid::now_v7();
    let db = &app.db;
    let now = chrono::Utc::now();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            "INSERT INTO firms (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)"
        } else {
            "INSERT INTO firms (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)"
        },
        [firm.into(), "Bench LLP".into(), now.into(), now.into()],
    ))
    .await
    .unwrap();
    Principal {
        user_id: UserId(Uuid::now_v7()),
        firm_id: FirmId(firm),
        role: Role::Admin,
        session_id: SessionId(Uuid::nil()),
        api_key: None,
    }
}

/// CPU time this process has used so far (all threads, user and system), from
/// `/proc/self/stat`: printed beside each bulk run so the time spent in our code is visible
/// apart from the time spent waiting for the database.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

async fn ours(app: &App, p: &Principal, n: usize) -> Duration {
    let items = items(n).into_iter().map(Ok).collect();
    let cpu_before = cpu();
    let started = Instant::now();
    let r = bulk::create_many(
        app,
        p,
        items,
        CreateOptions { mode: BulkMode::Atomic, on_conflict: OnConflict::Fail },
        &|_| {},
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(r.succeeded, n);
    println!("        (our process's CPU time: {:.2} s)", (cpu() - cpu_before).as_secs_f64());
    took
}

/// The same case rows as CSV, as `\copy` would load them.
fn csv(p: &Principal, n: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut w = std::io::BufWriter::new(f.as_file_mut());
    let now = chrono::Utc::now().to_rfc3339();
    for (i, c) in items(n).into_iter().enumerate() {
        let t = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        writeln!(
            w,
            "{},{},{},\"{}\",{},{},,{},{},{},{},,{},,1,{},{now},{now},",
            Uuid::now_v7(),
            p.firm_id.0,
            c.case_number,
            c.title,
            t(&serde_json::to_value(c.case_type).unwrap()),
            t(&serde_json::to_value(c.status.unwrap()).unwrap()),
            c.court.unwrap(),
            c.jurisdiction.unwrap(),
            c.judge.unwrap(),
            c.filed_at.unwrap().to_rfc3339(),
            c.client_name.unwrap(),
            p.user_id.0,
        )
        .unwrap();
        let _ = i;
    }
    w.flush().unwrap();
    drop(w);
    f
}

fn copy(pg_url: &str, schema: &str, file: &std::path::Path) -> Duration {
    let psql = env("PSQL", "psql");
    let started = Instant::now();
    let status = std::process::Command::new(psql)
        .arg(pg_url)
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(format!(
            "\\copy {schema}.cases (id, firm_id, case_number, title, case_type, status, description, court, jurisdiction, judge, filed_at, closed_at, client_name, lead_attorney_id, version, created_by, created_at, updated_at, deleted_at) FROM '{}' WITH (FORMAT csv)",
            file.display()
        ))
        .status()
        .expect("psql");
    assert!(status.success(), "\\copy failed");
    started.elapsed()
}

/// Exports `from`'s firms, cases, team members and audit entries (not timed), then times a
/// `\copy` of the last three into the same tables of a freshly migrated schema `to`.
fn copy_same_writes(pg_url: &str, from: &str, to: &str, dir: &std::path::Path) -> Duration {
    let psql = env("PSQL", "psql");
    let tables = ["firms", "cases", "case_team_members", "audit_entries"];
    let file = |t: &str| dir.join(format!("{from}-{t}.csv"));
    let run = |commands: Vec<String>| {
        let mut cmd = std::process::Command::new(&psql);
        cmd.arg(pg_url).arg("-q").arg("-v").arg("ON_ERROR_STOP=1");
        for c in commands {
            cmd.arg("-c").arg(c);
        }
        assert!(cmd.status().expect("psql").success(), "\\copy failed");
    };
    run(tables.iter().map(|t| format!("\\copy {from}.{t} TO '{}' WITH (FORMAT csv)", file(t).display())).collect());
    run(vec![format!("\\copy {to}.firms FROM '{}' WITH (FORMAT csv)", file("firms").display())]);
    // As `settle`, after the export's writes.
    run(vec!["CHECKPOINT".to_owned()]);
    std::process::Command::new("sync").status().ok();
    let started = Instant::now();
    run(tables[1..]
        .iter()
        .map(|t| format!("\\copy {to}.{t} FROM '{}' WITH (FORMAT csv)", file(t).display()))
        .collect());
    let took = started.elapsed();
    for t in tables {
        std::fs::remove_file(file(t)).ok();
    }
    took
}

/// Lets earlier rounds' writes reach the disk before a timed run: a PostgreSQL `CHECKPOINT`
/// and the kernel's `sync`. Without it, a checkpoint or writeback of 1 GB of earlier WAL
/// lands in the middle of a random round, and rounds varied by a factor of two.
async fn settle(admin: Option<&sea_orm::DatabaseConnection>) {
    if let Some(admin) = admin {
        admin.execute_unprepared("CHECKPOINT").await.unwrap();
    }
    std::process::Command::new("sync").status().ok();
}

/// Prints one measurement line and returns its rate (`n` per second).
fn rate(round: usize, what: &str, unit: &str, n: usize, took: Duration, note: &str) -> f64 {
    let r = n as f64 / took.as_secs_f64();
    println!("round {round} {what:<30} {r:>9.0} {unit}/s ({:.2} s{note})", took.as_secs_f64());
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Ours on a fresh PostgreSQL schema: the time taken, and the app, its principal and the
/// schema, which the caller drops (see [`drop_pg`]) or keeps for the report.
async fn ours_pg(
    admin: &sea_orm::DatabaseConnection,
    pg_url: &str,
    dir: &std::path::Path,
    n: usize,
) -> (Duration, App, Principal, String) {
    let schema = format!("bench_{}", Uuid::new_v4().simple());
    admin.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let a = app(pg_url, dir, Some(&schema)).await;
    let p = firm(&a).await;
    settle(Some(admin)).await;
    let took = ours(&a, &p, n).await;
    (took, a, p, schema)
}

async fn drop_pg(admin: &sea_orm::DatabaseConnection, a: App, schema: &str) {
    a.db.clone().close().await.ok();
    admin.execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

/// Ours on a fresh SQLite file `name` in `dir`.
async fn ours_sqlite(
    admin: Option<&sea_orm::DatabaseConnection>,
    dir: &std::path::Path,
    name: &str,
    n: usize,
) -> Duration {
    let file = dir.join(name);
    let l = app(&format!("sqlite://{}?mode=rwc", file.display()), dir, None).await;
    let lp = firm(&l).await;
    settle(admin).await;
    let took = ours(&l, &lp, n).await;
    l.db.clone().close().await.ok();
    took
}

/// Sends one request through the router; returns the status, the parsed body and the time
/// from sending to the last byte of the response.
async fn send(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value, Duration) {
    let mut b = http::Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = b.body(axum::body::Body::from(body)).unwrap();
    let started = Instant::now();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    let took = started.elapsed();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), took)
}

/// The import shape on a fresh database: `requests` × `per` cases through `POST
/// /cases/bulk`, each request's time printed. Returns last / first.
async fn import_shape(a: &App, label: &str, requests: usize, per: usize) -> f64 {
    let router = lexiflow::http::router::build(a.clone());
    let register = serde_json::json!({"firmName": "Import LLP", "email": "admin@import.test",
        "password": "correct horse battery staple", "firstName": "Ada", "lastName": "Admin"});
    let (status, body, _) =
        send(&router, "POST", "/api/v1/auth/register", None, register.to_string().into_bytes()).await;
    assert_eq!(status, 201, "register: {body}");
    let token = body["data"]["accessToken"].as_str().unwrap().to_owned();
    let mut times = Vec::with_capacity(requests);
    for r in 0..requests {
        let items: Vec<serde_json::Value> = items(per)
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "caseNumber": format!("IMP-{:07}", r * per + i), "title": c.title, "type": c.case_type,
                    "status": c.status, "court": c.court, "jurisdiction": c.jurisdiction, "judge": c.judge,
                    "filedAt": c.filed_at, "clientName": c.client_name,
                })
            })
            .collect();
        let body = serde_json::json!({ "items": items }).to_string().into_bytes();
        let (status, res, took) = send(&router, "POST", "/api/v1/cases/bulk", Some(&token), body).await;
        assert_eq!(status, 200, "bulk create: {res}");
        assert_eq!(res["data"]["succeeded"], per, "bulk create: {}", res["data"]["errors"]);
        println!(
            "{label:<8} import request {:>2}: {:>6.2} s ({} cases in the table after it)",
            r + 1,
            took.as_secs_f64(),
            (r + 1) * per
        );
        times.push(took.as_secs_f64());
    }
    let ratio = times[times.len() - 1] / times[0];
    println!(
        "{label:<8} import last / first = {ratio:.2}  ({})",
        if ratio <= 1.5 { "ok, <= 1.5" } else { "ABOVE LIMIT 1.5" }
    );
    ratio
}

fn main() {
    // As the `lexiflow` binary does: the allocator configured before any other thread exists
    // (THP off, freed memory returned at once), so the figures are the shipped process's.
    lexiflow_alloc::configure();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime").block_on(run());
}

async fn run() {
    let n: usize = env("N", "100000").parse().unwrap();
    let rounds: usize = env("ROUNDS", "3").parse().unwrap();
    let backends = env("BACKENDS", "postgres,sqlite");
    let (on_pg, on_lite) = (backends.contains("postgres"), backends.contains("sqlite"));
    let shapes = env("SHAPES", "bulk,import");
    let pg_url = env("PG_URL", "postgres://postgres@127.0.0.1:5432/test");
    let admin = if on_pg { Some(Database::connect(&pg_url).await.expect("PostgreSQL")) } else { None };
    let dir = tempfile::tempdir().unwrap();
    if shapes.contains("import") {
        println!("== import shape: 100000 cases in 10 requests of 10000 (POST /cases/bulk), fresh database");
        if let Some(admin) = &admin {
            let schema = format!("bench_{}", Uuid::new_v4().simple());
            admin.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.unwrap();
            let a = app(&pg_url, dir.path(), Some(&schema)).await;
            settle(Some(admin)).await;
            import_shape(&a, "postgres", 10, 10_000).await;
            drop_pg(admin, a, &schema).await;
        }
        if on_lite {
            let file = dir.path().join("import.db");
            let a = app(&format!("sqlite://{}?mode=rwc", file.display()), dir.path(), None).await;
            settle(admin.as_ref()).await;
            import_shape(&a, "sqlite", 10, 10_000).await;
            a.db.clone().close().await.ok();
        }
        if !shapes.contains("bulk") {
            return;
        }
    }
    println!("== bulk insert of {n} cases, {rounds} rounds, on {backends}");
    let (mut pg, mut pg_copy, mut pg_copy_all, mut lite) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut report_app = None;
    for round in 1..=rounds {
        if let Some(admin) = &admin {
            // Ours on PostgreSQL.
            let (took, a, p, schema) = ours_pg(admin, &pg_url, dir.path(), n).await;
            pg.push(rate(round, "postgres  lexiflow bulk", "rows", n, took, ""));

            // \copy of the same rows into an identical fresh table.
            let copy_schema = format!("bench_{}", Uuid::new_v4().simple());
            admin.execute_unprepared(&format!("CREATE SCHEMA {copy_schema}")).await.unwrap();
            let c = app(&pg_url, dir.path(), Some(&copy_schema)).await;
            let cp = firm(&c).await;
            let file = csv(&cp, n);
            settle(Some(admin)).await;
            let took = copy(&pg_url, &copy_schema, file.path());
            pg_copy.push(rate(round, "postgres  \\copy", "rows", n, took, ""));
            c.db.clone().close().await.ok();
            admin.execute_unprepared(&format!("DROP SCHEMA {copy_schema} CASCADE")).await.unwrap();

            // \copy of every row our path wrote into another fresh schema.
            let all_schema = format!("bench_{}", Uuid::new_v4().simple());
            admin.execute_unprepared(&format!("CREATE SCHEMA {all_schema}")).await.unwrap();
            let c = app(&pg_url, dir.path(), Some(&all_schema)).await;
            let took = copy_same_writes(&pg_url, &schema, &all_schema, dir.path());
            pg_copy_all.push(rate(
                round,
                "postgres  \\copy, same writes",
                "cases",
                n,
                took,
                ": cases, team members, audit entries",
            ));
            c.db.clone().close().await.ok();
            admin.execute_unprepared(&format!("DROP SCHEMA {all_schema} CASCADE")).await.unwrap();
            if round == rounds {
                report_app = Some((a, p, schema));
            } else {
                drop_pg(admin, a, &schema).await;
            }
        }
        if on_lite {
            let took = ours_sqlite(admin.as_ref(), dir.path(), &format!("bench-{round}.db"), n).await;
            lite.push(rate(round, "sqlite    lexiflow bulk", "rows", n, took, ""));
        }
    }
    // The same path with auditing off (AUDIT_TRAIL=off's switch), to show what the audit
    // entries — one per case, required of every write — cost on top of the insert itself.
    lexiflow::audit::disable_for_benchmark();
    let (mut pg_na, mut lite_na) = (Vec::new(), Vec::new());
    for round in 1..=rounds.min(2) {
        if let Some(admin) = &admin {
            let (took, a, _, schema) = ours_pg(admin, &pg_url, dir.path(), n).await;
            pg_na.push(rate(round, "postgres  bulk, no audit", "rows", n, took, ""));
            drop_pg(admin, a, &schema).await;
        }
        if on_lite {
            let took = ours_sqlite(admin.as_ref(), dir.path(), &format!("bench-na-{round}.db"), n).await;
            lite_na.push(rate(round, "sqlite    bulk, no audit", "rows", n, took, ""));
        }
    }
    println!("\n== median rows/s");
    if on_pg {
        let (pg, pg_copy, pg_copy_all, pg_na) = (median(pg), median(pg_copy), median(pg_copy_all), median(pg_na));
        println!("postgres lexiflow bulk (validated, audited) {pg:>9.0}");
        println!(
            "postgres lexiflow bulk, auditing off        {pg_na:>9.0}  (bulk path without audit / \\copy = {:.2})",
            pg_na / pg_copy
        );
        println!("postgres \\copy (ceiling)                    {pg_copy:>9.0}");
        println!(
            "postgres \\copy of the same writes           {pg_copy_all:>9.0}  (cases, team members and audit entries; \
             bulk path / this = {:.2})",
            pg / pg_copy_all
        );
        let ratio = pg / pg_copy;
        println!("postgres bulk / \\copy = {ratio:.2}  ({})", if ratio >= 0.70 { "ok" } else { "BELOW TARGET 0.70" });
    }
    if on_lite {
        let (lite, lite_na) = (median(lite), median(lite_na));
        println!("sqlite   lexiflow bulk (validated, audited) {lite:>9.0}");
        println!("sqlite   lexiflow bulk, auditing off        {lite_na:>9.0}");
        println!("sqlite rows/s {}", if lite >= 100_000.0 { "ok (>= 100,000)" } else { "BELOW TARGET 100,000" });
    }

    // The summary report over the last round's PostgreSQL cases.
    let (Some((a, p, schema)), Some(admin)) = (report_app, admin) else { return };
    let calls = 50;
    let scope = reports::Scope::of(&p);
    let started = Instant::now();
    for _ in 0..calls {
        reports::compute(&a.db, scope).await.unwrap();
    }
    let uncached = started.elapsed() / calls;
    reports::case_summary(&a, &p).await.unwrap();
    let started = Instant::now();
    for _ in 0..calls {
        reports::case_summary(&a, &p).await.unwrap();
    }
    let cached = started.elapsed() / calls;
    println!("\n== case summary report over {n} cases (postgres), mean of {calls} calls");
    println!("uncached {:>10.3} ms", uncached.as_secs_f64() * 1e3);
    println!("cached   {:>10.3} ms", cached.as_secs_f64() * 1e3);
    println!("cached is {:.0}x faster", uncached.as_secs_f64() / cached.as_secs_f64().max(1e-9));
    drop_pg(&admin, a, &schema).await;
}
