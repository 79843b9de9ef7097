//! The shared Redis connection (scale-out shape), behind a circuit breaker and a short
//! response timeout. When Redis is slow or gone, callers get an error within milliseconds
//! and fall back to their in-process path; the connection is re-established by itself.
//!
//! The first call that finds the link broken (refused, reset, timed out) marks it down: from
//! then on every call fails at once, without waiting, while one background probe pings Redis
//! every [`PROBE_EVERY`] and marks the link up again when it answers. So no request waits on
//! a dead Redis for more than the one call in flight when it died (the breaker alone needed
//! five failures, each a reconnect attempt of about 150 ms, on request paths).

use std::{
    sync::{
        RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::resilience::{Breaker, BreakerConfig, CallError, guarded};

/// How long one Redis command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a down link is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A caller's "working without Redis" state (rate limits, connection slots): from the first
/// failed call until the next one that answers, its gauge is 1; each change is logged once.
#[derive(Debug)]
pub struct Fallback {
    on: AtomicBool,
    gauge: &'static str,
    down: &'static str,
    up: &'static str,
}

impl Fallback {
    /// Not falling back yet; `gauge` set to 0. `down` is logged (a warning) when a call fails,
    /// `up` when one answers again.
    pub fn new(gauge: &'static str, down: &'static str, up: &'static str) -> Self {
        metrics::gauge!(gauge).set(0.0);
        Self { on: AtomicBool::new(false), gauge, down, up }
    }

    /// Whether the caller is working without Redis now.
    pub fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// A call answered.
    pub fn answered(&self) {
        if self.on.swap(false, Ordering::Relaxed) {
            metrics::gauge!(self.gauge).set(0.0);
            tracing::info!("{}", self.up);
        }
    }

    /// A call failed with `e`.
    pub fn failed(&self, e: &impl std::fmt::Display) {
        if !self.on.swap(true, Ordering::Relaxed) {
            metrics::gauge!(self.gauge).set(1.0);
            tracing::warn!(error = %e, "{}", self.down);
        }
    }
}

/// A Redis client with lazy (re)connection, guarded by the `redis` breaker.
#[derive(Debug)]
pub struct RedisLink {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    breaker: Breaker,
    /// Set while the link is known broken (see the module documentation).
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set while a probe task runs.
    probing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Prefix of every key this process writes (tests give each app its own).
    pub prefix: String,
}

/// A failed Redis call.
pub type RedisError = CallError<redis::RedisError>;

// Redis's TLS files are read and checked when the link is made, so a wrong one stops the start
// with its variable named, instead of leaving every later connection failing.

fn file_error(var: &str, p: &std::path::Path, kind: std::io::ErrorKind, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(kind, format!("{var} {}: {e}", p.display()))
}

fn read(var: &str, p: &std::path::Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| file_error(var, p, e.kind(), e))
}

fn certificates(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() { Err("no PEM CERTIFICATE in it".into()) } else { Ok(certs) }
}

/// At least one usable CA certificate.
fn check_ca(pem: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    match roots.add_parsable_certificates(certificates(pem)?) {
        (0, _) => Err("no certificate in it can be used as a CA".into()),
        _ => Ok(()),
    }
}

/// A client certificate chain, and the private key that belongs to its first certificate.
fn check_client_certificate(cert: &[u8], key: &[u8]) -> std::io::Result<()> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let chain = certificates(cert).map_err(|e| invalid(format!("REDIS_CLIENT_CERT_FILE: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(format!("REDIS_CLIENT_KEY_FILE: {e}")))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map(drop)
        .map_err(|e| invalid(format!("REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE do not go together: {e}")))
}

impl RedisLink {
    /// A link to `url`; nothing is connected until the first call. A `rediss://` URL trusts
    /// the system's roots and sends no client certificate; see [`with_tls`](Self::with_tls).
    pub fn new(url: &str, prefix: String, breaker: BreakerConfig) -> Result<Self, redis::RedisError> {
        Self::with_tls(url, prefix, breaker, &crate::config::RedisTls::default())
    }

    /// The link the configuration asks for (`REDIS_URL`, its TLS files), if any.
    pub fn from_config(c: &crate::config::Config) -> Result<Option<Self>, redis::RedisError> {
        use secrecy::ExposeSecret;
        c.redis_url
            .as_ref()
            .map(|url| Self::with_tls(url.expose_secret(), c.redis_prefix.clone(), c.redis_breaker, &c.redis_tls))
            .transpose()
    }

    /// A link to `url` with `tls`'s certificates: the CA to trust instead of the system's
    /// roots, and a client certificate. The files are read now; an unreadable one is an error.
    pub fn with_tls(
        url: &str,
        prefix: String,
        breaker: BreakerConfig,
        tls: &crate::config::RedisTls,
    ) -> Result<Self, redis::RedisError> {
        let client = match (&tls.ca_file, &tls.client_cert_file, &tls.client_key_file) {
            (None, None, _) => redis::Client::open(url)?,
            (ca, cert, key) => {
                let client_tls = match (cert, key) {
                    (Some(cert), Some(key)) => {
                        let (client_cert, client_key) =
                            (read("REDIS_CLIENT_CERT_FILE", cert)?, read("REDIS_CLIENT_KEY_FILE", key)?);
                        check_client_certificate(&client_cert, &client_key)?;
                        Some(redis::ClientTlsConfig { client_cert, client_key })
                    }
                    _ => None,
                };
                let root_cert = match ca {
                    Some(p) => {
                        let pem = read("REDIS_CA_FILE", p)?;
                        check_ca(&pem)
                            .map_err(|e| file_error("REDIS_CA_FILE", p, std::io::ErrorKind::InvalidData, e))?;
                        Some(pem)
                    }
                    None => None,
                };
                redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert })?
            }
        };
        Ok(Self {
            client,
            conn: RwLock::new(None),
            breaker: Breaker::new("redis", breaker),
            down: Default::default(),
            probing: Default::default(),
            prefix,
        })
    }

    /// The breaker guarding Redis.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // No reconnect attempts inside a call: a broken link is probed in the background.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(500));
        let c = self.client.get_connection_manager_with_config(config).await?;
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// True while the link is known broken (calls fail at once).
    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `f` on a connection, through the breaker and a deadline; fails at once while the
    /// link is down.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        if self.is_down() {
            return Err(CallError::Rejected("redis"));
        }
        let result = guarded(&self.breaker, CONNECT_TIMEOUT + RESPONSE_TIMEOUT, async {
            let conn = self.connection().await?;
            f(conn).await
        })
        .await;
        let broken = match &result {
            Err(CallError::Timeout(..)) => true,
            Err(CallError::Failed(e)) => {
                e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
            }
            _ => false,
        };
        if broken {
            self.mark_down();
        }
        result
    }

    /// Marks the link down and starts the probe that marks it up again.
    fn mark_down(&self) {
        use std::sync::atomic::Ordering;
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!("Redis does not answer: working without it until it does");
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (client, down, probing) = (self.client.clone(), self.down.clone(), self.probing.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let ping = async {
                    let mut c = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut c).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, ping).await {
                    down.store(false, Ordering::Release);
                    probing.store(false, Ordering::Release);
                    tracing::info!("Redis answers again");
                    return;
                }
            }
        });
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }

    /// `PUBLISH channel message` (channel without the key prefix; it is added here).
    pub async fn publish(&self, channel: &str, message: String) -> Result<(), RedisError> {
        let channel = format!("{}{channel}", self.prefix);
        self.run(
            |mut c| async move { redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut c).await },
        )
        .await
        .map(|_| ())
    }

    /// Subscribes to the channels matching `pattern` (without the key prefix; it is added
    /// here), calling `on_message(channel, payload)` for each message until it returns false,
    /// and `on_subscribed` each time the subscription is (re)established. It reconnects, after
    /// a pause, whenever the subscription breaks; messages published meanwhile are lost, so a
    /// subscriber that keeps copies must assume it missed some.
    pub fn psubscribe_forever(
        self: &std::sync::Arc<Self>,
        pattern: &str,
        on_subscribed: impl Fn() + Send + Sync + 'static,
        on_message: impl Fn(&str, String) -> bool + Send + Sync + 'static,
    ) {
        let pattern = format!("{}{pattern}", self.prefix);
        let link = self.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let attempt = async {
                    let mut pubsub = link.client.get_async_pubsub().await?;
                    pubsub.psubscribe(&pattern).await?;
                    tracing::debug!(pattern = %pattern, "subscribed");
                    on_subscribed();
                    let mut stream = pubsub.into_on_message();
                    while let Some(msg) = stream.next().await {
                        if let Ok(payload) = msg.get_payload::<String>()
                            && !on_message(msg.get_channel_name(), payload)
                        {
                            return Ok(false);
                        }
                    }
                    Ok::<bool, redis::RedisError>(true)
                };
                match attempt.await {
                    Ok(false) => return,
                    Ok(true) => tracing::debug!(pattern = %pattern, "subscription ended; resubscribing"),
                    Err(e) => tracing::debug!(pattern = %pattern, error = %e, "subscription failed; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}
