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
    /// When this process started serving.
    pub started: std::time::Instant,
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
}

/// The Redis channel on which instances tell each other which sessions to forget.
const EVICTIONS: &str = "auth:evict";

impl App {
    /// Forgets cached sessions on this instance and, through Redis, on every other one.
    /// Call after the transaction that revoked them has committed.
    pub fn evict(&self, e: Eviction) {
        self.evict_local(e);
        if let Some(link) = self.redis.clone() {
            tokio::spawn(async move {
                // Publishing twice is harmless (evicting is idempotent), so it is retried.
                let policy = crate::resilience::RetryPolicy::default();
                let sent = crate::resilience::retry(policy, |_| true, |_| link.publish(EVICTIONS, e.encode())).await;
                if let Err(err) = sent {
                    tracing::warn!(error = %err, "could not tell other instances about a revoked session");
                }
            });
        }
    }

    fn evict_local(&self, e: Eviction) {
        match e {
            Eviction::Session(id) => self.sessions.evict_session(id),
            Eviction::User(id) => self.sessions.evict_user(id),
        }
    }

    /// After a committed change to a firm's cases (or to one case and its team): makes the
    /// totals, reports and access decisions that depend on it stale, here and on every
    /// instance, before the caller answers.
    pub async fn case_changed(&self, firm: crate::ids::FirmId, case: Option<uuid::Uuid>) {
        self.cases_changed(firm, case.as_slice()).await;
    }

    /// [`case_changed`](Self::case_changed) for many cases at once (bulk operations): one
    /// round of invalidation for all of them. It runs in a task of its own, so a request
    /// cancelled after its commit (a client gone, the request deadline) still invalidates.
    pub async fn cases_changed(&self, firm: crate::ids::FirmId, cases: &[uuid::Uuid]) {
        let mut tags = vec![crate::cache::tags::firm_cases(firm.0)];
        tags.extend(cases.iter().map(|c| crate::cache::tags::case_team(*c)));
        let cache = self.cache.clone();
        let task = tokio::spawn(async move { cache.invalidate_tags(&tags).await });
        if let Err(e) = task.await {
            tracing::error!(error = %e, "cache invalidation task failed");
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
        let redis = match &config.redis_url {
            Some(url) => Some(Arc::new(
                RedisLink::new(url.expose_secret(), config.redis_prefix.clone(), config.redis_breaker)
                    .map_err(StartError::Redis)?,
            )),
            None => None,
        };
        crate::telemetry::metrics::install();
        if !config.audit_enabled {
            crate::audit::disable_for_benchmark();
        }
        let limiter = Limiter::new(redis.clone());
        let sessions = SessionCache::new(config.auth_cache_ttl);
        let cache = crate::cache::Cache::new(config.cache, redis.clone());
        let app = App(Arc::new(AppInner {
            config,
            db,
            tokens,
            passwords,
            redis,
            limiter,
            sessions,
            cache,
            started: std::time::Instant::now(),
            shutting_down: AtomicBool::new(false),
        }));
        if let Some(link) = &app.redis {
            // Other instances' revocations reach this one's session cache. A weak handle, so
            // the subscription does not keep a dropped App alive.
            let weak = Arc::downgrade(&app.0);
            link.subscribe_forever(EVICTIONS, move |msg| {
                let Some(inner) = weak.upgrade() else { return false };
                if let Some(e) = Eviction::decode(&msg) {
                    App(inner).evict_local(e);
                }
                true
            });
        }
        Ok(app)
    }
}
