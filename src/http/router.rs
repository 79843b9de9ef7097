//! Every route of the server, in one place: the API's table of contents.
//!
//! Routes are public only when listed under "public"; everything else sits behind
//! [`require_auth`], applied to the whole protected group at once. Per-route rate limits
//! (the seed's `@RateLimit`) are declared here, next to the routes they guard.

use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use tower_http::{
    compression::{
        CompressionLayer, CompressionLevel,
        predicate::{And, Predicate, SizeAbove},
    },
    cors::{AllowOrigin, CorsLayer},
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    context::{CORRELATION_ID, RESPONSE_TIME, not_found, record_route, request_context},
    openapi::ApiDoc,
    security,
};
use crate::{
    api_keys,
    app::App,
    audit, auth,
    auth::require_auth,
    calendar, cases,
    config::ThrottleConfig,
    docket, documents, health, jobs, parties,
    ratelimit::{By, RoutePolicy, global_limit, route_limit},
    realtime, reports, telemetry, uploads, users, webhooks,
};

/// Login: 5 a minute per client address (and, in the handler, 5 a minute per e-mail).
const LOGIN: RoutePolicy = RoutePolicy { name: "login", quota: |t: &ThrottleConfig| t.login_ip, by: By::Ip };
/// Registering a firm: a handful an hour per address.
const REGISTER: RoutePolicy = RoutePolicy { name: "register", quota: |t: &ThrottleConfig| t.register, by: By::Ip };
/// Refreshing tokens: stricter than the global limit.
const REFRESH: RoutePolicy = RoutePolicy { name: "refresh", quota: |t: &ThrottleConfig| t.refresh, by: By::Ip };

/// Largest body of a bulk request (10,000 items): larger than `MAX_JSON_BODY`, which guards
/// every other route.
const BULK_MAX_BODY: usize = 32 * 1024 * 1024;

/// Puts a route policy on `router` when serving (`app` is None when only documenting).
fn limited(router: OpenApiRouter<App>, app: Option<&App>, policy: RoutePolicy) -> OpenApiRouter<App> {
    match app {
        Some(app) => router.route_layer(middleware::from_fn_with_state((app.clone(), policy), route_limit)),
        None => router,
    }
}

/// Routes anyone may call.
fn public_api(app: Option<&App>) -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .merge(limited(OpenApiRouter::new().routes(routes!(auth::http::register)), app, REGISTER))
        .merge(limited(OpenApiRouter::new().routes(routes!(auth::http::login)), app, LOGIN))
        .merge(limited(OpenApiRouter::new().routes(routes!(auth::http::refresh)), app, REFRESH))
        // A calendar application's subscription: the secret token in the path is the key.
        .routes(routes!(calendar::http::feed))
}

/// Routes that need a valid access token.
fn protected_api() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        // auth
        .routes(routes!(auth::http::logout))
        .routes(routes!(auth::http::me))
        .routes(routes!(auth::http::sessions))
        .routes(routes!(auth::http::revoke_session))
        .routes(routes!(auth::http::firm_sessions))
        .routes(routes!(auth::http::revoke_firm_session))
        // API keys (signed-in admins)
        .routes(routes!(api_keys::http::create, api_keys::http::list))
        .routes(routes!(api_keys::http::revoke))
        // webhooks (admins, or keys with webhooks:manage)
        .routes(routes!(webhooks::http::create, webhooks::http::list))
        .routes(routes!(webhooks::http::get, webhooks::http::update, webhooks::http::delete))
        .routes(routes!(webhooks::http::rotate))
        .routes(routes!(webhooks::http::test))
        .routes(routes!(webhooks::http::deliveries))
        .routes(routes!(webhooks::http::redeliver))
        // users
        .routes(routes!(users::http::create, users::http::list))
        .routes(routes!(users::http::update))
        // cases and teams
        .routes(routes!(cases::http::create, cases::http::list))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(cases::http::bulk_create, cases::http::bulk_update))
                .routes(routes!(cases::http::bulk_delete))
                .routes(routes!(parties::http::bulk_create))
                .layer(DefaultBodyLimit::max(BULK_MAX_BODY)),
        )
        .routes(routes!(cases::http::get, cases::http::update, cases::http::delete))
        .routes(routes!(cases::http::team_list, cases::http::team_add))
        .routes(routes!(cases::http::team_remove))
        .routes(routes!(cases::http::sealed_access_list))
        .routes(routes!(cases::http::sealed_access_grant, cases::http::sealed_access_revoke))
        .routes(routes!(audit::http::case_history))
        // audit (admins)
        .routes(routes!(audit::http::list))
        .routes(routes!(audit::http::verify))
        .routes(routes!(audit::http::report))
        // job queue (operator admins)
        .routes(routes!(jobs::http::queues))
        .routes(routes!(jobs::http::jobs))
        .routes(routes!(jobs::http::pause))
        .routes(routes!(jobs::http::resume))
        .routes(routes!(jobs::http::clean))
        .routes(routes!(jobs::http::retry))
        .routes(routes!(jobs::http::cancel))
        .routes(routes!(jobs::http::breakers))
        // parties
        .routes(routes!(parties::http::list, parties::http::create))
        .routes(routes!(parties::http::get, parties::http::update, parties::http::delete))
        // docket
        .routes(routes!(docket::http::list, docket::http::create))
        .routes(routes!(docket::http::get, docket::http::update, docket::http::delete))
        // documents
        .routes(routes!(documents::http::list, documents::http::create))
        .routes(routes!(documents::http::get, documents::http::update, documents::http::delete))
        .routes(routes!(documents::http::versions, documents::http::add_version))
        .routes(routes!(documents::http::download))
        .routes(routes!(documents::http::thumbnail))
        // calendar
        .routes(routes!(calendar::http::list, calendar::http::create))
        .routes(routes!(calendar::http::upcoming))
        .routes(routes!(calendar::http::get, calendar::http::update, calendar::http::delete))
        .routes(routes!(calendar::http::rules, calendar::http::add_rule))
        .routes(routes!(calendar::http::remove_rule))
        .routes(routes!(calendar::http::closures, calendar::http::add_closure))
        .routes(routes!(calendar::http::remove_closure))
        .routes(routes!(calendar::http::create_feed, calendar::http::revoke_feed))
        .routes(routes!(calendar::http::compute))
        .routes(routes!(calendar::http::connections))
        .routes(routes!(calendar::http::authorize))
        .routes(routes!(calendar::http::callback))
        .routes(routes!(calendar::http::sync_now))
        .routes(routes!(calendar::http::disconnect))
        // reports
        .routes(routes!(reports::http::case_summary))
}

