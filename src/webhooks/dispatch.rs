//! From the outbox to deliveries, and from deliveries to the receivers.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use lexiflow_queue::{Backoff, NewJob};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::{
    model::{delivery, subscription},
    sign::{self, Sealer},
    wants,
};
use crate::{
    app::{App, AppInner},
    clock,
    events::{DomainEvent, EventType, outbox},
    ids::FirmId,
    outbound::{Outbound, OutboundError, Reply},
};

/// The job that sends one delivery.
pub const DELIVER: &str = "webhooks.deliver";
/// Its queue.
pub const QUEUE: &str = "webhooks";

/// Events turned into deliveries per transaction.
const BATCH: u64 = 500;

/// The most of a receiver's answer kept on the delivery.
const KEPT_BODY: usize = 1024;

/// Creates the firm's cursor at its current head, if it has none; and moves it there when no
/// subscription of the firm is active (all disabled or deleted), since the dispatcher leaves
/// such a firm's cursor where it was. Called before a subscription is made or turned back on,
/// so that it gets the events after that moment, never a backlog from before it (up to
/// `EVENTS_RETENTION_DAYS` of them).
pub async fn start_cursor(db: &impl ConnectionTrait, firm: Uuid) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute_raw(crate::db::portable(
        backend,
        "INSERT INTO webhook_cursors (firm_id, seq)
         SELECT ?, COALESCE((SELECT seq FROM event_heads WHERE firm_id = ?), 0)
         ON CONFLICT (firm_id) DO NOTHING",
        vec![firm.into(), firm.into()],
    ))
    .await?;
    db.execute_raw(crate::db::portable(
        backend,
        "UPDATE webhook_cursors SET seq = COALESCE((SELECT seq FROM event_heads WHERE firm_id = ?), 0)
         WHERE firm_id = ? AND seq < COALESCE((SELECT seq FROM event_heads WHERE firm_id = ?), 0)
           AND NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE firm_id = ? AND active)",
        vec![firm.into(), firm.into(), firm.into(), firm.into()],
    ))
    .await?;
    Ok(())
}

/// The webhook name and payload of an event, or None when it is not sent (sealed or restricted
/// material, and events no subscription can ask for).
pub fn payload(e: &DomainEvent) -> Option<(&'static str, String)> {
    use EventType::*;
    if e.sealed || e.restricted {
        return None;
    }
    let name = match e.event_type {
        CaseCreated | CaseUpdated | CaseDeleted | PartyCreated | PartyUpdated | PartyDeleted | DocketEntryCreated
        | DocketEntryUpdated | DocketEntryDeleted | DocumentUploaded | DocumentProcessed | DocumentUpdated
        | DocumentDeleted | CalendarEventCreated | CalendarEventUpdated | CalendarEventDeleted => e.event_type.as_str(),
        _ => return None,
    };
    let body = serde_json::json!({
        "id": e.id,
        "type": name,
        "timestamp": e.occurred_at,
        "seq": e.seq,
        "firmId": e.firm_id.0,
        "caseId": e.case_id,
        "data": e.data,
    });
    Some((name, body.to_string()))
}

/// Enqueues the job that sends `delivery` (in the caller's transaction).
pub async fn enqueue_delivery(
    db: &impl ConnectionTrait,
    delivery: Uuid,
    max_attempts: u32,
    base: Duration,
    again: bool,
) -> Result<(), DbErr> {
    let mut job = NewJob::new(DELIVER, serde_json::json!({ "deliveryId": delivery }))
        .queue(QUEUE)
        .max_attempts(max_attempts)
        .backoff(Backoff::exponential(base, Duration::from_secs(2 * 3600)));
    if !again {
        job = job.unique_key(format!("webhook-delivery:{delivery}"));
    }
    lexiflow_queue::enqueue(db, job).await.map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(())
}

/// What one dispatch transaction did.
struct Batch {
    made: usize,
    /// A full batch was read: more may follow.
    more: bool,
    /// The firm had no cursor yet (it was created at the head).
    started: bool,
}

