//! The one typed configuration, loaded once in `main` and passed down.
//!
//! Sources, later ones winning: built-in defaults, `lexiflow.toml` (or the file named by
//! `LEXIFLOW_CONFIG`), then environment variables (the seed's names: `PORT`, `DATABASE_URL` or
//! `DATABASE_HOST/PORT/USER/PASSWORD/NAME`, `JWT_SECRET`, `JWT_EXPIRES_IN`, `CORS_ORIGIN`, …).
//! `lexiflow.example.toml` at the repository root documents every key and is tested to parse.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{http::client_ip::Cidr, ratelimit::Quota};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{name} has an invalid value: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("{0}")]
    Insecure(String),
    #[error("cannot keep the generated JWT secret in {path}: {source}")]
    SecretFile { path: PathBuf, source: std::io::Error },
}

/// Where the process runs: production turns missing secrets into a refusal to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Development,
    Production,
    Test,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything the server needs to know about its surroundings.
#[derive(Clone, Debug)]
pub struct Config {
    pub env: AppEnv,
    pub host: IpAddr,
    pub port: u16,
    /// Holds the SQLite file, the generated JWT secret and whatever else the embedded default keeps.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    /// Largest JSON body accepted, in bytes.
    pub max_json_body: usize,
    /// Compress JSON and text responses of 1 KiB or more when the client accepts gzip or br
    /// (`COMPRESSION`, on by default).
    pub compression: bool,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `REDIS_URL` (or `REDIS_HOST/PORT/PASSWORD`); None in the embedded default or `DEMO_MODE`.
    pub redis_url: Option<SecretString>,
    /// `REDIS_PREFIX` (default `lexiflow:`): prefix of every Redis key and bus channel, so
    /// two deployments can share one Redis; tests give each app its own.
    pub redis_prefix: String,
    /// `QUEUE_LEASE_SECONDS` (default 60): a job's lease, renewed every third of it while the
    /// handler runs. A worker killed mid-job leaves the job to be retried once it expires.
    pub queue_lease: Duration,
    /// The circuit breaker in front of Redis.
    pub redis_breaker: crate::resilience::BreakerConfig,
    /// Certificates for a `rediss://` Redis beyond the system's roots.
    pub redis_tls: RedisTls,
    pub throttle: ThrottleConfig,
    pub security: SecurityConfig,
    pub ops: OpsConfig,
    /// `METRICS_TOKEN`: when set, the metrics routes need `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL of an OTLP/HTTP collector; spans are exported
    /// to `<endpoint>/v1/traces` when set.
    pub otlp_endpoint: Option<String>,
    /// `UPLOAD_DIR` (default `<data_dir>/uploads`): where uploads and file blobs live on the
    /// embedded default; its free space is a health check.
    pub upload_dir: PathBuf,
    /// How long a checked session may be trusted without asking the database again
    /// (`AUTH_CACHE_TTL_MS`, default 2000; 0 turns the cache off). Revocations on this
    /// instance, and on others through Redis when configured, take effect at once.
    pub auth_cache_ttl: Duration,
    /// The data cache (see `cache`): entries kept in process, and their default lifetime.
    pub cache: crate::cache::CacheConfig,
    /// `AUDIT_RETENTION_DAYS`: audit entries older than this are pruned (keeping the chain
    /// verifiable); None keeps everything, the default.
    pub audit_retention_days: Option<u32>,
    /// `AUDIT_TRAIL=off` (refused in production) turns auditing off, for the benchmark only.
    pub audit_enabled: bool,
    /// `OPERATOR_FIRM_ID`: only admins of this firm operate the job queue (hosted
    /// deployments); unset, any admin may (the single-firm embedded default).
    pub operator_firm_id: Option<uuid::Uuid>,
    /// `WORKER_IN_SERVE` (default true): `lexiflow serve` also runs a job worker.
    pub worker_in_serve: bool,
    /// `WEBHOOK_SECRET_KEY`: the key stored webhook secrets are sealed under (at least 32
    /// characters in production). Unset, they are sealed under a key derived from `JWT_SECRET`,
    /// and rotating `JWT_SECRET` makes them unreadable.
    pub webhook_secret_key: Option<SecretString>,
    /// `WEBHOOK_SECRET_KEY_PREVIOUS`: a key being retired; secrets sealed under it still open
    /// and are sealed again under the current key at their next delivery.
    pub webhook_secret_key_previous: Option<SecretString>,
    /// `WORKER_HEALTH_PORT`: when set, `lexiflow worker` serves its probes and metrics
    /// (`/health/liveness`, `/health/readiness`, `/metrics`) on `HOST` at this port (0: any).
    pub worker_health_port: Option<u16>,
    /// `AUDIT_RETENTION_CRON` (croner syntax, default `0 3 * * *`) in `CRON_TIMEZONE`
    /// (an IANA name, default `UTC`): when the audit retention job fires.
    pub audit_retention_cron: String,
    /// When the case summary reports are computed ahead of readers (`REPORT_WARM_CRON`,
    /// croner syntax; default every 15 minutes).
    pub report_warm_cron: String,
    pub cron_timezone: String,
    /// The domain-event outbox (see `events`).
    pub events: EventsConfig,
    /// The Socket.IO gateway (see `realtime`).
    pub realtime: RealtimeConfig,
    /// Webhook delivery (see `webhooks`).
    pub webhooks: WebhookConfig,
    /// Uploads, stored files and their scanning (see `uploads`, `storage`, `documents`).
    pub files: FilesConfig,
    pub calendar: CalendarConfig,
}

/// One calendar provider's OAuth client and API addresses (`GOOGLE_*`, `MICROSOFT_*`).
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_url: String,
    pub token_url: String,
    /// RFC 7009 revocation endpoint (Google's); Microsoft's identity platform has none.
    pub revoke_url: Option<String>,
    /// The calendar API's base (`https://www.googleapis.com/calendar/v3`,
    /// `https://graph.microsoft.com/v1.0`); tests point it at local fakes.
    pub api_base: String,
}

/// Calendar provider sync.
#[derive(Clone, Debug, Default)]
pub struct CalendarConfig {
    /// `CALENDAR_TOKEN_KEY`: 32 bytes, base64; seals provider tokens at rest (AES-256-GCM).
    /// Without it, connecting a provider is refused.
    pub token_key: Option<SecretString>,
    /// `CALENDAR_REDIRECT_URL`: the front end's page the provider sends the browser back to
    /// (the redirect URI registered with the provider), `{provider}` replaced by `google` or
    /// `microsoft`. The page completes the connection by posting the `code` and `state` it was
    /// given to `POST /api/v1/calendar/connections/{provider}/callback` with the user's token,
    /// so that only the user who started it can finish it.
    pub redirect_url: Option<String>,
    /// `GOOGLE_CLIENT_ID` and `GOOGLE_CLIENT_SECRET` (and optionally `GOOGLE_AUTH_URL`,
    /// `GOOGLE_TOKEN_URL`, `GOOGLE_REVOKE_URL`, `GOOGLE_CALENDAR_API`).
    pub google: Option<ProviderSettings>,
    /// `MICROSOFT_CLIENT_ID` and `MICROSOFT_CLIENT_SECRET` (and optionally
    /// `MICROSOFT_TENANT`, `MICROSOFT_AUTH_URL`, `MICROSOFT_TOKEN_URL`, `MICROSOFT_GRAPH_API`).
    pub microsoft: Option<ProviderSettings>,
    /// `CALENDAR_SYNC_CRON` (default every 5 minutes): when connected calendars are pulled.
    pub sync_cron: String,
}

