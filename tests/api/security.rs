//! The security layer: headers on every response, hostile input, rate limits (in process and
//! shared through Redis, surviving Redis going away), the brute-force defence, body limits
//! and the request deadline.

use std::time::Duration;

use futures_util::StreamExt;
use http::{Method, Request};
use lexiflow::ratelimit::Quota;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

use crate::support::{Backend, PASSWORD, Res, TestApp, redis_available, redis_url};

crate::on_both_backends!(
    security_headers_are_on_200_401_404_and_429,
    hostile_strings_round_trip_or_are_defused_and_the_database_stays_intact,
    the_101st_request_in_a_window_is_refused_with_headers,
    the_window_slides_instead_of_resetting,
    anonymous_clients_are_limited_by_address_and_users_by_identity,
    login_is_limited_per_address_and_per_email,
    failures_from_other_addresses_never_keep_the_owner_out_but_slow_guessing,
    an_anonymous_refresh_never_takes_the_write_lock,
    forwarded_for_is_believed_only_from_trusted_proxies,
    repeated_failures_lock_the_account_even_for_the_right_password,
    login_failure_records_are_forgotten_a_day_after_the_last_failure,
    deeply_nested_json_is_refused,
    a_slow_body_ends_in_408_not_a_hang,
);

const SECURITY_HEADERS: &[&str] = &[
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "permissions-policy",
    "cache-control",
];

#[track_caller]
fn assert_security_headers(res: &Res) {
    for h in SECURITY_HEADERS {
        assert!(res.header(h).is_some(), "{h} missing on a {} response: {:?}", res.status, res.headers);
    }
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert!(res.header("server").is_none());
    assert!(res.header("x-powered-by").is_none());
    assert!(res.header("x-correlation-id").is_some());
}

async fn security_headers_are_on_200_401_404_and_429(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.throttle.global = Quota::per_seconds(3, 60);
        c.security.hsts_max_age = Some(31_536_000);
    })
    .await;
    let s = t.register("Firm").await;
    let ok = t.get("/api/v1/auth/me", &s.token).await;
    ok.expect(200);
    assert_security_headers(&ok);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(ok.header("strict-transport-security"), Some("max-age=31536000; includeSubDomains"));
    let csp = ok.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    let unauth = t.call(Method::GET, "/api/v1/cases", None, None).await;
    unauth.expect(401);
    assert_security_headers(&unauth);
    let missing = t.get("/api/v1/nothing-here", &s.token).await;
    missing.expect(404);
    assert_security_headers(&missing);
    let mut refused = None;
    for _ in 0..5 {
        let r = t.get("/api/v1/auth/me", &s.token).await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the global limit of 3 never refused");
    assert_security_headers(&refused);
    assert_eq!(refused.code(), "RATE_LIMIT_EXCEEDED");

    // The documentation gets its own, looser policy so Swagger UI can run, and no more.
    let docs = t.call(Method::GET, "/api/docs/", None, None).await;
    docs.expect(200);
    for h in SECURITY_HEADERS {
        assert!(docs.header(h).is_some(), "{h} missing on /api/docs/");
    }
    let docs_csp = docs.header("content-security-policy").unwrap();
    assert!(docs_csp.contains("script-src 'self'") && docs_csp.contains("frame-ancestors 'none'"), "{docs_csp}");
    assert!(!docs_csp.contains("unsafe-eval") && !docs_csp.contains("script-src 'self' 'unsafe-inline'"));
}

