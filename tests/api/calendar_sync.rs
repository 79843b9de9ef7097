//! Calendar provider sync against local fakes of Google Calendar API v3 and Microsoft Graph
//! v1.0 (wiremock servers with a stateful responder that follows the documented behaviour):
//! the OAuth code exchange with PKCE checked, refresh on 401, a revoked grant, 429 with
//! `Retry-After`, paging, Google's 410 on an expired sync token, Graph delta links, push,
//! pull, and the conflict rule that never loses LexiFlow's side of a court deadline.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use http::Method;
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

use crate::support::{Backend, Session, TestApp};

crate::on_both_backends!(
    google_two_way_sync_follows_the_documented_api,
    microsoft_graph_delta_sync_and_disconnect,
    a_connection_refreshes_its_token_once_however_many_jobs_need_it,
    losing_access_takes_the_copies_out_of_that_users_calendar,
    only_the_user_who_started_a_connection_can_complete_it,
    a_sealed_entrys_event_is_pushed_without_attendees_who_may_not_see_it,
);

/// One fake provider's state.
#[derive(Default)]
struct State {
    graph: bool,
    /// PKCE challenges seen on the authorization page, by state.
    challenge: Option<String>,
    /// Access tokens issued and still good.
    valid: std::collections::HashSet<String>,
    /// The provider account whose consent the next code exchange grants (the test's user), and
    /// the account of each token issued: each account has its own calendar to search.
    consenting: String,
    accounts: Vec<String>,
    token_account: BTreeMap<String, String>,
    refresh_ok: bool,
    revoked: Vec<String>,
    token_grants: Vec<String>,
    next_token: u32,
    /// id -> event JSON; a change log of (seq, id).
    events: BTreeMap<String, Value>,
    log: Vec<(u64, String)>,
    seq: u64,
    next_id: u32,
    /// Sync tokens (or delta links) no longer known.
    cursors_expired: bool,
    rate_limit: u32,
    /// The next create is stored and then answered 503, as if its answer were lost.
    lose_next_create: bool,
    /// A delay before each token endpoint answer.
    token_delay: Duration,
    requests: Vec<String>,
    /// The server's address (wiremock's request URL does not carry it).
    base: String,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Fake {
    fn new(graph: bool) -> Self {
        Fake(Arc::new(Mutex::new(State { graph, refresh_ok: true, ..Default::default() })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    fn touch(s: &mut State, id: &str) {
        s.seq += 1;
        s.log.push((s.seq, id.to_owned()));
        let seq = s.seq;
        let graph = s.graph;
        if let Some(e) = s.events.get_mut(id) {
            let etag = format!("\"{seq}\"");
            if graph {
                e["@odata.etag"] = json!(format!("W/{etag}"));
                e["lastModifiedDateTime"] = json!(now());
            } else {
                e["etag"] = json!(etag);
                e["updated"] = json!(now());
            }
        }
    }

    /// Changes an event as its owner would in the provider's own app.
    fn edit(&self, id: &str, f: impl FnOnce(&mut Value)) {
        self.with(|s| {
            std::thread::sleep(Duration::from_millis(5));
            f(s.events.get_mut(id).unwrap());
            Fake::touch(s, id);
        });
    }

    fn delete(&self, id: &str) {
        self.with(|s| {
            if s.graph {
                s.events.get_mut(id).unwrap()["@removed"] = json!({"reason": "deleted"});
            } else {
                s.events.get_mut(id).unwrap()["status"] = json!("cancelled");
            }
            Fake::touch(s, id);
        });
    }

    fn live(&self) -> Vec<Value> {
        self.with(|s| {
            s.events
                .values()
                .filter(|e| e.get("status") != Some(&json!("cancelled")) && e.get("@removed").is_none())
                .cloned()
                .collect()
        })
    }

    fn page(&self, s: &mut State, since: u64, offset: usize, base: &str) -> Value {
        // Changed ids since `since`, each once, newest state; two per page.
        let mut ids: Vec<String> = s.log.iter().filter(|(q, _)| *q > since).map(|(_, id)| id.clone()).collect();
        ids.dedup();
        let mut seen = std::collections::HashSet::new();
        ids.retain(|i| seen.insert(i.clone()));
        let items: Vec<Value> = ids.iter().skip(offset).take(2).filter_map(|i| s.events.get(i).cloned()).collect();
        let more = ids.len() > offset + 2;
        if s.graph {
            let mut v = json!({ "value": items });
            if more {
                v["@odata.nextLink"] = json!(format!("{base}/me/calendarView/delta?since={since}&skip={}", offset + 2));
            } else {
                v["@odata.deltaLink"] = json!(format!("{base}/me/calendarView/delta?since={}", s.seq));
            }
            v
        } else {
            let mut v = json!({ "kind": "calendar#events", "items": items });
            if more {
                v["nextPageToken"] = json!(format!("{since}:{}", offset + 2));
            } else {
                v["nextSyncToken"] = json!(format!("sync-{}", s.seq));
            }
            v
        }
    }
}

impl Respond for Fake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let path = req.url.path().to_owned();
        let q: BTreeMap<String, String> = req.url.query_pairs().into_owned().collect();
        s.requests.push(format!("{} {}", req.method, req.url));
        let base = s.base.clone();
        // OAuth: the token endpoint (RFC 6749 with PKCE, RFC 7636) and revocation (RFC 7009).
        if path == "/token" {
            let f = form(&req.body);
            let grant = f.get("grant_type").cloned().unwrap_or_default();
            s.token_grants.push(grant.clone());
            let invalid = || ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"}));
            if f.get("client_id").map(String::as_str) != Some("client-id")
                || f.get("client_secret").map(String::as_str) != Some("client-secret")
            {
                return ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"}));
            }
            match grant.as_str() {
                "authorization_code" => {
                    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(sha2::Sha256::digest(verifier.as_bytes()));
                    if f.get("code").map(String::as_str) != Some("good-code")
                        || s.challenge.as_deref() != Some(challenge.as_str())
                    {
                        return invalid();
                    }
                    if f.get("redirect_uri").map(String::as_str)
                        != Some(&*format!(
                            "http://app.lexiflow.test/calendar/connected/{}",
                            if s.graph { "microsoft" } else { "google" }
                        ))
                    {
                        return invalid();
                    }
                }
                "refresh_token" => {
                    let known = f.get("refresh_token").and_then(|r| s.token_account.get(r)).cloned();
                    let Some(account) = known.filter(|_| s.refresh_ok) else { return invalid() };
                    s.consenting = account;
                }
                _ => return ResponseTemplate::new(400).set_body_json(json!({"error": "unsupported_grant_type"})),
            }
            s.next_token += 1;
            let delay = s.token_delay;
            let access = format!("access-{}", s.next_token);
            s.valid.insert(access.clone());
            let account = s.consenting.clone();
            s.token_account.insert(access.clone(), account.clone());
            let mut body =
                json!({"access_token": access, "token_type": "Bearer", "expires_in": 3599, "scope": "calendar"});
            if grant == "authorization_code" {
                // One refresh token per account: refresh-1 for the first account to consent.
                if !s.accounts.contains(&account) {
                    s.accounts.push(account.clone());
                }
                let n = s.accounts.iter().position(|a| *a == account).unwrap_or(0) + 1;
                let refresh = format!("refresh-{n}");
                s.token_account.insert(refresh.clone(), account);
                body["refresh_token"] = json!(refresh);
            }
            return ResponseTemplate::new(200).set_body_json(body).set_delay(delay);
        }
        if path == "/revoke" {
            let f = form(&req.body);
            s.revoked.push(f.get("token").cloned().unwrap_or_default());
            s.refresh_ok = false;
            return ResponseTemplate::new(200);
        }
        // The calendar API: a bearer token that is the current one.
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !auth.strip_prefix("Bearer ").is_some_and(|a| s.valid.contains(a)) {
            return ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"code": 401, "message": "Invalid Credentials"}}));
        }
        let caller = auth.strip_prefix("Bearer ").and_then(|a| s.token_account.get(a)).cloned().unwrap_or_default();
        if s.rate_limit > 0 {
            s.rate_limit -= 1;
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"error": {"code": 429, "message": "Rate Limit Exceeded"}}));
        }
        let events = if s.graph { "/graph/me/events" } else { "/calendar/v3/calendars/primary/events" };
        let delta = "/graph/me/calendarView/delta";
        let if_match = req.headers.get("if-match").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag_of = |e: &Value, graph: bool| {
            (if graph { e["@odata.etag"].as_str() } else { e["etag"].as_str() }).unwrap_or("").to_owned()
        };
        if path == events && req.method == Method::POST {
            let mut e: Value = req.body_json().unwrap();
            s.next_id += 1;
            let id = format!("evt{}", s.next_id);
            e["id"] = json!(id);
            // Whose calendar it is in (not part of either API's event; LexiFlow ignores it).
            e["x-account"] = json!(caller);
            if !s.graph {
                e["status"] = json!("confirmed");
            }
            s.events.insert(id.clone(), e);
            Fake::touch(&mut s, &id);
            if std::mem::take(&mut s.lose_next_create) {
                return ResponseTemplate::new(503)
                    .set_body_json(json!({"error": {"code": 503, "message": "Backend Error"}}));
            }
            return ResponseTemplate::new(if s.graph { 201 } else { 200 }).set_body_json(s.events[&id].clone());
        }
        // Finding an event by LexiFlow's id: Google's privateExtendedProperty, Graph's $filter on
        // a single-value extended property (deleted events are not listed).
        let found = |s: &State, id: &str| -> Vec<Value> {
            s.events
                .values()
                .filter(|e| e["x-account"] == caller.as_str())
                .filter(|e| e.get("status") != Some(&json!("cancelled")) && e.get("@removed").is_none())
                .filter(|e| {
                    e["extendedProperties"]["private"]["lexiflowId"] == id
                        || e["singleValueExtendedProperties"][0]["value"] == id
                })
                .cloned()
                .collect()
        };
        if path == events && req.method == Method::GET && !s.graph && q.contains_key("privateExtendedProperty") {
            let id = q["privateExtendedProperty"].strip_prefix("lexiflowId=").unwrap_or("").to_owned();
            return ResponseTemplate::new(200)
                .set_body_json(json!({ "kind": "calendar#events", "items": found(&s, &id) }));
        }
        if path == events && req.method == Method::GET && s.graph {
            let f = q.get("$filter").cloned().unwrap_or_default();
            let prefix = "singleValueExtendedProperties/Any(ep: ep/id eq 'String {66f5a359-4659-4830-9070-00047ec6ac6e} Name lexiflowId' and ep/value eq '";
            let Some(id) = f.strip_prefix(prefix).and_then(|r| r.strip_suffix("')")) else {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": {"code": "BadRequest", "message": format!("bad $filter {f}")}}));
            };
            // Graph returns an extended property only when it is $expand-ed.
            let expanded =
                q.get("$expand").is_some_and(|e| e.starts_with("singleValueExtendedProperties($filter=id eq"));
            let mut items = found(&s, id);
            if !expanded {
                for i in &mut items {
                    i.as_object_mut().unwrap().remove("singleValueExtendedProperties");
                }
            }
            return ResponseTemplate::new(200).set_body_json(json!({ "value": items }));
        }
        if path == events && req.method == Method::GET && !s.graph {
            let (since, offset) = match (q.get("syncToken"), q.get("pageToken")) {
                (_, Some(p)) => {
                    let (a, b) = p.split_once(':').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                }
                (Some(t), None) => {
                    if s.cursors_expired {
                        return ResponseTemplate::new(410)
                            .set_body_json(json!({"error": {"code": 410, "message": "Sync token is no longer valid, a full sync is required."}}));
                    }
                    (t.trim_start_matches("sync-").parse().unwrap(), 0)
                }
                (None, None) => (0, 0),
            };
            let body = self.page(&mut s, since, offset, &base);
            return ResponseTemplate::new(200).set_body_json(body);
        }
        if path == delta && s.graph {
            let since: u64 = q.get("since").and_then(|v| v.parse().ok()).unwrap_or(0);
            if q.contains_key("since") && s.cursors_expired && !q.contains_key("skip") {
                return ResponseTemplate::new(410).set_body_json(
                    json!({"error": {"code": "SyncStateNotFound", "message": "The sync state is not found."}}),
                );
            }
            let windowed = q.contains_key("startDateTime") && q.contains_key("endDateTime");
            if !(q.contains_key("since") || windowed) {
                return ResponseTemplate::new(400).set_body_json(json!({"error": {"code": "ErrorInvalidParameter", "message": "startDateTime and endDateTime are required"}}));
            }
            let offset = q.get("skip").and_then(|v| v.parse().ok()).unwrap_or(0);
            let body = self.page(&mut s, since, offset, &format!("{base}/graph"));
            return ResponseTemplate::new(200).set_body_json(body);
        }
        if let Some(id) = path.strip_prefix(&format!("{events}/")) {
            let id = id.to_owned();
            let graph = s.graph;
            let Some(current) = s.events.get(&id).cloned() else {
                return ResponseTemplate::new(404)
                    .set_body_json(json!({"error": {"code": 404, "message": "Not Found"}}));
            };
            let gone = current.get("status") == Some(&json!("cancelled")) || current.get("@removed").is_some();
            match req.method {
                Method::GET => {
                    return if gone && graph {
                        ResponseTemplate::new(404)
                    } else {
                        ResponseTemplate::new(200).set_body_json(current)
                    };
                }
                Method::PUT | Method::PATCH => {
                    if gone {
                        return ResponseTemplate::new(if graph { 404 } else { 410 });
                    }
                    if let Some(m) = if_match
                        && m != etag_of(&current, graph)
                    {
                        return ResponseTemplate::new(412)
                            .set_body_json(json!({"error": {"code": 412, "message": "Precondition Failed"}}));
                    }
                    let mut e: Value = req.body_json().unwrap();
                    e["id"] = json!(id);
                    e["x-account"] = current["x-account"].clone();
                    if !graph {
                        e["status"] = json!("confirmed");
                    }
                    s.events.insert(id.clone(), e);
                    Fake::touch(&mut s, &id);
                    return ResponseTemplate::new(200).set_body_json(s.events[&id].clone());
                }
                Method::DELETE => {
                    if graph {
                        s.events.get_mut(&id).unwrap()["@removed"] = json!({"reason": "deleted"});
                    } else {
                        s.events.get_mut(&id).unwrap()["status"] = json!("cancelled");
                    }
                    Fake::touch(&mut s, &id);
                    return ResponseTemplate::new(204);
                }
                _ => {}
            }
        }
        ResponseTemplate::new(404).set_body_json(json!({"error": {"code": 404, "message": format!("no route {path}")}}))
    }
}

