//! The realtime gateway: Socket.IO v4 (protocol 5) on the server's own port, at the default
//! `/socket.io/` path, namespace `/events`, over WebSocket and HTTP long-polling.
//!
//! - **Handshake.** `auth: {token, lastSeq?}` or `Authorization: Bearer`. Only an access token
//!   whose session is live and whose user is active gets in (the same check as the API's,
//!   [`crate::auth::principal_of`]); anything else gets `connect_error` whose message is our
//!   error code (`AUTH_REQUIRED`, `AUTH_TOKEN_INVALID`, `AUTH_TOKEN_EXPIRED`,
//!   `RATE_LIMIT_EXCEEDED`). The socket joins `user:`, `session:` and `firm:` rooms (and the
//!   firm's `all-cases` room for admins and partners) and receives `connected`.
//! - **Following cases.** `subscribe:case {caseId, since?}` acks `{status:"subscribed"}` only
//!   when the user may see the case (the API's rule, [`crate::cases::access::visible_case`]);
//!   a missing case and a hidden one get the same error ack.
//! - **Events** come from committed domain events only, read back from the outbox by the
//!   [`feed`] in each firm's order and routed by [`route::plan`]; losing access (team removal,
//!   a withdrawn sealed grant, a revoked session, a disabled user) is carried out in the same
//!   order, on every instance.
//! - **Replay.** A client that reconnects with `lastSeq` (or subscribes with `since`) first
//!   gets what it missed, from the outbox, up to `REALTIME_REPLAY_MAX` events; further behind
//!   it is told to resync.
//!
//! The contract for clients is `docs/REALTIME.md`; the design choices are decision 0013.

pub mod feed;
pub mod route;
pub mod slots;

use std::{
    collections::HashSet,
    fmt,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{AckSender, Extension, SocketRef, State, TryData},
    handler::ConnectHandler,
    operators::BroadcastOperators,
};
use uuid::Uuid;

use crate::{
    app::{App, AppInner},
    auth::Principal,
    events::{DomainEvent, Subscriber},
    http::error::{ApiError, ErrorCode},
    ids::CaseId,
    ratelimit::Quota,
};

/// The one namespace clients connect to.
pub const NAMESPACE: &str = "/events";

/// The gateway's part of the application state.
#[derive(Debug, Default)]
pub struct Gateway {
    io: OnceLock<SocketIo>,
    /// Woken by local commits, the sequencer and other instances.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// Set when this instance committed events since the feed last looked.
    dirty: AtomicBool,
    /// Sockets open on this instance.
    connected: AtomicUsize,
    marks: tokio::sync::Mutex<feed::Marks>,
    /// Connections per user, counted across instances.
    slots: slots::Slots,
}

impl Gateway {
    /// A gateway woken by `wake` (shared with the event sequencer), counting connections per
    /// user in `slots`.
    pub fn new(wake: Arc<tokio::sync::Notify>, slots: slots::Slots) -> Self {
        Self { wake, slots, ..Self::default() }
    }

    fn namespace(&self) -> Option<BroadcastOperators> {
        self.io.get().and_then(|io| io.of(NAMESPACE))
    }

    /// Sockets open on this instance.
    pub fn connections(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    /// Closes every socket (at shutdown, once requests are no longer accepted).
    pub async fn close(&self) {
        if let Some(io) = self.io.get() {
            io.close().await;
        }
    }

    fn committed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// What the gateway knows about one socket: who it is, and which cases it follows.
#[derive(Debug)]
pub struct Conn {
    pub principal: Principal,
    last_seq: Option<i64>,
    cases: Mutex<HashSet<Uuid>>,
    /// The socket's connection slot, given back when the socket's state is dropped.
    _slot: Option<slots::Held>,
}

impl Conn {
    fn follows(&self, case: Uuid) -> bool {
        self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&case)
    }

    fn follow(&self, case: Uuid) {
        self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(case);
    }

    fn forget(&self, case: Uuid) {
        self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&case);
    }
}

/// The handlers' state: the application, weakly, so the Socket.IO server does not keep a
/// dropped application alive.
#[derive(Clone, Debug)]
struct Ctx(Weak<AppInner>);

impl Ctx {
    fn app(&self) -> Result<App, ApiError> {
        App::upgrade(&self.0).ok_or_else(|| ApiError::new(ErrorCode::DependencyUnavailable, "the server is stopping"))
    }
}

/// Wakes the feed after this instance's commits, and when other instances say they committed.
pub fn install(app: &App) {
    app.events.subscribe(Arc::new(Wake(app.weak())));
    let weak = app.weak();
    app.bus.on(feed::TOPIC, move |_| {
        let Some(app) = App::upgrade(&weak) else { return false };
        app.realtime.wake.notify_one();
        true
    });
}

