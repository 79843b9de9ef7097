//! The one error type that faces HTTP, and the catalogue of codes clients can rely on.
//!
//! Policy:
//! - Every rejection, ours or the framework's, leaves as the same body:
//!   `{"success":false,"error":{code,message,details,retryable},"meta":{…}}`.
//! - A code is chosen where the failure is understood (a domain error, an extractor, the auth
//!   layer); its HTTP status follows from the code, here and nowhere else.
//! - 4xx messages explain what to change. 5xx messages say only that it failed and carry the
//!   correlation id; the cause is logged once, by the request-context middleware, never sent.
//! - An outage (database unreachable, pool exhausted) is `DEPENDENCY_UNAVAILABLE` (503,
//!   retryable), never dressed up as a client mistake.

use std::{borrow::Cow, sync::Arc};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

/// Stable, documented error identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed or a field is invalid; `details.fields` names them.
    ValidationFailed,
    /// No access token was presented.
    AuthRequired,
    /// The token is malformed, forged, of the wrong type, or its session has ended.
    AuthTokenInvalid,
    /// The token was valid but has expired: refresh it.
    AuthTokenExpired,
    /// E-mail and password do not match an active account.
    AuthInvalidCredentials,
    /// The caller is known but may not do this.
    Forbidden,
    /// No such resource, or one the caller may not see.
    ResourceNotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The change clashes with existing data (a duplicate case number, say), or a request
    /// with the same `Idempotency-Key` is still being served.
    Conflict,
    /// The `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused,
    /// `If-Match` or `version` no longer matches: re-read and retry.
    PreconditionFailed,
    /// Another request holds the resource (a tus upload receiving a PATCH): retry shortly.
    ResourceLocked,
    /// The bytes do not match the checksum sent with them (tus `Upload-Checksum`); nothing
    /// was stored.
    ChecksumMismatch,
    /// The file was found infected and is quarantined: it is never served.
    FileQuarantined,
    /// `SCAN_REQUIRED` is on and the file has not (yet) been found clean.
    FileNotScanned,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The body is not JSON (or not the expected media type).
    UnsupportedMediaType,
    /// Too many requests; see `Retry-After`.
    RateLimitExceeded,
    /// The request took too long to arrive or to serve.
    RequestTimeout,
    /// A dependency (database, cache) is unavailable; retrying later may work.
    DependencyUnavailable,
    /// Something failed on our side; the correlation id finds it in the logs.
    InternalError,
}

impl ErrorCode {
    /// The HTTP status every response with this code carries.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            ValidationFailed => StatusCode::BAD_REQUEST,
            AuthRequired | AuthTokenInvalid | AuthTokenExpired | AuthInvalidCredentials => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            ResourceNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict => StatusCode::CONFLICT,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ResourceLocked => StatusCode::LOCKED,
            // tus 1.0's checksum extension: 460 Checksum Mismatch.
            ChecksumMismatch => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            FileQuarantined => StatusCode::FORBIDDEN,
            FileNotScanned => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            DependencyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed if simply sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimitExceeded
                | ErrorCode::RequestTimeout
                | ErrorCode::DependencyUnavailable
                | ErrorCode::ResourceLocked
                | ErrorCode::FileNotScanned
        )
    }

    /// The code for a bare status produced outside our handlers (framework or middleware).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 | 422 => ErrorCode::ValidationFailed,
            401 => ErrorCode::AuthRequired,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::ResourceNotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            409 => ErrorCode::Conflict,
            412 => ErrorCode::PreconditionFailed,
            423 => ErrorCode::ResourceLocked,
            460 => ErrorCode::ChecksumMismatch,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            429 => ErrorCode::RateLimitExceeded,
            502..=504 => ErrorCode::DependencyUnavailable,
            s if s < 500 => ErrorCode::ValidationFailed,
            _ => ErrorCode::InternalError,
        }
    }

    /// A default message for a bare status.
    pub fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            ValidationFailed => "the request is not valid",
            AuthRequired => "an access token is required",
            AuthTokenInvalid => "the access token is not valid",
            AuthTokenExpired => "the access token has expired",
            AuthInvalidCredentials => "e-mail or password is wrong",
            Forbidden => "you may not do this",
            ResourceNotFound => "no such resource",
            MethodNotAllowed => "this method is not allowed here",
            Conflict => "the change conflicts with existing data",
            IdempotencyKeyReused => "this Idempotency-Key was used with a different request",
            PreconditionFailed => "the resource has changed since you read it",
            ResourceLocked => "another request is using this resource; try again shortly",
            ChecksumMismatch => "the bytes do not match their checksum; nothing was stored",
            FileQuarantined => "this file was found infected and is quarantined",
            FileNotScanned => "this file has not been found clean by the virus scanner yet",
            PayloadTooLarge => "the request body is too large",
            UnsupportedMediaType => "send the body as application/json",
            RateLimitExceeded => "too many requests",
            RequestTimeout => "the request took too long",
            DependencyUnavailable => "a service we depend on is unavailable; try again shortly",
            InternalError => "something went wrong on our side",
        }
    }
}