/// Uploads, stored files and their scanning.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// `MAX_FILE_SIZE` (bytes, default 100 MiB): the largest upload (`Tus-Max-Size`).
    pub max_file_size: u64,
    /// `UPLOAD_EXPIRY_HOURS` (default 24): an upload not finished (or not turned into a
    /// document version) this long after it was created is removed.
    pub upload_expiry: Duration,
    /// `CLAMD_ADDR` (`host:port`): clamd's TCP socket. Unset, files are `not_scanned`.
    pub clamd_addr: Option<String>,
    /// `CLAMD_TIMEOUT_MS` (default 60000): how long one scan may take.
    pub clamd_timeout: Duration,
    /// `SCAN_REQUIRED` (default false): serve a file only once clamd has found it clean.
    pub scan_required: bool,
    /// `S3_BUCKET` and its companions: store files in an S3-compatible bucket instead of
    /// `UPLOAD_DIR` (the scale-out shape).
    pub s3: Option<crate::storage::S3Settings>,
    /// `THUMBNAIL_MAX_PIXELS` (default 40,000,000): images larger than this (width ×
    /// height) are refused before decoding, against decompression bombs.
    pub max_image_pixels: u64,
    /// `UPLOAD_LEASE_SECONDS` (default 60): how long a PATCH holds its upload without renewing
    /// (renewed every sixth of it while bytes arrive). An instance killed mid-PATCH leaves the
    /// upload answering 423 for at most this long; then any instance takes the next PATCH.
    pub upload_lease: Duration,
}

/// Webhook delivery.
#[derive(Clone, Copy, Debug)]
pub struct WebhookConfig {
    /// `WEBHOOK_ALLOW_PRIVATE` (default false): allow loopback and private targets (tests,
    /// closed networks). Refused in production.
    pub allow_private: bool,
    /// `WEBHOOK_MAX_ATTEMPTS` (default 16): attempts per delivery, about a day with the backoff.
    pub max_attempts: u32,
    /// `WEBHOOK_RETRY_BASE_MS` (default 30000): the first retry's delay; each next one
    /// doubles, up to two hours.
    pub retry_base: Duration,
    /// `WEBHOOK_DISABLE_AFTER` (default 50): consecutive failed attempts that disable a
    /// subscription.
    pub disable_after: u32,
    /// `WEBHOOK_POLL_MS` (default 1000): how often the outbox is looked at for new events when
    /// nothing woke the dispatcher sooner.
    pub poll_every: Duration,
    /// `WEBHOOK_CONCURRENCY` (default 8, 1 to 256): deliveries one worker sends at a time.
    pub concurrency: usize,
}

/// The Socket.IO gateway's own limits, enforced on the authenticated user.
#[derive(Clone, Copy, Debug)]
pub struct RealtimeConfig {
    /// `REALTIME_MAX_CONNECTIONS_PER_USER` (default 10): open sockets per user, over every
    /// instance when Redis is configured (`realtime::slots`), else on this instance.
    pub max_connections_per_user: usize,
    /// `REALTIME_MAX_CASES_PER_SOCKET` (default 200): cases one socket may follow at once.
    pub max_cases_per_socket: usize,
    /// `REALTIME_MESSAGES_PER_MINUTE` (default 120): messages a user may send, over all their
    /// sockets (shared across instances through Redis when configured, like the API's limits).
    pub messages_per_minute: u32,
    /// `REALTIME_REPLAY_MAX` (default 1000): the most missed events a reconnecting client is
    /// sent; further behind, it is told to resync.
    pub replay_max: i64,
    /// `REALTIME_POLL_MS` (default 250, at least 10): how often each instance looks at the
    /// outbox for events committed elsewhere when nothing woke it sooner.
    pub poll_every: Duration,
    /// `REALTIME_MAX_MESSAGE_BYTES` (default 65536): the largest message a client may send,
    /// over WebSocket and polling alike.
    pub max_message_bytes: usize,
    /// How often an instance renews its sockets' connection slots in Redis (30 s; a slot
    /// lapses after three times this). Not a variable: tests shorten it.
    pub slot_renew_every: Duration,
}

/// The domain-event outbox.
#[derive(Clone, Copy, Debug)]
pub struct EventsConfig {
    /// `EVENTS_RETENTION_DAYS` (default 7, at least 1): outbox rows older than this are pruned
    /// by the hourly `events.prune` job.
    pub retention_days: u32,
    /// `EVENTS_TAIL_MS` (default 1000; 0 turns it off): how often the process looks in the
    /// outbox for changes other processes made (a `lexiflow import`, other instances), so its
    /// caches forget what they changed.
    pub tail_every: Duration,
}

/// Health thresholds and the shutdown sequence.
#[derive(Clone, Copy, Debug)]
pub struct OpsConfig {
    /// `/health` reports memory down above this resident set size (`HEALTH_MEMORY_MAX_BYTES`).
    pub memory_max_bytes: u64,
    /// `/health` reports disk down below this much free space (`HEALTH_DISK_MIN_FREE_BYTES`).
    pub disk_min_free_bytes: u64,
    /// Readiness fails while Redis is down only when `REDIS_REQUIRED=true`; by default the
    /// service degrades to per-instance limits and stays ready.
    pub redis_required: bool,
    /// After SIGTERM: how long to keep serving (readiness already 503) so load balancers
    /// notice, before no longer accepting connections (`SHUTDOWN_DRAIN_SECONDS`).
    pub drain: Duration,
}

/// Rate limits. The global one comes from `THROTTLE_LIMIT` per `THROTTLE_TTL` ms; the
/// per-route ones are stricter and fixed here (tests and benchmarks adjust the struct).
#[derive(Clone, Copy, Debug)]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// Every route but probes, metrics and docs, per user (or per address when anonymous).
    pub global: Quota,
    /// `POST /auth/login`, per client address.
    pub login_ip: Quota,
    /// `POST /auth/login`, per e-mail address tried, whatever address it comes from.
    pub login_email: Quota,
    /// `POST /auth/register`, per client address.
    pub register: Quota,
    /// `POST /auth/refresh`, per client address.
    pub refresh: Quota,
    /// Routes that hash a password (creating users), per user.
    pub password: Quota,
}

/// Headers, deadlines, proxies and the brute-force defence.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// `SECURITY_LAYER=off` (refused in production) turns off headers, rate limits and the
    /// request deadline, for the benchmark's with-versus-without comparison only.
    pub enabled: bool,
    /// `Strict-Transport-Security` max-age; on (one year) by default in production.
    pub hsts_max_age: Option<u64>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// A request not answered within this ends in 408.
    pub request_timeout: Duration,
    /// Deepest JSON nesting accepted in a request body.
    pub max_json_depth: usize,
    pub lockout: LockoutConfig,
}

/// Failed logins per account: slowed down, then locked for a while.
#[derive(Clone, Copy, Debug)]
pub struct LockoutConfig {
    /// Failures in a row after which every further attempt waits first.
    pub slowdown_after: u32,
    /// The first wait; it doubles with each further failure, up to `slowdown_max`.
    pub slowdown_base: Duration,
    pub slowdown_max: Duration,
    /// Failures in a row that lock the account.
    pub threshold: u32,
    /// How long a lock lasts.
    pub duration: Duration,
}

