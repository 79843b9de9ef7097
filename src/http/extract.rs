//! Extractors whose rejections are our error body, never the framework's plain text.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::*},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
use crate::app::App;

/// JSON body. Unknown fields are refused by the body types themselves
/// (`#[serde(deny_unknown_fields)]`), so a smuggled `role` is an error, never ignored.
/// The content type must be JSON, the body within `MAX_JSON_BODY` and its nesting within
/// `MAX_JSON_DEPTH` — checked on the raw bytes before anything is parsed.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as application/json (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, app).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(ErrorCode::ValidationFailed, "the request body could not be read")
            }
        })?;
        let max = app.config.security.max_json_depth;
        if nesting_depth(&bytes) > max {
            return Err(ApiError::new(
                ErrorCode::ValidationFailed,
                format!("the body is nested more than {max} levels deep"),
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The deepest nesting of arrays and objects in a JSON text (strings skipped).
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json (Content-Type: application/json)",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(ErrorCode::ValidationFailed, format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field: "unknown field `role`", "missing field `title`".
            let text = e.body_text();
            if let Some((field, message)) = crate::input::field_error_of(&text) {
                return ApiError::field(field, message);
            }
            let detail = text.split_once(": ").map(|(_, d)| d.to_owned()).unwrap_or(text);
            ApiError::new(ErrorCode::ValidationFailed, format!("the body does not fit: {detail}"))
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(ErrorCode::ValidationFailed, "the request body could not be read")
            }
        }
        other => ApiError::new(ErrorCode::ValidationFailed, other.body_text()),
    }
}

/// Path parameters; a malformed id is a 400 naming the parameter.
#[derive(Debug)]
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(AppPath(v)),
            Err(e) => Err(ApiError::new(
                ErrorCode::ValidationFailed,
                format!("a path parameter is not valid: {}", e.body_text()),
            )),
        }
    }
}

/// Query string; an unknown or malformed parameter is a 400.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(AppQuery(v)),
            Err(e) => Err(ApiError::new(
                ErrorCode::ValidationFailed,
                format!("the query string is not valid: {}", e.body_text()),
            )),
        }
    }
}

/// The `If-Match` header as a version number, if one was sent.
/// `*` means "any version" and is treated as absent.
#[derive(Debug)]
pub struct IfMatch(pub Option<i32>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get(http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let s = v.to_str().map_err(|_| ApiError::field("If-Match", "not a valid ETag"))?.trim();
        if s == "*" {
            return Ok(IfMatch(None));
        }
        let tag = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
        tag.parse::<i32>()
            .map(|n| IfMatch(Some(n)))
            .map_err(|_| ApiError::field("If-Match", "not an ETag this server issued"))
    }
}

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn depth_counts_containers_and_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":1}"#), 1);
        assert_eq!(nesting_depth(br#"{"a":[{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{{\"[["}"#), 1);
        assert_eq!(nesting_depth(&b"[".repeat(10_000)), 10_000);
    }
}
