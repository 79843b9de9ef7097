//! The OpenAPI document's frame: title, security scheme, tags. Paths and schemas come from
//! the handlers themselves (see [`super::router`]), so the document cannot drift.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// The document's fixed parts.
#[derive(OpenApi)]
#[openapi(
    info(title = "LexiFlow API", description = "Legal practice management: firms, users, cases, teams, parties, dockets, documents and the calendar. Every response is enveloped: `{success, data, meta}` or `{success:false, error:{code,message,details,retryable}, meta}`."),
    paths(
        crate::uploads::http::create,
        crate::uploads::http::head,
        crate::uploads::http::patch,
        crate::uploads::http::delete,
        crate::uploads::http::get,
    ),
    modifiers(&BearerAuth),
    security(("bearerAuth" = [])),
    tags(
        (name = "auth", description = "Registration, login, tokens and sessions"),
        (name = "users", description = "A firm's people (admins only)"),
        (name = "cases", description = "Matters and their teams"),
        (name = "parties", description = "Parties to a case"),
        (name = "audit", description = "The tamper-evident audit trail (admins)"),
        (name = "admin", description = "Operating the job queue (operator admins)"),
        (name = "api-keys", description = "Keys for the firm's other systems (admins)"),
        (name = "webhooks", description = "Signed, durable event deliveries to the firm's systems"),
        (name = "documents", description = "A case's documents and their versions; downloads"),
        (name = "uploads", description = "Resumable uploads (tus 1.0.0; see docs/DOCUMENTS.md)"),
        (name = "calendar", description = "Events, reminders, court deadlines computed by rule, and the .ics feed (see docs/CALENDAR.md)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// `doc` as `GET /api/openapi.json` serves it, serialized once at start-up; `None` when it
/// cannot be (only a failing `Serialize` of one of utoipa's types could do it).
pub(crate) fn to_json(doc: &utoipa::openapi::OpenApi) -> Option<bytes::Bytes> {
    match serde_json::to_vec(doc) {
        Ok(json) => Some(json.into()),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize the OpenAPI document; /api/openapi.json answers 500");
            None
        }
    }
}

/// `GET /api/openapi.json`: the document [`to_json`] made.
pub(crate) fn serve_json(json: Option<bytes::Bytes>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match json {
        Some(json) => ([(http::header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => crate::http::error::ApiError::new(
            crate::http::error::ErrorCode::InternalError,
            "the OpenAPI document is unavailable",
        )
        .into_response(),
    }
}

/// The error answers any operation may give, each in our error body: documented on every
/// operation that does not name its own, so clients (and schemathesis) know every status the
/// API can answer. 401 is left off public operations (no security requirement).
pub fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    const COMMON: [(&str, &str); 11] = [
        ("400", "invalid input (VALIDATION_FAILED), naming each bad field"),
        ("401", "no valid credentials (AUTH_REQUIRED, AUTH_TOKEN_INVALID, AUTH_TOKEN_EXPIRED)"),
        ("403", "not allowed (FORBIDDEN)"),
        ("404", "no such resource, or one the caller may not see (RESOURCE_NOT_FOUND)"),
        ("405", "method not allowed (METHOD_NOT_ALLOWED)"),
        (
            "412",
            "a precondition failed: a stale version or If-Match (PRECONDITION_FAILED); on tus routes, a missing or unsupported Tus-Resumable",
        ),
        ("413", "body too large (PAYLOAD_TOO_LARGE)"),
        ("415", "unsupported media type (UNSUPPORTED_MEDIA_TYPE)"),
        ("429", "rate-limited (RATE_LIMIT_EXCEEDED), with Retry-After"),
        ("500", "an internal error (INTERNAL_ERROR); nothing was changed"),
        ("503", "a dependency is unavailable (DEPENDENCY_UNAVAILABLE), or the server is shutting down"),
    ];
    let body = || ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            let public = op.security.as_ref().is_some_and(|s| {
                s.iter().all(|r| serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty())))
            });
            for (code, why) in COMMON {
                if code == "401" && public {
                    continue;
                }
                op.responses.responses.entry(code.to_owned()).or_insert_with(|| {
                    RefOr::T(ResponseBuilder::new().description(why).content("application/json", body()).build())
                });
            }
        }
    }
}