async fn fake_server(graph: bool) -> (MockServer, Fake) {
    let server = MockServer::start().await;
    let fake = Fake::new(graph);
    fake.with(|f| f.base = server.uri());
    Mock::given(any()).respond_with(fake.clone()).mount(&server).await;
    (server, fake)
}

fn configure(c: &mut lexiflow::config::Config, google: Option<&str>, graph: Option<&str>) {
    c.webhooks.allow_private = true;
    c.calendar.token_key = Some(base64::engine::general_purpose::STANDARD.encode([42u8; 32]).into());
    c.calendar.redirect_url = Some("http://app.lexiflow.test/calendar/connected/{provider}".into());
    let settings = |base: &str, api: &str, revoke: bool| lexiflow::config::ProviderSettings {
        client_id: "client-id".into(),
        client_secret: "client-secret".to_owned().into(),
        auth_url: format!("{base}/authorize"),
        token_url: format!("{base}/token"),
        revoke_url: revoke.then(|| format!("{base}/revoke")),
        api_base: format!("{base}{api}"),
    };
    c.calendar.google = google.map(|b| settings(b, "/calendar/v3", true));
    c.calendar.microsoft = graph.map(|b| settings(b, "/graph", false));
}

/// Runs the jobs until `done` holds (or fails after 30 s).
async fn until<F, Fut>(t: &TestApp, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let db = t.app.db.clone();
    let w = lexiflow::jobs::worker(db.clone(), db, &t.app.config, t.app.cache.clone(), t.app.storage.clone()).unwrap();
    let run = tokio::spawn(w.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        if std::time::Instant::now() > deadline {
            stop.cancel();
            let _ = run.await;
            let jobs = t
                .sql("SELECT job_type, state, last_error FROM queue_jobs WHERE job_type LIKE 'calendar.%' ORDER BY id")
                .await;
            let listed: Vec<String> = jobs
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {:?}",
                        r.try_get_by_index::<String>(0).unwrap(),
                        r.try_get_by_index::<String>(1).unwrap(),
                        r.try_get_by_index::<Option<String>>(2).unwrap()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}; jobs: {listed:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await.unwrap();
}

/// Starts connecting `provider` as `s`: the consent page's address, and its query.
async fn authorize(t: &TestApp, s: &Session, provider: &str) -> (url::Url, BTreeMap<String, String>) {
    let r = t.get(&format!("/api/v1/calendar/connections/{provider}/authorize"), &s.token).await;
    r.expect(302);
    let location = url::Url::parse(r.header("location").unwrap()).unwrap();
    assert_eq!(r.data()["authorizationUrl"], location.as_str());
    let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
    (location, q)
}

/// What the front end's page does with the query the provider sent the browser back with.
async fn complete(t: &TestApp, token: Option<&str>, provider: &str, body: Value) -> crate::support::Res {
    t.call(Method::POST, &format!("/api/v1/calendar/connections/{provider}/callback"), token, Some(body)).await
}

/// Connects `provider` for `s` through the authorization page and the callback.
async fn connect(t: &TestApp, s: &Session, fake: &Fake, provider: &str) {
    let (_, q) = authorize(t, s, provider).await;
    assert_eq!(q["client_id"], "client-id");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("http://app.lexiflow.test/calendar/connected/{provider}"));
    fake.with(|f| f.challenge = Some(q["code_challenge"].clone()));
    // A wrong code is refused and the state is spent.
    let bad = complete(t, Some(&s.token), provider, json!({"code": "bad", "state": q["state"]})).await;
    bad.expect(400);
    let (_, q) = authorize(t, s, provider).await;
    fake.with(|f| {
        f.challenge = Some(q["code_challenge"].clone());
        // The user consents with their own provider account.
        f.consenting = s.user_id.clone();
    });
    // Providers add parameters of their own; the page may pass them on.
    let body = json!({"code": "good-code", "state": q["state"], "scope": "openid email", "iss": "https://issuer"});
    let r = complete(t, Some(&s.token), provider, body.clone()).await;
    r.expect(200);
    assert_eq!(r.data()["status"], "active");
    // The same state again: refused (used once).
    complete(t, Some(&s.token), provider, body).await.expect(400);
    // Tokens are sealed at rest.
    let rows = t.sql("SELECT access_token, refresh_token FROM calendar_connections").await;
    let access: String = rows[0].try_get_by_index(0).unwrap();
    let refresh: Option<String> = rows[0].try_get_by_index(1).unwrap();
    assert!(access.starts_with("v1:") && !access.contains("access-"), "{access}");
    assert!(refresh.unwrap().starts_with("v1:"));
}

/// The consent-link attack: a user starts connecting and sends the consent page's address to
/// a colleague (or anyone), who grants access with their own provider account. Their browser
/// comes back with a good code and the sender's state; it must not connect anything.
async fn only_the_user_who_started_a_connection_can_complete_it(b: Backend) {
    let (server, fake) = fake_server(false).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, Some(&uri), None)).await;
    let admin = t.register("Sync").await;
    let sender = t.user(&admin, "attorney").await;
    let victim = t.user(&admin, "paralegal").await;
    let outsider = t.register("Other firm").await;
    // Another firm's user, then a colleague, each sent a fresh consent link and granting it:
    // refused, and nothing is connected to anyone.
    let mut body = json!(null);
    for who in [&outsider, &victim] {
        let (_, q) = authorize(&t, &sender, "google").await;
        fake.with(|f| {
            f.challenge = Some(q["code_challenge"].clone());
            f.consenting = who.user_id.clone();
        });
        body = json!({"code": "good-code", "state": q["state"]});
        // Without a token: refused before anything is spent.
        complete(&t, None, "google", body.clone()).await.expect(401);
        let r = complete(&t, Some(&who.token), "google", body.clone()).await;
        r.expect(400);
        assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "state", "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("another user"), "{}", r.body);
    }
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_connections").await, 0);
    assert!(fake.with(|f| f.token_grants.is_empty()), "no code was exchanged");
    // The state was spent by the refusal: the sender cannot finish it either.
    let r = complete(&t, Some(&sender.token), "google", body).await;
    r.expect(400);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("used"), "{}", r.body);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_connections").await, 0);
    // An API key acts for no user: its maker's own state cannot be completed with it, and is
    // left for the maker's session.
    let (_, q) = authorize(&t, &admin, "google").await;
    let key = t
        .post("/api/v1/api-keys", &admin.token, json!({"name": "ops", "scopes": ["calendar:read", "calendar:write"]}))
        .await;
    key.expect(201);
    let secret = key.data()["key"].as_str().unwrap().to_owned();
    let r = t
        .call_with(
            Method::POST,
            "/api/v1/calendar/connections/google/callback",
            None,
            Some(json!({"code": "good-code", "state": q["state"]})),
            &[("x-api-key", secret.as_str())],
        )
        .await;
    r.expect(403);
    // Nor list, pull or end its maker's connections.
    for (method, path) in [
        (Method::GET, "/api/v1/calendar/connections"),
        (Method::POST, "/api/v1/calendar/connections/google/sync"),
        (Method::DELETE, "/api/v1/calendar/connections/google"),
    ] {
        let r = t.call_with(method, path, None, None, &[("x-api-key", secret.as_str())]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    fake.with(|f| {
        f.challenge = Some(q["code_challenge"].clone());
        f.consenting = admin.user_id.clone();
    });
    complete(&t, Some(&admin.token), "google", json!({"code": "good-code", "state": q["state"]})).await.expect(200);
    // The sender, from their own session, connects.
    let (_, q) = authorize(&t, &sender, "google").await;
    fake.with(|f| {
        f.challenge = Some(q["code_challenge"].clone());
        f.consenting = sender.user_id.clone();
    });
    complete(&t, Some(&sender.token), "google", json!({"code": "good-code", "state": q["state"]})).await.expect(200);
    let mine = t.get("/api/v1/calendar/connections", &sender.token).await;
    mine.expect(200);
    assert_eq!(mine.data().as_array().map(Vec::len), Some(1), "{}", mine.body);
    assert_eq!(mine.data()[0]["provider"], "google");
    let theirs = t.get("/api/v1/calendar/connections", &victim.token).await;
    assert_eq!(theirs.data().as_array().map(Vec::len), Some(0), "{}", theirs.body);
    // Each refusal is audited in the refusing user's firm, with who started it.
    let audit = t.get("/api/v1/audit?action=calendar.connect_refused", &admin.token).await;
    audit.expect(200);
    let entries = audit.data().as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", audit.body);
    assert_eq!(entries[0]["actorId"], victim.user_id.as_str());
    assert_eq!(entries[0]["changes"]["startedBy"], sender.user_id.as_str());
}

async fn event_json(t: &TestApp, s: &Session, id: &str) -> Value {
    let r = t.get(&format!("/api/v1/calendar/{id}"), &s.token).await;
    r.expect(200);
    r.data().clone()
}

async fn count(t: &TestApp, sql: &str) -> i64 {
    t.sql(sql).await[0].try_get_by_index::<i64>(0).unwrap()
}

async fn google_two_way_sync_follows_the_documented_api(b: Backend) {
    let (server, fake) = fake_server(false).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, Some(&uri), None)).await;
    let admin = t.register("Sync").await;
    // Not configured for Microsoft; unknown providers are 404.
    t.get("/api/v1/calendar/connections/microsoft/authorize", &admin.token).await.expect(503);
    t.get("/api/v1/calendar/connections/yahoo/authorize", &admin.token).await.expect(404);
    connect(&t, &admin, &fake, "google").await;
    let case = t.case(&admin, "G-1").await;

    // Push: a meeting and a court deadline reach the user's calendar.
    // The first create reaches Google and its answer is lost: the retry finds that copy.
    fake.with(|f| f.lose_next_create = true);
    let meeting = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": "Client meeting", "startsAt": "2027-02-01T15:00:00Z", "endsAt": "2027-02-01T16:00:00Z",
                   "reminders": [30], "attendees": [{"email": "client@example.com"}]}),
        )
        .await;
    let meeting = meeting.data()["id"].as_str().unwrap().to_owned();
    let r = t
        .post(
            &format!("/api/v1/cases/{case}/deadlines/compute"),
            &admin.token,
            json!({"ruleId": "frcp-56-b", "triggerDate": "2027-01-04", "create": true}),
        )
        .await;
    let deadline = r.data()["events"][0]["id"].as_str().unwrap().to_owned();
    t.post(
        "/api/v1/calendar",
        &admin.token,
        json!({"type": "reminder", "title": "Order exhibits", "allDay": true, "startDate": "2027-01-20"}),
    )
    .await
    .expect(201);
    until(&t, "all three pushed and linked (and the connection's first pull)", || async {
        fake.live().len() == 3
            && count(&t, "SELECT COUNT(*) FROM calendar_event_links").await == 3
            && count(&t, "SELECT COUNT(*) FROM calendar_connections WHERE sync_cursor IS NOT NULL").await == 1
    })
    .await;
    let remote = fake.live();
    let m = remote.iter().find(|e| e["summary"] == "Client meeting").unwrap().clone();
    assert_eq!(m["extendedProperties"]["private"]["lexiflowId"], meeting.as_str());
    assert_eq!(m["start"]["dateTime"], "2027-02-01T15:00:00Z");
    assert_eq!(m["attendees"][0]["email"], "client@example.com");
    let requests = fake.with(|f| f.requests.clone());
    assert!(
        requests
            .iter()
            .filter(|r| ["POST", "PUT", "DELETE"].iter().any(|m| r.starts_with(m)) && r.contains("/events"))
            .all(|r| r.contains("sendUpdates=none")),
        "LexiFlow sends no invitations: {requests:#?}"
    );
    let creates = requests.iter().filter(|r| r.starts_with("POST") && r.contains("/events")).count();
    assert_eq!(creates, 3, "the lost create was found by its LexiFlow id, not made again: {requests:#?}");
    assert!(requests.iter().any(|r| r.contains("privateExtendedProperty=lexiflowId")), "{requests:#?}");
    assert_eq!(m["reminders"]["overrides"][0]["minutes"], 30);
    let d = remote.iter().find(|e| e["summary"].as_str().unwrap().contains("56(b)")).unwrap().clone();
    assert_eq!(d["start"]["date"], "2027-02-03", "all day, on the computed date");
    assert_eq!(d["end"]["date"], "2027-02-04", "the end date is exclusive");
    let (meeting_remote, deadline_remote) =
        (m["id"].as_str().unwrap().to_owned(), d["id"].as_str().unwrap().to_owned());

    // A change in LexiFlow is pushed with the stored ETag.
    t.patch(&format!("/api/v1/calendar/{meeting}"), &admin.token, json!({"title": "Client meeting (moved room)"}))
        .await
        .expect(200);
    until(&t, "the rename pushed", || async {
        fake.live().iter().any(|e| e["summary"] == "Client meeting (moved room)")
    })
    .await;

    // A change made in Google to the meeting comes back; one to the deadline is undone.
    fake.edit(&meeting_remote, |e| {
        e["summary"] = json!("Client meeting (Google)");
        e["start"] = json!({"dateTime": "2027-02-01T17:00:00Z"});
        e["end"] = json!({"dateTime": "2027-02-01T18:00:00Z"});
    });
    fake.edit(&deadline_remote, |e| e["start"] = json!({"date": "2027-02-10"}));
    // The sync token is now unknown: a full listing (paged, two a page) follows the 410.
    fake.with(|f| f.cursors_expired = true);
    // An expired access token (401) is refreshed, and a 429 is waited out.
    fake.with(|f| {
        f.valid.clear();
        f.rate_limit = 1;
    });
    t.post("/api/v1/calendar/connections/google/sync", &admin.token, json!({})).await.expect(202);
    until(&t, "the pull", || async {
        let e = t.get(&format!("/api/v1/calendar/{meeting}"), &admin.token).await;
        e.data()["title"] == "Client meeting (Google)"
    })
    .await;
    let e = event_json(&t, &admin, &meeting).await;
    assert_eq!(e["startsAt"], "2027-02-01T17:00:00Z");
    let dl = event_json(&t, &admin, &deadline).await;
    assert_eq!(dl["startDate"], "2027-02-03", "a court deadline keeps LexiFlow's date");
    until(&t, "the deadline restored in Google", || async {
        fake.live().iter().any(|e| e["id"] == deadline_remote.as_str() && e["start"]["date"] == "2027-02-03")
    })
    .await;
    let requests = fake.with(|f| f.requests.clone());
    assert!(requests.iter().any(|r| r.contains("pageToken=")), "paged: {requests:#?}");
    let writes: Vec<&String> = requests
        .iter()
        .filter(|r| ["POST", "PUT", "DELETE"].iter().any(|m| r.starts_with(m)) && r.contains("/events"))
        .collect();
    assert!(writes.iter().any(|r| r.starts_with("PUT")), "updates were sent");
    assert!(writes.iter().all(|r| r.contains("sendUpdates=none")), "no invitation mail: {writes:#?}");
    assert!(requests.iter().any(|r| r.contains("showDeleted=true")), "a full listing after the 410");
    assert!(fake.with(|f| f.token_grants.contains(&"refresh_token".to_owned())), "refreshed after the 401");
    // The conflict is audited after the provider was written to: waited for, not raced.
    until(&t, "the pull and the conflict audited", || async {
        let text = t.get("/api/v1/audit?limit=100", &admin.token).await.body.to_string();
        text.contains("calendar.sync.pull") && text.contains("calendar.sync.conflict")
    })
    .await;

    // Deleted in Google: the deadline is put back; the meeting is deleted in LexiFlow.
    fake.delete(&deadline_remote);
    fake.delete(&meeting_remote);
    fake.with(|f| f.cursors_expired = false);
    t.post("/api/v1/calendar/connections/google/sync", &admin.token, json!({})).await.expect(202);
    until(&t, "the deletions pulled", || async {
        t.get(&format!("/api/v1/calendar/{meeting}"), &admin.token).await.status == 404
            && fake.live().iter().any(|e| e["extendedProperties"]["private"]["lexiflowId"] == deadline.as_str())
    })
    .await;
    event_json(&t, &admin, &deadline).await;

    // A revoked grant: the refresh is refused, and the connection says so.
    fake.with(|f| {
        f.refresh_ok = false;
        f.valid.clear();
    });
    t.post("/api/v1/calendar/connections/google/sync", &admin.token, json!({})).await.expect(202);
    until(&t, "the connection marked revoked", || async {
        count(&t, "SELECT COUNT(*) FROM calendar_connections WHERE status = 'revoked'").await == 1
    })
    .await;
    let c = t.get("/api/v1/calendar/connections", &admin.token).await;
    assert_eq!(c.data()[0]["status"], "revoked");
    // Disconnecting revokes at Google (RFC 7009) and forgets the tokens.
    let r = t.delete("/api/v1/calendar/connections/google", &admin.token).await;
    r.expect(200);
    assert_eq!(r.data()["revokedAtProvider"], true);
    assert_eq!(fake.with(|f| f.revoked.clone()), vec!["refresh-1".to_owned()]);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_connections").await, 0);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_event_links").await, 0);
}