/// Hostile strings: markup and script, SQL, template and path tricks, Unicode oddities,
/// control characters and very long values — each also in several framings. Over 300 in all.
fn hostile_corpus() -> Vec<String> {
    let base: Vec<String> = [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
        "<img src=x onerror=alert(1)>",
        "<img src=\"javascript:alert('x')\">",
        "<svg/onload=alert(1)>",
        "<svg><script>alert(1)</script></svg>",
        "<iframe src=\"javascript:alert(1)\"></iframe>",
        "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
        "<a href=\"javascript:alert(1)\">click</a>",
        "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
        "<a href=\"java\tscript:alert(1)\">x</a>",
        "<a href=\"&#106;avascript:alert(1)\">x</a>",
        "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
        "<a href=\"vbscript:msgbox(1)\">x</a>",
        "<a href=\"https://court.example/doc\" onclick=\"steal()\">docket</a>",
        "<p style=\"background:url(javascript:alert(1))\">x</p>",
        "<div style=\"width: expression(alert(1))\">x</div>",
        "<body onload=alert(1)>",
        "<object data=\"javascript:alert(1)\"></object>",
        "<embed src=\"javascript:alert(1)\">",
        "<form action=\"https://evil.example\"><input name=p></form>",
        "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
        "<link rel=stylesheet href=\"https://evil.example/x.css\">",
        "<base href=\"https://evil.example/\">",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
        "<details open ontoggle=alert(1)>",
        "<video><source onerror=\"alert(1)\">",
        "<marquee onstart=alert(1)>x</marquee>",
        "\"><script>alert(document.cookie)</script>",
        "'><img src=x onerror=alert(1)>",
        "</textarea><script>alert(1)</script>",
        "<!--<script>alert(1)</script>-->",
        "<![CDATA[<script>alert(1)</script>]]>",
        "<scr<script>ipt>alert(1)</scr</script>ipt>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "{{constructor.constructor('alert(1)')()}}",
        "${7*7} #{7*7} <%= 7*7 %>",
        "Smith & Wesson v. O'Brien; DROP TABLE cases;--",
        "Robert'); DROP TABLE users;--",
        "' OR '1'='1",
        "' OR 1=1 --",
        "1; DELETE FROM cases WHERE 1=1",
        "admin'--",
        "' UNION SELECT password_hash FROM users--",
        "\\'; SELECT pg_sleep(5);--",
        "1' AND SLEEP(5)#",
        "%' OR '%'='",
        "'; EXEC xp_cmdshell('dir');--",
        "DROP-OFF SCHEDULE",
        "../../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "file:///etc/passwd",
        "$(rm -rf /)",
        "`id`",
        "| cat /etc/shadow",
        "Müller GmbH ./. Société Générale — § 1983",
        "Ζεύς v. Ἥρα",
        "日本語の訴訟 第一審",
        "محكمة النقض",
        "עורך דין",
        "emoji ⚖️👩‍⚖️🏛️",
        "Cafe\u{301} (decomposed)",
        "\u{202E}gnp.exe\u{202C}",
        "zero\u{200B}width\u{200D}joiners",
        "\u{FEFF}BOM at start",
        "tab\tand\nnewline",
        "nul\u{0}byte",
        "bell\u{7}and\u{1B}[31mescape",
        "carriage\rreturn",
        "\u{FFFD} replacement",
        "Z̸̢̛a̷l̵g̴o̶ ̸t̷e̵x̴t̶",
        "𝕳𝖊𝖑𝖑𝖔 mathematical",
        "\u{1F600}\u{1F601}\u{1F602}",
        "null",
        "undefined",
        "NaN",
        "true",
        "[object Object]",
        "__proto__",
        "{\"$gt\": \"\"}",
        "%s%s%s%n",
        "\\u003cscript\\u003e",
        "<<SCRIPT>alert(\"XSS\");//<</SCRIPT>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut out = Vec::new();
    for s in &base {
        out.push(s.clone());
        out.push(format!("Re: {s} — filed 2026-01-15"));
        out.push(format!("{s}{s}"));
        out.push(s.to_uppercase());
    }
    for n in [499usize, 500, 501, 5_000] {
        out.push("A".repeat(n));
        out.push("ß".repeat(n));
    }
    out.push("<b>".repeat(2_000));
    out.push(" ".to_string());
    out.push("\u{0}\u{1}\u{2}".to_string());
    out
}

/// Plain-text hygiene as the blueprint states it, computed independently of the server.
fn expected_plain(s: &str) -> String {
    s.nfc().filter(|c| !c.is_control() || *c == '\t' || *c == '\n').collect()
}

/// Every tag in `html` is on the allowlist, carries only harmless attributes, and every link
/// is http(s) or mailto. Text is escaped by the cleaner, so any literal `<` starts a tag.
#[track_caller]
fn assert_not_executable(html: &str, input: &str) {
    // The allowlist the product promises (input.rs); anything else surviving is a failure.
    const TAGS: &[&str] = lexiflow::input::RICH_TEXT_TAGS;
    let bytes = html.as_bytes();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off + 1;
        let mut j = start;
        let mut quoted = false;
        while j < bytes.len() && (quoted || bytes[j] != b'>') {
            if bytes[j] == b'"' {
                quoted = !quoted;
            }
            j += 1;
        }
        let tag = &html[start..j];
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        assert!(TAGS.contains(&name.to_lowercase().as_str()), "tag <{tag}> survived from {input:?}: {html}");
        // Attributes: name="value" pairs.
        let mut rest = tag[tag.find(' ').unwrap_or(tag.len())..].trim();
        while !rest.is_empty() {
            let eq = rest.find('=').unwrap_or(rest.len());
            let attr = rest[..eq].trim().to_lowercase();
            assert!(["href", "title", "rel"].contains(&attr.as_str()), "attribute {attr} survived in {html}");
            let after = rest[eq..].trim_start_matches('=').trim_start();
            let (value, next) = match after.strip_prefix('"') {
                Some(v) => {
                    let end = v.find('"').unwrap_or(v.len());
                    (&v[..end], v.get(end + 1..).unwrap_or(""))
                }
                None => (after.split(' ').next().unwrap_or(""), after.split_once(' ').map(|x| x.1).unwrap_or("")),
            };
            if attr == "href" {
                let v = value.replace("&amp;", "&").trim().to_lowercase();
                assert!(
                    v.starts_with("http://") || v.starts_with("https://") || v.starts_with("mailto:"),
                    "href {value} survived from {input:?}"
                );
            }
            rest = next.trim();
        }
        i = j.min(bytes.len());
    }
}

