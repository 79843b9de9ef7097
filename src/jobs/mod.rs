//! The jobs LexiFlow runs on the durable queue (`lexiflow-queue`): which handlers exist,
//! which schedules fire, and how a worker is assembled for `lexiflow serve` (in process, by
//! default) or `lexiflow worker` (alone, any number of them).
//!
//! Handlers must be idempotent: a job is delivered at least once (a worker that dies after
//! finishing the work but before recording it has the job run again after its lease).

pub mod http;
pub mod probe;

use std::{sync::Arc, time::Duration};

use lexiflow_queue::{NewJob, Priority, Schedule, Worker, WorkerBuilder};
use sea_orm::DatabaseConnection;

use crate::{cache::Cache, config::Config, storage::Storage};

/// The queue for LexiFlow's own housekeeping.
pub const MAINTENANCE: &str = "maintenance";
/// Prune the audit trail past `AUDIT_RETENTION_DAYS` (on `AUDIT_RETENTION_CRON`, by default
/// daily at 03:00 in `CRON_TIMEZONE`, when a retention period is configured).
pub const AUDIT_RETENTION: &str = "audit.retention";
/// Compute every firm's case summary into the cache (on `REPORT_WARM_CRON`).
pub const REPORT_WARM: &str = "reports.warm";
/// Forget login failure records a day after their last failure (hourly, at minute 23).
pub const LOGIN_ATTEMPTS_PRUNE: &str = "auth.login_attempts.prune";
const LOGIN_ATTEMPTS_PRUNE_CRON: &str = "23 * * * *";
/// Delete domain events past `EVENTS_RETENTION_DAYS` from the outbox (hourly, at minute 41).
pub const EVENTS_PRUNE: &str = "events.prune";
const EVENTS_PRUNE_CRON: &str = "41 * * * *";
/// Refresh the statistics of tables that grew since their last analysis (PostgreSQL; every
/// minute): see `db::bulk::analyze_stale`.
pub const DB_ANALYZE: &str = "db.analyze";
const DB_ANALYZE_CRON: &str = "* * * * *";
/// Number the committed events a crashed writer left unnumbered (PostgreSQL; every minute).
pub const EVENTS_SEQUENCE: &str = "events.sequence";
const EVENTS_SEQUENCE_CRON: &str = "* * * * *";

/// Remove expired uploads and unreferenced blobs (hourly, at minute 17).
const UPLOADS_EXPIRE_CRON: &str = "17 * * * *";

/// Why a job failed (kept on the job as its error message).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("database: {0}")]
    Data(#[from] crate::db::DbError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("virus scan: {0}")]
    Scan(String),
    #[error("{0}")]
    Invalid(String),
}