async fn microsoft_graph_delta_sync_and_disconnect(b: Backend) {
    let (server, fake) = fake_server(true).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, None, Some(&uri))).await;
    let admin = t.register("Graph").await;
    let colleague = t.user(&admin, "attorney").await;
    connect(&t, &admin, &fake, "microsoft").await;
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": "Strategy", "startsAt": "2027-03-01T14:00:00Z", "endsAt": "2027-03-01T15:00:00Z",
                   "reminders": [15, 60], "attendees": [{"userId": colleague.user_id}]}),
        )
        .await;
    r.expect(201);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    for i in 0..4 {
        t.post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "reminder", "title": format!("Follow-up {i}"), "allDay": true, "startDate": "2027-03-02"}),
        )
        .await
        .expect(201);
    }
    until(&t, "five events pushed and a delta link kept", || async {
        fake.live().len() == 5
            && count(&t, "SELECT COUNT(*) FROM calendar_connections WHERE sync_cursor LIKE '%delta%'").await == 1
    })
    .await;
    let remote = fake.live();
    let m = remote.iter().find(|e| e["subject"] == "Strategy").unwrap().clone();
    assert_eq!(m["start"]["dateTime"], "2027-03-01T14:00:00");
    assert_eq!(m["reminderMinutesBeforeStart"], 60, "Graph keeps one reminder: the earliest");
    assert!(m.get("attendees").is_none(), "no attendees on Graph: it would mail them meeting requests");
    let day = remote.iter().find(|e| e["subject"] == "Follow-up 0").unwrap();
    assert_eq!(day["isAllDay"], true);
    let remote_id = m["id"].as_str().unwrap().to_owned();
    // The colleague connects too: the meeting they attend reaches their calendar. They may not
    // change a firm meeting they only attend, so a change made in their copy is undone.
    connect(&t, &colleague, &fake, "microsoft").await;
    until(&t, "the colleague's copy pushed", || async { fake.live().len() == 6 }).await;
    let theirs = fake.live().into_iter().find(|e| e["subject"] == "Strategy" && e["id"] != remote_id.as_str()).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.edit(&theirs, |e| e["subject"] = json!("Strategy (colleague's edit)"));
    t.post("/api/v1/calendar/connections/microsoft/sync", &colleague.token, json!({})).await.expect(202);
    until(&t, "the colleague's change undone", || async {
        fake.live().iter().any(|e| e["id"] == theirs.as_str() && e["subject"] == "Strategy")
    })
    .await;
    assert_eq!(event_json(&t, &admin, &id).await["title"], "Strategy");
    let audit = t.get("/api/v1/audit?limit=100", &admin.token).await;
    assert!(audit.body.to_string().contains("may not change this event"), "{}", audit.body);
    // A change in Outlook by the organiser comes back through the delta link (paged by nextLink).
    fake.edit(&remote_id, |e| e["location"] = json!({"displayName": "Room 12"}));
    t.post("/api/v1/calendar/connections/microsoft/sync", &admin.token, json!({})).await.expect(202);
    until(&t, "the location pulled", || async { event_json(&t, &admin, &id).await["location"] == "Room 12" }).await;
    // An expired delta link (410 SyncStateNotFound) restarts from a full delta.
    fake.with(|f| f.cursors_expired = true);
    fake.edit(&remote_id, |e| e["subject"] = json!("Strategy (Outlook)"));
    t.post("/api/v1/calendar/connections/microsoft/sync", &admin.token, json!({})).await.expect(202);
    until(&t, "the rename pulled after a restart", || async {
        event_json(&t, &admin, &id).await["title"] == "Strategy (Outlook)"
    })
    .await;
    let requests = fake.with(|f| f.requests.clone());
    assert!(requests.iter().any(|r| r.contains("skip=")), "followed a nextLink");
    assert!(requests.iter().filter(|r| r.contains("startDateTime")).count() >= 2, "restarted after the 410");
    // Deleted in LexiFlow: deleted in Outlook.
    t.delete(&format!("/api/v1/calendar/{id}"), &admin.token).await.expect(204);
    until(&t, "the delete pushed", || async { !fake.live().iter().any(|e| e["id"] == remote_id.as_str()) }).await;
    // Connecting again: the backfill finds the copies the first connection made (by the LexiFlow
    // id in their extended property) and takes them over; none is created twice.
    let live = fake.live().len();
    let creates = |f: &Fake| f.with(|s| s.requests.iter().filter(|r| r.starts_with("POST /graph/me/events")).count());
    let before = creates(&fake);
    connect(&t, &admin, &fake, "microsoft").await;
    until(&t, "the backfill linked the admin's four events again", || async {
        count(&t, "SELECT COUNT(*) FROM calendar_event_links").await == 4
    })
    .await;
    assert_eq!(fake.live().len(), live, "no second copies");
    assert_eq!(creates(&fake), before, "nothing created");
    // Microsoft has no revocation endpoint: the tokens are forgotten.
    let r = t.delete("/api/v1/calendar/connections/microsoft", &admin.token).await;
    assert_eq!(r.expect(200).data()["revokedAtProvider"], false);
    t.delete("/api/v1/calendar/connections/microsoft", &admin.token).await.expect(404);
}