type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// An error on its way to becoming a response.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub details: Option<Value>,
    /// Logged once by the middleware, never sent to the client.
    pub cause: Option<Cause>,
}

/// One invalid field, as listed in `details.fields`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl ApiError {
    /// An error with a code and a message the client can act on.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), details: None, cause: None }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `VALIDATION_FAILED` naming the fields at fault.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", fields.len()),
        };
        Self::new(ErrorCode::ValidationFailed, message).with_details(serde_json::json!({ "fields": fields }))
    }

    /// `VALIDATION_FAILED` for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::fields(vec![FieldError { field: field.to_owned(), message: message.into() }])
    }

    /// `RESOURCE_NOT_FOUND` for a kind of thing ("case", "party").
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::ResourceNotFound, format!("{what} not found"))
    }

    /// `FORBIDDEN` with a reason.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// A failure of ours: the cause is kept for the log, the client sees a generic message.
    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Arc::new(cause)),
            ..Self::new(ErrorCode::InternalError, ErrorCode::InternalError.default_message())
        }
    }

    /// A dependency is down: 503 and retryable, with the cause kept for the log.
    pub fn unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Arc::new(cause)),
            ..Self::new(ErrorCode::DependencyUnavailable, ErrorCode::DependencyUnavailable.default_message())
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Shorthand for handler and operation results.
pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    /// Renders the error body (its `meta` comes from the request's task-local context) and
    /// keeps the error in the response's extensions, so the request-context middleware logs
    /// the cause of a 5xx once and records the code on the request's log line.
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut res = (status, crate::http::envelope::render_error(&self, None)).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res.extensions_mut().insert(self);
        res
    }
}

/// What a client is told about one of our unique constraints: the field at fault and why.
const UNIQUE_MESSAGES: &[(&str, &str, &str)] = &[
    ("uq_cases_firm_case_number", "caseNumber", "a case with this number already exists in your firm"),
    ("uq_users_email", "email", "an account with this e-mail address already exists"),
    ("pk_case_team_members", "userId", "this user is already on the case team"),
];

/// The `409 CONFLICT` for a unique constraint by name; an unknown one is a generic conflict.
pub fn constraint_conflict(constraint: Option<&str>) -> ApiError {
    if let Some((name, field, message)) = UNIQUE_MESSAGES.iter().find(|(n, ..)| Some(*n) == constraint) {
        return ApiError::new(ErrorCode::Conflict, *message)
            .with_details(serde_json::json!({ "field": field, "constraint": name }));
    }
    ApiError::new(ErrorCode::Conflict, ErrorCode::Conflict.default_message())
}

/// Database errors as statuses: a unique violation is 409 (by constraint), an unreachable or
/// overloaded database 503, anything else 500. The cause is kept for the log (and for
/// [`crate::db::TxError::is_conflict`], which decides whether a transaction is run again).
impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match &e {
            crate::db::DbError::Unique { constraint, .. } => {
                let mut err = constraint_conflict(*constraint);
                err.cause = Some(Arc::new(e));
                err
            }
            _ if e.is_unavailable() => ApiError::unavailable(e),
            _ => ApiError::internal(e),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::from(crate::db::DbError::from(e))
    }
}

impl crate::db::TxError for ApiError {
    fn is_conflict(&self) -> bool {
        self.cause.as_ref().and_then(|c| c.downcast_ref::<crate::db::DbError>()).is_some_and(|e| e.is_conflict())
    }
}
