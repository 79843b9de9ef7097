//! Everything HTTP that is not a domain: the router, the envelope, errors, extractors,
//! paging, the request-context middleware and the OpenAPI document.

pub mod client_ip;
pub mod context;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod openapi;
pub mod pagination;
pub mod router;
pub mod security;

pub use envelope::Envelope;
pub use error::{ApiError, ApiResult, ErrorCode};
pub use extract::{AppJson, AppPath, AppQuery, IfMatch};