async fn hostile_strings_round_trip_or_are_defused_and_the_database_stays_intact(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let corpus = hostile_corpus();
    assert!(corpus.len() >= 300, "only {} hostile strings", corpus.len());
    let host = t.case(&s, "HOST-0").await;
    let mut created = 1;
    for (i, input) in corpus.iter().enumerate() {
        let title = expected_plain(input);
        let mut body = json!({"caseNumber": format!("H-{i}"), "title": input, "type": "civil", "description": input});
        if input.chars().count() <= 200 {
            body["court"] = json!(input);
        }
        let res = t.post("/api/v1/cases", &s.token, body).await;
        if title.trim().is_empty() || title.chars().count() > 500 {
            res.expect(400);
            assert_eq!(res.code(), "VALIDATION_FAILED");
            continue;
        }
        res.expect(201);
        created += 1;
        let d = res.data();
        assert_eq!(d["title"], Value::String(title.clone()), "title of {input:?}");
        let got = t.get(&format!("/api/v1/cases/{}", d["id"].as_str().unwrap()), &s.token).await;
        assert_eq!(got.data()["title"], Value::String(title.clone()), "stored title of {input:?}");
        if input.chars().count() <= 200 {
            assert_eq!(got.data()["court"], Value::String(title.clone()), "court of {input:?}");
        }
        if let Some(html) = got.data()["description"].as_str() {
            assert_not_executable(html, input);
        }
        // The same through a party: plain name, rich notes.
        let p = t
            .post(
                &format!("/api/v1/cases/{host}/parties"),
                &s.token,
                json!({"name": input, "kind": "individual", "type": "witness", "notes": input}),
            )
            .await;
        if title.chars().count() <= 300 {
            p.expect(201);
            assert_eq!(p.data()["name"], Value::String(title.clone()));
            if let Some(html) = p.data()["notes"].as_str() {
                assert_not_executable(html, input);
            }
        }
    }
    // Legal text survives byte for byte.
    let legal = "Smith & Wesson v. O'Brien; DROP TABLE cases;--";
    let list = t.get("/api/v1/cases?q=wesson&limit=100", &s.token).await;
    assert!(list.data().as_array().unwrap().iter().any(|c| c["title"] == legal));
    // Every table is still there and holds exactly what the API accepted.
    let n = t.sql("SELECT COUNT(*) AS n FROM cases").await;
    assert_eq!(n[0].try_get::<i64>("", "n").unwrap(), created);
    assert_eq!(t.sql("SELECT COUNT(*) AS n FROM users").await[0].try_get::<i64>("", "n").unwrap(), 1);
    assert_eq!(t.sql("SELECT COUNT(*) AS n FROM firms").await[0].try_get::<i64>("", "n").unwrap(), 1);
}

