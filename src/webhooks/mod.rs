//! Webhooks: a firm's other systems told of changes, signed, durably.
//!
//! - **Subscriptions** per firm (admins, or API keys with `webhooks:manage`): a URL (https in
//!   production), the event names wanted (`case.created`, `party.*`, …), a description, and a
//!   signing secret shown once, stored sealed ([`sign`]). Rotation keeps the old secret valid
//!   for [`ROTATION_GRACE`], deliveries being signed with both meanwhile.
//! - **Deliveries** come from the domain-event outbox, which the change's own transaction wrote
//!   ([`dispatch`]): a dispatcher turns each firm's new events into one delivery per matching
//!   subscription and enqueues a job for each, in one transaction that also moves the firm's
//!   cursor, so a crash between the change and the delivery loses nothing and sends nothing
//!   twice. Sealed and restricted material is never sent.
//! - **Sending** is the job `webhooks.deliver` through the one outbound client
//!   ([`crate::outbound`]: deadline, SSRF guard, no redirects, a breaker per host), signed per
//!   Standard Webhooks, retried by the queue with exponential backoff and jitter for about a
//!   day, each attempt logged on the delivery. After `WEBHOOK_DISABLE_AFTER` consecutive
//!   failed attempts the subscription is disabled and the firm's admins are told
//!   (`webhook.disabled`, a realtime `notification`).

pub mod dispatch;
pub mod http;
pub mod sign;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    app::App,
    audit::{self, Actor, AuditEvent},
    auth::Principal,
    clock,
    config::AppEnv,
    db::TxOptions,
    http::error::{ApiError, ApiResult, ErrorCode},
    users::model::Role,
};

/// How long a rotated-out secret still signs.
pub const ROTATION_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// The event names a subscription may ask for (`<entity>.*` takes all of an entity's).
pub const EVENT_NAMES: [&str; 16] = [
    "case.created",
    "case.updated",
    "case.deleted",
    "party.created",
    "party.updated",
    "party.deleted",
    "docket_entry.created",
    "docket_entry.updated",
    "docket_entry.deleted",
    "document.uploaded",
    "document.processed",
    "document.updated",
    "document.deleted",
    "calendar_event.created",
    "calendar_event.updated",
    "calendar_event.deleted",
];

/// The tables.
pub mod model {
    /// `webhook_subscriptions`.
    pub mod subscription {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "webhook_subscriptions")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            pub firm_id: Uuid,
            pub url: String,
            /// Space-separated names or `<entity>.*` patterns.
            pub events: String,
            pub description: String,
            pub active: bool,
            /// Sealed (see `webhooks::sign`).
            pub secret: String,
            pub previous_secret: Option<String>,
            pub previous_secret_until: Option<DateTimeUtc>,
            pub consecutive_failures: i32,
            pub disabled_reason: Option<String>,
            pub created_by: Uuid,
            pub created_at: DateTimeUtc,
            pub updated_at: DateTimeUtc,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `webhook_deliveries`.
    pub mod delivery {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "webhook_deliveries")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            pub firm_id: Uuid,
            pub subscription_id: Uuid,
            /// The domain event's id: the `webhook-id` header, the same on every attempt.
            pub event_id: Uuid,
            pub event_type: String,
            pub payload: String,
            /// `pending`, `retrying`, `delivered`, `failed`, `cancelled`.
            pub status: String,
            pub attempts: i32,
            pub last_status_code: Option<i32>,
            pub last_error: Option<String>,
            pub last_latency_ms: Option<i32>,
            pub last_response_body: Option<String>,
            pub created_at: DateTimeUtc,
            pub updated_at: DateTimeUtc,
            pub delivered_at: Option<DateTimeUtc>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {
            /// Read with the delivery in one statement by the delivery job.
            #[sea_orm(
                belongs_to = "super::subscription::Entity",
                from = "Column::SubscriptionId",
                to = "super::subscription::Column::Id"
            )]
            Subscription,
        }

        impl Related<super::subscription::Entity> for Entity {
            fn to() -> RelationDef {
                Relation::Subscription.def()
            }
        }

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use model::{delivery, subscription};