#[derive(Debug)]
struct Wake(Weak<AppInner>);

impl Subscriber for Wake {
    fn name(&self) -> &'static str {
        "realtime"
    }

    fn deliver<'a>(&'a self, _: &'a [DomainEvent]) -> BoxFuture<'a, ()> {
        async move {
            if let Some(app) = App::upgrade(&self.0) {
                app.realtime.committed();
            }
        }
        .boxed()
    }
}

/// The route `/socket.io/` serving the gateway for `app` behind `cors` (the API's policy, for
/// the polling transport); starts the feed. Call once per application.
pub fn routes<S: Clone + Send + Sync + 'static>(app: &App, cors: tower_http::cors::CorsLayer) -> axum::Router<S> {
    let cfg = app.config.realtime;
    let (svc, io) = SocketIo::builder()
        .with_state(Ctx(app.weak()))
        .max_payload(cfg.max_message_bytes as u64)
        .ws_max_message_size(cfg.max_message_bytes)
        .ws_max_frame_size(cfg.max_message_bytes)
        // Room for a full replay on top of live traffic.
        .max_buffer_size(usize::try_from(cfg.replay_max).unwrap_or(1_000).saturating_add(256))
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        // Clients send small messages (subscribe, unsubscribe, pongs); a longer frame is read
        // whole all the same (the buffer grows to its length). engineio's default is 4 KiB per
        // socket, kept for the socket's life.
        .ws_read_buffer_size(WS_READ_BUFFER)
        .build_svc();
    io.ns(NAMESPACE, on_connect.with(authenticate));
    if app.realtime.io.set(io).is_ok() {
        tokio::spawn(feed::run(app.weak()));
        if app.redis.is_some() {
            tokio::spawn(renew_slots(app.weak()));
        }
    }
    axum::Router::new().route_service(
        "/socket.io/",
        tower::ServiceBuilder::new().layer(cors).map_request(compact_head::<axum::body::Body>).service(svc),
    )
}

/// Bytes each WebSocket reads from its connection at a time, and its read buffer's size.
const WS_READ_BUFFER: usize = 1024;

/// The request with its URI and header values copied out of the connection's read buffer.
///
/// hyper parses a request without copying: the URI and every header value are slices of the
/// buffer the request head was read into (8–16 KiB), which stays allocated while any slice of
/// it lives. engineio keeps each socket's request parts for the socket's whole life, so every
/// open socket used to hold that buffer: 16 KiB of the 37 KiB a socket cost at 1,000 sockets
/// (heaptrack, decision 0013). The copies take what the head holds, a few hundred bytes. The
/// extensions are kept (hyper's upgrade is one); axum's `OriginalUri` among them is copied too.
fn compact_head<B>(mut req: http::Request<B>) -> http::Request<B> {
    let mut headers = http::HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let copy = match http::HeaderValue::from_bytes(value.as_bytes()) {
            Ok(mut copy) => {
                copy.set_sensitive(value.is_sensitive());
                copy
            }
            Err(_) => value.clone(),
        };
        // Names are copied by hyper already (or are static).
        headers.append(name.clone(), copy);
    }
    *req.headers_mut() = headers;
    let compact_uri = |uri: &http::Uri| {
        http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(uri.to_string().as_bytes()))
            .unwrap_or_else(|_| uri.clone())
    };
    *req.uri_mut() = compact_uri(req.uri());
    // axum's router keeps the URI as it arrived, a slice of the same buffer.
    if let Some(original) = req.extensions().get::<axum::extract::OriginalUri>() {
        let copy = axum::extract::OriginalUri(compact_uri(&original.0));
        req.extensions_mut().insert(copy);
    }
    req
}

/// Renews the connection slots of this instance's sockets every `slot_renew_every`
/// ([`slots::RENEW_EVERY`]), until the application is dropped.
async fn renew_slots(app: Weak<AppInner>) {
    let Some(every) = App::upgrade(&app).map(|a| a.config.realtime.slot_renew_every) else { return };
    loop {
        tokio::time::sleep(every).await;
        let Some(app) = App::upgrade(&app) else { return };
        let Some(ns) = app.realtime.namespace() else { continue };
        let open: Vec<(Uuid, String)> = ns
            .clone()
            .local()
            .sockets()
            .into_iter()
            .filter_map(|s| s.extensions.get::<Arc<Conn>>().map(|c| (c.principal.user_id.0, s.id.to_string())))
            .collect();
        app.realtime.slots.renew(&open).await;
        // A socket that closed after the list was taken may have had its slot put back by the
        // renewal after giving it back: give those back again. One still open now gives its
        // slot back when it closes, after the renewal.
        let still: HashSet<String> = ns.local().sockets().into_iter().map(|s| s.id.to_string()).collect();
        for (user, socket) in open.iter().filter(|(_, s)| !still.contains(s)) {
            app.realtime.slots.give_back(*user, socket).await;
        }
    }
}