/// Which database and how many connections.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; it can hold a password, hence the secret type.
    pub url: SecretString,
    pub max_connections: u32,
    /// Applied to PostgreSQL connections only: a schema to put on the search path (tests).
    pub schema: Option<String>,
    /// PostgreSQL `statement_timeout` of every connection (`DB_STATEMENT_TIMEOUT_MS`,
    /// default 30 s): a runaway query is cancelled instead of holding locks for ever.
    pub statement_timeout: Duration,
    /// PostgreSQL `lock_timeout` (`DB_LOCK_TIMEOUT_MS`, default 10 s); on SQLite the busy
    /// timeout, how long a writer waits for the write lock.
    pub lock_timeout: Duration,
    /// SQLite only: the process's SQLite memory budget, in MiB (`DB_SQLITE_CACHE_MIB`,
    /// default 8). Every connection may cache up to that many pages, and SQLite's soft heap
    /// limit, which is process-wide, is set to it, so once the process's SQLite memory reaches
    /// it connections recycle their least recently used pages instead of growing. It costs
    /// several times its size in resident memory once the file is larger than it (decision
    /// 0012). Measured (OPERATIONS "Capacity notes"): the benchmark's peak RSS
    /// 96–111 MB at 8 MiB, 113–146 MB at 16; a 10,000-case import request 0.74 s at 16 MiB,
    /// 0.58 s at 64.
    pub sqlite_cache_mib: u32,
}

impl DatabaseConfig {
    /// True when the URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        let u = self.url.expose_secret();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }
}

/// Token lifetimes, the signing secret and password-hashing cost.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Resolved HS256 secret. `None` until [`Config::resolve_secrets`] ran.
    pub jwt_secret: Option<SecretString>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub argon2: Argon2Cost,
}

/// argon2id parameters (OWASP's recommendation by default: 19 MiB, 2 passes, 1 lane).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// TLS to Redis (a `rediss://` URL) beyond its defaults, which are the system's trusted roots
/// and no client certificate. Read from PEM files when the application starts.
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    /// `REDIS_CA_FILE`: the certificates to trust instead of the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// `REDIS_CLIENT_CERT_FILE`, with `REDIS_CLIENT_KEY_FILE`: a client certificate for a
    /// server that asks for one (`tls-auth-clients yes`).
    pub client_cert_file: Option<PathBuf>,
    /// `REDIS_CLIENT_KEY_FILE`: the client certificate's private key.
    pub client_key_file: Option<PathBuf>,
}

/// The shape of `lexiflow.toml`: every key optional, names as in the environment, lower-case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub app_env: Option<AppEnv>,
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub database_max_connections: Option<u32>,
    pub jwt_secret: Option<String>,
    pub jwt_expires_in: Option<String>,
    pub refresh_token_expires_in: Option<String>,
    pub cors_origin: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_json_body: Option<usize>,
    pub shutdown_grace_seconds: Option<u64>,
    pub argon2: Option<Argon2Cost>,
    pub redis_url: Option<String>,
    pub demo_mode: Option<bool>,
    pub throttle_ttl: Option<u64>,
    pub throttle_limit: Option<u32>,
    pub trusted_proxies: Option<String>,
    pub hsts_max_age: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
    pub max_json_depth: Option<usize>,
    pub login_lockout_threshold: Option<u32>,
    pub login_lockout_seconds: Option<u64>,
    pub health_memory_max_bytes: Option<u64>,
    pub health_disk_min_free_bytes: Option<u64>,
    pub redis_required: Option<bool>,
    pub shutdown_drain_seconds: Option<u64>,
    pub upload_dir: Option<PathBuf>,
    pub auth_cache_ttl_ms: Option<u64>,
    pub audit_retention_days: Option<u32>,
}

/// Secrets that ship in examples and tutorials; refused in production.
const KNOWN_WEAK_SECRETS: &[&str] =
    &["your-secret-key-change-in-production", "secret", "changeme", "change-me", "jwt-secret", "development"];

