//! `/api/v1/cases/{id}/documents` and `/api/v1/documents/...` handlers.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::ops::{self, AddVersion, CreateDocument, DocumentView, UpdateDocument, VersionView};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiError, ApiResult, AppJson, AppPath, AppQuery, Envelope, IfMatch,
        envelope::{ErrorBody, Success},
        pagination::{DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE},
    },
    ids::{CaseId, DocumentId},
};

/// `GET /cases/{id}/documents` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDocumentsQuery {
    /// Page number, from 1.
    pub page: Option<u64>,
    /// Items per page, at most 100.
    pub limit: Option<u64>,
}

/// `?version=` of a download.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version number; the current version when absent.
    pub version: Option<i32>,
}

/// A case's documents, newest first, each with its current version.
#[utoipa::path(get, path = "/cases/{id}/documents", tag = "documents",
    params(("id" = CaseId, Path, description = "case id"), ListDocumentsQuery),
    responses((status = 200, body = Success<Vec<DocumentView>>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppQuery(q): AppQuery<ListDocumentsQuery>,
) -> ApiResult<Envelope<Vec<DocumentView>>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let (items, pagination) = ops::list(&app, &p, case_id, q.page.unwrap_or(1).clamp(1, MAX_PAGE), limit).await?;
    Ok(Envelope::page(items, pagination))
}

/// File a document on a case from a finished upload (`/uploads`, tus): version 1.
#[utoipa::path(post, path = "/cases/{id}/documents", tag = "documents", request_body = CreateDocument,
    params(("id" = CaseId, Path, description = "case id")),
    responses((status = 201, body = Success<DocumentView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppPath(case_id): AppPath<CaseId>,
    AppJson(input): AppJson<CreateDocument>,
) -> ApiResult<impl IntoResponse> {
    let v = ops::create(&app, &p, case_id, input).await?;
    let version = v.version;
    Ok(Envelope::created(v).etag(version))
}

/// One document with its current version.
#[utoipa::path(get, path = "/documents/{id}", tag = "documents",
    params(("id" = DocumentId, Path, description = "document id")),
    responses((status = 200, body = Success<DocumentView>), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
) -> ApiResult<Envelope<DocumentView>> {
    let v = ops::get(&app, &p, id).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Change a document's title, type, tags, or (admins and partners) legal hold.
#[utoipa::path(patch, path = "/documents/{id}", tag = "documents", request_body = UpdateDocument,
    params(("id" = DocumentId, Path, description = "document id")),
    responses((status = 200, body = Success<DocumentView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<UpdateDocument>,
) -> ApiResult<Envelope<DocumentView>> {
    let v = ops::update(&app, &p, id, input, if_match).await?;
    let version = v.version;
    Ok(Envelope::ok(v).etag(version))
}

/// Delete a document (kept for the record); refused (409) under a legal hold.
#[utoipa::path(delete, path = "/documents/{id}", tag = "documents",
    params(("id" = DocumentId, Path, description = "document id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<impl IntoResponse> {
    ops::delete(&app, &p, id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A document's versions, newest first.
#[utoipa::path(get, path = "/documents/{id}/versions", tag = "documents",
    params(("id" = DocumentId, Path, description = "document id")),
    responses((status = 200, body = Success<Vec<VersionView>>), (status = 404, body = ErrorBody)))]
pub async fn versions(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
) -> ApiResult<Envelope<Vec<VersionView>>> {
    Ok(Envelope::ok(ops::versions(&app, &p, id).await?))
}

/// Add a version from a finished upload; numbers are gapless per document.
#[utoipa::path(post, path = "/documents/{id}/versions", tag = "documents", request_body = AddVersion,
    params(("id" = DocumentId, Path, description = "document id")),
    responses((status = 201, body = Success<DocumentView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_version(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
    AppJson(input): AppJson<AddVersion>,
) -> ApiResult<impl IntoResponse> {
    let v = ops::add_version(&app, &p, id, input).await?;
    let version = v.version;
    Ok(Envelope::created(v).etag(version))
}

/// A single byte range of `size` bytes from a `Range` header; None serves the whole file
/// (no header, or several ranges); Err is 416.
fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `Content-Disposition: attachment` per RFC 6266: an ASCII `filename` fallback and the real
/// name as `filename*` (RFC 8187, UTF-8, percent-encoded).
pub fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Download a version (the current one by default). `Range` (one range) and `If-None-Match`
/// are honoured; the `ETag` is the content's SHA-256. Infected files are never served (403
/// `FILE_QUARANTINED`); with `SCAN_REQUIRED` only clean ones are (409 `FILE_NOT_SCANNED`).
/// Every download is audited.
#[utoipa::path(get, path = "/documents/{id}/download", tag = "documents",
    params(("id" = DocumentId, Path, description = "document id"), VersionQuery),
    responses((status = 200, description = "the file"), (status = 206, description = "a byte range"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 416, description = "range not satisfiable")))]
pub async fn download(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
    AppQuery(q): AppQuery<VersionQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let d = ops::download(&app, &p, id, q.version).await?;
    let etag = format!("\"{}\"", d.sha256);
    let common = |res: &mut Response| {
        let h = res.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        common(&mut res);
        return Ok(res);
    }
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => parse_range(r, d.size),
        _ => Ok(None),
    };
    // The store is a dependency: a failure there is a 503 the client may retry.
    let io = crate::storage::api_error;
    let mut res = match range {
        Err(()) => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            res.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", d.size)).unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            common(&mut res);
            return Ok(res);
        }
        Ok(Some((start, end))) => {
            let len = end - start + 1;
            let body = Body::from_stream(app.storage.read_range(&d.storage_key, start, len).await.map_err(io)?);
            let mut res = (StatusCode::PARTIAL_CONTENT, body).into_response();
            let h = res.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{}", d.size))
                    .unwrap_or(HeaderValue::from_static("")),
            );
            res
        }
        Ok(None) => {
            let body = Body::from_stream(app.storage.read(&d.storage_key).await.map_err(io)?);
            let mut res = (StatusCode::OK, body).into_response();
            res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(d.size));
            res
        }
    };
    common(&mut res);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&d.mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&content_disposition(&d.filename)).unwrap_or(HeaderValue::from_static("attachment")),
    );
    Ok(res)
}

/// An image version's thumbnail (JPEG), once made.
#[utoipa::path(get, path = "/documents/{id}/thumbnail", tag = "documents",
    params(("id" = DocumentId, Path, description = "document id"), VersionQuery),
    responses((status = 200, description = "a JPEG"), (status = 404, body = ErrorBody)))]
pub async fn thumbnail(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<DocumentId>,
    AppQuery(q): AppQuery<VersionQuery>,
) -> ApiResult<Response> {
    let key = ops::thumbnail(&app, &p, id, q.version).await?;
    let bytes = app.storage.read_all(&key).await.map_err(crate::storage::api_error)?;
    let mut res = (StatusCode::OK, bytes).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
    }

    #[test]
    fn disposition_keeps_the_name_and_cannot_be_broken_out_of() {
        assert_eq!(
            content_disposition("Müller v. Smith \"final\".pdf"),
            "attachment; filename=\"M_ller v. Smith _final_.pdf\"; filename*=UTF-8''M%C3%BCller%20v.%20Smith%20%22final%22.pdf"
        );
        assert!(!content_disposition("a\r\nSet-Cookie: x").contains('\n'));
    }
}
