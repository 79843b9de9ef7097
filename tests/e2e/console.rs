//! The operator console in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/console/console.mjs`) against the real binary. It signs in, pauses a queue, retries
//! a dead job, verifies the audit chain, revokes a session, and finds no console errors and no
//! CSP violations; the screenshot is kept in `target/console-artifacts/`. Without Chromium or
//! `npm ci` in `tests/console` the browser part is skipped with a note, unless
//! `LEXIFLOW_REQUIRE_CHROMIUM=1` (CI sets it). The HTTP checks (non-admins refused, forged CSRF
//! refused, the API never taking the cookie) always run.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::{Value, json};

use super::{PASSWORD, Res, Server, call};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

async fn api(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Res {
    call(addr, method, path, &[("Authorization", &format!("Bearer {token}"))], body).await
}

async fn login(addr: &str, email: &str) -> Value {
    let r = call(
        addr,
        "POST",
        "/api/v1/auth/login",
        &[("X-Forwarded-For", "10.9.0.1")],
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].clone()
}

/// Signs in to the console over HTTP; returns the cookie pair and the CSRF token.
async fn console_login(addr: &str, email: &str) -> (String, String) {
    let r = call(
        addr,
        "POST",
        "/console/login",
        &[("X-Forwarded-For", "10.9.0.4")],
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/console"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, r.json()["data"]["csrfToken"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_console_works_in_a_real_browser_and_refuses_forgeries() {
    let server = Server::start(&[
        ("SHUTDOWN_DRAIN_SECONDS", "0"),
        // The test's own logins come "through a proxy" from addresses of their own, so the
        // browser's sign-in has the per-address login budget (5 a minute) to itself.
        ("TRUSTED_PROXIES", "127.0.0.1"),
        // A webhook to a port nobody listens on, one attempt: a dead job to retry.
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ("WEBHOOK_MAX_ATTEMPTS", "1"),
        ("WEBHOOK_POLL_MS", "100"),
    ]);
    let addr = server.addr.clone();
    let email = "ada@console.test";
    let r = call(
        &addr,
        "POST",
        "/api/v1/auth/register",
        &[],
        Some(json!({"firmName": "Console LLP", "email": email, "password": PASSWORD, "firstName": "Ada", "lastName": "Admin"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["data"]["accessToken"].as_str().unwrap().to_owned();
    let r = api(
        &addr,
        "POST",
        "/api/v1/webhooks",
        &token,
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["case.created"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api(
        &addr,
        "POST",
        "/api/v1/cases",
        &token,
        Some(json!({"caseNumber": "CON-1", "title": "Console", "type": "civil"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Wait for the delivery to die.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dead_job = loop {
        let r = api(&addr, "GET", "/api/v1/admin/queues/webhooks/jobs?state=dead", &token, None).await;
        if let Some(id) = r.json()["data"][0]["id"].as_i64() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no dead job appeared: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A second session of the admin, for the console to revoke; and a paralegal.
    let other = login(&addr, email).await;
    let other_token = other["accessToken"].as_str().unwrap().to_owned();
    let sessions = api(&addr, "GET", "/api/v1/auth/sessions", &other_token, None).await;
    let other_session =
        sessions.json()["data"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let r = api(
        &addr,
        "POST",
        "/api/v1/users",
        &token,
        Some(json!({"email": "pat@console.test", "firstName": "Pat", "lastName": "Para", "role": "paralegal", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // A non-admin cannot sign in, and the session their login opened is ended.
    let r = call(
        &addr,
        "POST",
        "/console/login",
        &[("X-Forwarded-For", "10.9.0.2")],
        Some(json!({"email": "pat@console.test", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    // Wrong password: the API's answer, no cookie.
    let r = call(
        &addr,
        "POST",
        "/console/login",
        &[("X-Forwarded-For", "10.9.0.3")],
        Some(json!({"email": email, "password": "wrong wrong wrong"})),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("set-cookie").is_none());

    let (cookie, csrf) = console_login(&addr, email).await;
    let pause = "/console/api/v1/admin/queues/reports/pause";
    // Forged: the cookie alone, a wrong token, or another site's Origin.
    let r = call(&addr, "POST", pause, &[("Cookie", &cookie)], None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&addr, "POST", pause, &[("Cookie", &cookie), ("X-CSRF-Token", "AAAA")], None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        &addr,
        "POST",
        pause,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&addr, "GET", "/console/api/v1/admin/queues", &[], None).await;
    assert_eq!(r.status, 401, "no cookie: {}", r.body);
    let queues = api(&addr, "GET", "/api/v1/admin/queues", &token, None).await;
    assert!(
        queues.json()["data"].as_array().unwrap().iter().all(|q| q["paused"] == false),
        "a forged request paused a queue"
    );
    // The API never takes the console's cookie.
    let r = call(&addr, "GET", "/api/v1/auth/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // With the token, the console reaches the API's routes; the page has its strict CSP.
    let r =
        call(&addr, "GET", "/console/api/v1/admin/queues", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Behind a proxy: the Origin names the public host the proxy forwarded.
    for action in ["pause", "resume"] {
        let r = call(
            &addr,
            "POST",
            &format!("/console/api/v1/admin/queues/reports/{action}"),
            &[
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Origin", "https://lexiflow.example"),
                ("X-Forwarded-Host", "lexiflow.example"),
            ],
            None,
        )
        .await;
        assert_eq!(r.status, 204, "{action}: {}", r.body);
    }
    let r = call(&addr, "GET", "/console/live", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["intervalSeconds"], 10);
    // Signing in again with the old cookie ends the old cookie's session.
    let r = call(
        &addr,
        "POST",
        "/console/login",
        &[("Cookie", &cookie), ("X-Forwarded-For", "10.9.0.5")],
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&addr, "GET", "/console/session", &[("Cookie", &cookie)], None).await;
    assert_eq!(r.status, 204, "the previous console session still works: {}", r.body);
    let page = call(&addr, "GET", "/console", &[], None).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // The browser.
    let Some(chromium) = chromium().filter(|_| driver_dir().join("node_modules/playwright-core").is_dir()) else {
        assert_ne!(
            std::env::var("LEXIFLOW_REQUIRE_CHROMIUM").as_deref(),
            Ok("1"),
            "Chromium and tests/console/node_modules are required (LEXIFLOW_REQUIRE_CHROMIUM=1)"
        );
        eprintln!("note: skipping the console's browser test: install chromium and run `npm ci` in tests/console");
        return;
    };
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../console-artifacts");
    let out = tokio::task::spawn_blocking({
        let (addr, artifacts) = (addr.clone(), artifacts.clone());
        let (dead_job, other_session) = (dead_job.to_string(), other_session.clone());
        move || {
            Command::new("node")
                .arg(driver_dir().join("console.mjs"))
                .current_dir(driver_dir())
                .env("LEXIFLOW_URL", format!("http://{addr}"))
                .env("ADMIN_EMAIL", email)
                .env("ADMIN_PASSWORD", PASSWORD)
                .env("QUEUE", "webhooks")
                .env("DEAD_JOB", dead_job)
                .env("REVOKE_SESSION", other_session)
                .env("ARTIFACTS", artifacts)
                .env("CHROMIUM", chromium)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    assert!(
        out.status.success() && report["ok"] == true,
        "the browser run failed: {report}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.output()
    );
    assert_eq!(report["consoleErrors"], json!([]), "console errors: {report}");
    assert_eq!(report["csp"], json!([]), "CSP violations: {report}");
    assert!(report["audit"].as_str().unwrap().starts_with("valid"), "{report}");
    assert!(artifacts.join("console.png").metadata().unwrap().len() > 10_000, "no screenshot");

    // What the browser did happened, and was audited as the same API actions are.
    let r = api(&addr, "GET", "/api/v1/auth/me", &other_token, None).await;
    assert_eq!(r.status, 401, "the revoked session still works: {}", r.body);
    let audit = api(&addr, "GET", "/api/v1/audit?limit=100", &token, None).await;
    let audit = audit.json();
    let actions: Vec<&str> = audit["data"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["queue.pause", "queue.resume", "job.retry", "auth.session_revoked"] {
        assert!(actions.contains(&action), "{action} not audited: {actions:?}");
    }
}