/// Jobs of one connection that all find its access token expired refresh it once: the others
/// wait and use the new token. A refresh that finds the stored tokens changed under it (another
/// instance refreshed first) uses those instead of overwriting them.
async fn a_connection_refreshes_its_token_once_however_many_jobs_need_it(b: Backend) {
    use sea_orm::EntityTrait;
    let (server, fake) = fake_server(false).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, Some(&uri), None)).await;
    let admin = t.register("Refresh").await;
    connect(&t, &admin, &fake, "google").await;
    let conn = lexiflow::calendar::sync::model::connection::Entity::find().one(&t.app.db).await.unwrap().unwrap();
    let syncer =
        lexiflow::calendar::sync::Syncer::new(t.app.db.clone(), t.app.outbound.clone(), &t.app.config.calendar);
    let refreshes = |f: &Fake| f.with(|s| s.token_grants.iter().filter(|g| *g == "refresh_token").count());
    let expire = || async {
        use lexiflow::calendar::sync::model::connection;
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        connection::Entity::update_many()
            .col_expr(connection::Column::ExpiresAt, sea_orm::sea_query::Expr::value(Some(past)))
            .exec(&t.app.db)
            .await
            .unwrap();
    };
    expire().await;
    fake.with(|f| f.token_delay = Duration::from_millis(200));
    let tokens = futures_util::future::join_all((0..8).map(|_| syncer.access_token(conn.id, false))).await;
    let tokens: Vec<String> = tokens.into_iter().map(Result::unwrap).collect();
    assert_eq!(refreshes(&fake), 1, "one refresh for eight callers");
    assert!(tokens.iter().all(|x| x == &tokens[0]) && tokens[0].starts_with("access-"), "{tokens:?}");
    assert!(fake.with(|f| f.valid.contains(&tokens[0])));

    // Another instance stores new tokens while this refresh is in flight: its tokens are kept.
    expire().await;
    fake.with(|f| f.token_delay = Duration::from_millis(800));
    let racing = {
        let syncer = syncer.clone();
        tokio::spawn(async move { syncer.access_token(conn.id, false).await })
    };
    // Once the refresh request reached the provider (its answer takes 800 ms), the row changes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refreshes(&fake) < 2 {
        assert!(std::time::Instant::now() < deadline, "the second refresh never reached the provider");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cipher = lexiflow::calendar::sync::crypto::TokenCipher::new(
        &base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
    )
    .unwrap();
    let theirs = cipher.seal("access-other-instance", &format!("{}:google:access", conn.user_id)).unwrap();
    let stored =
        lexiflow::calendar::sync::model::connection::Entity::find_by_id(conn.id).one(&t.app.db).await.unwrap().unwrap();
    let mut other: lexiflow::calendar::sync::model::connection::ActiveModel = stored.into();
    other.access_token = sea_orm::Set(theirs);
    other.expires_at = sea_orm::Set(Some(chrono::Utc::now() + chrono::Duration::hours(1)));
    sea_orm::ActiveModelTrait::update(other, &t.app.db).await.unwrap();
    assert_eq!(racing.await.unwrap().unwrap(), "access-other-instance", "the first stored tokens win");
    assert_eq!(refreshes(&fake), 2);
    let after = syncer.access_token(conn.id, false).await.unwrap();
    assert_eq!(after, "access-other-instance", "and stay stored");
}

