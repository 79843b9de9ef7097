//! Serving the router on a listener, and stopping cleanly on SIGTERM or SIGINT.
//!
//! The shutdown sequence, for load balancers and Kubernetes:
//! 1. the signal arrives: readiness answers 503 at once;
//! 2. for `SHUTDOWN_DRAIN_SECONDS` the server keeps accepting and serving, so traffic still
//!    routed here is answered while the load balancer notices;
//! 3. then it stops accepting (and tells the in-process job worker to stop claiming) and
//!    lets in-flight requests finish, for at most `SHUTDOWN_GRACE_SECONDS`;
//! 4. `serve` returns; the caller waits for the worker to drain, then closes the pool (a
//!    pool closed under a worker's LISTEN connection would wait for it forever).

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{app::App, http::router};

/// Serves until a shutdown signal, then drains as described in the module docs; `stopping`
/// is cancelled when the listener closes.
pub async fn serve(app: App, listener: TcpListener, stopping: CancellationToken) -> std::io::Result<()> {
    serve_until(app, listener, signal(), stopping).await
}

/// Like [`serve`], with the shutdown trigger given (tests use a channel instead of a signal).
pub async fn serve_until(
    app: App,
    listener: TcpListener,
    trigger: impl Future<Output = ()> + Send + 'static,
    stopping: CancellationToken,
) -> std::io::Result<()> {
    let service = router::build(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop_accepting = Arc::new(Notify::new());
    let drained = stop_accepting.clone();
    let drain = app.config.ops.drain;
    let grace = app.config.shutdown_grace;
    let flag = app.clone();
    let sequence = async move {
        trigger.await;
        flag.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!(
            drain_seconds = drain.as_secs_f64(),
            "shutdown: readiness now 503, still serving while draining"
        );
        tokio::time::sleep(drain).await;
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "shutdown: no longer accepting; finishing in-flight requests"
        );
        // Sockets would hold the graceful shutdown open for hours: close them (clients
        // reconnect, to another instance, with `lastSeq`).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), flag.realtime.close()).await;
        stopping.cancel();
        drained.notify_one();
    };
    // Nagle's algorithm stays on (no TCP_NODELAY): measured twice on the realtime benchmark,
    // it cost a fifth more CPU and gained no latency within the spread (decision 0013).
    let server = axum::serve(listener, service).with_graceful_shutdown(sequence);
    let bounded = async {
        stop_accepting.notified().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r?,
        _ = bounded => tracing::warn!("shutdown: grace period over; stopping with requests still in flight"),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