async fn the_101st_request_in_a_window_is_refused_with_headers(b: Backend) {
    let t = TestApp::with(b, |c| c.throttle.global = Quota::per_seconds(100, 60)).await;
    let s = t.register("Firm").await;
    for i in 0..100 {
        let r = t.get("/api/v1/auth/me", &s.token).await;
        r.expect(200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some((99 - i).to_string().as_str()));
        assert!(r.header("x-ratelimit-reset").is_some());
        assert!(r.header("ratelimit").unwrap().starts_with("\"global\";r="));
        assert_eq!(r.header("ratelimit-policy"), Some("\"global\";q=100;w=60"));
    }
    let r = t.get("/api/v1/auth/me", &s.token).await;
    r.expect(429);
    assert_eq!(r.code(), "RATE_LIMIT_EXCEEDED");
    assert_eq!(r.body["error"]["retryable"], true);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    // Probes are exempt.
    t.call(Method::GET, "/health/liveness", None, None).await.expect(200);
}

async fn the_window_slides_instead_of_resetting(b: Backend) {
    let t = TestApp::with(b, |c| c.throttle.global = Quota { limit: 5, period: Duration::from_millis(1_000) }).await;
    let s = t.register("Firm").await;
    let mut allowed = 0;
    while t.get("/api/v1/auth/me", &s.token).await.status == 200 {
        allowed += 1;
        assert!(allowed <= 5);
    }
    // One emission interval (200 ms) later, one request fits — not a whole fresh window.
    tokio::time::sleep(Duration::from_millis(260)).await;
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
    t.get("/api/v1/auth/me", &s.token).await.expect(429);
}

async fn anonymous_clients_are_limited_by_address_and_users_by_identity(b: Backend) {
    let t = TestApp::with(b, |c| c.throttle.global = Quota::per_seconds(3, 60)).await;
    let s = t.register("Firm").await;
    for _ in 0..3 {
        t.call_from("198.51.100.1", Method::GET, "/api/v1/cases", None, None, &[]).await.expect(401);
    }
    t.call_from("198.51.100.1", Method::GET, "/api/v1/cases", None, None, &[]).await.expect(429);
    // Another address has its own budget; a user has theirs wherever they come from.
    t.call_from("198.51.100.2", Method::GET, "/api/v1/cases", None, None, &[]).await.expect(401);
    t.call_from("198.51.100.1", Method::GET, "/api/v1/cases", Some(&s.token), None, &[]).await.expect(200);
    // A forged token does not buy a fresh budget: it counts against the address.
    t.call_from("198.51.100.1", Method::GET, "/api/v1/cases", Some("forged.token.value"), None, &[]).await.expect(429);
}

async fn login_is_limited_per_address_and_per_email(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.throttle.login_ip = Quota::per_seconds(5, 60);
        c.throttle.login_email = Quota::per_seconds(5, 60);
    })
    .await;
    let s = t.register("Firm").await;
    let body = |email: &str| Some(json!({"email": email, "password": "wrong password here"}));
    // One address tries one account five times: the sixth attempt is refused.
    for _ in 0..5 {
        t.call_from("203.0.113.1", Method::POST, "/api/v1/auth/login", None, body(&s.email), &[]).await.expect(401);
    }
    let r = t.call_from("203.0.113.1", Method::POST, "/api/v1/auth/login", None, body(&s.email), &[]).await;
    r.expect(429);
    assert!(r.header("retry-after").is_some());
    // Other addresses trying the same account have budgets of their own: the owner is never
    // refused because someone else failed.
    let owner = Some(json!({"email": s.email, "password": PASSWORD}));
    t.call_from("203.0.113.99", Method::POST, "/api/v1/auth/login", None, owner, &[]).await.expect(200);
    // One address tries five accounts: the sixth is refused.
    for i in 0..5 {
        t.call_from("192.0.2.7", Method::POST, "/api/v1/auth/login", None, body(&format!("u{i}@x.test")), &[])
            .await
            .expect(401);
    }
    let r = t.call_from("192.0.2.7", Method::POST, "/api/v1/auth/login", None, body("other@x.test"), &[]).await;
    r.expect(429);
    assert_eq!(r.body["error"]["details"]["policy"], "login");
}