/// A refused handshake: the client's `connect_error` message is the error code.
#[derive(Debug)]
struct Refused(ErrorCode);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&code_str(self.0))
    }
}

/// An error code as clients see it (`AUTH_TOKEN_INVALID`): its name in our error body.
fn code_str(code: ErrorCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The bearer token of the handshake request, if any.
/// The access token a handshake presents: `auth.token` when it is a non-blank string, else an
/// `Authorization: Bearer` header; and `auth.lastSeq` when it is an integer. Pure, so it can be
/// fuzzed: any `auth` value and any header give an answer, never a panic.
pub fn handshake_credentials(auth: &Value, authorization: Option<&str>) -> (Option<String>, Option<i64>) {
    let last_seq = auth.get("lastSeq").and_then(Value::as_i64);
    let from_auth = auth.get("token").and_then(Value::as_str).filter(|t| !t.trim().is_empty()).map(str::to_owned);
    let from_header = || {
        let (scheme, token) = authorization?.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_owned())
    };
    (from_auth.or_else(from_header), last_seq)
}

/// Connect middleware: only a live session's access token gets in.
async fn authenticate(s: SocketRef, TryData(auth): TryData<Value>, State(ctx): State<Ctx>) -> Result<(), Refused> {
    let refuse = |code: ErrorCode, reason: &'static str| {
        metrics::counter!("lexiflow_realtime_handshake_refusals_total", "reason" => reason).increment(1);
        Refused(code)
    };
    let app = ctx.app().map_err(|e| Refused(e.code))?;
    // The handshake's `auth` object: `token` and `lastSeq`, each read on its own so that a
    // malformed `lastSeq` only means no replay.
    let auth = auth.unwrap_or_default();
    let header = s.req_parts().headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (token, last_seq) = handshake_credentials(&auth, header);
    let Some(token) = token else { return Err(refuse(ErrorCode::AuthRequired, "missing")) };
    let claims = app
        .tokens
        .verify(&token)
        .map_err(|e| refuse(e.code, if e.code == ErrorCode::AuthTokenExpired { "expired" } else { "invalid" }))?;
    let principal = crate::auth::principal_of(&app, &claims).await.map_err(|e| refuse(e.code, "session_ended"))?;
    let open = app
        .realtime
        .namespace()
        .map(|ns| ns.local().to(route::user_room(principal.user_id.0)).sockets().len())
        .unwrap_or(0);
    let (user, sid) = (principal.user_id.0, s.id.to_string());
    if !app.realtime.slots.take(user, &sid, app.config.realtime.max_connections_per_user, open).await {
        return Err(refuse(ErrorCode::RateLimitExceeded, "too_many_connections"));
    }
    let slot = app.realtime.slots.held(app.weak(), user, sid);
    s.extensions.insert(Arc::new(Conn { principal, last_seq, cases: Mutex::default(), _slot: slot }));
    Ok(())
}

/// Refuses (`AUTH_TOKEN_INVALID`) when `p`'s session has ended or its role changed since the
/// handshake, read from the database past the session cache.
async fn still_as_connected(app: &App, p: &Principal) -> Result<(), ApiError> {
    let now = crate::auth::fresh_principal(app, p).await?;
    if now.role != p.role {
        return Err(ApiError::new(ErrorCode::AuthTokenInvalid, "the user's role changed; connect again"));
    }
    Ok(())
}

/// The rooms every socket of `p` is in.
fn base_rooms(p: &Principal) -> Vec<String> {
    let mut rooms =
        vec![route::user_room(p.user_id.0), route::session_room(p.session_id.0), route::firm_room(p.firm_id.0)];
    if p.role.sees_all_cases() {
        rooms.push(route::all_cases_room(p.firm_id.0));
    }
    rooms
}

