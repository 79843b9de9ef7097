//! Prometheus metrics: one process-wide recorder (the `metrics` crate's facade, so any module
//! records with `counter!`, `gauge!`, `histogram!`), rendered as Prometheus text for
//! `/metrics` and as JSON for `/metrics/json`.
//!
//! Histograms named `*_seconds` get explicit buckets (rendered as Prometheus histograms);
//! other histograms are rendered as summaries (quantiles). Every metric is described here,
//! so the exposition carries `# HELP` and `# TYPE` for each family and `promtool check
//! metrics` has nothing to complain about.

use std::{sync::OnceLock, time::Duration};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value, json};

/// Latency buckets, in seconds: 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

struct Installed {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the recorder once per process (later calls reuse it) and describes every metric.
/// Returns false when another recorder was installed first (metrics then go there).
pub fn install() -> bool {
    INSTALLED
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            let process = metrics_process::Collector::default();
            process.describe();
            describe_all();
            let upkeep = handle.clone();
            // Drains histogram buffers between scrapes so memory stays bounded.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            metrics::gauge!("lexiflow_build_info", "version" => env!("CARGO_PKG_VERSION"), "edition" => "2024")
                .set(1.0);
            Some(Installed { handle, process })
        })
        .is_some()
}

fn describe_all() {
    describe_histogram!(
        "http_server_request_duration_seconds",
        Unit::Seconds,
        "Duration of HTTP requests, by method, route template and status"
    );
    describe_gauge!("http_server_active_requests", "HTTP requests being served right now");
    describe_counter!("lexiflow_rate_limit_refusals_total", "Requests refused with 429, by policy");
    describe_counter!("lexiflow_upload_bytes_total", "Upload bytes durably stored (tus PATCH bodies)");
    describe_counter!("lexiflow_calendar_reminders_total", "Calendar reminders sent (once per reminder)");
    describe_counter!(
        "lexiflow_calendar_token_refreshes_total",
        "Calendar provider access tokens refreshed, by provider"
    );
    describe_counter!(
        "lexiflow_calendar_full_syncs_total",
        "Full calendar listings after a provider forgot the sync cursor (410), by provider"
    );
    describe_counter!(
        "lexiflow_file_scans_total",
        "Virus scans of stored files, by result (clean, infected, error, not_scanned)"
    );
    describe_counter!("lexiflow_events_published_total", "Committed domain events handed to subscribers, by type");
    describe_counter!("lexiflow_bus_messages_total", "Bus messages sent to or received from other instances");
    describe_counter!(
        "lexiflow_bus_resets_total",
        "Times in-process copies were dropped because bus messages may have been missed"
    );
    describe_gauge!(
        "lexiflow_rate_limit_degraded",
        "1 while Redis is configured but unreachable and rate limits are per instance"
    );
    describe_counter!("lexiflow_auth_failures_total", "Rejected authentications, by reason");
    describe_gauge!(
        "lexiflow_circuit_breaker_state",
        "Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open"
    );
    describe_counter!("lexiflow_circuit_breaker_transitions_total", "Circuit breaker state changes");
    describe_counter!("lexiflow_circuit_breaker_rejected_calls_total", "Calls refused because a breaker was open");
    describe_gauge!("lexiflow_db_pool_connections", "Database pool connections, by state (idle, in_use)");
    describe_gauge!("lexiflow_db_pool_max_connections", "Largest size the database pool may grow to");
    describe_gauge!(
        "lexiflow_db_pool_acquire_wait_seconds",
        Unit::Seconds,
        "Time the last scrape waited to acquire a database connection"
    );
    describe_gauge!("lexiflow_build_info", "Build information; the value is always 1");
    describe_gauge!("lexiflow_queue_jobs", "Jobs by queue and state (refreshed at each scrape)");
    describe_histogram!(
        "lexiflow_queue_job_duration_seconds",
        Unit::Seconds,
        "Time a job's handler ran, by queue and type"
    );
    describe_counter!("lexiflow_queue_job_failures_total", "Failed job attempts, by queue and type");
    describe_counter!("lexiflow_queue_dead_letters_total", "Jobs that exhausted their attempts, by queue");
    describe_counter!(
        "lexiflow_queue_lease_cancellations_total",
        "Running job handlers cancelled because their lease was not renewed in time or was lost, by queue, type and reason"
    );
    describe_counter!(
        "lexiflow_cache_requests_total",
        "Cache lookups by cache (key namespace), level (local, redis) and result (hit, miss, error)"
    );
    describe_counter!("lexiflow_cache_evictions_total", "In-process cache entries removed, by cause");
    describe_counter!("lexiflow_cache_invalidations_total", "Cache invalidations, by kind (tag, prefix, key)");
    describe_gauge!("lexiflow_cache_entries", "Entries in the in-process cache (refreshed at each scrape)");
    describe_gauge!("lexiflow_realtime_connections", "Socket.IO sockets open on this instance");
    describe_counter!("lexiflow_realtime_events_total", "Realtime events emitted, by Socket.IO event name");
    describe_counter!("lexiflow_realtime_emit_failures_total", "Realtime emits some socket could not take (too slow)");
    describe_counter!("lexiflow_realtime_handshake_refusals_total", "Refused Socket.IO handshakes, by reason");
    describe_counter!("lexiflow_realtime_replays_total", "Replays to reconnecting sockets, by outcome");
    describe_counter!(
        "lexiflow_realtime_forced_disconnects_total",
        "Sockets closed because their session, user or role changed"
    );
    describe_counter!("lexiflow_realtime_messages_refused_total", "Client messages refused by the per-user budget");
    describe_gauge!(
        "lexiflow_realtime_slots_degraded",
        "1 while Redis is configured but unusable: realtime connections per user are counted per instance"
    );
    describe_histogram!(
        "lexiflow_realtime_delivery_lag_seconds",
        metrics::Unit::Seconds,
        "From an event's making, just before its commit, until this instance's sockets hold it"
    );
    describe_counter!("lexiflow_idempotent_replays_total", "POSTs answered from a stored Idempotency-Key answer");
    describe_counter!("lexiflow_webhook_attempts_total", "Webhook delivery attempts, by outcome");
    describe_counter!("lexiflow_webhook_deliveries_created_total", "Webhook deliveries made from outbox events");
    describe_counter!(
        "lexiflow_webhook_events_missed_total",
        "Outbox events pruned before the webhook dispatcher turned them into deliveries (never sent)"
    );
    describe_counter!("lexiflow_outbound_requests_total", "Outbound HTTP calls, by dependency and outcome");
    describe_histogram!(
        "lexiflow_outbound_request_duration_seconds",
        metrics::Unit::Seconds,
        "Outbound HTTP call duration, by dependency"
    );
    describe_counter!(
        "lexiflow_db_transaction_retries_total",
        "Transactions run again after losing a conflict (serialization failure, deadlock, busy)"
    );
    describe_counter!(
        "lexiflow_db_transaction_conflicts_exhausted_total",
        "Transactions that still lost a conflict after their last attempt"
    );
}

