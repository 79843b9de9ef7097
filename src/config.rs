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
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Which database and how many connections.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; it can hold a password, hence the secret type.
    pub url: SecretString,
    pub max_connections: u32,
    /// Applied to PostgreSQL connections only: a schema to put on the search path (tests).
    pub schema: Option<String>,
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
                ),
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
        let cors_origins = get("CORS_ORIGIN")
            .or(file.cors_origin)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
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

        Ok(Config {
            env: app_env,
            host,
            port,
            data_dir,
            database: DatabaseConfig { url: url.into(), max_connections, schema: None },
            auth: AuthConfig {
                jwt_secret: get("JWT_SECRET").or(file.jwt_secret).map(SecretString::from),
                access_ttl,
                refresh_ttl,
                argon2: file.argon2.unwrap_or_default(),
            },
            cors_origins,
            log_format,
            max_json_body,
            shutdown_grace,
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
            Ok(s) if s.trim().len() >= MIN_SECRET_BYTES => s.trim().to_owned(),
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

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
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

fn postgres_url_from_parts(host: &str, port: &str, user: &str, password: Option<&str>, db: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match password {
        Some(p) => format!("postgres://{}:{}@{}:{}/{}", enc(user), enc(p), host, port, enc(db)),
        None => format!("postgres://{}@{}:{}/{}", enc(user), host, port, enc(db)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
        assert_eq!(c.database.url.expose_secret(), "postgres://postgres:p%40ss+word@db:5432/lf");
    }

    #[test]
    fn durations_take_the_seed_forms() {
        assert_eq!(parse_duration("X", "1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("X", "90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("X", "1w").is_err());
        assert!(parse_duration("X", "0").is_err());
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

    #[test]
    fn the_example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lexiflow.example.toml");
        let file = Config::read_file(&path).unwrap();
        Config::from_sources(file, &env(&[])).unwrap();
    }
}