async fn on_connect(s: SocketRef, Extension(conn): Extension<Arc<Conn>>, State(ctx): State<Ctx>) {
    let Ok(app) = ctx.app() else {
        s.disconnect().ok();
        return;
    };
    app.realtime.connected.fetch_add(1, Ordering::AcqRel);
    metrics::gauge!("lexiflow_realtime_connections").increment(1.0);
    s.on_disconnect(|State(ctx): State<Ctx>| async move {
        metrics::gauge!("lexiflow_realtime_connections").decrement(1.0);
        if let Ok(app) = ctx.app() {
            app.realtime.connected.fetch_sub(1, Ordering::AcqRel);
        }
    });
    s.on("subscribe:case", subscribe);
    s.on("unsubscribe:case", unsubscribe);
    s.on_fallback(unknown);
    let p = &conn.principal;
    let _ = s.emit(
        "connected",
        &json!({
            "message": "connected to LexiFlow realtime events",
            "userId": p.user_id,
            "timestamp": crate::clock::now(),
        }),
    );
    // The handshake's check may have read the session cache, and a revocation or role change
    // may commit between it and joining the rooms: read both again under the feed's lock.
    let gate = async {
        still_as_connected(&app, p).await?;
        Ok(feed::Joining { rooms: base_rooms(p), before: Vec::new(), follow: None })
    };
    match feed::replay_then_join(&app, &s, p.firm_id, conn.last_seq, gate).await {
        Ok(feed::Replay::Done { .. }) => {}
        Ok(feed::Replay::Resync { seq }) => {
            let _ = s.emit("resync", &json!({ "status": "resync", "seq": seq }));
        }
        Err(e) if e.code == ErrorCode::AuthTokenInvalid => {
            metrics::counter!("lexiflow_realtime_handshake_refusals_total", "reason" => "session_ended").increment(1);
            s.disconnect().ok();
        }
        Err(e) => {
            tracing::warn!(error = %e, "realtime: cannot start a socket's feed; closing it");
            s.disconnect().ok();
        }
    }
}

/// `subscribe:case` and `unsubscribe:case` payloads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaseMsg {
    case_id: Uuid,
    since: Option<i64>,
}

fn error_ack(e: &ApiError) -> Value {
    json!({ "status": "error", "error": { "code": code_str(e.code), "message": e.message } })
}

/// Counts one client message against the user's budget.
async fn within_budget(app: &App, p: &Principal) -> Result<(), ApiError> {
    let quota = Quota { limit: app.config.realtime.messages_per_minute.max(1), period: Duration::from_secs(60) };
    let d = app.limiter.check(&format!("rt:{}", p.user_id.0), quota).await;
    if d.allowed {
        Ok(())
    } else {
        metrics::counter!("lexiflow_realtime_messages_refused_total").increment(1);
        Err(ApiError::new(ErrorCode::RateLimitExceeded, "too many realtime messages; slow down"))
    }
}

fn bad_payload() -> ApiError {
    ApiError::new(ErrorCode::ValidationFailed, "send {caseId: <uuid>} (and optionally since: <seq>)")
}

async fn subscribe(
    s: SocketRef,
    TryData(msg): TryData<CaseMsg>,
    ack: AckSender,
    Extension(conn): Extension<Arc<Conn>>,
    State(ctx): State<Ctx>,
) {
    let reply = match follow(&s, msg, &conn, &ctx).await {
        Ok(v) => v,
        Err(e) => error_ack(&e),
    };
    let _ = ack.send(&reply);
}

async fn follow(
    s: &SocketRef,
    msg: Result<CaseMsg, socketioxide::ParserError>,
    conn: &Conn,
    ctx: &Ctx,
) -> Result<Value, ApiError> {
    let app = ctx.app()?;
    let p = &conn.principal;
    within_budget(&app, p).await?;
    let msg = msg.map_err(|_| bad_payload())?;
    let case = msg.case_id;
    // Under the feed's lock (see `replay_then_join`), from the database: a removal from the
    // team committed a moment ago is seen here, one committed after reaches the socket in the
    // room. The API's rule: a missing case and one the user may not see get the same answer.
    let gate = async {
        // Counted under the lock too: a socket's subscriptions are handled concurrently, and
        // a case is counted once it has joined (in `replay_then_join`).
        if !conn.follows(case)
            && conn.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
                >= app.config.realtime.max_cases_per_socket
        {
            return Err(ApiError::new(
                ErrorCode::RateLimitExceeded,
                format!("a connection may follow at most {} cases", app.config.realtime.max_cases_per_socket),
            ));
        }
        // The session and role too: a disconnect for them may be waiting behind this lock.
        still_as_connected(&app, p).await?;
        let access =
            crate::cases::access::visible_case(&app.db, p, CaseId(case)).await?.with_sealed_grant(&app.db).await?;
        let mut rooms = vec![route::case_room(case)];
        if access.team_role == Some(crate::cases::model::TeamRole::Client) {
            rooms.push(route::case_clients_room(case));
        }
        if access.sees_sealed() {
            rooms.push(route::case_sealed_room(case));
        }
        let before: Vec<String> = s.rooms().into_iter().map(|r| r.to_string()).collect();
        Ok(feed::Joining { rooms: before.iter().cloned().chain(rooms).collect(), before, follow: Some(case) })
    };
    let outcome = feed::replay_then_join(&app, s, p.firm_id, msg.since, gate).await?;
    Ok(match outcome {
        feed::Replay::Done { sent, seq } => {
            json!({ "status": "subscribed", "caseId": case, "replayed": sent, "seq": seq })
        }
        feed::Replay::Resync { seq } => json!({ "status": "resync", "caseId": case, "seq": seq }),
    })
}

