//! The one client for every call LexiFlow makes to the outside: webhooks and calendar
//! providers (their OAuth token endpoints too).
//!
//! - **Deadlines.** Each call has a connect timeout and an overall deadline.
//! - **No redirects.** A 3xx is an answer like any other; nothing is followed (a redirect to
//!   a private address cannot smuggle a call inside).
//! - **SSRF guard.** A host is resolved once, by our resolver, and the connection goes to the
//!   addresses that were checked, so DNS rebinding cannot switch them. Loopback, private,
//!   link-local (cloud metadata, 169.254.169.254), CGNAT, unique-local and link-local IPv6,
//!   IPv4-mapped and other IPv4-embedding IPv6, multicast, reserved and unspecified addresses are
//!   refused, unless `WEBHOOK_ALLOW_PRIVATE=true` (tests, closed networks). IP literals in URLs
//!   are checked the same way. Proxies from the environment are not used.
//! - **A circuit breaker per dependency and host** (`resilience::Breaker`): connection failures, timeouts and
//!   5xx answers open it; while open, calls fail at once with [`OutboundError::Open`].
//! - **Metrics** per dependency: `lexiflow_outbound_requests_total{dependency,outcome}` and
//!   `lexiflow_outbound_request_duration_seconds{dependency}`.
//!
//! Retries are the caller's: webhook deliveries and calendar sync retry through the job queue
//! (durably, with backoff and jitter), not inside a request.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use uuid::Uuid;

use crate::resilience::{Breaker, BreakerConfig};

/// Why an address may not be called, or None when it may.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local (cloud metadata) address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (192, 0, 0) => "an IETF protocol address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "a unique-local address",
        0xfe80..=0xfebf => "a link-local address",
        0xff00..=0xffff => "a multicast address",
        0x2002 => "a 6to4 address (embeds IPv4)",
        0x0064 if s[1] == 0xff9b => "a NAT64 address (embeds IPv4)",
        0 if s[1..5] == [0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) => "an IPv4-mapped or IPv4-compatible address",
        _ => return None,
    })
}

/// What went wrong with an outbound call.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The target is not allowed (scheme, address); nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
    /// The host's circuit breaker is open; nothing was sent.
    #[error("the circuit breaker for this host is open")]
    Open,
    #[error("timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

/// An answer, its body cut at [`MAX_BODY`].
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub latency: Duration,
}

/// The most of an answer's body read and kept.
pub const MAX_BODY: usize = 4096;