/// The OpenAPI document, built from the same handlers the router serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = OpenApiRouter::<App>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", public_api(None).merge(protected_api()))
        .into_openapi();
    super::openapi::document_errors(&mut doc);
    doc
}

/// The whole HTTP application.
pub fn build(app: App) -> Router {
    let api = public_api(Some(&app)).merge(
        protected_api()
            // Inside authentication: a key is per firm.
            .route_layer(middleware::from_fn_with_state(app.clone(), super::idempotency::idempotency))
            .route_layer(middleware::from_fn_with_state(app.clone(), require_auth)),
    );
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", api).split_for_parts();
    super::openapi::document_errors(&mut doc);
    // Served as it was serialized here: the document itself (utoipa's types, 4–5 MiB in
    // memory) is dropped, and its JSON is a few hundred KiB.
    let openapi_json = super::openapi::to_json(&doc);
    drop(doc);
    // The operator console's view of the same protected routes, behind its cookie and CSRF
    // check (which hands them a bearer token for the console's session).
    let console_api: Router<App> = protected_api()
        .route_layer(middleware::from_fn_with_state(app.clone(), super::idempotency::idempotency))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_auth))
        .into();

    let router = Router::new()
        .merge(api)
        // Public: probes and documentation.
        .route("/health", get(health::health))
        .route("/health/liveness", get(health::liveness))
        .route("/health/readiness", get(health::readiness))
        // Public unless METRICS_TOKEN is set (checked by the handlers).
        .route("/metrics", get(telemetry::prometheus))
        .route("/metrics/json", get(telemetry::json))
        .route("/metrics/system", get(telemetry::system))
        .route("/api/openapi.json", get(move || std::future::ready(super::openapi::serve_json(openapi_json.clone()))))
        .merge(SwaggerUi::new("/api/docs").config(utoipa_swagger_ui::Config::from("/api/openapi.json")))
        .merge(crate::console::routes(&app, console_api))
        // After routing: hands the matched route template out to the request line and metrics.
        .route_layer(middleware::from_fn(record_route))
        .fallback(not_found)
        // Layers, innermost first: a request meets them bottom to top.
        .layer(DefaultBodyLimit::max(app.config.max_json_body))
        .layer(middleware::from_fn_with_state(app.clone(), security::deadline))
        .layer(middleware::from_fn_with_state(app.clone(), global_limit))
        .layer(cors(&app.config.cors_origins))
        // The Socket.IO gateway: outside the request deadline and the global rate limit (a
        // long-poll is held open, a WebSocket lives for hours); it has its own limits.
        .merge(realtime_routes(&app))
        // tus uploads: outside the request deadline and the JSON body limit (a PATCH streams
        // for as long as its bytes take; its size is checked against Upload-Length).
        .merge(uploads_routes(&app));
    // Compression sits inside the request context, so the access log and metrics see the
    // response as sent.
    let router = if app.config.compression { router.layer(compression()) } else { router };
    router
        .layer(middleware::from_fn_with_state(app.clone(), request_context))
        // Outermost, so every response — errors, 429s, a caught panic — carries the headers.
        .layer(middleware::from_fn_with_state(app.clone(), security::headers))
        .with_state(app)
}

