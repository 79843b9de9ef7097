//! Extractors whose rejections are our error body, never the framework's plain text.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::*},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// JSON body. Unknown fields are refused by the body types themselves
/// (`#[serde(deny_unknown_fields)]`), so a smuggled `role` is an error, never ignored.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
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