/// Turns one firm's new events into deliveries, a batch per transaction; returns how many
/// deliveries it made. Each batch is a write transaction of the project's kind (`BEGIN
/// IMMEDIATE` behind the write gate on SQLite, so it waits its turn instead of failing as
/// "database is locked" while deliveries update their rows).
async fn dispatch_firm(app: &App, firm: Uuid) -> Result<usize, crate::http::error::ApiError> {
    let mut made = 0;
    loop {
        let done = crate::db::transaction(&app.db, crate::db::TxOptions::write(), |tx| async move {
            dispatch_batch(&tx, app, firm).await
        })
        .await?;
        let batch = done.value;
        made += batch.made;
        if !batch.more || batch.started {
            return Ok(made);
        }
    }
}

async fn dispatch_batch(
    tx: &impl ConnectionTrait,
    app: &App,
    firm: Uuid,
) -> Result<Batch, crate::http::error::ApiError> {
    let backend = tx.get_database_backend();
    let cfg = app.config.webhooks;
    let lock = if backend == DbBackend::Postgres { " FOR UPDATE" } else { "" };
    let row = tx
        .query_one_raw(crate::db::portable(
            backend,
            &format!("SELECT seq FROM webhook_cursors WHERE firm_id = ?{lock}"),
            vec![firm.into()],
        ))
        .await?;
    let Some(row) = row else {
        start_cursor(tx, firm).await?;
        return Ok(Batch { made: 0, more: false, started: true });
    };
    let cursor: i64 = row.try_get_by_index(0)?;
    let head = outbox::head(tx, FirmId(firm)).await?;
    if head <= cursor {
        return Ok(Batch { made: 0, more: false, started: false });
    }
    let events = outbox::numbered(tx, FirmId(firm), cursor, head, BATCH).await?;
    let Some(last) = events.last().and_then(|e| e.seq) else {
        return Ok(Batch { made: 0, more: false, started: false });
    };
    // Numbers are gapless per firm: fewer rows than numbers means the outbox's retention
    // removed events this firm's deliveries never got to (the dispatcher was behind by more
    // than `EVENTS_RETENTION_DAYS`). They cannot be sent any more; it must not pass unseen.
    let mut missing = (last - cursor) - events.len() as i64;
    if missing > 0 {
        // Rows this build cannot read (an event type of a newer one, in a rolling deploy) are
        // left out of `events` but are there: only numbers without rows were pruned.
        let present: i64 = tx
            .query_one_raw(crate::db::portable(
                tx.get_database_backend(),
                "SELECT COUNT(*) FROM domain_events WHERE firm_id = ? AND seq > ? AND seq <= ?",
                vec![firm.into(), cursor.into(), last.into()],
            ))
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        missing = (last - cursor) - present;
    }
    if missing > 0 {
        metrics::counter!("lexiflow_webhook_events_missed_total").increment(missing as u64);
        tracing::error!(
            firm_id = %firm,
            missing,
            after_seq = cursor,
            "webhook events were pruned before they were turned into deliveries; they will not be sent"
        );
    }
    let subs = subscription::Entity::find()
        .filter(subscription::Column::FirmId.eq(firm))
        .filter(subscription::Column::Active.eq(true))
        .all(tx)
        .await?;
    let now = clock::now();
    let mut made = 0;
    for e in &events {
        let Some((name, body)) = payload(e) else { continue };
        for s in subs.iter().filter(|s| wants(&s.events, name)) {
            let id = Uuid::now_v7();
            let inserted = tx
                .execute_raw(crate::db::portable(
                    backend,
                    "INSERT INTO webhook_deliveries (id, firm_id, subscription_id, event_id, event_type, payload,
                       status, attempts, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)
                     ON CONFLICT (subscription_id, event_id) DO NOTHING",
                    vec![
                        id.into(),
                        firm.into(),
                        s.id.into(),
                        e.id.into(),
                        name.into(),
                        body.clone().into(),
                        now.into(),
                        now.into(),
                    ],
                ))
                .await?
                .rows_affected();
            if inserted == 1 {
                enqueue_delivery(tx, id, cfg.max_attempts, cfg.retry_base, false).await?;
                made += 1;
            }
        }
    }
    tx.execute_raw(crate::db::portable(
        backend,
        "UPDATE webhook_cursors SET seq = ? WHERE firm_id = ?",
        vec![last.into(), firm.into()],
    ))
    .await?;
    Ok(Batch { made, more: events.len() as u64 >= BATCH, started: false })
}

