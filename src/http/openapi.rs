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