/// Someone who knows a user's e-mail address fails on purpose, from one address and then from
/// many: the owner, from their own address, still logs in with the right password; each
/// guessing address is locked out of the account on its own; and every attempt on the
/// account, from any address, waits once the account has seen failures (guessing stays
/// slow however many addresses take part).
async fn failures_from_other_addresses_never_keep_the_owner_out_but_slow_guessing(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.security.lockout.threshold = 3;
        c.security.lockout.slowdown_after = 3;
        c.security.lockout.slowdown_base = Duration::from_millis(300);
        c.security.lockout.slowdown_max = Duration::from_millis(300);
        c.throttle.login_ip = Quota::per_seconds(1_000, 60);
        c.throttle.login_email = Quota::per_seconds(1_000, 60);
    })
    .await;
    let admin = t.register("Firm").await;
    let victim = t.user(&admin, "attorney").await;
    let try_login = |peer: &'static str, password: &'static str| {
        let (t, email) = (&t, victim.email.clone());
        async move {
            let body = Some(json!({"email": email, "password": password}));
            let started = std::time::Instant::now();
            let r = t.call_from(peer, Method::POST, "/api/v1/auth/login", None, body, &[]).await;
            (r, started.elapsed())
        }
    };
    for _ in 0..3 {
        try_login("198.51.100.66", "a wrong guess at it").await.0.expect(401);
    }
    // The guessing address is locked out, even with the right password...
    try_login("198.51.100.66", PASSWORD).await.0.expect(401);
    // ...the owner is not, though their attempt waits like every attempt on the account now.
    let (r, took) = try_login("192.0.2.10", PASSWORD).await;
    r.expect(200);
    assert!(took >= Duration::from_millis(300), "attempts on an attacked account are slowed ({took:?})");
    // Success cleared the counts; a spread-out guess from fresh addresses is slowed again
    // once the account has three failures, whichever addresses they came from.
    for peer in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        try_login(peer, "another wrong guess").await.0.expect(401);
    }
    let (r, took) = try_login("203.0.113.4", "and yet another guess").await;
    r.expect(401);
    assert!(took >= Duration::from_millis(300), "guesses from new addresses are slowed ({took:?})");
    // None of those addresses reached the lock threshold on its own: the owner is fine.
    try_login("192.0.2.10", PASSWORD).await.0.expect(200);
}

/// `POST /auth/refresh` with a token nobody was ever given answers 401 without waiting for
/// the database's write lock, which a long write holds meanwhile: an anonymous caller never
/// takes (or queues for) the write lock.
async fn an_anonymous_refresh_never_takes_the_write_lock(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let db = t.app.db.clone();
    let firm = s.firm_id.clone();
    let writer = tokio::spawn(async move {
        let mut held = Some(held);
        let mut started = Some(started);
        lexiflow::db::transaction(&db, lexiflow::db::TxOptions::write(), |tx| {
            let (held, started) = (held.take(), started.take());
            let firm = firm.clone();
            async move {
                // A write (so PostgreSQL holds a row lock too), then hold the transaction open.
                sea_orm::ConnectionTrait::execute_unprepared(
                    &tx,
                    &format!("UPDATE firms SET name = name WHERE id = '{firm}'"),
                )
                .await?;
                if let Some(s) = started {
                    let _ = s.send(());
                }
                if let Some(h) = held {
                    let _ = h.await;
                }
                Ok::<_, lexiflow::http::error::ApiError>(())
            }
        })
        .await
        .map(|done| done.value)
    });
    running.await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        t.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refreshToken": "made-up-token-0123456789"}))),
    )
    .await
    .expect("an anonymous refresh waited for the write lock");
    r.expect(401);
    release.send(()).unwrap();
    writer.await.unwrap().unwrap();
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.throttle.global = Quota::per_seconds(2, 60);
        c.security.trusted_proxies = vec![lexiflow::http::client_ip::Cidr::parse("10.0.0.0/8").unwrap()];
    })
    .await;
    let get = |peer: &'static str, xff: &'static str| {
        let t = &t;
        async move { t.call_from(peer, Method::GET, "/api/v1/cases", None, None, &[("x-forwarded-for", xff)]).await }
    };
    // Through the trusted proxy, each forwarded client has its own budget.
    for _ in 0..2 {
        get("10.0.0.1", "198.51.100.10").await.expect(401);
    }
    get("10.0.0.1", "198.51.100.10").await.expect(429);
    get("10.0.0.1", "198.51.100.11").await.expect(401);
    // From an untrusted peer the header is ignored: rotating it buys nothing.
    get("203.0.113.5", "1.1.1.1").await.expect(401);
    get("203.0.113.5", "2.2.2.2").await.expect(401);
    get("203.0.113.5", "3.3.3.3").await.expect(429);
}