/// `/api/v1/uploads`: tus, authenticated and under the global rate limit (which exempts the
/// PATCHes that carry an upload's bytes: `ratelimit::exempt`).
fn uploads_routes(app: &App) -> Router<App> {
    use axum::routing::post;
    Router::new()
        .route("/api/v1/uploads", post(uploads::http::create))
        .route(
            "/api/v1/uploads/{id}",
            get(uploads::http::get).head(uploads::http::head).patch(uploads::http::patch).delete(uploads::http::delete),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), require_auth))
        .route_layer(middleware::from_fn(record_route))
        .layer(middleware::from_fn_with_state(app.clone(), global_limit))
        .layer(uploads_cors(&app.config.cors_origins))
        // Outside CORS, which takes every OPTIONS for a preflight: tus's discovery request
        // (OPTIONS without Access-Control-Request-Method) is answered here. Public, as it
        // tells only the protocol version, extensions and the size limit.
        .layer(middleware::from_fn_with_state(app.clone(), uploads::http::discovery))
}

/// The API's CORS policy plus the tus headers a browser client sends and reads.
fn uploads_cors(origins: &[String]) -> CorsLayer {
    let mut allow: Vec<HeaderName> = vec![header::AUTHORIZATION, header::CONTENT_TYPE, CORRELATION_ID.clone()];
    allow.extend(uploads::http::REQUEST_HEADERS);
    allow.push(HeaderName::from_static("x-http-method-override"));
    allow.push(HeaderName::from_static("x-requested-with"));
    let mut expose: Vec<HeaderName> = vec![CORRELATION_ID.clone(), header::RETRY_AFTER];
    expose.extend(uploads::http::RESPONSE_HEADERS);
    cors(origins)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers(allow)
        .expose_headers(expose)
}

/// `/socket.io/`: the realtime gateway, with the API's CORS policy for the polling transport.
fn realtime_routes(app: &App) -> Router<App> {
    realtime::routes(app, cors(&app.config.cors_origins))
}

/// The gzip and brotli level: 1. JSON compresses well at any level: a page of 100 cases,
/// 43.6 KB, became 3.2 KB at gzip's default level 6 and 4.7 KB at level 1, while the
/// route's throughput with compression fell to 0.70 of that without it at level 6 and to
/// 0.83 at level 1 (`ENDPOINTS=zip bench/run.sh`, decision 0012).
const COMPRESS_LEVEL: i32 = 1;

/// Response compression (`COMPRESSION`): gzip or br, as the client prefers, for JSON and text
/// bodies of at least [`COMPRESS_MIN_BYTES`]. Bodies already compressed (PDFs, images,
/// archives, anything with a `Content-Encoding`) and Range responses pass through as they are.
/// Compressed and compressible responses carry `Vary: Accept-Encoding`.
fn compression() -> CompressionLayer<And<SizeAbove, TypePredicate>> {
    let types: TypePredicate = compressible;
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .quality(CompressionLevel::Precise(COMPRESS_LEVEL))
        .compress_when(SizeAbove::new(COMPRESS_MIN_BYTES).and(types))
}

/// A predicate on a response's status and headers.
type TypePredicate = fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool;

/// Smallest body worth compressing: below it the gzip frame and the CPU cost more than they save.
pub const COMPRESS_MIN_BYTES: u64 = 1024;

/// JSON and text, never a partial (206) response.
fn compressible(status: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    if status == StatusCode::PARTIAL_CONTENT || headers.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/") && essence != "text/event-stream"
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/javascript"
        || essence == "application/xml"
        || essence == "image/svg+xml"
}

fn cors(origins: &[String]) -> CorsLayer {
    // `*` allows any origin (bearer tokens, not cookies, so no credentials are involved);
    // otherwise only the listed origins. Config validation refused malformed entries.
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            CORRELATION_ID.clone(),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            CORRELATION_ID.clone(),
            RESPONSE_TIME.clone(),
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(status: StatusCode, ct: &str, extra: &[(HeaderName, &str)]) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("x/x")));
        for (k, v) in extra {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")));
        }
        compressible(status, Version::HTTP_11, &h, &Extensions::new())
    }

    #[test]
    fn only_json_and_text_are_compressed_and_never_a_range() {
        assert!(typed(StatusCode::OK, "application/json", &[]));
        assert!(typed(StatusCode::NOT_FOUND, "application/problem+json; charset=utf-8", &[]));
        assert!(typed(StatusCode::OK, "text/csv; charset=utf-8", &[]));
        assert!(typed(StatusCode::OK, "Text/HTML", &[]));
        for already in ["application/pdf", "image/png", "image/jpeg", "application/zip", "application/octet-stream"] {
            assert!(!typed(StatusCode::OK, already, &[]), "{already}");
        }
        assert!(!typed(StatusCode::OK, "text/event-stream", &[]));
        assert!(!typed(StatusCode::PARTIAL_CONTENT, "text/plain", &[]));
        assert!(!typed(StatusCode::OK, "text/plain", &[(header::CONTENT_RANGE, "bytes 0-9/100")]));
        let none = HeaderMap::new();
        assert!(!compressible(StatusCode::OK, Version::HTTP_11, &none, &Extensions::new()));
    }
}
