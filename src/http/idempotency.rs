//! `Idempotency-Key` on POST: a retried create returns the first result.
//!
//! Per firm and key, the first request's fingerprint (SHA-256 of the caller — user, or API
//! key —, method, path, query and body) is claimed in `idempotency_keys` before the handler
//! runs, and its answer stored after:
//! - the same key with the same request gets the stored answer again, status included, with
//!   `Idempotent-Replayed: true`;
//! - the same key with a different request, or from another caller, gets 422
//!   `IDEMPOTENCY_KEY_REUSED` (never the other caller's answer: the handler's access checks
//!   would not have run for them);
//! - while the first is still being served, a duplicate gets 409 `CONFLICT` (retryable);
//! - a 5xx answer is not kept: the key is released so the client's retry runs again;
//! - an answer that shows a secret once (a new API key, feed token or webhook secret) is
//!   stored with its secret fields null: a replay learns what was made (to revoke or rotate
//!   it), never the secret.
//!
//! The handler runs on a task of its own, so a client that hangs up does not stop its answer
//! from being stored. Keys are kept 24 hours. While the handler runs, its claim is renewed
//! every [`HEARTBEAT`]; a claim not renewed for [`STALE`] belongs to a process that died, and a
//! retry then runs the request again. Limits: the answer is stored after the handler's
//! transaction committed, not in it; a process killed between the two leaves the key claimed
//! and unanswered for up to [`STALE`], then a retry runs the request again (so a create whose
//! commit landed just before the kill can be made twice: it is at least once, not exactly
//! once, across a crash).

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Duration as Span;
use http::{HeaderValue, Method, StatusCode, header};
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode};
use crate::{app::App, auth::Principal, clock};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// How long a key and its answer are kept.
const KEEP: Span = Span::hours(24);

/// A claim not renewed for this long, with no answer, is taken to be abandoned (its process
/// died). Found by `tests/cluster`'s kill loop: at 5 minutes (with no renewal) a client
/// retrying a request that was in flight on a killed instance got 409 for 5 minutes.
const STALE: Span = Span::seconds(30);

/// How often a running request renews its claim.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest request body fingerprinted (the bulk routes' limit); larger bodies are refused
/// by the routes themselves.
const MAX_REQUEST: usize = 32 * 1024 * 1024;

/// The largest answer stored; a larger one is served but not kept (the key is released).
const MAX_STORED: usize = 1024 * 1024;

/// The layer, inside authentication (it needs the caller's firm).
pub async fn idempotency(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else { return next.run(req).await };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) => k.to_owned(),
        _ => {
            return ApiError::field("Idempotency-Key", "1 to 255 visible ASCII characters").into_response();
        }
    };
    let Some((firm, caller)) = req.extensions().get::<Principal>().map(|p| {
        let caller = match &p.api_key {
            Some(k) => format!("key:{}", k.id),
            None => format!("user:{}", p.user_id.0),
        };
        (p.firm_id.0, caller)
    }) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_REQUEST).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large").into_response(),
    };
    let mut h = Sha256::new();
    h.update(caller.as_bytes());
    h.update(b"\n");
    h.update(parts.method.as_str().as_bytes());
    h.update(b" ");
    h.update(parts.uri.path().as_bytes());
    h.update(b"?");
    h.update(parts.uri.query().unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    let fingerprint = crate::audit::chain::hex(&h.finalize());

    match claim(&app, firm, &key, &fingerprint).await {
        Ok(Claim::Ours) => {}
        Ok(Claim::Replay(res)) => return res,
        Err(e) => return e.into_response(),
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    // On a task of its own: the answer is stored even if the client hangs up.
    let task = super::context::detached(async move {
        let run = next.run(req);
        tokio::pin!(run);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let res = loop {
            tokio::select! {
                res = &mut run => break res,
                _ = beat.tick() => renew(&app, firm, &key).await,
            }
        };
        settle(&app, firm, &key, res).await
    })
    .await;
    match task {
        Ok(res) => res,
        Err(e) => ApiError::internal(e).into_response(),
    }
}

enum Claim {
    Ours,
    Replay(Response),
}

/// Claims `key` for this request, or decides from the earlier one.
async fn claim(app: &App, firm: uuid::Uuid, key: &str, fingerprint: &str) -> Result<Claim, ApiError> {
    let db = app.db.get_database_backend();
    for _ in 0..2 {
        let now = clock::now();
        let inserted = app
            .db
            .execute_raw(crate::db::portable(
                db,
                "INSERT INTO idempotency_keys (firm_id, key, request_hash, created_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (firm_id, key) DO NOTHING",
                vec![firm.into(), key.into(), fingerprint.into(), now.into()],
            ))
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Ours);
        }
        let row = app
            .db
            .query_one_raw(crate::db::portable(
                db,
                "SELECT request_hash, status_code, content_type, body, created_at FROM idempotency_keys
                  WHERE firm_id = ? AND key = ?",
                vec![firm.into(), key.into()],
            ))
            .await?;
        let Some(row) = row else { continue };
        let hash: String = row.try_get_by_index(0)?;
        let status: Option<i32> = row.try_get_by_index(1)?;
        let content_type: Option<String> = row.try_get_by_index(2)?;
        let body: Option<String> = row.try_get_by_index(3)?;
        let created: chrono::DateTime<chrono::Utc> = row.try_get_by_index(4)?;
        let expired = created < now - KEEP || (status.is_none() && created < now - STALE);
        if expired {
            release(app, firm, key).await;
            continue;
        }
        if hash != fingerprint {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different request; use a new key",
            ));
        }
        let Some(status) = status else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a request with this Idempotency-Key is still being served; retry shortly",
            ));
        };
        metrics::counter!("lexiflow_idempotent_replays_total").increment(1);
        let mut res = Response::new(Body::from(body.unwrap_or_default()));
        *res.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
        if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Claim::Replay(res));
    }
    Err(ApiError::new(ErrorCode::Conflict, "this Idempotency-Key is busy; retry shortly"))
}

