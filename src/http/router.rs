//! Every route of the server, in one place: the API's table of contents.
//!
//! Routes are public only when listed under "public"; everything else sits behind
//! [`require_auth`], applied to the whole protected group at once.

use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    context::{CORRELATION_ID, RESPONSE_TIME, not_found, request_context},
    openapi::ApiDoc,
};
use crate::{app::App, auth, auth::require_auth, cases, health, parties, users};

/// Routes anyone may call.
fn public_api() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(auth::http::register))
        .routes(routes!(auth::http::login))
        .routes(routes!(auth::http::refresh))
}

/// Routes that need a valid access token.
fn protected_api() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        // auth
        .routes(routes!(auth::http::logout))
        .routes(routes!(auth::http::me))
        .routes(routes!(auth::http::sessions))
        .routes(routes!(auth::http::revoke_session))
        // users
        .routes(routes!(users::http::create, users::http::list))
        .routes(routes!(users::http::update))
        // cases and teams
        .routes(routes!(cases::http::create, cases::http::list))
        .routes(routes!(cases::http::get, cases::http::update, cases::http::delete))
        .routes(routes!(cases::http::team_list, cases::http::team_add))
        .routes(routes!(cases::http::team_remove))
        // parties
        .routes(routes!(parties::http::list, parties::http::create))
        .routes(routes!(parties::http::get, parties::http::update, parties::http::delete))
}

/// The OpenAPI document, built from the same handlers the router serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<App>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", public_api().merge(protected_api()))
        .into_openapi()
}

/// The whole HTTP application.
pub fn build(app: App) -> Router {
    let api =
        public_api().merge(protected_api().route_layer(middleware::from_fn_with_state(app.clone(), require_auth)));
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", api).split_for_parts();

    Router::new()
        .merge(api)
        // Public: probes and documentation.
        .route("/health", get(health::health))
        .route("/health/liveness", get(health::liveness))
        .route("/health/readiness", get(health::readiness))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", doc))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(app.config.max_json_body))
        .layer(cors(&app.config.cors_origins))
        .layer(middleware::from_fn(request_context))
        .with_state(app)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            CORRELATION_ID.clone(),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([CORRELATION_ID.clone(), RESPONSE_TIME.clone(), header::ETAG, header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}