/// Minimum length of a production JWT secret, in bytes (HS256 wants at least 256 bits).
const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Loads from the process environment and the optional config file.
    pub fn load() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let path = env.get("LEXIFLOW_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("lexiflow.toml"));
        let file = if path.exists() || env.contains_key("LEXIFLOW_CONFIG") {
            Self::read_file(&path)?
        } else {
            FileConfig::default()
        };
        Self::from_sources(file, &env)
    }

    /// Parses a config file.
    pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    /// Combines a parsed file with environment variables (which win).
    pub fn from_sources(file: FileConfig, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();

        let app_env = match get("APP_ENV").or_else(|| get("NODE_ENV")) {
            Some(v) => parse_app_env(&v)?,
            None => file.app_env.unwrap_or(AppEnv::Development),
        };
        let port = match get("PORT") {
            Some(v) => v.parse().map_err(|_| invalid("PORT", "not a port number"))?,
            None => file.port.unwrap_or(3000),
        };
        let default_host = if app_env == AppEnv::Production {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let host = match get("HOST") {
            Some(v) => v.parse().map_err(|_| invalid("HOST", "not an IP address"))?,
            None => file.host.unwrap_or(default_host),
        };
        let data_dir =
            get("LEXIFLOW_DATA_DIR").map(PathBuf::from).or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data"));

        let url = match get("DATABASE_URL").or(file.database_url) {
            Some(u) => u,
            None => match get("DATABASE_HOST") {
                Some(host) => postgres_url_from_parts(
                    &host,
                    get("DATABASE_PORT").as_deref().unwrap_or("5432"),
                    get("DATABASE_USER").as_deref().unwrap_or("postgres"),
                    get("DATABASE_PASSWORD").as_deref(),
                    get("DATABASE_NAME").as_deref().unwrap_or("lexiflow"),
                )?,
                None => format!("sqlite://{}?mode=rwc", data_dir.join("lexiflow.db").display()),
            },
        };
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid("DATABASE_URL", "must start with sqlite:, postgres:// or postgresql://"));
        }
        let max_connections = match get("DATABASE_MAX_CONNECTIONS") {
            Some(v) => v.parse().map_err(|_| invalid("DATABASE_MAX_CONNECTIONS", "not a number"))?,
            None => file.database_max_connections.unwrap_or(16),
        };

        let access_ttl = parse_duration(
            "JWT_EXPIRES_IN",
            &get("JWT_EXPIRES_IN").or(file.jwt_expires_in).unwrap_or_else(|| "15m".into()),
        )?;
        let refresh_ttl = parse_duration(
            "REFRESH_TOKEN_EXPIRES_IN",
            &get("REFRESH_TOKEN_EXPIRES_IN").or(file.refresh_token_expires_in).unwrap_or_else(|| "30d".into()),
        )?;
        let cors_origins: Vec<String> = get("CORS_ORIGIN")
            .or(file.cors_origin)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        for o in &cors_origins {
            let ok = o == "*"
                || (url::Url::parse(o).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/")
                    && !o.ends_with('/'));
            if !ok {
                return Err(invalid("CORS_ORIGIN", &format!("{o:?} is not an origin such as https://app.example.com")));
            }
        }
        let log_format = match get("LOG_FORMAT") {
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) if v.eq_ignore_ascii_case("pretty") || v.eq_ignore_ascii_case("text") => LogFormat::Pretty,
            Some(_) => return Err(invalid("LOG_FORMAT", "use json or pretty")),
            None => file.log_format.unwrap_or(if app_env == AppEnv::Production {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            }),
        };
        let max_json_body = match get("MAX_JSON_BODY") {
            Some(v) => v.parse().map_err(|_| invalid("MAX_JSON_BODY", "not a number of bytes"))?,
            None => file.max_json_body.unwrap_or(1024 * 1024),
        };
        let shutdown_grace = Duration::from_secs(match get("SHUTDOWN_GRACE_SECONDS") {
            Some(v) => v.parse().map_err(|_| invalid("SHUTDOWN_GRACE_SECONDS", "not a number"))?,
            None => file.shutdown_grace_seconds.unwrap_or(30),
        });

        let demo_mode = match get("DEMO_MODE") {
            Some(v) => parse_bool("DEMO_MODE", &v)?,
            None => file.demo_mode.unwrap_or(false),
        };
        let redis_tls_on = match get("REDIS_TLS") {
            Some(v) => parse_bool("REDIS_TLS", &v)?,
            None => false,
        };
        let redis_url = match get("REDIS_URL").or(file.redis_url) {
            Some(u) => Some(u),
            None => match get("REDIS_HOST") {
                Some(host) => Some(url_from_parts(
                    "REDIS_HOST",
                    if redis_tls_on { "rediss" } else { "redis" },
                    &host,
                    &get("REDIS_PORT").unwrap_or_else(|| "6379".into()),
                    "",
                    get("REDIS_PASSWORD").as_deref(),
                    "",
                )?),
                None => None,
            },
        };
        if let Some(u) = &redis_url
            && !(u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            return Err(invalid("REDIS_URL", "must start with redis:// or rediss://"));
        }
        let redis_tls = RedisTls {
            ca_file: get("REDIS_CA_FILE").map(PathBuf::from),
            client_cert_file: get("REDIS_CLIENT_CERT_FILE").map(PathBuf::from),
            client_key_file: get("REDIS_CLIENT_KEY_FILE").map(PathBuf::from),
        };
        if redis_tls.client_cert_file.is_some() != redis_tls.client_key_file.is_some() {
            return Err(invalid(
                "REDIS_CLIENT_CERT_FILE",
                "REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE go together",
            ));
        }
        let rediss = redis_url.as_deref().is_some_and(|u| u.starts_with("rediss://"));
        if (redis_tls.ca_file.is_some() || redis_tls.client_cert_file.is_some()) && !rediss {
            return Err(invalid("REDIS_CA_FILE", "REDIS_CA_FILE and REDIS_CLIENT_CERT_FILE need a rediss:// Redis"));
        }
        if redis_tls_on && redis_url.is_some() && !rediss {
            return Err(invalid("REDIS_TLS", "REDIS_TLS=true needs a rediss:// REDIS_URL (or REDIS_HOST)"));
        }
        let redis_url = if demo_mode { None } else { redis_url.map(SecretString::from) };

        let throttle_ttl: u64 = num(&get, "THROTTLE_TTL", file.throttle_ttl, 60_000)?;
        let throttle_limit: u32 = num(&get, "THROTTLE_LIMIT", file.throttle_limit, 100)?;
        if throttle_ttl == 0 || throttle_limit == 0 {
            return Err(invalid("THROTTLE_TTL", "THROTTLE_TTL and THROTTLE_LIMIT must be more than zero"));
        }
        let security_enabled = match get("SECURITY_LAYER") {
            Some(v) if v.eq_ignore_ascii_case("off") => false,
            Some(v) if v.eq_ignore_ascii_case("on") => true,
            Some(_) => return Err(invalid("SECURITY_LAYER", "use on or off")),
            None => true,
        };
        if !security_enabled && app_env == AppEnv::Production {
            return Err(ConfigError::Insecure("SECURITY_LAYER=off is refused in production".into()));
        }
        if app_env == AppEnv::Production
            && get("WEBHOOK_ALLOW_PRIVATE").is_some_and(|v| parse_bool("WEBHOOK_ALLOW_PRIVATE", &v).unwrap_or(true))
        {
            return Err(ConfigError::Insecure("WEBHOOK_ALLOW_PRIVATE=true is refused in production".into()));
        }
        let trusted_proxies = get("TRUSTED_PROXIES")
            .or(file.trusted_proxies)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| invalid("TRUSTED_PROXIES", &format!("{s:?} is not an address or block")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hsts_default = if app_env == AppEnv::Production { 31_536_000 } else { 0 };
        let hsts: u64 = num(&get, "HSTS_MAX_AGE", file.hsts_max_age, hsts_default)?;
        let request_timeout =
            Duration::from_secs(num(&get, "REQUEST_TIMEOUT_SECONDS", file.request_timeout_seconds, 30)?);
        let max_json_depth = num(&get, "MAX_JSON_DEPTH", file.max_json_depth, 32)?;
        if request_timeout.is_zero() || max_json_depth == 0 {
            return Err(invalid(
                "REQUEST_TIMEOUT_SECONDS",
                "REQUEST_TIMEOUT_SECONDS and MAX_JSON_DEPTH must be more than zero",
            ));
        }
        let lock_threshold: u32 = num(&get, "LOGIN_LOCKOUT_THRESHOLD", file.login_lockout_threshold, 10)?;
        let lock_secs: u64 = num(&get, "LOGIN_LOCKOUT_SECONDS", file.login_lockout_seconds, 900)?;

        let redis_required = match get("REDIS_REQUIRED") {
            Some(v) => parse_bool("REDIS_REQUIRED", &v)?,
            None => file.redis_required.unwrap_or(false),
        };
        let drain_default = if app_env == AppEnv::Production { 5 } else { 0 };
        let ops = OpsConfig {
            memory_max_bytes: num(&get, "HEALTH_MEMORY_MAX_BYTES", file.health_memory_max_bytes, 1_536 * 1024 * 1024)?,
            disk_min_free_bytes: num(
                &get,
                "HEALTH_DISK_MIN_FREE_BYTES",
                file.health_disk_min_free_bytes,
                512 * 1024 * 1024,
            )?,
            redis_required,
            drain: Duration::from_secs(num(
                &get,
                "SHUTDOWN_DRAIN_SECONDS",
                file.shutdown_drain_seconds,
                drain_default,
            )?),
        };
        let upload_dir =
            get("UPLOAD_DIR").map(PathBuf::from).or(file.upload_dir).unwrap_or_else(|| data_dir.join("uploads"));
        let auth_cache_ttl = Duration::from_millis(num(&get, "AUTH_CACHE_TTL_MS", file.auth_cache_ttl_ms, 2_000)?);
        let cache = crate::cache::CacheConfig {
            max_entries: num(&get, "CACHE_MAX_ENTRIES", None, 100_000)?,
            default_ttl: Duration::from_millis(num(&get, "CACHE_TTL_MS", None, 60_000)?),
            local_ttl: Duration::from_millis(num(&get, "CACHE_LOCAL_TTL_MS", None, 10_000)?),
        };
        let statement_timeout = Duration::from_millis(num(&get, "DB_STATEMENT_TIMEOUT_MS", None, 30_000)?);
        let lock_timeout = Duration::from_millis(num(&get, "DB_LOCK_TIMEOUT_MS", None, 10_000)?);
        if statement_timeout.is_zero() || lock_timeout.is_zero() {
            return Err(invalid("DB_STATEMENT_TIMEOUT_MS", "database timeouts must be more than zero"));
        }
        let sqlite_cache_mib = num(&get, "DB_SQLITE_CACHE_MIB", None, 8)?;
        if sqlite_cache_mib == 0 || sqlite_cache_mib > 65_536 {
            return Err(invalid("DB_SQLITE_CACHE_MIB", "must be between 1 and 65536 (MiB)"));
        }

        Ok(Config {
            env: app_env,
            host,
            port,
            data_dir,
            database: DatabaseConfig {
                url: url.into(),
                max_connections,
                schema: None,
                statement_timeout,
                lock_timeout,
                sqlite_cache_mib,
            },
            auth: AuthConfig {
                jwt_secret: get("JWT_SECRET").or(file.jwt_secret).map(SecretString::from),
                access_ttl,
                refresh_ttl,
                argon2: file.argon2.unwrap_or_default(),
            },
            cors_origins,
            log_format,
            max_json_body,
            compression: match get("COMPRESSION") {
                Some(v) => parse_bool("COMPRESSION", &v)?,
                None => true,
            },
            shutdown_grace,
            redis_url,
            ops,
            metrics_token: match get("METRICS_TOKEN") {
                // The metrics routes are not rate-limited, so a short token could be guessed.
                Some(t) if app_env == AppEnv::Production && t.trim().len() < MIN_SECRET_BYTES => {
                    return Err(ConfigError::Insecure(format!(
                        "METRICS_TOKEN is too short for production: use at least {MIN_SECRET_BYTES} random characters"
                    )));
                }
                Some(t) => Some(SecretString::from(t)),
                None => None,
            },
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            upload_dir,
            auth_cache_ttl,
            cache,
            operator_firm_id: match get("OPERATOR_FIRM_ID") {
                Some(v) => Some(v.parse().map_err(|_| invalid("OPERATOR_FIRM_ID", "not a firm id (UUID)"))?),
                None => None,
            },
            audit_retention_cron: get("AUDIT_RETENTION_CRON").unwrap_or_else(|| "0 3 * * *".into()),
            report_warm_cron: get("REPORT_WARM_CRON").unwrap_or_else(|| "*/15 * * * *".into()),
            cron_timezone: get("CRON_TIMEZONE").unwrap_or_else(|| "UTC".into()),
            webhook_secret_key: match get("WEBHOOK_SECRET_KEY") {
                Some(k) if k.trim().len() < MIN_SECRET_BYTES && app_env == AppEnv::Production => {
                    return Err(ConfigError::Insecure(format!(
                        "WEBHOOK_SECRET_KEY is too short for production: use at least {MIN_SECRET_BYTES} random characters"
                    )));
                }
                Some(k) => Some(SecretString::from(k)),
                None => None,
            },
            webhook_secret_key_previous: get("WEBHOOK_SECRET_KEY_PREVIOUS").map(SecretString::from),
            worker_health_port: match get("WORKER_HEALTH_PORT") {
                Some(v) => Some(v.parse().map_err(|_| invalid("WORKER_HEALTH_PORT", "not a port number"))?),
                None => None,
            },
            worker_in_serve: match get("WORKER_IN_SERVE") {
                Some(v) => parse_bool("WORKER_IN_SERVE", &v)?,
                None => true,
            },
            audit_enabled: match get("AUDIT_TRAIL") {
                Some(v) if v.eq_ignore_ascii_case("off") => {
                    if app_env == AppEnv::Production {
                        return Err(ConfigError::Insecure("AUDIT_TRAIL=off is refused in production".into()));
                    }
                    false
                }
                Some(v) if v.eq_ignore_ascii_case("on") => true,
                Some(_) => return Err(invalid("AUDIT_TRAIL", "use on or off")),
                None => true,
            },
            audit_retention_days: match get("AUDIT_RETENTION_DAYS") {
                Some(v) => Some(
                    v.parse()
                        .ok()
                        .filter(|d| *d > 0)
                        .ok_or_else(|| invalid("AUDIT_RETENTION_DAYS", "a number of days, at least 1"))?,
                ),
                None => match file.audit_retention_days {
                    Some(0) => return Err(invalid("AUDIT_RETENTION_DAYS", "a number of days, at least 1")),
                    other => other,
                },
            },
            events: EventsConfig {
                retention_days: match get("EVENTS_RETENTION_DAYS") {
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|d| *d > 0)
                        .ok_or_else(|| invalid("EVENTS_RETENTION_DAYS", "a number of days, at least 1"))?,
                    None => 7,
                },
                tail_every: Duration::from_millis(num(&get, "EVENTS_TAIL_MS", None, 1_000)?),
            },
            realtime: RealtimeConfig {
                max_connections_per_user: num(&get, "REALTIME_MAX_CONNECTIONS_PER_USER", None, 10)?,
                max_cases_per_socket: num(&get, "REALTIME_MAX_CASES_PER_SOCKET", None, 200)?,
                messages_per_minute: num(&get, "REALTIME_MESSAGES_PER_MINUTE", None, 120)?,
                replay_max: num(&get, "REALTIME_REPLAY_MAX", None, 1_000)?,
                poll_every: Duration::from_millis(num(&get, "REALTIME_POLL_MS", None, 250u64)?.max(10)),
                max_message_bytes: num(&get, "REALTIME_MAX_MESSAGE_BYTES", None, 65_536)?,
                slot_renew_every: crate::realtime::slots::RENEW_EVERY,
            },
            webhooks: WebhookConfig {
                allow_private: match get("WEBHOOK_ALLOW_PRIVATE") {
                    Some(v) => parse_bool("WEBHOOK_ALLOW_PRIVATE", &v)?,
                    None => false,
                },
                max_attempts: num(&get, "WEBHOOK_MAX_ATTEMPTS", None, 16u32)?.max(1),
                retry_base: Duration::from_millis(num(&get, "WEBHOOK_RETRY_BASE_MS", None, 30_000u64)?.max(10)),
                disable_after: num(&get, "WEBHOOK_DISABLE_AFTER", None, 50u32)?.max(1),
                poll_every: Duration::from_millis(num(&get, "WEBHOOK_POLL_MS", None, 1_000u64)?.max(10)),
                concurrency: num(&get, "WEBHOOK_CONCURRENCY", None, 8usize)?.clamp(1, 256),
            },
            files: FilesConfig {
                max_file_size: num(&get, "MAX_FILE_SIZE", None, 100 * 1024 * 1024u64)?.max(1),
                upload_expiry: Duration::from_secs(num(&get, "UPLOAD_EXPIRY_HOURS", None, 24u64)?.max(1) * 3600),
                clamd_addr: get("CLAMD_ADDR").filter(|v| !v.trim().is_empty()),
                clamd_timeout: Duration::from_millis(num(&get, "CLAMD_TIMEOUT_MS", None, 60_000u64)?.max(100)),
                scan_required: match get("SCAN_REQUIRED") {
                    Some(v) => parse_bool("SCAN_REQUIRED", &v)?,
                    None => false,
                },
                max_image_pixels: num(&get, "THUMBNAIL_MAX_PIXELS", None, 40_000_000u64)?.max(1),
                upload_lease: Duration::from_secs(num(&get, "UPLOAD_LEASE_SECONDS", None, 60u64)?.max(2)),
                s3: s3_settings(&get)?,
            },
            calendar: calendar_settings(&get, app_env)?,
            redis_prefix: get("REDIS_PREFIX")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "lexiflow:".into()),
            queue_lease: Duration::from_secs(num(&get, "QUEUE_LEASE_SECONDS", None, 60u64)?.max(3)),
            redis_breaker: crate::resilience::BreakerConfig::default(),
            redis_tls,
            throttle: ThrottleConfig {
                enabled: security_enabled,
                global: Quota { limit: throttle_limit, period: Duration::from_millis(throttle_ttl) },
                login_ip: Quota::per_seconds(5, 60),
                login_email: Quota::per_seconds(5, 60),
                register: Quota::per_seconds(5, 3600),
                refresh: Quota::per_seconds(30, 60),
                password: Quota::per_seconds(30, 60),
            },
            security: SecurityConfig {
                enabled: security_enabled,
                hsts_max_age: (hsts > 0).then_some(hsts),
                trusted_proxies,
                request_timeout,
                max_json_depth,
                lockout: LockoutConfig {
                    slowdown_after: 3,
                    slowdown_base: Duration::from_millis(250),
                    slowdown_max: Duration::from_secs(4),
                    threshold: lock_threshold.max(1),
                    duration: Duration::from_secs(lock_secs),
                },
            },
        })
    }

    /// Settles the JWT secret: production demands a strong one; elsewhere a missing secret is
    /// generated once and kept in the data directory so tokens survive a restart.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.auth.jwt_secret {
            let s = secret.expose_secret();
            let weak = s.len() < MIN_SECRET_BYTES || KNOWN_WEAK_SECRETS.iter().any(|w| s.eq_ignore_ascii_case(w));
            if weak && self.env == AppEnv::Production {
                return Err(ConfigError::Insecure(format!(
                    "JWT_SECRET is too weak for production: use at least {MIN_SECRET_BYTES} random bytes"
                )));
            }
            return Ok(());
        }
        if self.env == AppEnv::Production {
            return Err(ConfigError::Insecure(
                "APP_ENV=production needs JWT_SECRET (at least 32 random bytes); refusing to start".into(),
            ));
        }
        let path = self.data_dir.join("jwt-secret");
        let err = |source| ConfigError::SecretFile { path: path.clone(), source };
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= MIN_SECRET_BYTES => {
                // A file this process may not change (another owner, a read-only mount) is
                // still used, as before: the warning says what to fix.
                match make_private(&path) {
                    Ok(true) => tracing::warn!(
                        path = %path.display(),
                        "the generated JWT secret file could be read by other users; its mode is now 0600"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "the generated JWT secret file can be read by other users and its mode could not be changed"
                    ),
                }
                s.trim().to_owned()
            }
            Ok(_) | Err(_) => {
                std::fs::create_dir_all(&self.data_dir).map_err(err)?;
                let mut bytes = [0u8; 48];
                getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
                let s = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
                write_private(&path, &s).map_err(err)?;
                s
            }
        };
        self.auth.jwt_secret = Some(secret.into());
        Ok(())
    }
}