/// A user who loses sight of an event (taken off the case team, disabled) loses its copy in
/// their provider calendar at once, without the event itself changing; the event stays in the
/// calendars of those who still see it.
async fn losing_access_takes_the_copies_out_of_that_users_calendar(b: Backend) {
    let (server, fake) = fake_server(false).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, Some(&uri), None)).await;
    let admin = t.register("Access").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "A-1").await;
    let other = t.case(&admin, "A-2").await;
    for c in [&case, &other] {
        t.post(
            &format!("/api/v1/cases/{c}/team"),
            &admin.token,
            json!({"userId": attorney.user_id, "role": "attorney"}),
        )
        .await
        .expect(201);
    }
    connect(&t, &attorney, &fake, "google").await;
    for (title, c) in [("Hearing prep", &case), ("Witness call", &case), ("Closing", &other)] {
        t.post(
            "/api/v1/calendar",
            &admin.token,
            json!({"type": "meeting", "title": title, "caseId": c, "assigneeId": attorney.user_id,
                   "startsAt": "2027-04-01T15:00:00Z", "endsAt": "2027-04-01T16:00:00Z"}),
        )
        .await
        .expect(201);
    }
    // A firm event of the attorney's own, not of the case.
    t.post(
        "/api/v1/calendar",
        &attorney.token,
        json!({"type": "meeting", "title": "Own", "startsAt": "2027-04-02T15:00:00Z", "endsAt": "2027-04-02T16:00:00Z"}),
    )
    .await
    .expect(201);
    until(&t, "four events in the attorney's calendar", || async { fake.live().len() == 4 }).await;
    let titles = |f: &Fake| {
        let mut t: Vec<String> = f.live().iter().map(|e| e["summary"].as_str().unwrap().to_owned()).collect();
        t.sort();
        t
    };
    let versions = count(&t, "SELECT SUM(version) FROM calendar_events").await;

    t.delete(&format!("/api/v1/cases/{case}/team/{}", attorney.user_id), &admin.token).await.expect(204);
    until(&t, "the case's copies taken out", || async { titles(&fake) == ["Closing", "Own"] }).await;
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_event_links").await, 2);
    // A case deleted: its copies go.
    t.delete(&format!("/api/v1/cases/{other}"), &admin.token).await.expect(204);
    until(&t, "the deleted case's copy taken out", || async { titles(&fake) == ["Own"] }).await;
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_event_links").await, 1);
    assert_eq!(count(&t, "SELECT SUM(version) FROM calendar_events").await, versions, "the events did not change");

    // Suspended: the attorney's last copy goes too.
    t.patch(&format!("/api/v1/users/{}", attorney.user_id), &admin.token, json!({"status": "suspended"}))
        .await
        .expect(200);
    until(&t, "the firm event's copy taken out", || async { fake.live().is_empty() }).await;
    assert_eq!(count(&t, "SELECT COUNT(*) FROM calendar_event_links").await, 0);
}

