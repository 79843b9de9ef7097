//! The `App` value: every handle a request may need, cheap to clone, built once at start-up.

use std::{
    ops::Deref,
    sync::{Arc, atomic::AtomicBool},
};

use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;

use crate::{
    auth::{password::Passwords, tokens::TokenKeys},
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

impl App {
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
        let limiter = Limiter::new(redis.clone());
        Ok(App(Arc::new(AppInner {
            config,
            db,
            tokens,
            passwords,
            redis,
            limiter,
            shutting_down: AtomicBool::new(false),
        })))
    }
}