/// Writes `contents` to a new file of mode 0600 beside `path`, then renames it over `path`:
/// the secret is never in a file others can read, and a failure leaves the old file whole.
#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.new"));
    // A leftover from an interrupted write is ours to replace.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// Takes group and other permissions off `path`; true when there were any.
#[cfg(unix)]
fn make_private(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path)?.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(true)
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// A number from the environment, else the file, else the default.
fn num<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match get(name) {
        Some(v) => v.trim().parse().map_err(|_| invalid(name, "not a valid number")),
        None => Ok(file.unwrap_or(default)),
    }
}

/// `CALENDAR_*`, `GOOGLE_*`, `MICROSOFT_*`.
fn calendar_settings(get: &impl Fn(&str) -> Option<String>, env: AppEnv) -> Result<CalendarConfig, ConfigError> {
    let key = get("CALENDAR_TOKEN_KEY").filter(|k| !k.trim().is_empty());
    if let Some(k) = &key {
        use base64::Engine;
        let ok = base64::engine::general_purpose::STANDARD.decode(k.trim()).is_ok_and(|b| b.len() == 32);
        if !ok {
            return Err(invalid("CALENDAR_TOKEN_KEY", "must be 32 bytes, base64 (openssl rand -base64 32)"));
        }
    }
    let provider = |prefix: &'static str,
                    id_var: &'static str,
                    secret_var: &'static str,
                    defaults: [&str; 4]|
     -> Result<Option<ProviderSettings>, ConfigError> {
        let Some(client_id) = get(id_var).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
        let Some(secret) = get(secret_var).filter(|v| !v.is_empty()) else {
            return Err(invalid(secret_var, "is required when the client id is set"));
        };
        let var = |name: &str, default: &str| get(&format!("{prefix}_{name}")).unwrap_or_else(|| default.to_owned());
        let settings = ProviderSettings {
            client_id,
            client_secret: SecretString::from(secret),
            auth_url: var("AUTH_URL", defaults[0]),
            token_url: var("TOKEN_URL", defaults[1]),
            revoke_url: Some(var("REVOKE_URL", defaults[2])).filter(|u| !u.is_empty()),
            api_base: var(if prefix == "GOOGLE" { "CALENDAR_API" } else { "GRAPH_API" }, defaults[3])
                .trim_end_matches('/')
                .to_owned(),
        };
        for u in [
            Some(&settings.auth_url),
            Some(&settings.token_url),
            Some(&settings.api_base),
            settings.revoke_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            match url::Url::parse(u) {
                Ok(parsed) if env == AppEnv::Production && parsed.scheme() != "https" => {
                    return Err(invalid(id_var, "provider URLs must be https in production"));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(invalid(id_var, "a provider URL (AUTH_URL, TOKEN_URL, REVOKE_URL, API) is not a URL"));
                }
            }
        }
        Ok(Some(settings))
    };
    let google = provider(
        "GOOGLE",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        [
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            "https://oauth2.googleapis.com/revoke",
            "https://www.googleapis.com/calendar/v3",
        ],
    )?;
    let tenant = get("MICROSOFT_TENANT").unwrap_or_else(|| "common".into());
    let ms_auth = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize");
    let ms_token = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
    let microsoft = provider(
        "MICROSOFT",
        "MICROSOFT_CLIENT_ID",
        "MICROSOFT_CLIENT_SECRET",
        [&ms_auth, &ms_token, "", "https://graph.microsoft.com/v1.0"],
    )?;
    if env == AppEnv::Production && (google.is_some() || microsoft.is_some()) && key.is_none() {
        return Err(ConfigError::Insecure(
            "a calendar provider is configured but CALENDAR_TOKEN_KEY is not: provider tokens would have no key".into(),
        ));
    }
    Ok(CalendarConfig {
        token_key: key.map(SecretString::from),
        redirect_url: redirect_url(get, env, google.is_some() && microsoft.is_some())?,
        google,
        microsoft,
        sync_cron: get("CALENDAR_SYNC_CRON").unwrap_or_else(|| "*/5 * * * *".into()),
    })
}