/// The most subscriptions a firm may have: every one multiplies the deliveries its events
/// make, and all firms' deliveries share the `webhooks` queue's workers.
pub const MAX_SUBSCRIPTIONS: u64 = 25;

/// Whether `wanted` (a subscription's list) asks for `event`.
pub fn wants(wanted: &str, event: &str) -> bool {
    wanted.split_whitespace().any(|w| {
        w == event || w.strip_suffix(".*").is_some_and(|entity| event.split_once('.').is_some_and(|(e, _)| e == entity))
    })
}

fn validate_events(events: &[String]) -> ApiResult<String> {
    if events.is_empty() {
        return Err(ApiError::field("events", "name at least one event"));
    }
    for e in events {
        let known = EVENT_NAMES.contains(&e.as_str())
            || e.strip_suffix(".*")
                .is_some_and(|entity| EVENT_NAMES.iter().any(|n| n.starts_with(&format!("{entity}."))));
        if !known {
            return Err(ApiError::field(
                "events",
                format!("unknown event {e:?}; use any of {}", EVENT_NAMES.join(", ")),
            ));
        }
    }
    Ok(events.join(" "))
}

fn validate_url(app: &App, raw: &str) -> ApiResult<String> {
    let url = url::Url::parse(raw.trim()).map_err(|_| ApiError::field("url", "not a URL"))?;
    if app.config.env == AppEnv::Production && url.scheme() != "https" {
        return Err(ApiError::field("url", "must be https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::field("url", "must not carry credentials; use the signature to authenticate us"));
    }
    app.outbound.check_url(&url).map_err(|e| ApiError::field("url", e.to_string()))?;
    Ok(url.to_string())
}

/// The read scope a key needs to have `event`'s kind sent to a URL it chose: a subscription
/// made or changed by a key carries no more than the key may read itself.
fn read_scope_of(event: &str) -> crate::api_keys::Scope {
    use crate::api_keys::Scope;
    match event.split_once('.').map_or(event, |(entity, _)| entity) {
        "document" => Scope::DocumentsRead,
        "calendar_event" => Scope::CalendarRead,
        _ => Scope::CasesRead,
    }
}

/// Refuses a key whose scopes do not read every kind of event in `events` (the stored,
/// space-separated list); users pass (admins only reach here, see [`require_manager`]).
fn require_read_scopes(p: &Principal, events: &str) -> ApiResult<()> {
    let Some(key) = p.api_key else { return Ok(()) };
    for e in events.split_whitespace() {
        let needed = read_scope_of(e);
        if !key.scopes.contains(needed) {
            return Err(ApiError::forbidden(format!(
                "this API key does not have the scope {}, which {e} events need",
                needed.as_str()
            )));
        }
    }
    Ok(())
}

/// Admins, and API keys (which reach here only with `webhooks:manage`).
fn require_manager(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin || p.api_key.is_some() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only a firm admin (or an API key with webhooks:manage) manages webhooks"))
    }
}

/// A subscription as the API shows it (its secret only when made or rotated).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    pub consecutive_failures: i32,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `whsec_…`: only in the answer that makes or rotates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn view(s: &subscription::Model, secret: Option<String>) -> WebhookView {
    WebhookView {
        id: s.id,
        url: s.url.clone(),
        events: s.events.split_whitespace().map(str::to_owned).collect(),
        description: s.description.clone(),
        active: s.active,
        consecutive_failures: s.consecutive_failures,
        disabled_reason: s.disabled_reason.clone(),
        created_at: s.created_at,
        updated_at: s.updated_at,
        secret,
    }
}

/// `POST /webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub active: Option<bool>,
}

/// `PATCH /webhooks/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `true` re-enables a disabled subscription (and clears its failure count).
    pub active: Option<bool>,
}

fn seal(app: &App, secret: &str) -> ApiResult<String> {
    app.webhook_sealer.seal(secret).map_err(ApiError::internal)
}