async fn audit_retention(db: DatabaseConnection, days: Option<u32>) -> Result<(), JobError> {
    let Some(days) = days else { return Ok(()) };
    let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    // Idempotent: a second run (or a second instance) finds nothing older left to prune. One
    // firm that fails (its chain's head locked by a long import) does not hold up the others;
    // the run fails at the end, so the queue tries again.
    let mut failed = None;
    for firm in crate::audit::chain::firms(&db).await? {
        match crate::audit::chain::prune(&db, firm, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(firm_id = %firm, pruned = n, "audit retention pruned entries"),
            Err(e) => {
                tracing::warn!(firm_id = %firm, error = %e, "audit retention failed for a firm; going on with the others");
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

async fn login_attempts_prune(db: DatabaseConnection) -> Result<(), JobError> {
    // Idempotent: a second run finds nothing old enough left.
    let n = crate::auth::ops::prune_login_attempts(&db, crate::clock::now()).await?;
    if n > 0 {
        tracing::info!(deleted = n, "old login failure records deleted");
    }
    Ok(())
}

async fn events_prune(db: DatabaseConnection, days: u32) -> Result<(), JobError> {
    // Idempotent: a second run finds nothing older left.
    let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let n = crate::events::outbox::prune(&db, before).await?;
    if n > 0 {
        tracing::info!(deleted = n, "old domain events deleted from the outbox");
    }
    // Settled webhook deliveries are kept as long as the outbox events they came from.
    let deliveries = crate::webhooks::dispatch::prune(&db, before).await?;
    if deliveries > 0 {
        tracing::info!(deleted = deliveries, "old webhook deliveries deleted");
    }
    // Idempotency keys live 24 hours; the same hourly sweep removes them.
    let keys = crate::http::idempotency::prune(&db).await?;
    if keys > 0 {
        tracing::info!(deleted = keys, "expired idempotency keys deleted");
    }
    Ok(())
}

async fn uploads_expire(db: DatabaseConnection, storage: Storage) -> Result<(), JobError> {
    // Idempotent: a second run finds nothing expired left.
    let (uploads, blobs) =
        crate::uploads::expire_with(&db, &storage).await.map_err(|e| JobError::Invalid(e.message.to_string()))?;
    if uploads + blobs > 0 {
        tracing::info!(uploads, blobs, "expired uploads and unreferenced files removed");
    }
    Ok(())
}

async fn events_sequence(db: DatabaseConnection) -> Result<(), JobError> {
    // Idempotent: numbering takes the firm's head lock and numbers only unnumbered rows.
    let n = crate::events::outbox::sequence_all(&db).await?;
    if n > 0 {
        tracing::info!(numbered = n, "leftover domain events numbered");
    }
    Ok(())
}

async fn db_analyze(db: DatabaseConnection) -> Result<(), JobError> {
    // Idempotent: a second run finds the statistics current.
    let analysed = crate::db::bulk::analyze_stale(&db, crate::db::bulk::ANALYZED_TABLES).await?;
    if !analysed.is_empty() {
        tracing::info!(tables = ?analysed, "table statistics refreshed");
    }
    Ok(())
}

async fn report_warm(db: DatabaseConnection, cache: Arc<Cache>) -> Result<(), JobError> {
    use sea_orm::{EntityTrait, QuerySelect};
    // Idempotent: computing a summary twice stores the same figures.
    let firms: Vec<uuid::Uuid> =
        crate::firms::Entity::find().select_only().column(crate::firms::Column::Id).into_tuple().all(&db).await?;
    let mut failed = None;
    for firm in firms {
        if let Err(e) = crate::reports::warm(&db, &cache, firm).await {
            tracing::warn!(firm_id = %firm, error = %e, "report warm-up failed for a firm; going on with the others");
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// The worker with every handler and schedule, ready to `run` until its token is cancelled.
/// `queue_db` carries the queue's bookkeeping (see `db::connect_for_queue`); handlers write
/// domain data through `app_db`, the application's fully durable pool, and warm `cache`
/// (the server's own in `lexiflow serve`; in `lexiflow worker`, one that reaches the servers
/// through Redis).
pub fn worker(
    queue_db: DatabaseConnection,
    app_db: DatabaseConnection,
    config: &Config,
    cache: Arc<Cache>,
    storage: Storage,
) -> Result<Worker, lexiflow_queue::QueueError> {
    Ok(builder(queue_db, app_db, config, cache, storage)?.build())
}

/// The queues LexiFlow defines (those with a handler's worker loop or a schedule), read from
/// the same builder [`worker`] uses, so the admin API lists them whether or not this process
/// runs a worker.
pub fn known_queues(app: &crate::app::App) -> Result<Vec<String>, lexiflow_queue::QueueError> {
    Ok(builder(app.db.clone(), app.db.clone(), &app.config, app.cache.clone(), app.storage.clone())?.known_queues())
}

/// The worker's outbound client, for webhooks and calendar providers (None, logged, when it
/// cannot be built).
fn outbound_client(config: &Config) -> Option<Arc<crate::outbound::Outbound>> {
    let outbound = crate::outbound::Outbound::new(crate::outbound::OutboundConfig {
        allow_private: config.webhooks.allow_private,
        ..Default::default()
    });
    match outbound {
        Ok(o) => Some(Arc::new(o)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the outbound HTTP client: webhooks and calendar sync will not run here");
            None
        }
    }
}

/// What the webhook delivery job needs, from the configuration (None when neither
/// `WEBHOOK_SECRET_KEY` nor a JWT secret is known, or there is no outbound client).
fn deliverer(
    db: &DatabaseConnection,
    config: &Config,
    outbound: Option<Arc<crate::outbound::Outbound>>,
) -> Option<crate::webhooks::dispatch::Deliverer> {
    Some(crate::webhooks::dispatch::Deliverer {
        db: db.clone(),
        sealer: std::sync::Arc::new(crate::webhooks::sign::Sealer::from_config(config)?),
        outbound: outbound?,
        disable_after: config.webhooks.disable_after,
    })
}

/// Every queue, handler and schedule: the one list both [`worker`] and [`known_queues`] read.
fn builder(
    queue_db: DatabaseConnection,
    app_db: DatabaseConnection,
    config: &Config,
    cache: Arc<Cache>,
    storage: Storage,
) -> Result<WorkerBuilder, lexiflow_queue::QueueError> {
    let days = config.audit_retention_days;
    let events_days = config.events.retention_days;
    let postgres = app_db.get_database_backend() == sea_orm::DbBackend::Postgres;
    let handler_db = app_db.clone();
    let prune_db = app_db.clone();
    let events_db = app_db.clone();
    let sequence_db = app_db.clone();
    let analyze_db = app_db.clone();
    let webhook_db = app_db.clone();
    let processor = crate::documents::process::Processor {
        db: app_db.clone(),
        storage: storage.clone(),
        files: config.files.clone(),
    };
    let expire_storage = storage;
    let remind_db = app_db.clone();
    let sync_db = app_db.clone();
    let outbound = outbound_client(config);
    let expire_db = app_db.clone();
    let warm_db = app_db;
    let mut builder = Worker::builder(queue_db)
        .lease(config.queue_lease)
        .queue(MAINTENANCE, 2)
        .drain_timeout(config.shutdown_grace)
        .handler(AUDIT_RETENTION, move |_job| audit_retention(handler_db.clone(), days))
        .handler(LOGIN_ATTEMPTS_PRUNE, move |_job| login_attempts_prune(prune_db.clone()))
        .handler(REPORT_WARM, move |_job| report_warm(warm_db.clone(), cache.clone()))
        .handler(EVENTS_PRUNE, move |_job| events_prune(events_db.clone(), events_days))
        .handler(EVENTS_SEQUENCE, move |_job| events_sequence(sequence_db.clone()))
        .handler(DB_ANALYZE, move |_job| db_analyze(analyze_db.clone()));
    // Webhook deliveries: their own queue, so a slow receiver never holds up housekeeping.
    if let Some(deliverer) = deliverer(&webhook_db, config, outbound.clone()) {
        builder = builder.queue(crate::webhooks::dispatch::QUEUE, config.webhooks.concurrency).handler(
            crate::webhooks::dispatch::DELIVER,
            move |job: lexiflow_queue::JobContext| {
                crate::webhooks::dispatch::deliver(deliverer.clone(), job.payload, job.attempt, job.max_attempts)
            },
        );
    }
    // Files: scans and thumbnails on their own queue, so a slow scanner holds up nothing else.
    builder = builder
        .queue(crate::uploads::QUEUE, 2)
        .handler(crate::uploads::PROCESS, move |job: lexiflow_queue::JobContext| {
            crate::documents::process::run(processor.clone(), job.payload, job.attempt, job.max_attempts)
        })
        .handler(crate::uploads::EXPIRE, move |_job| uploads_expire(expire_db.clone(), expire_storage.clone()));
    // Calendar: reminders (delayed jobs, due at their minute) and provider sync.
    builder = builder
        .queue(crate::calendar::reminders::QUEUE, 4)
        .handler(crate::calendar::reminders::REMIND, move |job: lexiflow_queue::JobContext| {
            crate::calendar::reminders::run(remind_db.clone(), job.payload)
        });
    if let Some(outbound) = outbound.clone() {
        use crate::calendar::sync;
        let syncer = sync::Syncer::new(sync_db, outbound, &config.calendar);
        let (push, pull, backfill, revalidate, all) =
            (syncer.clone(), syncer.clone(), syncer.clone(), syncer.clone(), syncer);
        builder = builder
            .queue(sync::QUEUE, 4)
            .handler(sync::PUSH, move |job: lexiflow_queue::JobContext| {
                let s = push.clone();
                async move { s.push(job.payload).await }
            })
            .handler(sync::PULL, move |job: lexiflow_queue::JobContext| {
                let s = pull.clone();
                async move { s.pull(job.payload).await }
            })
            .handler(sync::BACKFILL, move |job: lexiflow_queue::JobContext| {
                let s = backfill.clone();
                async move { s.backfill(job.payload).await }
            })
            .handler(sync::REVALIDATE, move |job: lexiflow_queue::JobContext| {
                let s = revalidate.clone();
                async move { s.revalidate(job.payload).await }
            })
            .handler(sync::SYNC_ALL, move |_job| {
                let s = all.clone();
                async move { s.sync_all().await }
            });
        if config.calendar.google.is_some() || config.calendar.microsoft.is_some() {
            let job = NewJob::new(sync::SYNC_ALL, serde_json::json!({}))
                .queue(sync::QUEUE)
                .priority(Priority::Low)
                .max_attempts(2)
                .unique_key(sync::SYNC_ALL);
            builder = builder.schedule(Schedule::new(
                "calendar-sync",
                &config.calendar.sync_cron,
                &config.cron_timezone,
                job,
            )?);
        }
    }
    let expire = NewJob::new(crate::uploads::EXPIRE, serde_json::json!({}))
        .queue(MAINTENANCE)
        .priority(Priority::Low)
        .max_attempts(3)
        .unique_key(crate::uploads::EXPIRE);
    builder = builder.schedule(Schedule::new("uploads-expire", UPLOADS_EXPIRE_CRON, &config.cron_timezone, expire)?);
    let events = NewJob::new(EVENTS_PRUNE, serde_json::json!({}))
        .queue(MAINTENANCE)
        .priority(Priority::Low)
        .max_attempts(3)
        .unique_key(EVENTS_PRUNE);
    builder = builder.schedule(Schedule::new("events-prune", EVENTS_PRUNE_CRON, &config.cron_timezone, events)?);
    if postgres {
        let sequence = NewJob::new(EVENTS_SEQUENCE, serde_json::json!({}))
            .queue(MAINTENANCE)
            .priority(Priority::Normal)
            .max_attempts(2)
            .unique_key(EVENTS_SEQUENCE);
        builder =
            builder.schedule(Schedule::new("events-sequence", EVENTS_SEQUENCE_CRON, &config.cron_timezone, sequence)?);
        let analyze = NewJob::new(DB_ANALYZE, serde_json::json!({}))
            .queue(MAINTENANCE)
            .priority(Priority::Normal)
            .max_attempts(1)
            .unique_key(DB_ANALYZE);
        builder = builder.schedule(Schedule::new("db-analyze", DB_ANALYZE_CRON, &config.cron_timezone, analyze)?);
    }
    let prune = NewJob::new(LOGIN_ATTEMPTS_PRUNE, serde_json::json!({}))
        .queue(MAINTENANCE)
        .priority(Priority::Low)
        .max_attempts(3)
        .unique_key(LOGIN_ATTEMPTS_PRUNE);
    builder = builder.schedule(Schedule::new(
        "login-attempts-prune",
        LOGIN_ATTEMPTS_PRUNE_CRON,
        &config.cron_timezone,
        prune,
    )?);
    let warm = NewJob::new(REPORT_WARM, serde_json::json!({}))
        .queue(MAINTENANCE)
        .priority(Priority::Low)
        .max_attempts(2)
        .unique_key(REPORT_WARM);
    builder = builder.schedule(Schedule::new("report-warm", &config.report_warm_cron, &config.cron_timezone, warm)?);
    if days.is_some() {
        let job = NewJob::new(AUDIT_RETENTION, serde_json::json!({}))
            .queue(MAINTENANCE)
            .priority(Priority::Low)
            .max_attempts(5)
            .unique_key(AUDIT_RETENTION);
        let schedule = Schedule::new("audit-retention", &config.audit_retention_cron, &config.cron_timezone, job)?;
        builder = builder.schedule(schedule);
    }
    Ok(builder.poll_interval(Duration::from_millis(500)))
}
