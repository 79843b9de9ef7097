//! The `App` value: every handle a request may need, cheap to clone, built once at start-up.

use std::{
    ops::Deref,
    sync::{Arc, atomic::AtomicBool},
};

use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;

use crate::{
    auth::{
        cache::{Eviction, SessionCache},
        password::Passwords,
        tokens::TokenKeys,
    },
    config::{Config, ConfigError},
    db,
    ratelimit::Limiter,
    redis_link::RedisLink,
};

/// Shared application state.
#[derive(Clone, Debug)]
pub struct App(Arc<AppInner>);

/// What [`App`] holds.
#[derive(Debug)]
pub struct AppInner {
    pub config: Config,
    pub db: DatabaseConnection,
    pub tokens: TokenKeys,
    pub passwords: Passwords,
    /// The shared Redis connection, when configured.
    pub redis: Option<Arc<RedisLink>>,
    pub limiter: Limiter,
    /// Checked sessions, so authentication need not hit the database on every request.
    pub sessions: SessionCache,
    /// The data cache (case-list totals, reports, case-team lookups), two-level when Redis is
    /// configured.
    pub cache: Arc<crate::cache::Cache>,
    /// The message bus between the process's parts and between instances.
    pub bus: Arc<crate::bus::Bus>,
    /// The process's domain-event subscribers.
    pub events: Arc<crate::events::Hub>,
    /// Numbers committed events after commit (PostgreSQL).
    pub sequencer: crate::events::outbox::Sequencer,
    /// API keys checked recently, by prefix.
    pub api_keys: crate::api_keys::KeyCache,
    /// The one client for outbound calls (webhooks).
    pub outbound: Arc<crate::outbound::Outbound>,
    /// Seals and opens webhook signing secrets.
    pub webhook_sealer: Arc<crate::webhooks::sign::Sealer>,
    /// Wakes the webhook dispatcher.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// Set when a subscription was made or changed here: the dispatcher looks again at which
    /// firms have subscriptions.
    pub webhook_refresh: AtomicBool,
    /// Where uploaded files live.
    pub storage: crate::storage::Storage,
    /// The Socket.IO gateway.
    pub realtime: crate::realtime::Gateway,
    /// This instance's name on the bus and in the outbox's `origin` column.
    pub origin: uuid::Uuid,
    /// When this process started serving.
    pub started: std::time::Instant,
    /// The health checks, run by one task and served from its newest result.
    pub health: crate::health::Monitor,
    /// Set when SIGTERM/SIGINT arrives: readiness turns 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to the database: {0}")]
    Connect(sea_orm::DbErr),
    #[error("cannot apply migrations: {0}")]
    Migrate(sea_orm::DbErr),
    #[error("password hashing parameters are invalid: {0}")]
    Argon2(String),
    #[error("REDIS_URL is not usable: {0}")]
    Redis(redis::RedisError),
    #[error("file storage is not usable: {0}")]
    Storage(String),
    #[error("cannot build the outbound HTTP client: {0}")]
    Outbound(String),
}

/// The bus topic on which instances tell each other which sessions to forget.
const EVICTIONS: &str = "auth";

impl App {
    /// A handle that does not keep the application alive (for subscribers it owns).
    pub fn weak(&self) -> std::sync::Weak<AppInner> {
        Arc::downgrade(&self.0)
    }

    /// The application behind a [`weak`](Self::weak) handle, if it still exists.
    pub fn upgrade(weak: &std::sync::Weak<AppInner>) -> Option<Self> {
        weak.upgrade().map(App)
    }

    /// Runs `work` in a write transaction ([`db::transaction`]), then hands the events it
    /// recorded to the process's subscribers (and, on PostgreSQL, has them numbered).
    pub async fn write<T, Fut>(
        &self,
        opts: db::TxOptions,
        work: impl FnMut(db::Tx) -> Fut,
    ) -> crate::http::error::ApiResult<T>
    where
        Fut: Future<Output = crate::http::error::ApiResult<T>>,
    {
        let mut work = work;
        self.write_outcome(opts, move |tx| {
            let attempt = work(tx);
            async move { attempt.await.map(db::Outcome::Commit) }
        })
        .await
    }

    /// [`write`](Self::write) for work that may commit and still fail
    /// ([`db::Outcome::CommitThenFail`]): the events are published either way.
    pub async fn write_outcome<T, Fut>(
        &self,
        opts: db::TxOptions,
        work: impl FnMut(db::Tx) -> Fut,
    ) -> crate::http::error::ApiResult<T>
    where
        Fut: Future<Output = crate::http::error::ApiResult<db::Outcome<T, crate::http::error::ApiError>>>,
    {
        // The events are handed on by the task that commits, right after the commit: a request
        // dropped while it waits (its client gone, its deadline) must not skip the cache
        // invalidation, the session evictions and the sequencer's kick of a committed write.
        let app = self.clone();
        let after: db::AfterCommit = std::sync::Arc::new(move |events| {
            let app = app.clone();
            Box::pin(async move { app.publish(events).await })
        });
        let opts = db::TxOptions { origin: Some(self.origin), ..opts };
        let done = db::transaction_with(&self.db, opts, Some(after), work).await?;
        // Only for a write that succeeded: one that committed and then failed (a wrong
        // password's failure count) must answer like one that committed nothing (a locked-out
        // address), or the header would tell them apart. Ignored outside a request.
        if done.value.is_ok() {
            let _ = crate::http::envelope::REQUEST.try_with(|c| c.mark_committed());
        }
        done.value
    }