/// `CALENDAR_REDIRECT_URL`, checked; `CALENDAR_REDIRECT_BASE` (the API's own callback, which
/// anyone holding a consent link could complete) is refused with what replaced it.
fn redirect_url(
    get: &impl Fn(&str) -> Option<String>,
    env: AppEnv,
    both_providers: bool,
) -> Result<Option<String>, ConfigError> {
    const NAME: &str = "CALENDAR_REDIRECT_URL";
    if get("CALENDAR_REDIRECT_BASE").is_some_and(|b| !b.trim().is_empty()) {
        return Err(invalid(
            "CALENDAR_REDIRECT_BASE",
            "was replaced by CALENDAR_REDIRECT_URL: the provider now sends the browser back to your front end, \
             which completes the connection with the user's token (docs/CALENDAR.md, \"Connecting\")",
        ));
    }
    let Some(u) = get(NAME).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) else { return Ok(None) };
    let filled = u.replace("{provider}", "google");
    if filled.contains(['{', '}']) {
        return Err(invalid(NAME, "has a brace that is not {provider}"));
    }
    if both_providers && !u.contains("{provider}") {
        return Err(invalid(
            NAME,
            "must contain {provider} when both providers are configured, so each has its own page",
        ));
    }
    let parsed = url::Url::parse(&filled).map_err(|e| invalid(NAME, &format!("is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if env != AppEnv::Production => {}
        "http" => return Err(invalid(NAME, "must be https in production")),
        _ => return Err(invalid(NAME, "must be an http:// or https:// URL")),
    }
    if parsed.host_str().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(NAME, "must have a host and no user name or password"));
    }
    // The provider appends code, state (and error, iss) to the query; OAuth forbids a fragment.
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(NAME, "must have no ?query and no #fragment: the provider adds its own query"));
    }
    Ok(Some(u))
}

