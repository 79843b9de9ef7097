//! Redis over TLS (`rediss://`): the link trusts the configured CA and nothing else, presents a
//! client certificate when configured, and a whole application works over it. Against the two
//! TLS-only Redis servers of `tests/services/start.sh`.

use lexiflow::{config::RedisTls, redis_link::RedisLink, resilience::BreakerConfig};

use crate::support::{Backend, TestApp, redis_tls};

crate::on_both_backends!(two_instances_share_their_cache_over_tls);

fn link(url: &str, tls: &RedisTls) -> RedisLink {
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    RedisLink::with_tls(url, prefix, BreakerConfig::default(), tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_link_trusts_the_configured_ca_and_not_the_system_roots_alone() {
    let Some(r) = redis_tls() else { return };
    let ca = RedisTls { ca_file: Some(r.dir.join("ca.crt")), ..Default::default() };
    link(&r.url, &ca).ping().await.unwrap();
    // The test CA is not among the system's roots: the server's certificate is refused.
    assert!(link(&r.url, &RedisTls::default()).ping().await.is_err());
    // An unreadable CA file is an error when the link is made, not a silent fallback.
    let missing = RedisTls { ca_file: Some(r.dir.join("no-such-ca.crt")), ..Default::default() };
    let err = RedisLink::with_tls(&r.url, "x:".into(), BreakerConfig::default(), &missing).unwrap_err();
    assert!(err.to_string().contains("no-such-ca.crt"), "{err}");
    // So is a file that holds no certificate (a key given by mistake).
    let wrong = RedisTls { ca_file: Some(r.dir.join("client.key")), ..Default::default() };
    let err = RedisLink::with_tls(&r.url, "x:".into(), BreakerConfig::default(), &wrong).unwrap_err();
    assert!(err.to_string().contains("REDIS_CA_FILE") && err.to_string().contains("CERTIFICATE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_configured() {
    let Some(r) = redis_tls() else { return };
    let ca = RedisTls { ca_file: Some(r.dir.join("ca.crt")), ..Default::default() };
    assert!(link(&r.mtls_url, &ca).ping().await.is_err(), "the server asks for a client certificate");
    let with_cert = RedisTls {
        client_cert_file: Some(r.dir.join("client.crt")),
        client_key_file: Some(r.dir.join("client.key")),
        ..ca
    };
    link(&r.mtls_url, &with_cert).ping().await.unwrap();
    // A certificate with another key (the server's) is refused when the link is made.
    let mismatched = RedisTls { client_key_file: Some(r.dir.join("server.key")), ..with_cert };
    let err = RedisLink::with_tls(&r.mtls_url, "x:".into(), BreakerConfig::default(), &mismatched).unwrap_err();
    assert!(err.to_string().contains("do not go together"), "{err}");
}

async fn two_instances_share_their_cache_over_tls(b: Backend) {
    let Some(r) = redis_tls() else { return };
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let a = TestApp::with(b, |c| {
        c.redis_url = Some(r.mtls_url.clone().into());
        c.redis_prefix = prefix.clone();
        c.redis_tls = RedisTls {
            ca_file: Some(r.dir.join("ca.crt")),
            client_cert_file: Some(r.dir.join("client.crt")),
            client_key_file: Some(r.dir.join("client.key")),
        };
    })
    .await;
    let bee = a.sibling().await;
    let s = a.register("Tls").await;
    // B caches the summary (in Redis too); A writes, and says so on the bus; B sees it at once.
    assert_eq!(summary(&bee, &s.token).await, 0);
    assert_eq!(summary(&bee, &s.token).await, 0);
    a.case(&s, "TLS-1").await;
    assert_eq!(summary(&bee, &s.token).await, 1, "B sees A's write at once");
    // Redis answers B's health check over TLS.
    let health = bee.call(http::Method::GET, "/health", None, None).await;
    assert!(health.body["details"]["redis"]["latencyMs"].is_number(), "{}", health.body);
}

async fn summary(t: &TestApp, token: &str) -> serde_json::Value {
    t.get("/api/v1/reports/cases/summary", token).await.expect(200).data()["total"].clone()
}

/// Two instances on one TLS Redis share the global rate-limit budget (the Lua script over TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_rate_limit_budget_over_tls() {
    let Some(r) = redis_tls() else { return };
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let setup = |c: &mut lexiflow::config::Config| {
        c.redis_url = Some(r.url.clone().into());
        c.redis_prefix = prefix.clone();
        c.redis_tls = RedisTls { ca_file: Some(r.dir.join("ca.crt")), ..Default::default() };
        c.throttle.global = lexiflow::ratelimit::Quota::per_seconds(10, 60);
    };
    let a = TestApp::with(Backend::Sqlite, setup).await;
    let b = TestApp::with(Backend::Sqlite, setup).await;
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        let res = app.call_from("198.51.100.30", http::Method::GET, "/api/v1/cases", None, None, &[]).await;
        res.expect(401);
        assert_eq!(res.header("x-ratelimit-remaining"), Some((9 - i).to_string().as_str()), "request {i}");
    }
    a.call_from("198.51.100.30", http::Method::GET, "/api/v1/cases", None, None, &[]).await.expect(429);
    b.call_from("198.51.100.30", http::Method::GET, "/api/v1/cases", None, None, &[]).await.expect(429);
    assert!(!a.app.limiter.degraded() && !b.app.limiter.degraded());
}