/// Failure records — of addresses with or without an account — are deleted a day after their
/// last failure, unless a lock is still running (the hourly `auth.login_attempts.prune` job).
async fn login_failure_records_are_forgotten_a_day_after_the_last_failure(b: Backend) {
    use lexiflow::auth::{model::login_attempt, ops::prune_login_attempts};
    use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
    let t = TestApp::new(b).await;
    // A failure through the API, for an address that has no account, makes a row.
    let res = t
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "Nobody@Nowhere.test", "password": "not the password"})),
        )
        .await;
    res.expect(401);
    let now = lexiflow::clock::now();
    let h = chrono::TimeDelta::hours;
    let row = |email: &str, failures: i32, locked: Option<chrono::TimeDelta>, last: chrono::TimeDelta| {
        login_attempt::ActiveModel {
            email: Set(email.to_owned()),
            failures: Set(failures),
            locked_until: Set(locked.map(|d| now + d)),
            last_failure_at: Set(now - last),
        }
    };
    login_attempt::Entity::insert_many([
        row("stale@firm.test", 3, None, h(25)),
        row("lock-ended@firm.test", 0, Some(-h(23)), h(25)),
        row("still-locked@firm.test", 0, Some(h(1)), h(48)),
        row("recent@firm.test", 2, None, h(1)),
    ])
    .exec(&t.app.db)
    .await
    .unwrap();
    assert_eq!(prune_login_attempts(&t.app.db, now).await.unwrap(), 2);
    let kept: Vec<String> = login_attempt::Entity::find()
        .order_by_asc(login_attempt::Column::Email)
        .all(&t.app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.email)
        .collect();
    assert_eq!(kept, ["nobody@nowhere.test", "nobody@nowhere.test|-", "recent@firm.test", "still-locked@firm.test"]);
    assert_eq!(prune_login_attempts(&t.app.db, now).await.unwrap(), 0, "a second run finds nothing");
    // A day on, every lock has ended and every failure is old: all are forgotten.
    assert_eq!(prune_login_attempts(&t.app.db, now + h(25)).await.unwrap(), 4);
}