/// `S3_*`: None unless `S3_BUCKET` is set.
fn s3_settings(get: &impl Fn(&str) -> Option<String>) -> Result<Option<crate::storage::S3Settings>, ConfigError> {
    let Some(bucket) = get("S3_BUCKET").filter(|b| !b.trim().is_empty()) else { return Ok(None) };
    let allow_http = match get("S3_ALLOW_HTTP") {
        Some(v) => parse_bool("S3_ALLOW_HTTP", &v)?,
        None => false,
    };
    let endpoint = get("S3_ENDPOINT").filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            return Err(invalid("S3_ENDPOINT", "must be an http:// or https:// URL"));
        }
        if e.starts_with("http://") && !allow_http {
            return Err(invalid("S3_ENDPOINT", "is plain HTTP: set S3_ALLOW_HTTP=true to allow it"));
        }
    }
    let access_key_id = get("S3_ACCESS_KEY_ID").filter(|v| !v.is_empty());
    let secret_access_key = get("S3_SECRET_ACCESS_KEY").filter(|v| !v.is_empty()).map(SecretString::from);
    if access_key_id.is_some() != secret_access_key.is_some() {
        return Err(invalid("S3_ACCESS_KEY_ID", "set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither"));
    }
    Ok(Some(crate::storage::S3Settings {
        bucket: bucket.trim().to_owned(),
        endpoint,
        region: get("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        access_key_id,
        secret_access_key,
        allow_http,
        prefix: get("S3_PREFIX").unwrap_or_default(),
    }))
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, "use true or false")),
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.to_owned() }
}

fn parse_app_env(v: &str) -> Result<AppEnv, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(AppEnv::Development),
        "production" | "prod" => Ok(AppEnv::Production),
        "test" => Ok(AppEnv::Test),
        _ => Err(invalid("APP_ENV", "use development, production or test")),
    }
}

