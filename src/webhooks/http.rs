//! `/api/v1/webhooks` (admins, or API keys with `webhooks:manage`).

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use uuid::Uuid;

use super::{CreateWebhook, DeliveryView, TestResult, UpdateWebhook, WebhookView};
use crate::{
    app::App,
    auth::Principal,
    http::{
        ApiResult, AppJson, AppPath, Envelope,
        envelope::{ErrorBody, Success},
    },
};

/// Subscribe a URL to events. The answer's `secret` (`whsec_…`) is shown this once: the
/// receiver verifies our `webhook-signature` with it (Standard Webhooks).
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = Success<WebhookView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    p: Principal,
    AppJson(input): AppJson<CreateWebhook>,
) -> ApiResult<Envelope<WebhookView>> {
    Ok(Envelope::created(super::create(&app, &p, input).await?).holding_secret(&["secret"]))
}

/// The firm's webhook subscriptions.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = Success<Vec<WebhookView>>), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<App>, p: Principal) -> ApiResult<Envelope<Vec<WebhookView>>> {
    Ok(Envelope::ok(super::list(&app, &p).await?))
}

/// One subscription.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Success<WebhookView>), (status = 404, body = ErrorBody)))]
pub async fn get(State(app): State<App>, p: Principal, AppPath(id): AppPath<Uuid>) -> ApiResult<Envelope<WebhookView>> {
    Ok(Envelope::ok(super::get(&app, &p, id).await?))
}

/// Change a subscription (`active: true` re-enables a disabled one).
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = Success<WebhookView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(input): AppJson<UpdateWebhook>,
) -> ApiResult<Envelope<WebhookView>> {
    Ok(Envelope::ok(super::update(&app, &p, id, input).await?))
}

/// Delete a subscription.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(app): State<App>, p: Principal, AppPath(id): AppPath<Uuid>) -> ApiResult<impl IntoResponse> {
    super::delete(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown once; the old one keeps signing for 24 hours.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Success<WebhookView>), (status = 404, body = ErrorBody)))]
pub async fn rotate(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Envelope<WebhookView>> {
    Ok(Envelope::ok(super::rotate(&app, &p, id).await?).holding_secret(&["secret"]))
}

/// Send a signed `webhook.test` event now; the answer says what the receiver replied.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Success<TestResult>), (status = 404, body = ErrorBody)))]
pub async fn test(State(app): State<App>, p: Principal, AppPath(id): AppPath<Uuid>) -> ApiResult<Envelope<TestResult>> {
    Ok(Envelope::ok(super::test(&app, &p, id).await?))
}

/// The subscription's newest 100 deliveries, with each one's last attempt.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Success<Vec<DeliveryView>>), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(app): State<App>,
    p: Principal,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Envelope<Vec<DeliveryView>>> {
    Ok(Envelope::ok(super::deliveries(&app, &p, id).await?))
}

/// Send a delivery again (same `webhook-id`, so receivers can tell it is the same event).
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{deliveryId}/redeliver", tag = "webhooks",
    params(("id" = Uuid, Path), ("deliveryId" = Uuid, Path)),
    responses((status = 200, body = Success<DeliveryView>), (status = 404, body = ErrorBody)))]
pub async fn redeliver(
    State(app): State<App>,
    p: Principal,
    AppPath((id, delivery_id)): AppPath<(Uuid, Uuid)>,
) -> ApiResult<Envelope<DeliveryView>> {
    Ok(Envelope::ok(super::redeliver(&app, &p, id, delivery_id).await?))
}