async fn repeated_failures_lock_the_account_even_for_the_right_password(b: Backend) {
    let t = TestApp::with(b, |c| c.security.lockout.threshold = 4).await;
    let admin = t.register("Firm").await;
    let victim = t.user(&admin, "attorney").await;
    let login = |password: &'static str| {
        let t = &t;
        let email = victim.email.clone();
        async move {
            t.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await
        }
    };
    for _ in 0..4 {
        let r = login("not the password at all").await;
        r.expect(401);
        assert_eq!(r.code(), "AUTH_INVALID_CREDENTIALS");
    }
    // Locked: the right password gets exactly the answer a wrong one gets.
    let r = login(PASSWORD).await;
    r.expect(401);
    assert_eq!(r.code(), "AUTH_INVALID_CREDENTIALS");
    let wrong = login("still not the password").await;
    assert_eq!(r.body["error"]["message"], wrong.body["error"]["message"]);
    // Another firm's user whose address is a LIKE pattern: their lock and their unlock reach
    // no one else's records.
    let other = t.register("Other firm").await;
    let wild = t
        .post(
            "/api/v1/users",
            &other.token,
            json!({"email": "%@%.%", "firstName": "W", "lastName": "C", "role": "staff", "password": PASSWORD}),
        )
        .await;
    let wild_id = wild.expect(201).data()["id"].as_str().unwrap().to_owned();
    let theirs = t.get("/api/v1/users?limit=100", &other.token).await;
    let row = theirs.data().as_array().unwrap().iter().find(|u| u["id"] == wild_id.as_str()).unwrap().clone();
    assert!(row["lockedUntil"].is_null(), "another firm's lock shows through: {row}");
    let r = t.patch(&format!("/api/v1/users/{wild_id}"), &other.token, json!({"unlock": true})).await;
    r.expect(200);
    login(PASSWORD).await.expect(401);
    // The admin sees the lock and its end, and can lift it.
    let users = t.get("/api/v1/users?limit=100", &admin.token).await;
    let row = users.data().as_array().unwrap().iter().find(|u| u["id"] == victim.user_id.as_str()).unwrap().clone();
    assert!(row["lockedUntil"].is_string(), "{row}");
    let admin_row =
        users.data().as_array().unwrap().iter().find(|u| u["id"] == admin.user_id.as_str()).unwrap().clone();
    assert!(admin_row["lockedUntil"].is_null());
    let unlocked = t.patch(&format!("/api/v1/users/{}", victim.user_id), &admin.token, json!({"unlock": true})).await;
    unlocked.expect(200);
    assert!(unlocked.data()["lockedUntil"].is_null());
    login(PASSWORD).await.expect(200);
    // Unknown addresses are counted and locked the same way, so a lock reveals nothing.
    for _ in 0..5 {
        login_as(&t, "nobody@nowhere.test").await.expect(401);
    }
    let rows = t.sql("SELECT locked_until FROM login_attempts WHERE email = 'nobody@nowhere.test'").await;
    assert_eq!(rows.len(), 1);
}

async fn login_as(t: &TestApp, email: &str) -> Res {
    t.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": "whatever it is"}))).await
}

async fn deeply_nested_json_is_refused(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Firm").await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let body = format!(r#"{{"caseNumber":"N-1","title":"x","type":"civil","description":{deep}}}"#);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/cases")
        .header("authorization", format!("Bearer {}", s.token))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let r = t.send(req).await;
    r.expect(400);
    assert_eq!(r.code(), "VALIDATION_FAILED");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("nested"));
    assert_eq!(t.sql("SELECT COUNT(*) AS n FROM cases").await[0].try_get::<i64>("", "n").unwrap(), 0);
}

async fn a_slow_body_ends_in_408_not_a_hang(b: Backend) {
    let t = TestApp::with(b, |c| c.security.request_timeout = Duration::from_millis(300)).await;
    let s = t.register("Firm").await;
    // One chunk arrives, then the client goes quiet.
    let stream =
        futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"caseNumber\":"))])
            .chain(futures_util::stream::pending());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/cases")
        .header("authorization", format!("Bearer {}", s.token))
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(stream))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), t.send(req)).await.expect("the server hung");
    r.expect(408);
    assert_eq!(r.code(), "REQUEST_TIMEOUT");
    assert_security_headers(&r);
}

// --- Redis: one budget across instances, and surviving its loss -----------------------------

/// Two app instances on one Redis share the global budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_the_budget() {
    if !redis_available() {
        return;
    }
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let setup = |c: &mut lexiflow::config::Config| {
        c.redis_url = Some(redis_url().into());
        c.redis_prefix = prefix.clone();
        c.throttle.global = Quota::per_seconds(10, 60);
    };
    let a = TestApp::with(Backend::Sqlite, setup).await;
    let b = TestApp::with(Backend::Sqlite, setup).await;
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app.call_from("198.51.100.20", Method::GET, "/api/v1/cases", None, None, &[]).await;
        r.expect(401);
        assert_eq!(r.header("x-ratelimit-remaining"), Some((9 - i).to_string().as_str()), "request {i}");
    }
    a.call_from("198.51.100.20", Method::GET, "/api/v1/cases", None, None, &[]).await.expect(429);
    b.call_from("198.51.100.20", Method::GET, "/api/v1/cases", None, None, &[]).await.expect(429);
    assert!(!a.app.limiter.degraded());
}