/// Parses `900`, `30s`, `15m`, `12h` or `7d` (the forms `JWT_EXPIRES_IN` takes in the seed).
pub fn parse_duration(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().map_err(|_| invalid(name, "expected a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(invalid(name, "expected a number with s, m, h or d")),
    };
    if secs == 0 {
        return Err(invalid(name, "must be more than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// `scheme://user:password@host:port/path` with user and password percent-encoded for the
/// user-info part (a space is `%20`; `+` would mean a literal plus there).
fn url_from_parts(
    name: &'static str,
    scheme: &str,
    host: &str,
    port: &str,
    user: &str,
    password: Option<&str>,
    path: &str,
) -> Result<String, ConfigError> {
    let mut u = url::Url::parse(&format!("{scheme}://{host}:{port}"))
        .map_err(|e| invalid(name, &format!("host or port is not valid: {e}")))?;
    let bad = |_| invalid(name, "cannot hold these credentials");
    u.set_username(user).map_err(bad)?;
    u.set_password(password).map_err(bad)?;
    u.set_path(path);
    Ok(u.to_string())
}

fn postgres_url_from_parts(
    host: &str,
    port: &str,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<String, ConfigError> {
    url_from_parts("DATABASE_HOST", "postgres", host, port, user, password, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_calendar_redirect_is_the_front_ends_page_and_the_old_public_callback_is_refused() {
        let page = "https://app.firm.example/calendar/connected/{provider}";
        let c = Config::from_sources(FileConfig::default(), &env(&[("CALENDAR_REDIRECT_URL", page)])).unwrap();
        assert_eq!(c.calendar.redirect_url.as_deref(), Some(page));
        let refused =
            |pairs: &[(&str, &str)], name: &str| match Config::from_sources(FileConfig::default(), &env(pairs)) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            };
        refused(&[("CALENDAR_REDIRECT_BASE", "https://api.firm.example")], "CALENDAR_REDIRECT_BASE");
        refused(
            &[("CALENDAR_REDIRECT_BASE", "https://api.firm.example"), ("CALENDAR_REDIRECT_URL", page)],
            "CALENDAR_REDIRECT_BASE",
        );
        for bad in [
            "app.firm.example/connected",
            "javascript:alert(1)",
            "https://app.firm.example/#/connected",
            "https://app.firm.example/connected?next=home",
            "https://user:pw@app.firm.example/connected",
            "https://app.firm.example/connected/{Provider}",
        ] {
            refused(&[("CALENDAR_REDIRECT_URL", bad)], "CALENDAR_REDIRECT_URL");
        }
        // Trimmed; plain HTTP outside production only.
        let spaced = Config::from_sources(
            FileConfig::default(),
            &env(&[("CALENDAR_REDIRECT_URL", " http://localhost:5173/cb ")]),
        );
        assert_eq!(spaced.unwrap().calendar.redirect_url.as_deref(), Some("http://localhost:5173/cb"));
        let prod = [("APP_ENV", "production"), ("CALENDAR_REDIRECT_URL", "http://app.firm.example/cb")];
        assert!(matches!(
            calendar_settings(
                &|k: &str| prod.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()),
                AppEnv::Production
            ),
            Err(ConfigError::Invalid { name: "CALENDAR_REDIRECT_URL", .. })
        ));
        // Both providers: each needs its own page.
        let both = |url: &str| {
            let vars = [
                ("CALENDAR_REDIRECT_URL", url),
                ("GOOGLE_CLIENT_ID", "g"),
                ("GOOGLE_CLIENT_SECRET", "gs"),
                ("MICROSOFT_CLIENT_ID", "m"),
                ("MICROSOFT_CLIENT_SECRET", "ms"),
            ];
            calendar_settings(
                &|k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()),
                AppEnv::Development,
            )
        };
        assert!(matches!(
            both("https://app.firm.example/cb"),
            Err(ConfigError::Invalid { name: "CALENDAR_REDIRECT_URL", .. })
        ));
        assert!(both(page).is_ok());
    }

    #[test]
    fn no_configuration_means_sqlite_in_the_data_dir_on_port_3000() {
        let c = Config::from_sources(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.port, 3000);
        assert!(!c.database.is_postgres());
        assert!(c.database.url.expose_secret().contains("data/lexiflow.db"));
        assert_eq!(c.auth.access_ttl, Duration::from_secs(900));
    }

    #[test]
    fn seed_database_parts_build_a_postgres_url_with_an_encoded_password() {
        let c = Config::from_sources(
            FileConfig::default(),
            &env(&[("DATABASE_HOST", "db"), ("DATABASE_PASSWORD", "p@ss word"), ("DATABASE_NAME", "lf")]),
        )
        .unwrap();
        assert_eq!(c.database.url.expose_secret(), "postgres://postgres:p%40ss%20word@db:5432/lf");
    }

    #[test]
    fn durations_take_the_seed_forms() {
        assert_eq!(parse_duration("X", "1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("X", "90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("X", "1w").is_err());
        assert!(parse_duration("X", "0").is_err());
    }

    #[test]
    fn production_refuses_a_short_metrics_token_or_webhook_key_and_a_bad_worker_port() {
        let prod = |token: &str| {
            Config::from_sources(FileConfig::default(), &env(&[("APP_ENV", "production"), ("METRICS_TOKEN", token)]))
        };
        assert!(matches!(prod("short-token"), Err(ConfigError::Insecure(_))));
        let key = |k: &str| {
            Config::from_sources(FileConfig::default(), &env(&[("APP_ENV", "production"), ("WEBHOOK_SECRET_KEY", k)]))
        };
        assert!(matches!(key("REPLACE_ME"), Err(ConfigError::Insecure(_))));
        assert!(key(&"k".repeat(32)).is_ok_and(|c| c.webhook_secret_key.is_some()));
        assert!(prod(&"x".repeat(32)).is_ok_and(|c| c.metrics_token.is_some()));
        // Outside production a short token is the operator's choice.
        assert!(Config::from_sources(FileConfig::default(), &env(&[("METRICS_TOKEN", "short")])).is_ok());
        let port = |v: &str| Config::from_sources(FileConfig::default(), &env(&[("WORKER_HEALTH_PORT", v)]));
        assert_eq!(port("9100").unwrap().worker_health_port, Some(9100));
        assert!(port("nine").is_err());
    }

    #[test]
    fn production_without_a_jwt_secret_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::from_sources(
            FileConfig::default(),
            &env(&[("APP_ENV", "production"), ("LEXIFLOW_DATA_DIR", dir.path().to_str().unwrap())]),
        )
        .unwrap();
        assert!(matches!(c.resolve_secrets(), Err(ConfigError::Insecure(_))));
        c.auth.jwt_secret = Some("your-secret-key-change-in-production".to_string().into());
        assert!(matches!(c.resolve_secrets(), Err(ConfigError::Insecure(_))));
        c.auth.jwt_secret = Some("x".repeat(40).into());
        assert!(c.resolve_secrets().is_ok());
    }

    #[test]
    fn development_generates_a_secret_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(&[("LEXIFLOW_DATA_DIR", dir.path().to_str().unwrap())]);
        let mut a = Config::from_sources(FileConfig::default(), &e).unwrap();
        a.resolve_secrets().unwrap();
        let mut b = Config::from_sources(FileConfig::default(), &e).unwrap();
        b.resolve_secrets().unwrap();
        assert_eq!(a.auth.jwt_secret.unwrap().expose_secret(), b.auth.jwt_secret.unwrap().expose_secret());
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_secret_file_is_made_private_when_it_is_kept_or_rewritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let e = env(&[("LEXIFLOW_DATA_DIR", dir.path().to_str().unwrap())]);
        // A good secret in a world-readable file is kept, and the file made private.
        std::fs::write(&path, "k".repeat(64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Config::from_sources(FileConfig::default(), &e).unwrap();
        c.resolve_secrets().unwrap();
        assert_eq!(c.auth.jwt_secret.unwrap().expose_secret(), "k".repeat(64));
        assert_eq!(mode(), 0o600);
        // A too-short one is replaced, in a file that is private too.
        std::fs::write(&path, "short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let mut c = Config::from_sources(FileConfig::default(), &e).unwrap();
        c.resolve_secrets().unwrap();
        assert_ne!(c.auth.jwt_secret.unwrap().expose_secret(), "short");
        assert_eq!(mode(), 0o600);
    }

    #[test]
    fn redis_comes_from_url_or_parts_and_demo_mode_turns_it_off() {
        let c =
            Config::from_sources(FileConfig::default(), &env(&[("REDIS_HOST", "cache"), ("REDIS_PASSWORD", "p w")]))
                .unwrap();
        assert_eq!(c.redis_url.unwrap().expose_secret(), "redis://:p%20w@cache:6379");
        let c = Config::from_sources(
            FileConfig::default(),
            &env(&[("REDIS_URL", "redis://127.0.0.1:6379"), ("DEMO_MODE", "true")]),
        )
        .unwrap();
        assert!(c.redis_url.is_none());
        assert!(Config::from_sources(FileConfig::default(), &env(&[("REDIS_URL", "http://x")])).is_err());
    }

    #[test]
    fn redis_tls_takes_a_ca_and_a_client_certificate_only_for_a_rediss_url() {
        let c = Config::from_sources(
            FileConfig::default(),
            &env(&[("REDIS_HOST", "cache"), ("REDIS_TLS", "true"), ("REDIS_CA_FILE", "/etc/lexiflow/redis-ca.pem")]),
        )
        .unwrap();
        assert_eq!(c.redis_url.unwrap().expose_secret(), "rediss://cache:6379");
        assert_eq!(c.redis_tls.ca_file.as_deref(), Some(Path::new("/etc/lexiflow/redis-ca.pem")));
        assert!(c.redis_tls.client_cert_file.is_none());
        let c = Config::from_sources(
            FileConfig::default(),
            &env(&[
                ("REDIS_URL", "rediss://cache:6380"),
                ("REDIS_CLIENT_CERT_FILE", "c.pem"),
                ("REDIS_CLIENT_KEY_FILE", "k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.redis_tls.client_key_file.as_deref(), Some(Path::new("k.pem")));
        // A certificate without its key, and TLS files for a plain redis:// URL, are refused.
        for pairs in [
            &[("REDIS_URL", "rediss://cache:6380"), ("REDIS_CLIENT_CERT_FILE", "c.pem")][..],
            &[("REDIS_URL", "redis://cache:6379"), ("REDIS_CA_FILE", "ca.pem")][..],
            &[("REDIS_CA_FILE", "ca.pem")][..],
            &[("REDIS_URL", "redis://cache:6379"), ("REDIS_TLS", "true")][..],
            &[("REDIS_HOST", "cache"), ("REDIS_TLS", "maybe")][..],
        ] {
            assert!(matches!(
                Config::from_sources(FileConfig::default(), &env(pairs)),
                Err(ConfigError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn throttle_takes_the_seed_names_and_the_security_layer_stays_on_in_production() {
        let c = Config::from_sources(FileConfig::default(), &env(&[("THROTTLE_TTL", "1000"), ("THROTTLE_LIMIT", "7")]))
            .unwrap();
        assert_eq!(c.throttle.global, Quota { limit: 7, period: Duration::from_secs(1) });
        assert!(c.security.hsts_max_age.is_none());
        let prod = env(&[("APP_ENV", "production"), ("SECURITY_LAYER", "off")]);
        assert!(matches!(Config::from_sources(FileConfig::default(), &prod), Err(ConfigError::Insecure(_))));
        let prod = Config::from_sources(FileConfig::default(), &env(&[("APP_ENV", "production")])).unwrap();
        assert_eq!(prod.security.hsts_max_age, Some(31_536_000));
        assert!(Config::from_sources(FileConfig::default(), &env(&[("TRUSTED_PROXIES", "10.0.0.0/8, nope")])).is_err());
        assert!(Config::from_sources(FileConfig::default(), &env(&[("CORS_ORIGIN", "*")])).is_ok());
        assert!(Config::from_sources(FileConfig::default(), &env(&[("CORS_ORIGIN", "javascript:x")])).is_err());
    }

    #[test]
    fn the_example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lexiflow.example.toml");
        let file = Config::read_file(&path).unwrap();
        Config::from_sources(file, &env(&[])).unwrap();
    }
}
