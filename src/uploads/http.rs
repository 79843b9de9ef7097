//! `/api/v1/uploads`: the tus 1.0.0 endpoints, and a JSON view of an upload.
//!
//! Mounted outside the request deadline (an upload PATCH may stream for minutes) and without
//! the JSON body limit (the body is streamed and measured against `Upload-Length`), but
//! behind authentication and the global rate limit like every other route (which exempts
//! PATCH: see `ratelimit::exempt`).

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{Creation, Patch, model, tus};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppPath, Envelope,
        context::detached,
        envelope::{ErrorBody, Success},
        error::ErrorCode,
    },
    ids::UploadId,
};

pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The request headers a browser's tus client sends (for CORS).
pub const REQUEST_HEADERS: [HeaderName; 6] =
    [TUS_RESUMABLE, UPLOAD_OFFSET, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_CHECKSUM, UPLOAD_DEFER_LENGTH];
/// The response headers a browser's tus client reads (for CORS).
pub const RESPONSE_HEADERS: [HeaderName; 9] = [
    header::LOCATION,
    TUS_RESUMABLE,
    TUS_VERSION,
    TUS_EXTENSION,
    TUS_MAX_SIZE,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
];

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// A tus response: the status, `Tus-Resumable`, and `extra` headers.
fn tus_response(status: StatusCode, extra: Vec<(HeaderName, HeaderValue)>) -> Response {
    let mut res = status.into_response();
    let h = res.headers_mut();
    h.insert(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
    for (k, v) in extra {
        h.insert(k, v);
    }
    res
}

/// An error in our body, with `Tus-Resumable` (and `Tus-Version` when the version was wrong).
fn tus_error(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
    res
}

/// Refuses a request without `Tus-Resumable: 1.0.0` (412, with the versions served).
fn version_refused(h: &HeaderMap) -> Option<Response> {
    if h.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()) == Some(tus::VERSION) {
        return None;
    }
    let mut res = tus_error(ApiError::new(ErrorCode::PreconditionFailed, "send Tus-Resumable: 1.0.0"));
    res.headers_mut().insert(TUS_VERSION, HeaderValue::from_static(tus::VERSION));
    Some(res)
}

fn number(h: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::field(name.as_str(), "must be a non-negative integer")),
    }
}

fn location(row: &model::Model) -> HeaderValue {
    value(&format!("/api/v1/uploads/{}", row.id))
}

fn progress_headers(row: &model::Model) -> Vec<(HeaderName, HeaderValue)> {
    vec![(UPLOAD_OFFSET, value(&row.offset.to_string())), (UPLOAD_EXPIRES, value(&super::expires_header(row)))]
}

/// Answers tus's discovery request (`OPTIONS` that is not a CORS preflight) on the uploads
/// routes; passes everything else on.
pub async fn discovery(State(app): State<App>, req: Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::OPTIONS && !req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return options(&app);
    }
    next.run(req).await
}

/// `OPTIONS /uploads`: what this server speaks.
fn options(app: &App) -> Response {
    tus_response(
        StatusCode::NO_CONTENT,
        vec![
            (TUS_VERSION, HeaderValue::from_static(tus::VERSION)),
            (TUS_EXTENSION, HeaderValue::from_static(tus::EXTENSIONS)),
            (TUS_MAX_SIZE, value(&app.config.files.max_file_size.to_string())),
            (TUS_CHECKSUM_ALGORITHM, HeaderValue::from_static(tus::CHECKSUM_ALGORITHMS)),
        ],
    )
}

/// The PATCH parameters of a request's headers.
fn patch_request(h: &HeaderMap, offset_required: bool) -> Result<Option<Patch>, ApiError> {
    let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some(OFFSET_OCTET_STREAM) {
        if offset_required {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the bytes as Content-Type: application/offset+octet-stream",
            ));
        }
        return Ok(None);
    }
    let offset = match number(h, &UPLOAD_OFFSET)? {
        Some(o) => o,
        None if offset_required => return Err(ApiError::field("Upload-Offset", "is required")),
        None => 0,
    };
    let checksum = match h.get(&UPLOAD_CHECKSUM) {
        None => None,
        Some(v) => {
            Some(tus::parse_checksum(v.to_str().unwrap_or("")).map_err(|m| ApiError::field("Upload-Checksum", m))?)
        }
    };
    Ok(Some(Patch { offset, content_length: number(h, &header::CONTENT_LENGTH)?, checksum }))
}

/// Create an upload (tus 1.0 creation; creation-with-upload when the body carries bytes as
/// `application/offset+octet-stream`). `Upload-Metadata` must hold `filename` and `caseId`
/// (base64 values, tus style). See docs/DOCUMENTS.md.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads",
    params(
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Length" = u64, Header, description = "the file's size in bytes"),
        ("Upload-Metadata" = String, Header, description = "`filename <base64>,caseId <base64>[,filetype <base64>]`"),
    ),
    responses((status = 201, description = "created; `Location` is the upload's URL, `Upload-Expires` when it lapses"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 413, body = ErrorBody)))]