/// Refreshes the figures that are read rather than recorded (process, pool), then renders.
pub async fn render(db: &DatabaseConnection, cache: &crate::cache::Cache) -> Option<String> {
    let installed = INSTALLED.get()?.as_ref()?;
    metrics::gauge!("lexiflow_cache_entries").set(cache.local_entries() as f64);
    installed.process.collect();
    record_pool(db).await;
    // Refreshes `lexiflow_queue_jobs{queue,state}` from the tables.
    if let Err(e) = lexiflow_queue::admin::stats(db, chrono::Utc::now()).await {
        tracing::warn!(error = %e, "cannot read queue figures for the metrics");
    }
    Some(installed.handle.render())
}

async fn record_pool(db: &DatabaseConnection) {
    macro_rules! pool_stats {
        ($pool:expr) => {{
            let pool = $pool;
            let size = pool.size() as f64;
            let idle = pool.num_idle() as f64;
            metrics::gauge!("lexiflow_db_pool_connections", "state" => "idle").set(idle);
            metrics::gauge!("lexiflow_db_pool_connections", "state" => "in_use").set((size - idle).max(0.0));
            metrics::gauge!("lexiflow_db_pool_max_connections").set(f64::from(pool.options().get_max_connections()));
            let started = std::time::Instant::now();
            let waited = match tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await {
                Ok(Ok(conn)) => {
                    drop(conn);
                    started.elapsed()
                }
                _ => Duration::from_secs(2),
            };
            metrics::gauge!("lexiflow_db_pool_acquire_wait_seconds").set(waited.as_secs_f64());
        }};
    }
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => pool_stats!(db.get_postgres_connection_pool()),
        sea_orm::DbBackend::Sqlite => pool_stats!(db.get_sqlite_connection_pool()),
        _ => {}
    }
}

/// The Prometheus text as JSON: `{family: {type, help, samples: [{labels, value}]}}`.
pub fn text_to_json(text: &str) -> Value {
    let mut families = Map::new();
    let mut types: Map<String, Value> = Map::new();
    let mut helps: Map<String, Value> = Map::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, t)) = rest.split_once(' ') {
                types.insert(name.to_owned(), json!(t));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                helps.insert(name.to_owned(), json!(h));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (series, Map::new()),
        };
        let family = [("_bucket", true), ("_sum", true), ("_count", true), ("", true)]
            .iter()
            .filter_map(|(suffix, _)| name.strip_suffix(suffix))
            .find(|base| types.contains_key(*base))
            .unwrap_or(name)
            .to_owned();
        let entry = families.entry(family.clone()).or_insert_with(|| {
            json!({
                "type": types.get(&family).cloned().unwrap_or(json!("untyped")),
                "help": helps.get(&family).cloned().unwrap_or(Value::Null),
                "samples": [],
            })
        });
        let v: Value = value
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or(json!(value));
        if let Some(samples) = entry["samples"].as_array_mut() {
            samples.push(json!({ "name": name, "labels": labels, "value": v }));
        }
    }
    Value::Object(families)
}

fn parse_labels(s: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), json!(value));
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_json_families() {
        let text = "# HELP x_total Things\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"z\"} 3\n\
                    # TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 1\nh_seconds_sum 0.05\nh_seconds_count 1\n";
        let j = text_to_json(text);
        assert_eq!(j["x_total"]["type"], "counter");
        assert_eq!(j["x_total"]["help"], "Things");
        assert_eq!(j["x_total"]["samples"][0]["labels"]["b"], "q\"z");
        assert_eq!(j["x_total"]["samples"][0]["value"], 3.0);
        assert_eq!(j["h_seconds"]["samples"].as_array().unwrap().len(), 3);
    }
}
