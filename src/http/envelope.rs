//! The response envelope: `{"success":true,"data":…,"meta":{…}}` for success, the error body
//! for failures, and the request context both read their `meta` from.

use std::{sync::Arc, time::Instant};

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::error::ApiError;

/// What every response's `meta` is made of, set by the request-context middleware.
#[derive(Debug)]
pub struct RequestContext {
    pub correlation_id: String,
    pub method: String,
    pub path: String,
    pub started: Instant,
    pub received_at: DateTime<Utc>,
    /// The client's address (see `http::client_ip`), when served from a socket.
    pub client_ip: Option<std::net::IpAddr>,
    /// The `User-Agent`, cleaned and cut to 512 characters.
    pub user_agent: Option<String>,
    /// When the request's last write transaction committed, in microseconds after `started`
    /// (0: none yet); see [`RequestContext::mark_committed`].
    pub committed_us: std::sync::atomic::AtomicU64,
}

impl RequestContext {
    /// Records that a write transaction of this request has just committed and succeeded; the
    /// answer's `Server-Timing: commit;dur=…` says when (`App::write` calls it).
    pub fn mark_committed(&self) {
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        self.committed_us.store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Milliseconds from the request's arrival to its last commit, if it committed.
    pub fn committed_ms(&self) -> Option<f64> {
        match self.committed_us.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
}

tokio::task_local! {
    /// The context of the request this task is serving.
    pub static REQUEST: Arc<RequestContext>;
}

/// `meta` as sent to clients.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub correlation_id: String,
    pub timestamp: String,
    pub path: String,
    pub method: String,
    pub response_time_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

pub use crate::paging::{CursorPagination, OffsetPagination, Pagination};

/// Builds `meta` from the current request's context (or a fresh one outside a request).
pub fn meta(ctx: Option<&RequestContext>, pagination: Option<Pagination>) -> Meta {
    let now = Utc::now();
    match ctx {
        Some(c) => Meta {
            correlation_id: c.correlation_id.clone(),
            timestamp: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            path: c.path.clone(),
            method: c.method.clone(),
            response_time_ms: (c.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            pagination,
        },
        None => Meta {
            correlation_id: String::new(),
            timestamp: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            path: String::new(),
            method: String::new(),
            response_time_ms: 0.0,
            pagination,
        },
    }
}

fn current_meta(pagination: Option<Pagination>) -> Meta {
    REQUEST.try_with(|c| meta(Some(c), pagination.clone())).unwrap_or_else(|_| meta(None, pagination))
}

/// The error body for `err` (`ctx` None: taken from the task-local, if any).
pub fn render_error(err: &ApiError, ctx: Option<&RequestContext>) -> Vec<u8> {
    let m = match ctx {
        Some(c) => meta(Some(c), None),
        None => current_meta(None),
    };
    let body = ErrorBody {
        success: false,
        error: ErrorDetail {
            code: err.code,
            message: err.message.to_string(),
            details: err.details.clone(),
            retryable: err.code.retryable(),
        },
        meta: m,
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"success\":false}".to_vec())
}

/// A successful response: status, data, optional paging and ETag.
#[derive(Debug)]
pub struct Envelope<T> {
    status: StatusCode,
    data: T,
    pagination: Option<Pagination>,
    etag: Option<String>,
    secret: Option<HoldsSecret>,
}

/// Marks an answer that shows a secret once (a new key, token or signing secret) in the named
/// fields of its `data`: they are never stored, not even for an `Idempotency-Key` replay,
/// which gets the answer with them null (see [`super::idempotency`]).
#[derive(Clone, Copy, Debug)]
pub struct HoldsSecret(pub &'static [&'static str]);

/// The documented shape of a success body (for OpenAPI).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Success<T> {
    pub success: bool,
    pub data: T,
    pub meta: Meta,
}

/// The documented shape of an error body (for OpenAPI).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    pub error: ErrorDetail,
    pub meta: Meta,
}

/// The `error` member of an error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: super::error::ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub retryable: bool,
}

impl<T: Serialize> Envelope<T> {
    /// 200 with `data`.
    pub fn ok(data: T) -> Self {
        Self { status: StatusCode::OK, data, pagination: None, etag: None, secret: None }
    }

    /// 201 with `data`.
    pub fn created(data: T) -> Self {
        Self { status: StatusCode::CREATED, ..Self::ok(data) }
    }

    /// 200 with a page of items.
    pub fn page(data: T, pagination: Pagination) -> Self {
        Self { pagination: Some(pagination), ..Self::ok(data) }
    }

    /// Adds an `ETag` header (the resource's version).
    pub fn etag(mut self, version: i32) -> Self {
        self.etag = Some(format!("\"{version}\""));
        self
    }

    /// Marks the answer as showing a secret in `fields` of its data ([`HoldsSecret`]).
    pub fn holding_secret(mut self, fields: &'static [&'static str]) -> Self {
        self.secret = Some(HoldsSecret(fields));
        self
    }
}

#[derive(Serialize)]
struct Body<'a, T> {
    success: bool,
    data: &'a T,
    meta: Meta,
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        let body = Body { success: true, data: &self.data, meta: current_meta(self.pagination) };
        match serde_json::to_vec(&body) {
            Ok(bytes) => {
                let mut res = (self.status, bytes).into_response();
                res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(tag) = self.etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                    res.headers_mut().insert(header::ETAG, tag);
                }
                if let Some(secret) = self.secret {
                    res.extensions_mut().insert(secret);
                }
                res
            }
            Err(e) => ApiError::internal(e).into_response(),
        }
    }
}