/// The firms with an active subscription.
async fn subscribed_firms(app: &App) -> Result<Vec<Uuid>, DbErr> {
    subscription::Entity::find()
        .select_only()
        .column(subscription::Column::FirmId)
        .filter(subscription::Column::Active.eq(true))
        .distinct()
        .into_tuple()
        .all(&app.db)
        .await
}

/// One look at `firms`.
async fn pass(app: &App, firms: &[Uuid]) -> Result<usize, crate::http::error::ApiError> {
    // One firm that fails (its cursor's row locked by a long sealing, say) does not hold up
    // the others; the pass reports the first error after trying every firm.
    let (mut made, mut failed) = (0, None);
    for firm in firms {
        match dispatch_firm(app, *firm).await {
            Ok(n) => made += n,
            Err(e) => {
                tracing::warn!(firm_id = %firm, error = %e, "webhook dispatch failed for a firm; going on with the others");
                failed.get_or_insert(e);
            }
        }
    }
    if made > 0 {
        metrics::counter!("lexiflow_webhook_deliveries_created_total").increment(made as u64);
    }
    failed.map_or(Ok(made), Err)
}

/// Runs the dispatcher until `app` is dropped: woken by commits (here and, through the
/// sequencer, once numbered) and every `WEBHOOK_POLL_MS`. Which firms have subscriptions is
/// looked up at most once per poll interval (and at once after a subscription is made here),
/// so a commit wakes no database work on a server without webhooks.
pub async fn run(app: std::sync::Weak<AppInner>) {
    let mut firms: Vec<Uuid> = Vec::new();
    let mut looked: Option<std::time::Instant> = None;
    loop {
        let Some(app) = App::upgrade(&app) else { return };
        let wake = Arc::clone(&app.webhook_wake);
        let poll = app.config.webhooks.poll_every;
        let due = looked.is_none_or(|t| t.elapsed() >= poll)
            || app.webhook_refresh.swap(false, std::sync::atomic::Ordering::AcqRel);
        if due {
            match subscribed_firms(&app).await {
                Ok(f) => {
                    firms = f;
                    looked = Some(std::time::Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "webhook dispatcher: cannot read the subscriptions"),
            }
        }
        if firms.is_empty() {
            drop(app);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        if let Err(e) = pass(&app, &firms).await {
            // Logged at warn: a dispatcher that keeps failing delays every delivery.
            let cause = e.cause.as_ref().map(|c| c.to_string()).unwrap_or_default();
            tracing::warn!(error = %e.message, cause = %cause, "webhook dispatcher: a pass failed; trying again at the next wake");
        }
        drop(app);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Deletes settled deliveries (delivered, failed, cancelled) made before `before`; returns how
/// many. Pending and retrying ones are kept whatever their age.
pub async fn prune(db: &impl ConnectionTrait, before: chrono::DateTime<chrono::Utc>) -> Result<u64, DbErr> {
    let r = delivery::Entity::delete_many()
        .filter(delivery::Column::CreatedAt.lt(before))
        .filter(delivery::Column::Status.is_in(["delivered", "failed", "cancelled"]))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

/// Wakes the dispatcher after this instance's commits, and starts it.
pub fn install(app: &App) {
    app.events.subscribe(Arc::new(Wake(Arc::clone(&app.webhook_wake))));
    tokio::spawn(run(app.weak()));
}

#[derive(Debug)]
struct Wake(Arc<tokio::sync::Notify>);

impl crate::events::Subscriber for Wake {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn deliver<'a>(&'a self, _: &'a [DomainEvent]) -> futures_util::future::BoxFuture<'a, ()> {
        use futures_util::FutureExt;
        async move { self.0.notify_one() }.boxed()
    }
}

/// Cuts a receiver's answer for the log.
pub fn truncate(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(KEPT_BODY)]);
    s.into_owned()
}

/// Signs and POSTs `body` to the subscription's URL.
pub async fn send(
    sealer: &Sealer,
    outbound: &Outbound,
    s: &subscription::Model,
    message_id: &str,
    body: String,
) -> Result<Reply, OutboundError> {
    let secret = sealer.open(&s.secret).ok_or_else(|| {
        OutboundError::Refused(
            "cannot unseal the signing secret (was WEBHOOK_SECRET_KEY or JWT_SECRET changed?); rotate it".into(),
        )
    })?;
    let ts = clock::now().timestamp();
    let mut sig = sign::signature(&secret, message_id, ts, body.as_bytes())
        .ok_or_else(|| OutboundError::Refused("malformed signing secret".into()))?;
    if let (Some(prev), Some(until)) = (&s.previous_secret, s.previous_secret_until)
        && until > clock::now()
        && let Some(old) = sealer.open(prev).and_then(|p| sign::signature(&p, message_id, ts, body.as_bytes()))
    {
        sig.push(' ');
        sig.push_str(&old);
    }
    let url = url::Url::parse(&s.url).map_err(|_| OutboundError::Refused("the stored URL is not a URL".into()))?;
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("webhook-id", message_id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ];
    outbound.post("webhooks", s.firm_id, &url, &headers, Bytes::from(body)).await
}

/// What the delivery job needs.
#[derive(Clone, Debug)]
pub struct Deliverer {
    pub db: DatabaseConnection,
    pub sealer: Arc<Sealer>,
    pub outbound: Arc<Outbound>,
    pub disable_after: u32,
}

/// The `webhooks.deliver` job: one attempt. An error makes the queue try again later.
/// Writes an attempt's outcome unless the delivery was cancelled meanwhile (withheld because
/// its entry was sealed while it was on its way: that attempt cannot be recalled, but its
/// outcome must not undo the cancellation or lead to a retry). False when it was.
async fn write_outcome(db: &sea_orm::DatabaseConnection, id: Uuid, a: delivery::ActiveModel) -> Result<bool, String> {
    let n = delivery::Entity::update_many()
        .set(a)
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::Status.ne("cancelled"))
        .exec(db)
        .await
        .map_err(|e| e.to_string())?
        .rows_affected;
    Ok(n == 1)
}

pub async fn deliver(d: Deliverer, payload: serde_json::Value, attempt: u32, max_attempts: u32) -> Result<(), String> {
    let id = payload
        .get("deliveryId")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("the job has no deliveryId")?;
    let db = &d.db;
    // The delivery and its subscription in one statement (a join): one round trip fewer on the
    // path every delivery takes.
    let found = delivery::Entity::find_by_id(id)
        .find_also_related(subscription::Entity)
        .one(db)
        .await
        .map_err(|e| e.to_string())?;
    let Some((del, sub)) = found else {
        return Ok(());
    };
    if matches!(del.status.as_str(), "delivered" | "cancelled") || del.payload == super::WITHHELD {
        return Ok(());
    }
    let Some(sub) = sub.filter(|s| s.active) else {
        let mut a: delivery::ActiveModel = del.into();
        a.status = Set("cancelled".into());
        a.last_error = Set(Some("the subscription was deleted or disabled".into()));
        a.updated_at = Set(clock::now());
        a.update(db).await.map_err(|e| e.to_string())?;
        return Ok(());
    };
    // Secrets under an older key move to the current one; the delivery goes on either way.
    let (sub, _) = seal_again(&d.db, &d.sealer, sub).await;
    let out = send(&d.sealer, &d.outbound, &sub, &del.event_id.to_string(), del.payload.clone()).await;
    let now = clock::now();
    let mut a: delivery::ActiveModel = del.clone().into();
    a.attempts = Set(del.attempts + 1);
    a.updated_at = Set(now);
    let ok = match &out {
        Ok(r) => {
            a.last_status_code = Set(Some(i32::from(r.status)));
            a.last_latency_ms = Set(Some(r.latency.as_millis().min(i32::MAX as u128) as i32));
            a.last_response_body = Set(Some(truncate(&r.body)));
            a.last_error = Set(None);
            (200..300).contains(&r.status)
        }
        Err(e) => {
            a.last_status_code = Set(None);
            a.last_error = Set(Some(e.to_string()));
            false
        }
    };
    metrics::counter!("lexiflow_webhook_attempts_total", "outcome" => if ok { "delivered" } else { "failed" })
        .increment(1);
    if ok {
        a.status = Set("delivered".into());
        a.delivered_at = Set(Some(now));
        if !write_outcome(db, del.id, a).await? {
            return Ok(());
        }
        if sub.consecutive_failures != 0 {
            subscription::Entity::update_many()
                .col_expr(subscription::Column::ConsecutiveFailures, sea_orm::sea_query::Expr::value(0))
                .filter(subscription::Column::Id.eq(sub.id))
                .exec(db)
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let failures = sub.consecutive_failures + 1;
    let disable = failures as u32 >= d.disable_after;
    let last = attempt >= max_attempts;
    a.status = Set(if disable || last { "failed" } else { "retrying" }.into());
    if !write_outcome(db, del.id, a).await? {
        // Withheld while it was being sent: no retry.
        return Ok(());
    }
    record_failure(db, &sub, failures, disable).await.map_err(|e| e.to_string())?;
    if disable {
        // Disabled: no more attempts for this delivery either.
        return Ok(());
    }
    Err(match out {
        Ok(r) => format!("the receiver answered {}", r.status),
        Err(e) => e.to_string(),
    })
}

/// What [`seal_again`] did with one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resealed {
    /// Already under the current key.
    Current,
    /// Sealed again under the current key.
    Moved,
    /// No configured key opens its secret: rotate it.
    Unreadable,
    /// Changed meanwhile (a rotation), or the write failed (logged): left as it was.
    Skipped,
}

/// Seals a subscription's secrets again under the current key when they were sealed under an
/// older one (`WEBHOOK_SECRET_KEY_PREVIOUS`, or `JWT_SECRET` before `WEBHOOK_SECRET_KEY` was
/// set). Written only over the sealed secret it read (a rotation meanwhile wins). Returns the
/// subscription as stored now.
pub async fn seal_again(
    db: &DatabaseConnection,
    sealer: &Sealer,
    sub: subscription::Model,
) -> (subscription::Model, Resealed) {
    let Some((secret, aged)) = sealer.open_aged(&sub.secret) else { return (sub, Resealed::Unreadable) };
    let previous = sub.previous_secret.as_deref().and_then(|p| sealer.open_aged(p));
    if !aged && !previous.as_ref().is_some_and(|(_, a)| *a) {
        return (sub, Resealed::Current);
    }
    let sealed = sealer.seal(&secret);
    let sealed_previous = previous.map(|(p, _)| sealer.seal(&p)).transpose();
    let (Ok(sealed), Ok(sealed_previous)) = (sealed, sealed_previous) else {
        tracing::warn!(webhook_id = %sub.id, "cannot seal a webhook secret again (no randomness)");
        return (sub, Resealed::Skipped);
    };
    let sealed_previous = sealed_previous.or_else(|| sub.previous_secret.clone());
    let written = subscription::Entity::update_many()
        .col_expr(subscription::Column::Secret, sea_orm::sea_query::Expr::value(sealed.clone()))
        .col_expr(subscription::Column::PreviousSecret, sea_orm::sea_query::Expr::value(sealed_previous.clone()))
        .filter(subscription::Column::Id.eq(sub.id))
        .filter(subscription::Column::Secret.eq(sub.secret.clone()))
        .exec(db)
        .await;
    match written {
        Ok(r) if r.rows_affected == 1 => {
            tracing::info!(webhook_id = %sub.id, "webhook secret sealed again under the current key");
            (subscription::Model { secret: sealed, previous_secret: sealed_previous, ..sub }, Resealed::Moved)
        }
        Ok(_) => (sub, Resealed::Skipped),
        Err(e) => {
            tracing::warn!(webhook_id = %sub.id, error = %e, "cannot store a webhook secret sealed again");
            (sub, Resealed::Skipped)
        }
    }
}

/// Counts of `lexiflow webhooks reseal`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealReport {
    pub current: u64,
    pub moved: u64,
    pub unreadable: u64,
    pub skipped: u64,
}

/// Every subscription, active or not, through [`seal_again`] (`lexiflow webhooks reseal`): after
/// it, the older keys can be dropped when `unreadable` and `skipped` are 0.
pub async fn seal_all_again(db: &DatabaseConnection, sealer: &Sealer) -> Result<ResealReport, DbErr> {
    let mut report = ResealReport::default();
    let mut after = Uuid::nil();
    loop {
        let page = subscription::Entity::find()
            .filter(subscription::Column::Id.gt(after))
            .order_by_asc(subscription::Column::Id)
            .limit(500)
            .all(db)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for sub in page {
            match seal_again(db, sealer, sub).await.1 {
                Resealed::Current => report.current += 1,
                Resealed::Moved => report.moved += 1,
                Resealed::Unreadable => report.unreadable += 1,
                Resealed::Skipped => report.skipped += 1,
            }
        }
    }
    Ok(report)
}

/// Counts a failed attempt on the subscription; disables it (audited, with an event that tells
/// the firm's admins) when `disable`.
async fn record_failure(
    db: &DatabaseConnection,
    sub: &subscription::Model,
    failures: i32,
    disable: bool,
) -> Result<(), DbErr> {
    if !disable {
        subscription::Entity::update_many()
            .col_expr(subscription::Column::ConsecutiveFailures, sea_orm::sea_query::Expr::value(failures))
            .filter(subscription::Column::Id.eq(sub.id))
            .exec(db)
            .await?;
        return Ok(());
    }
    let reason = format!("disabled after {failures} consecutive failed deliveries");
    let sub = sub.clone();
    let done = crate::db::transaction(db, crate::db::TxOptions::write(), |tx| {
        let (sub, reason) = (sub.clone(), reason.clone());
        async move {
            let tx = &tx;
            let mut a: subscription::ActiveModel = sub.clone().into();
            a.active = Set(false);
            a.consecutive_failures = Set(failures);
            a.disabled_reason = Set(Some(reason.clone()));
            a.updated_at = Set(clock::now());
            a.update(tx).await?;
            let actor = crate::audit::Actor::system();
            crate::audit::record(
                tx,
                FirmId(sub.firm_id),
                &actor,
                crate::audit::AuditEvent::new("webhook.disabled", "webhook", Some(sub.id.to_string()))
                    .changes(serde_json::json!({ "active": { "old": true, "new": false } })),
            )
            .await?;
            tx.record(
                DomainEvent::new(EventType::WebhookDisabled, FirmId(sub.firm_id), &actor, sub.id)
                    .data(serde_json::json!({ "webhookId": sub.id, "url": sub.url, "reason": reason })),
            );
            Ok::<_, crate::http::error::ApiError>(())
        }
    })
    .await
    .map_err(|e| DbErr::Custom(e.message.to_string()))?;
    drop(done);
    // Numbered now rather than by the minute's sweep, so the admins hear of it at once.
    outbox::sequence_firm(db, sub.firm_id).await?;
    tracing::warn!(webhook_id = %sub.id, "webhook subscription disabled after repeated failures");
    Ok(())
}