/// Google puts a copy of an event in the calendar of every guest it lists, so the copy of an
/// event tied to a sealed docket entry names only the attendees who may see it (admins and
/// grant holders). An attendee added while the entry was open is taken off the copies once it
/// is sealed, without the event changing, and stays off when the event changes later.
async fn a_sealed_entrys_event_is_pushed_without_attendees_who_may_not_see_it(b: Backend) {
    let (server, fake) = fake_server(false).await;
    let uri = server.uri();
    let t = TestApp::with(b, |c| configure(c, Some(&uri), None)).await;
    let admin = t.register("Sealed sync").await;
    let paralegal = t.user(&admin, "paralegal").await;
    let attorney = t.user(&admin, "attorney").await;
    let case = t.case(&admin, "SS-1").await;
    for (who, role) in [(&paralegal, "paralegal"), (&attorney, "attorney")] {
        t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": who.user_id, "role": role}))
            .await
            .expect(201);
    }
    let grant = format!("/api/v1/cases/{case}/sealed-access/{}", attorney.user_id);
    t.call(Method::PUT, &grant, Some(&admin.token), None).await.expect(200);
    connect(&t, &admin, &fake, "google").await;
    let entry = t
        .post(
            &format!("/api/v1/cases/{case}/docket"),
            &admin.token,
            json!({"type": "order", "description": "Order to respond", "entryDate": "2026-09-01"}),
        )
        .await;
    let entry_id = entry.expect(201).data()["id"].as_str().unwrap().to_owned();
    // While the entry is open, the paralegal may attend its deadline.
    let r = t
        .post(
            "/api/v1/calendar",
            &admin.token,
            json!({"caseId": case, "docketEntryId": entry_id, "type": "deadline", "title": "Respond to the order",
                   "allDay": true, "startDate": "2027-06-01",
                   "attendees": [{"userId": paralegal.user_id}, {"userId": attorney.user_id}]}),
        )
        .await;
    let id = r.expect(201).data()["id"].as_str().unwrap().to_owned();
    // The guests of the copy in the admin's calendar, by e-mail.
    let guests = |f: &Fake| -> Option<Vec<String>> {
        let copy = f.live().into_iter().find(|e| e["extendedProperties"]["private"]["lexiflowId"] == id.as_str())?;
        let mut mails: Vec<String> = copy["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["email"].as_str().map(str::to_owned))
            .collect();
        mails.sort();
        Some(mails)
    };
    let mut both = vec![paralegal.email.clone(), attorney.email.clone()];
    both.sort();
    until(&t, "the deadline pushed with both attendees", || async { guests(&fake) == Some(both.clone()) }).await;
    let versions = count(&t, "SELECT SUM(version) FROM calendar_events").await;

    // Sealed: the copy is sent again without the paralegal, who has no grant.
    t.patch(&format!("/api/v1/cases/{case}/docket/{entry_id}"), &admin.token, json!({"sealed": true}))
        .await
        .expect(200);
    let only_attorney = Some(vec![attorney.email.clone()]);
    until(&t, "the paralegal taken off the copy", || async { guests(&fake) == only_attorney }).await;
    assert_eq!(count(&t, "SELECT SUM(version) FROM calendar_events").await, versions, "the event did not change");
    // Nor can they be named again; a later change of the event is pushed without them too.
    let r = t
        .patch(
            &format!("/api/v1/calendar/{id}"),
            &admin.token,
            json!({"attendees": [{"userId": paralegal.user_id}, {"userId": attorney.user_id}]}),
        )
        .await;
    r.expect(400);
    assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "attendees[0].userId", "{}", r.body);
    t.patch(&format!("/api/v1/calendar/{id}"), &admin.token, json!({"title": "Respond to the order (moved)"}))
        .await
        .expect(200);
    until(&t, "the rename pushed", || async {
        fake.live().iter().any(|e| e["summary"] == "Respond to the order (moved)")
    })
    .await;
    assert_eq!(guests(&fake), only_attorney);
    let copy = fake.live().into_iter().find(|e| e["summary"] == "Respond to the order (moved)").unwrap();
    assert!(!copy.to_string().contains(&paralegal.email), "{copy}");
}
