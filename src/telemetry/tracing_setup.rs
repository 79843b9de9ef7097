//! Logging and tracing set-up: `tracing` to stdout (JSON lines in production, readable lines
//! in development; level from `RUST_LOG` or `LOG_LEVEL`), plus — when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans exported over OTLP/HTTP (protobuf) to
//! `<endpoint>/v1/traces` with W3C trace-context propagation from incoming `traceparent`.
//!
//! What is logged: the one request line (correlation id, method, route, status, latency,
//! firm and user ids, trace id), warnings and errors with their causes. Never bodies, never
//! headers: passwords, tokens, `Authorization` and cookies do not reach any log line.

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Keeps the log writer and the trace exporter alive; [`Telemetry::shutdown`] flushes both.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    _log_writer: tracing_appender::non_blocking::WorkerGuard,
}

impl Telemetry {
    /// Flushes pending spans, then pending log lines (when the guard drops).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "could not flush the trace exporter");
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into())))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Log lines waiting for the writer thread at most. The buffer is allocated whole at start
/// (32 bytes a line): tracing-appender's default of 128,000 lines took 4 MiB of an idle
/// server's memory. 16,384 lines are a few seconds of the busiest logging a benchmark produced
/// (one line per request); past them, the logging thread waits for the writer.
const LOG_LINES_BUFFERED: usize = 16_384;

/// Installs the global subscriber. `otlp_endpoint` is the base URL of an OTLP/HTTP collector.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    // Lines are written by a background thread, so a request never waits on stdout. The
    // writer blocks (rather than dropping lines) if that thread falls far behind: a log
    // line of a security event is never silently lost.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_BUFFERED)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter()));
    let Some(endpoint) = otlp_endpoint else {
        registry.try_init().map_err(|e| e.to_string())?;
        return Ok(Telemetry { provider: None, _log_writer: guard });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("lexiflow").build())
        .build();
    let tracer = provider.tracer("lexiflow");
    // Only our own spans are exported; the log filter does not decide what is traced.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("lexiflow", tracing::Level::INFO));
    registry.with(otel).try_init().map_err(|e| e.to_string())?;
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Telemetry { provider: Some(provider), _log_writer: guard })
}

/// Set once spans are exported: only then is a span per request worth its cost.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether request spans are exported (OTLP configured).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the caller's trace when the request carries a valid `traceparent`,
/// and returns the trace id to log (the caller's, or the new span's own when exporting).
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) -> Option<String> {
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let remote = cx.span().span_context().clone();
    if remote.is_valid() {
        let _ = span.set_parent(cx);
        return Some(remote.trace_id().to_string());
    }
    let own = span.context().span().span_context().clone();
    own.is_valid().then(|| own.trace_id().to_string())
}