/// Makes a subscription; its secret is in the answer, once.
pub async fn create(app: &App, p: &Principal, input: CreateWebhook) -> ApiResult<WebhookView> {
    require_manager(p)?;
    let url = validate_url(app, &input.url)?;
    let events = validate_events(&input.events)?;
    require_read_scopes(p, &events)?;
    if input.description.chars().count() > 500 {
        return Err(ApiError::field("description", "at most 500 characters"));
    }
    let secret = sign::new_secret().map_err(ApiError::internal)?;
    let sealed = seal(app, &secret)?;
    // Events committed before now are numbered first (on PostgreSQL numbering follows the
    // commit), so that the firm's head, where a new cursor starts, is past them.
    crate::events::outbox::sequence_firm(&app.db, p.firm_id.0).await?;
    let now = clock::now();
    let row = subscription::Model {
        id: Uuid::now_v7(),
        firm_id: p.firm_id.0,
        url,
        events,
        description: input.description.trim().to_owned(),
        active: input.active.unwrap_or(true),
        secret: sealed,
        previous_secret: None,
        previous_secret_until: None,
        consecutive_failures: 0,
        disabled_reason: None,
        created_by: p.user_id.0,
        created_at: now,
        updated_at: now,
    };
    let saved = app
        .write(TxOptions::write(), |tx| {
            let row = row.clone();
            async move {
                let tx = &tx;
                // Deliveries start with the events after this one: the firm's cursor starts at
                // its head when its first subscription is made, or the first after all others
                // were disabled or deleted.
                dispatch::start_cursor(tx, p.firm_id.0).await?;
                if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
                    // Two creations at once must not both find room under the limit.
                    tx.execute_raw(crate::db::portable(
                        sea_orm::DbBackend::Postgres,
                        "SELECT 1 FROM webhook_cursors WHERE firm_id = ? FOR UPDATE",
                        vec![p.firm_id.0.into()],
                    ))
                    .await?;
                }
                let made =
                    subscription::Entity::find().filter(subscription::Column::FirmId.eq(p.firm_id.0)).count(tx).await?;
                if made >= MAX_SUBSCRIPTIONS {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("a firm may have at most {MAX_SUBSCRIPTIONS} webhook subscriptions; delete one first"),
                    ));
                }
                let saved = subscription::ActiveModel::from(row).insert(tx).await?;
                let change = serde_json::json!({
                    "url": { "old": null, "new": saved.url },
                    "events": { "old": null, "new": saved.events },
                });
                audit::record(
                    tx,
                    p.firm_id,
                    &Actor::user(p),
                    AuditEvent::new("webhook.create", "webhook", Some(saved.id.to_string())).changes(change),
                )
                .await?;
                Ok(saved)
            }
        })
        .await?;
    app.webhook_refresh.store(true, std::sync::atomic::Ordering::Release);
    app.webhook_wake.notify_one();
    Ok(view(&saved, Some(secret)))
}