    /// Hands committed events to the subscribers, once.
    pub async fn publish(&self, events: Vec<crate::events::DomainEvent>) {
        if events.is_empty() {
            return;
        }
        if self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let mut firms: Vec<crate::ids::FirmId> = events.iter().map(|e| e.firm_id).collect();
            firms.sort_unstable();
            firms.dedup();
            for f in firms {
                self.sequencer.kick(&self.db, f.0);
            }
        }
        self.events.publish(events).await;
    }

    /// Forgets cached sessions on this instance and, through the bus, on every other one.
    /// Called by the session-eviction subscriber after a commit that revoked them.
    pub fn evict(&self, e: Eviction) {
        self.evict_local(e);
        self.bus.publish_detached(EVICTIONS, e.encode());
    }

    fn evict_local(&self, e: Eviction) {
        match e {
            Eviction::Session(id) => self.sessions.evict_session(id),
            Eviction::User(id) => {
                self.sessions.evict_user(id);
                // A key acts for its maker: a disabled maker's keys stop at once.
                self.api_keys.invalidate_all();
            }
            Eviction::ApiKeys => self.api_keys.invalidate_all(),
        }
    }

    /// Connects, migrates and prepares keys. `config` must have had its secrets resolved.
    pub async fn build(mut config: Config) -> Result<Self, StartError> {
        config.resolve_secrets()?;
        let db = db::connect(&config.database).await.map_err(StartError::Connect)?;
        db::migrate(&db).await.map_err(StartError::Migrate)?;
        Self::with_db(config, db)
    }

    /// Wraps an already connected and migrated database.
    pub fn with_db(config: Config, db: DatabaseConnection) -> Result<Self, StartError> {
        let secret =
            config.auth.jwt_secret.clone().ok_or_else(|| ConfigError::Insecure("no JWT secret was resolved".into()))?;
        let tokens = TokenKeys::new(&secret, config.auth.access_ttl, config.auth.refresh_ttl);
        let passwords = Passwords::new(config.auth.argon2).map_err(StartError::Argon2)?;
        let redis = RedisLink::from_config(&config).map_err(StartError::Redis)?.map(Arc::new);
        crate::telemetry::metrics::install();
        if !config.audit_enabled {
            crate::audit::disable_for_benchmark();
        }
        let limiter = Limiter::new(redis.clone());
        let sessions = SessionCache::new(config.auth_cache_ttl);
        let api_keys = crate::api_keys::cache(config.auth_cache_ttl);
        let origin = uuid::Uuid::now_v7();
        let bus = crate::bus::Bus::new(origin, redis.clone());
        let cache = crate::cache::Cache::new(config.cache, redis.clone(), bus.clone());
        // The sequencer wakes the realtime feed when it has numbered events.
        let numbered = Arc::new(tokio::sync::Notify::new());
        let webhook_wake = Arc::new(tokio::sync::Notify::new());
        let outbound = Arc::new(
            crate::outbound::Outbound::new(crate::outbound::OutboundConfig {
                allow_private: config.webhooks.allow_private,
                ..Default::default()
            })
            .map_err(|e| StartError::Outbound(e.to_string()))?,
        );
        let webhook_sealer = Arc::new(
            crate::webhooks::sign::Sealer::from_config(&config)
                .unwrap_or_else(|| crate::webhooks::sign::Sealer::new(secret.expose_secret())),
        );
        let storage = crate::storage::Storage::from_config(&config).map_err(StartError::Storage)?;
        let slots = crate::realtime::slots::Slots::new(redis.clone())
            .with_ttl(config.realtime.slot_renew_every * crate::realtime::slots::RENEWALS_PER_TTL);
        let app = App(Arc::new(AppInner {
            config,
            db,
            tokens,
            passwords,
            redis,
            limiter,
            sessions,
            api_keys,
            cache,
            bus,
            events: Arc::new(crate::events::Hub::default()),
            sequencer: crate::events::outbox::Sequencer::new(vec![Arc::clone(&numbered), Arc::clone(&webhook_wake)]),
            outbound,
            webhook_sealer,
            webhook_wake,
            webhook_refresh: AtomicBool::new(false),
            storage,
            realtime: crate::realtime::Gateway::new(numbered, slots),
            origin,
            started: std::time::Instant::now(),
            health: crate::health::Monitor::default(),
            shutting_down: AtomicBool::new(false),
        }));
        // Other instances' revocations reach this one's session cache. Weak handles, so the
        // subscriptions do not keep a dropped App alive.
        let weak = Arc::downgrade(&app.0);
        app.bus.on(EVICTIONS, move |msg| {
            let Some(inner) = weak.upgrade() else { return false };
            if let Some(e) = Eviction::decode(msg) {
                App(inner).evict_local(e);
            }
            true
        });
        let weak = Arc::downgrade(&app.0);
        app.bus.on_reset(move || {
            // Revocations sent while this instance could not hear them are lost.
            let Some(inner) = weak.upgrade() else { return false };
            inner.sessions.clear();
            inner.api_keys.invalidate_all();
            true
        });
        crate::events::subscribers::install(&app);
        crate::realtime::install(&app);
        crate::webhooks::dispatch::install(&app);
        if !app.config.events.tail_every.is_zero() {
            tokio::spawn(crate::events::outbox::tail(
                app.db.clone(),
                Arc::downgrade(&app.events),
                app.origin,
                app.config.events.tail_every,
            ));
        }
        Ok(app)
    }
}