async fn unsubscribe(
    s: SocketRef,
    TryData(msg): TryData<CaseMsg>,
    ack: AckSender,
    Extension(conn): Extension<Arc<Conn>>,
    State(ctx): State<Ctx>,
) {
    let reply = async {
        let app = ctx.app()?;
        within_budget(&app, &conn.principal).await?;
        let case = msg.map_err(|_| bad_payload())?.case_id;
        s.leave(route::case_rooms(case));
        conn.forget(case);
        Ok::<_, ApiError>(json!({ "status": "unsubscribed", "caseId": case }))
    }
    .await
    .unwrap_or_else(|e| error_ack(&e));
    let _ = ack.send(&reply);
}

/// Any other client message: counted against the budget, answered with an error ack.
async fn unknown(ack: AckSender, Extension(conn): Extension<Arc<Conn>>, State(ctx): State<Ctx>) {
    let e = match ctx.app() {
        Ok(app) => match within_budget(&app, &conn.principal).await {
            Ok(()) => ApiError::new(ErrorCode::ValidationFailed, "unknown event; see docs/REALTIME.md"),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let _ = ack.send(&error_ack(&e));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `part` lies inside `buf`'s bytes.
    fn within(part: &[u8], buf: &bytes::Bytes) -> bool {
        let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
        (start..end).contains(&(part.as_ptr() as usize))
    }

    #[test]
    fn a_compacted_request_head_keeps_nothing_of_the_read_buffer_and_changes_nothing() {
        // As hyper parses a head: the URI and the values are slices of the buffer it read into.
        let buf = bytes::Bytes::from(
            b"/socket.io/?EIO=4&transport=websocket|Bearer abc.def|https://app.example|x".repeat(100),
        );
        let uri = http::Uri::from_maybe_shared(buf.slice(0..37)).unwrap();
        let mut token = http::HeaderValue::from_maybe_shared(buf.slice(38..52)).unwrap();
        token.set_sensitive(true);
        let origin = http::HeaderValue::from_maybe_shared(buf.slice(53..72)).unwrap();
        let mut req = http::Request::builder().uri(uri).body(()).unwrap();
        req.headers_mut().append(http::header::AUTHORIZATION, token);
        req.headers_mut().append(http::header::ORIGIN, origin.clone());
        req.headers_mut().append(http::header::ORIGIN, origin);
        req.extensions_mut().insert(7_u8);
        let original = http::Uri::from_maybe_shared(buf.slice(0..37)).unwrap();
        req.extensions_mut().insert(axum::extract::OriginalUri(original));
        assert!(within(req.uri().path().as_bytes(), &buf), "the set-up slices the buffer");

        let req = compact_head(req);

        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert!(!within(req.uri().path().as_bytes(), &buf));
        assert!(!within(req.uri().query().unwrap().as_bytes(), &buf));
        let auth = &req.headers()[http::header::AUTHORIZATION];
        assert_eq!(auth, "Bearer abc.def");
        assert!(auth.is_sensitive(), "a sensitive value stays sensitive");
        let origins: Vec<_> = req.headers().get_all(http::header::ORIGIN).iter().collect();
        assert_eq!(origins, ["https://app.example", "https://app.example"], "repeated headers are all kept");
        for (_, v) in req.headers() {
            assert!(!within(v.as_bytes(), &buf), "{v:?} still points into the read buffer");
        }
        assert_eq!(req.extensions().get::<u8>(), Some(&7), "extensions (hyper's upgrade) are kept");
        let original = &req.extensions().get::<axum::extract::OriginalUri>().unwrap().0;
        assert_eq!(original, "/socket.io/?EIO=4&transport=websocket");
        assert!(!within(original.path().as_bytes(), &buf), "axum's OriginalUri still points into the read buffer");
    }
}