/// `POST /uploads`: creation (and creation-with-upload when the body carries bytes).
/// `Upload-Metadata` must hold `filename` and `caseId` (a case the caller may change);
/// `filetype` is kept as declared but never trusted.
pub async fn create(State(app): State<App>, p: Principal, req: Request) -> Response {
    if let Some(res) = version_refused(req.headers()) {
        return res;
    }
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let work = async {
        if h.contains_key(&UPLOAD_DEFER_LENGTH) {
            return Err(ApiError::field(
                "Upload-Defer-Length",
                "deferred lengths are not supported; send Upload-Length",
            ));
        }
        let length = number(h, &UPLOAD_LENGTH)?.ok_or_else(|| ApiError::field("Upload-Length", "is required"))?;
        let metadata = h.get(&UPLOAD_METADATA).map(|v| v.to_str().unwrap_or("\u{0}").to_owned()).unwrap_or_default();
        let first = patch_request(h, false)?;
        if first.as_ref().is_some_and(|f| f.offset != 0) {
            return Err(ApiError::field("Upload-Offset", "a creation's bytes start at 0"));
        }
        Ok((length, metadata, first))
    };
    let (length, metadata, first) = match work.await {
        Ok(x) => x,
        Err(e) => return tus_error(e),
    };
    let task = detached(async move {
        let row = super::create(&app, &p, Creation { length, metadata }).await?;
        let row = match first {
            Some(first) if row.completed_at.is_none() => super::patch(&app, &p, UploadId(row.id), first, body).await?,
            _ => row,
        };
        Ok::<_, ApiError>(row)
    })
    .await;
    match task.unwrap_or_else(|e| Err(ApiError::internal(e))) {
        Ok(row) => {
            let mut headers = progress_headers(&row);
            headers.push((header::LOCATION, location(&row)));
            tus_response(StatusCode::CREATED, headers)
        }
        Err(e) => tus_error(e),
    }
}

/// Where to resume: `Upload-Offset`, `Upload-Length`, `Upload-Metadata`, `Upload-Expires`.
#[utoipa::path(head, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = UploadId, Path, description = "upload id"), ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses((status = 200, description = "the upload's offset in `Upload-Offset`"), (status = 404, description = "no such upload of yours")))]
/// `HEAD /uploads/{id}`: where to resume.
pub async fn head(State(app): State<App>, p: Principal, AppPath(id): AppPath<UploadId>, h: HeaderMap) -> Response {
    if let Some(res) = version_refused(&h) {
        return res;
    }
    let row = match super::find(&app, &p, id).await {
        Ok(row) => super::finish_stranded(&app, &p, row).await,
        Err(e) => Err(e),
    };
    match row {
        Ok(row) => {
            let mut headers = progress_headers(&row);
            headers.push((UPLOAD_LENGTH, value(&row.length.to_string())));
            headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
            if !row.metadata.is_empty() {
                headers.push((UPLOAD_METADATA, value(&row.metadata)));
            }
            tus_response(StatusCode::OK, headers)
        }
        Err(e) => tus_error(e),
    }
}

/// Send bytes at `Upload-Offset` (`application/offset+octet-stream`), optionally with
/// `Upload-Checksum: sha1|sha256 <base64>`.
#[utoipa::path(patch, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(
        ("id" = UploadId, Path, description = "upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Offset" = u64, Header, description = "where these bytes go"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1 <base64>` or `sha256 <base64>` of this request's bytes"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "stored; the new `Upload-Offset`"), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 423, body = ErrorBody), (status = 460, body = ErrorBody, description = "checksum mismatch")))]
/// `PATCH /uploads/{id}`: bytes at `Upload-Offset`. A wrong offset is 409, a checksum
/// mismatch 460, bytes past `Upload-Length` 413, another PATCH in progress 423; each changes
/// nothing. The work runs to its end even if the client hangs up.
pub async fn patch(State(app): State<App>, p: Principal, AppPath(id): AppPath<UploadId>, req: Request) -> Response {
    if let Some(res) = version_refused(req.headers()) {
        return res;
    }
    let (parts, body) = req.into_parts();
    let patch = match patch_request(&parts.headers, true) {
        Ok(Some(patch)) => patch,
        Ok(None) => return tus_error(ApiError::field("Content-Type", "application/offset+octet-stream")),
        Err(e) => return tus_error(e),
    };
    let task = detached(async move { super::patch(&app, &p, id, patch, body).await }).await;
    match task.unwrap_or_else(|e| Err(ApiError::internal(e))) {
        Ok(row) => tus_response(StatusCode::NO_CONTENT, progress_headers(&row)),
        Err(e) => tus_error(e),
    }
}

/// Terminate an upload: it and its bytes are removed.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = UploadId, Path, description = "upload id"), ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 423, body = ErrorBody)))]
/// `DELETE /uploads/{id}`: termination.
pub async fn delete(State(app): State<App>, p: Principal, AppPath(id): AppPath<UploadId>, h: HeaderMap) -> Response {
    if let Some(res) = version_refused(&h) {
        return res;
    }
    match super::terminate(&app, &p, id).await {
        Ok(()) => tus_response(StatusCode::NO_CONTENT, Vec::new()),
        Err(e) => tus_error(e),
    }
}

/// An upload as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    pub id: UploadId,
    pub case_id: uuid::Uuid,
    pub filename: String,
    pub length: i64,
    pub offset: i64,
    pub completed: bool,
    /// Sniffed from the bytes once complete.
    pub mime: Option<String>,
    pub sha256: Option<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The upload as JSON (not part of tus): offset, length, and once complete its sniffed type
/// and SHA-256.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = UploadId, Path, description = "upload id")),
    responses((status = 200, body = Success<UploadView>), (status = 404, body = ErrorBody)))]
/// `GET /uploads/{id}`: the upload's state as JSON (not part of tus).
pub async fn get(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<UploadId>,
) -> ApiResult<Envelope<UploadView>> {
    let row = super::find(&app, &p, id).await?;
    let row = super::finish_stranded(&app, &p, row).await?;
    Ok(Envelope::ok(UploadView {
        id: UploadId(row.id),
        case_id: row.case_id,
        filename: row.filename,
        length: row.length,
        offset: row.offset,
        completed: row.completed_at.is_some(),
        mime: row.mime,
        sha256: row.sha256,
        expires_at: row.expires_at,
    }))
}