/// A Redis server of the test's own, on a free port, that the test can kill and restart.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    /// A private Redis for a test, or None when Redis tests are skipped here (they fail
    /// instead when required and `redis-server` cannot be started).
    fn for_test() -> Option<Self> {
        if !redis_available() {
            return None;
        }
        let own = Self::start(None);
        assert!(
            own.is_some() || std::env::var("LEXIFLOW_REQUIRE_REDIS").is_err(),
            "redis-server could not be started, and Redis tests are required"
        );
        own
    }

    fn start(port: Option<u16>) -> Option<Self> {
        let port = port.unwrap_or_else(crate::ports::free_port);
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { port, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first requests after Redis dies do not wait on it: 20 sequential `GET /cases` (rate
/// limit, cached list total, session check — each a Redis call while it was up) each answer
/// within the 200 ms the reliability goal allows, the very first included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_waits_long_on_a_dead_redis() {
    let Some(mut redis) = OwnRedis::for_test() else { return };
    let port = redis.port;
    let t = TestApp::with(Backend::Sqlite, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}").into());
        c.throttle.global = Quota::per_seconds(1_000, 60);
    })
    .await;
    let s = t.register("Firm").await;
    for _ in 0..5 {
        t.get("/api/v1/cases", &s.token).await.expect(200);
    }
    redis.kill();
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        t.get("/api/v1/cases", &s.token).await.expect(200);
        times.push(started.elapsed());
    }
    let slowest = times.iter().max().copied().unwrap_or_default();
    assert!(slowest <= Duration::from_millis(200), "requests waited on the dead Redis: {times:?}");
}

/// Instance A revokes a session while Redis is down, so instance B cannot hear it; when Redis
/// is back, B's bus subscription returns and B drops every checked session (and cached copy),
/// so the revoked session stops working there at once rather than after its cache lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_forget_cached_sessions_when_the_bus_comes_back() {
    let Some(mut redis) = OwnRedis::for_test() else { return };
    let port = redis.port;
    let a = TestApp::with(Backend::Sqlite, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}").into());
        c.auth_cache_ttl = Duration::from_secs(120);
        // The outbox tail would also bring A's revocation to B (see the events tests): off,
        // so this tests the bus alone.
        c.events.tail_every = Duration::ZERO;
    })
    .await;
    let b = a.sibling().await;
    let s = a.register("Firm").await;
    // Let both subscriptions come up, then B checks (and caches) the session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.get("/api/v1/auth/me", &s.token).await.expect(200);
    redis.kill();
    a.call(Method::POST, "/api/v1/auth/logout", Some(&s.token), None).await.expect(204);
    a.get("/api/v1/auth/me", &s.token).await.expect(401);
    b.get("/api/v1/auth/me", &s.token).await.expect(200); // B could not hear it: cached
    // Longer than A's retries of the eviction message, which then gives up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _back = OwnRedis::start(Some(port)).expect("redis-server restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let r = b.get("/api/v1/auth/me", &s.token).await;
        if r.status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B kept honouring a revoked session after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_mid_run_does_not_take_the_api_down() {
    let Some(mut redis) = OwnRedis::for_test() else { return };
    let port = redis.port;
    let t = TestApp::with(Backend::Sqlite, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}").into());
        c.throttle.global = Quota::per_seconds(1_000, 60);
        c.redis_breaker.cool_down = Duration::from_millis(300);
    })
    .await;
    let s = t.register("Firm").await;
    t.get("/api/v1/auth/me", &s.token).await.expect(200);
    assert!(!t.app.limiter.degraded());

    redis.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = std::time::Instant::now();
        let r = t.get("/api/v1/auth/me", &s.token).await;
        slowest = slowest.max(started.elapsed());
        r.expect(200);
        assert!(r.header("x-ratelimit-remaining").is_some());
    }
    assert!(t.app.limiter.degraded(), "the limiter should have noticed Redis is gone");
    // Bounded by the Redis response timeout while the breaker was still closed, then
    // immediate: never a hang.
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?} while Redis was down");

    // Redis returns on the same port: after the breaker's cool-down it is used again.
    let _back = OwnRedis::start(Some(port)).expect("redis-server restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.app.limiter.degraded() {
        assert!(std::time::Instant::now() < deadline, "Redis was not used again after it returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.get("/api/v1/auth/me", &s.token).await.expect(200);
    }
}