/// Renews a claim still waiting for its answer, so it is not taken for abandoned.
async fn renew(app: &App, firm: uuid::Uuid, key: &str) {
    let db = app.db.get_database_backend();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.db.execute_raw(crate::db::portable(
            db,
            "UPDATE idempotency_keys SET created_at = ? WHERE firm_id = ? AND key = ? AND status_code IS NULL",
            vec![clock::now().into(), firm.into(), key.into()],
        )),
    )
    .await;
    if !matches!(r, Ok(Ok(_))) {
        tracing::warn!("could not renew an idempotency claim; a retry may run the request again after it goes stale");
    }
}

/// Forgets a claim.
async fn release(app: &App, firm: uuid::Uuid, key: &str) {
    let db = app.db.get_database_backend();
    let r = app
        .db
        .execute_raw(crate::db::portable(
            db,
            "DELETE FROM idempotency_keys WHERE firm_id = ? AND key = ?",
            vec![firm.into(), key.into()],
        ))
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
}

/// Stores the answer under the claim (or releases the claim when it must not be kept), and
/// hands the answer on.
async fn settle(app: &App, firm: uuid::Uuid, key: &str, res: Response) -> Response {
    if res.status().is_server_error() {
        release(app, firm, key).await;
        return res;
    }
    let secret = res.extensions().get::<super::envelope::HoldsSecret>().copied();
    let (parts, body) = res.into_parts();
    let bytes = match to_bytes(body, MAX_STORED).await {
        Ok(b) => b,
        Err(e) => {
            release(app, firm, key).await;
            return ApiError::internal(e).into_response();
        }
    };
    let text = match secret {
        // A secret shown once is not kept in the clear for a day: the stored answer has its
        // secret fields null, so a retry learns the resource (its id, to revoke or rotate it).
        Some(super::envelope::HoldsSecret(fields)) => {
            serde_json::from_slice::<serde_json::Value>(&bytes).ok().map(|mut v| {
                if let Some(data) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
                    for f in fields {
                        if let Some(x) = data.get_mut(*f) {
                            *x = serde_json::Value::Null;
                        }
                    }
                }
                v.to_string()
            })
        }
        None => String::from_utf8(bytes.to_vec()).ok(),
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match text {
        Some(text) => store(app, firm, key, parts.status, content_type, text).await,
        None => release(app, firm, key).await,
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Stores an answer under the claim (releasing the claim when that fails).
async fn store(app: &App, firm: uuid::Uuid, key: &str, status: StatusCode, content_type: Option<String>, text: String) {
    let db = app.db.get_database_backend();
    let r = app
        .db
        .execute_raw(crate::db::portable(
            db,
            "UPDATE idempotency_keys SET status_code = ?, content_type = ?, body = ?
              WHERE firm_id = ? AND key = ?",
            vec![i32::from(status.as_u16()).into(), content_type.into(), text.into(), firm.into(), key.into()],
        ))
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not store an idempotent answer; releasing the key");
        release(app, firm, key).await;
    }
}

/// Deletes keys older than 24 hours; returns how many (the hourly `events.prune` job calls it).
pub async fn prune(db: &impl ConnectionTrait) -> Result<u64, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    Ok(db
        .execute_raw(crate::db::portable(
            backend,
            "DELETE FROM idempotency_keys WHERE created_at < ?",
            vec![(clock::now() - KEEP).into()],
        ))
        .await?
        .rows_affected())
}