async fn find(db: &impl ConnectionTrait, p: &Principal, id: Uuid) -> ApiResult<subscription::Model> {
    subscription::Entity::find_by_id(id)
        .filter(subscription::Column::FirmId.eq(p.firm_id.0))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// The firm's subscriptions.
pub async fn list(app: &App, p: &Principal) -> ApiResult<Vec<WebhookView>> {
    require_manager(p)?;
    let rows = subscription::Entity::find()
        .filter(subscription::Column::FirmId.eq(p.firm_id.0))
        .order_by_asc(subscription::Column::Id)
        .all(&app.db)
        .await?;
    Ok(rows.iter().map(|s| view(s, None)).collect())
}

/// One subscription.
pub async fn get(app: &App, p: &Principal, id: Uuid) -> ApiResult<WebhookView> {
    require_manager(p)?;
    Ok(view(&find(&app.db, p, id).await?, None))
}

/// Changes a subscription.
pub async fn update(app: &App, p: &Principal, id: Uuid, input: UpdateWebhook) -> ApiResult<WebhookView> {
    require_manager(p)?;
    let url = input.url.as_deref().map(|u| validate_url(app, u)).transpose()?;
    let events = input.events.as_deref().map(validate_events).transpose()?;
    if input.active == Some(true) {
        // As for a new one (see `create`): turned back on, it starts after what was committed.
        crate::events::outbox::sequence_firm(&app.db, p.firm_id.0).await?;
    }
    let saved = app
        .write(TxOptions::write(), |tx| {
            let (url, events, description) = (url.clone(), events.clone(), input.description.clone());
            async move {
                let tx = &tx;
                let old = find(tx, p, id).await?;
                // A key may not point someone else's subscription at its own URL either.
                require_read_scopes(p, events.as_deref().unwrap_or(&old.events))?;
                let mut a: subscription::ActiveModel = old.clone().into();
                if let Some(u) = url {
                    a.url = Set(u);
                }
                if let Some(e) = events {
                    a.events = Set(e);
                }
                if let Some(d) = description {
                    a.description = Set(d.trim().to_owned());
                }
                if let Some(active) = input.active {
                    a.active = Set(active);
                    if active && !old.active {
                        // Turned back on: from now, like a new one (see `start_cursor`).
                        dispatch::start_cursor(tx, p.firm_id.0).await?;
                    }
                    if active {
                        a.consecutive_failures = Set(0);
                        a.disabled_reason = Set(None);
                    }
                }
                a.updated_at = Set(clock::now());
                let saved = a.update(tx).await?;
                let change = serde_json::json!({
                    "url": { "old": old.url, "new": saved.url },
                    "events": { "old": old.events, "new": saved.events },
                    "active": { "old": old.active, "new": saved.active },
                });
                audit::record(
                    tx,
                    p.firm_id,
                    &Actor::user(p),
                    AuditEvent::new("webhook.update", "webhook", Some(id.to_string())).changes(change),
                )
                .await?;
                Ok(saved)
            }
        })
        .await?;
    app.webhook_refresh.store(true, std::sync::atomic::Ordering::Release);
    app.webhook_wake.notify_one();
    Ok(view(&saved, None))
}

/// Deletes a subscription; its pending deliveries are cancelled when their jobs run.
pub async fn delete(app: &App, p: &Principal, id: Uuid) -> ApiResult<()> {
    require_manager(p)?;
    app.write(TxOptions::write(), |tx| async move {
        let tx = &tx;
        let old = find(tx, p, id).await?;
        subscription::Entity::delete_by_id(id).exec(tx).await?;
        audit::record(
            tx,
            p.firm_id,
            &Actor::user(p),
            AuditEvent::new("webhook.delete", "webhook", Some(id.to_string()))
                .changes(serde_json::json!({ "url": { "old": old.url, "new": null } })),
        )
        .await?;
        Ok(())
    })
    .await
}

/// A new secret, shown once; the old one keeps signing for [`ROTATION_GRACE`].
pub async fn rotate(app: &App, p: &Principal, id: Uuid) -> ApiResult<WebhookView> {
    require_manager(p)?;
    let secret = sign::new_secret().map_err(ApiError::internal)?;
    let sealed = seal(app, &secret)?;
    let saved = app
        .write(TxOptions::write(), |tx| {
            let sealed = sealed.clone();
            async move {
                let tx = &tx;
                let old = find(tx, p, id).await?;
                let now = clock::now();
                let mut a: subscription::ActiveModel = old.clone().into();
                a.previous_secret = Set(Some(old.secret));
                a.previous_secret_until = Set(Some(now + ROTATION_GRACE));
                a.secret = Set(sealed);
                a.updated_at = Set(now);
                let saved = a.update(tx).await?;
                audit::record(
                    tx,
                    p.firm_id,
                    &Actor::user(p),
                    AuditEvent::new("webhook.rotate_secret", "webhook", Some(id.to_string()))
                        .changes(serde_json::json!({ "secret": { "old": "(previous)", "new": "(rotated)" } })),
                )
                .await?;
                Ok(saved)
            }
        })
        .await?;
    Ok(view(&saved, Some(secret)))
}

/// A delivery as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<i32>,
    /// The receiver's answer, cut at 1 KiB.
    pub last_response_body: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn delivery_view(d: delivery::Model) -> DeliveryView {
    DeliveryView {
        id: d.id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        last_latency_ms: d.last_latency_ms,
        last_response_body: d.last_response_body,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}

/// The subscription's newest 100 deliveries.
pub async fn deliveries(app: &App, p: &Principal, id: Uuid) -> ApiResult<Vec<DeliveryView>> {
    require_manager(p)?;
    find(&app.db, p, id).await?;
    let rows = delivery::Entity::find()
        .filter(delivery::Column::FirmId.eq(p.firm_id.0))
        .filter(delivery::Column::SubscriptionId.eq(id))
        .order_by_desc(delivery::Column::Id)
        .limit(100)
        .all(&app.db)
        .await?;
    Ok(rows.into_iter().map(delivery_view).collect())
}

/// The stored copy of a delivery whose event's entry was sealed or restricted after it was
/// queued (`docket::ops`): never sent again.
pub const WITHHELD: &str = r#"{"withheld":"the docket entry was sealed or restricted after this delivery was made"}"#;

/// Sends a delivery again (a new job; the same `webhook-id`).
pub async fn redeliver(app: &App, p: &Principal, id: Uuid, delivery_id: Uuid) -> ApiResult<DeliveryView> {
    require_manager(p)?;
    let max_attempts = app.config.webhooks.max_attempts;
    let base = app.config.webhooks.retry_base;
    let saved = app
        .write(TxOptions::write(), |tx| async move {
            let tx = &tx;
            find(tx, p, id).await?;
            let d = delivery::Entity::find_by_id(delivery_id)
                .filter(delivery::Column::FirmId.eq(p.firm_id.0))
                .filter(delivery::Column::SubscriptionId.eq(id))
                .one(tx)
                .await?
                .ok_or_else(|| ApiError::not_found("delivery"))?;
            if d.payload == WITHHELD {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "this delivery is withheld: its docket entry was sealed or restricted since",
                ));
            }
            let mut a: delivery::ActiveModel = d.into();
            a.status = Set("pending".into());
            a.updated_at = Set(clock::now());
            let saved = a.update(tx).await?;
            dispatch::enqueue_delivery(tx, saved.id, max_attempts, base, true).await?;
            audit::record(
                tx,
                p.firm_id,
                &Actor::user(p),
                AuditEvent::new("webhook.redeliver", "webhook_delivery", Some(delivery_id.to_string())),
            )
            .await?;
            Ok(saved)
        })
        .await?;
    Ok(delivery_view(saved))
}

/// The answer to a test send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// Sends a signed `webhook.test` event now and reports what the receiver answered.
pub async fn test(app: &App, p: &Principal, id: Uuid) -> ApiResult<TestResult> {
    require_manager(p)?;
    let s = find(&app.db, p, id).await?;
    let event_id = Uuid::now_v7();
    let body = serde_json::json!({
        "id": event_id,
        "type": "webhook.test",
        "timestamp": clock::now(),
        "firmId": p.firm_id.0,
        "data": { "webhookId": s.id, "message": "a test delivery from LexiFlow" },
    })
    .to_string();
    let out = dispatch::send(app.webhook_sealer.as_ref(), &app.outbound, &s, &event_id.to_string(), body).await;
    Ok(match out {
        Ok(r) => TestResult {
            delivered: (200..300).contains(&r.status),
            status_code: Some(r.status),
            latency_ms: Some(r.latency.as_millis() as u64),
            error: None,
            response_body: Some(dispatch::truncate(&r.body)),
        },
        Err(e) => TestResult {
            delivered: false,
            status_code: None,
            latency_ms: None,
            error: Some(e.to_string()),
            response_body: None,
        },
    })
}