/// Settings of the client.
#[derive(Clone, Copy, Debug)]
pub struct OutboundConfig {
    /// `WEBHOOK_ALLOW_PRIVATE`: allow private and loopback targets.
    pub allow_private: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub breaker: BreakerConfig,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Resolves with the system resolver, then drops the addresses that may not be called.
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.iter().copied().filter(|a| allow_private || forbidden(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                let why = addrs.first().and_then(|a| forbidden(a.ip())).unwrap_or("no address");
                return Err(format!("{host} resolves to {why}; refused").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client; cheap to share.
#[derive(Debug)]
pub struct Outbound {
    client: reqwest::Client,
    config: OutboundConfig,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("LexiFlow/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private: config.allow_private }))
            .build()?;
        Ok(Self { client, config, breakers: Mutex::default() })
    }

    /// Checks a target URL before anything is sent: http(s) only, and no forbidden IP literal.
    pub fn check_url(&self, url: &url::Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Refused(format!("the scheme {} is not allowed", url.scheme())));
        }
        if self.config.allow_private {
            return Ok(());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
                return Err(OutboundError::Refused("localhost is not allowed".into()));
            }
            Some(url::Host::Domain(_)) => None,
            None => return Err(OutboundError::Refused("the URL has no host".into())),
        };
        match ip.and_then(forbidden) {
            Some(why) => Err(OutboundError::Refused(format!("the target is {why}"))),
            None => Ok(()),
        }
    }

    /// The breaker of one target: a dependency, a host and port, and for calls made for one
    /// tenant (a firm's webhooks) that tenant, so that one firm's failing endpoints never open
    /// the breaker in front of another firm's receiver on the same host.
    fn breaker(&self, dependency: &'static str, tenant: Option<Uuid>, url: &url::Url) -> Arc<Breaker> {
        let target = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
        let key = match tenant {
            Some(t) => format!("{dependency} {t} {target}"),
            None => format!("{dependency} {target}"),
        };
        let mut all = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.len() > 10_000 {
            // Forget only closed breakers no call holds: clearing them all would let a firm
            // that makes many targets (URLs are its to choose) close every open breaker.
            all.retain(|_, b| Arc::strong_count(b) > 1 || b.state() != crate::resilience::BreakerState::Closed);
            if all.len() > 10_000
                && let Some(t) = tenant
            {
                // Mostly open breakers of targets nobody calls any more, and this tenant is the
                // one making new targets: its unused ones go, nobody else's.
                let mine = format!("{dependency} {t} ");
                all.retain(|k, b| Arc::strong_count(b) > 1 || !k.starts_with(&mine));
            }
        }
        Arc::clone(
            all.entry(key)
                .or_insert_with(|| Arc::new(Breaker::for_target(dependency, Some(target), self.config.breaker))),
        )
    }

    /// POSTs `body` to `url` with `headers`, for `dependency` (a metrics label) on behalf of
    /// `tenant` (whose calls have breakers of their own); keeps at most [`MAX_BODY`] of the
    /// answer.
    pub async fn post(
        &self,
        dependency: &'static str,
        tenant: Uuid,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply, OutboundError> {
        let call = Call { method: http::Method::POST, url, headers, body, max_body: MAX_BODY };
        let r = self.send_for(dependency, Some(tenant), call).await?;
        Ok(Reply { status: r.status, body: r.body, latency: r.latency })
    }

    /// Sends one request, for `dependency` (a metrics label and the breaker's name), through
    /// the guards above; keeps at most `max_body` bytes of the answer (more is an error, so a
    /// cut body is never parsed as whole).
    pub async fn send(&self, dependency: &'static str, call: Call<'_>) -> Result<Answer, OutboundError> {
        self.send_for(dependency, None, call).await
    }

    async fn send_for(
        &self,
        dependency: &'static str,
        tenant: Option<Uuid>,
        call: Call<'_>,
    ) -> Result<Answer, OutboundError> {
        self.check_url(call.url)?;
        let breaker = self.breaker(dependency, tenant, call.url);
        let Ok(permit) = breaker.try_acquire() else {
            metrics::counter!("lexiflow_outbound_requests_total", "dependency" => dependency, "outcome" => "open")
                .increment(1);
            return Err(OutboundError::Open);
        };
        let started = Instant::now();
        let mut req = self.client.request(call.method.clone(), call.url.clone());
        if !call.body.is_empty() || call.method != http::Method::GET {
            req = req.body(call.body);
        }
        for (k, v) in call.headers {
            req = req.header(*k, v);
        }
        let max_body = call.max_body;
        // A webhook receiver's body is only kept for the record: cut it. Anything else is
        // parsed, so too long a body is an error rather than a cut one.
        let cut = max_body == MAX_BODY;
        let result = async {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let mut body = Vec::new();
            let mut res = res;
            let mut too_long = false;
            while let Some(chunk) = res.chunk().await? {
                let room = max_body.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    too_long = !cut;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, headers, Bytes::from(body), too_long))
        }
        .await;
        let latency = started.elapsed();
        metrics::histogram!("lexiflow_outbound_request_duration_seconds", "dependency" => dependency)
            .record(latency.as_secs_f64());
        match result {
            Ok((_, _, _, true)) => {
                permit.success();
                metrics::counter!("lexiflow_outbound_requests_total", "dependency" => dependency, "outcome" => "too_large")
                    .increment(1);
                Err(OutboundError::Other(format!("the answer is larger than {max_body} bytes")))
            }
            Ok((status, headers, body, false)) => {
                if status >= 500 {
                    permit.failure();
                } else {
                    permit.success();
                }
                let outcome = if (200..300).contains(&status) { "ok" } else { "http_error" };
                metrics::counter!("lexiflow_outbound_requests_total", "dependency" => dependency, "outcome" => outcome)
                    .increment(1);
                Ok(Answer { status, headers, body, latency })
            }
            Err(e) => {
                permit.failure();
                let (outcome, err) = if e.is_timeout() {
                    ("timeout", OutboundError::Timeout)
                } else if e.is_connect() {
                    ("connect", OutboundError::Connect(error_chain(&e)))
                } else {
                    ("error", OutboundError::Other(error_chain(&e)))
                };
                metrics::counter!("lexiflow_outbound_requests_total", "dependency" => dependency, "outcome" => outcome)
                    .increment(1);
                Err(err)
            }
        }
    }
}

/// One request for [`Outbound::send`].
#[derive(Debug)]
pub struct Call<'a> {
    pub method: http::Method,
    pub url: &'a url::Url,
    pub headers: &'a [(&'a str, String)],
    pub body: Bytes,
    /// The most of the answer's body to read.
    pub max_body: usize,
}

/// A whole answer of [`Outbound::send`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub latency: Duration,
}

/// An error and its causes, on one line (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_metadata_and_embedded_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "fd00:ec2::254",
            "fe80::1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = bad.parse().unwrap_or_else(|_| panic!("{bad}"));
            assert!(forbidden(ip).is_some(), "{bad} should be forbidden");
        }
        for good in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111"] {
            let ip: IpAddr = good.parse().unwrap_or_else(|_| panic!("{good}"));
            assert_eq!(forbidden(ip), None, "{good}");
        }
    }
}
