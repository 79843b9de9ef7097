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

use axum::serve::ListenerExt;

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
    let server = axum::serve(accepting(listener), service).with_graceful_shutdown(sequence);
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

/// The listener as served: every accepted connection with Nagle's algorithm off.
pub fn accepting(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    listener.tap_io(no_delay)
}

/// Turns Nagle's algorithm off on an accepted connection. With it on, a small write waits
/// while an earlier one is unacknowledged, and the peer delays its acknowledgement (40 ms on
/// Linux): a Socket.IO event pushed 20 ms after the last one to a client that sends nothing
/// back waits for it. Node's HTTP server has done the same by default since 18.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
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

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let mut served = accepting(listener);
        let (io, _) = served.accept().await;
        let _client = client.await.map_err(std::io::Error::other)??;
        assert!(io.nodelay()?, "TCP_NODELAY on the accepted connection");
        // Sockets start with it off: the check above is not the default.
        let plain = TcpListener::bind("127.0.0.1:0").await?;
        let other = tokio::spawn(tokio::net::TcpStream::connect(plain.local_addr()?));
        let (io, _) = plain.accept().await?;
        let _other = other.await.map_err(std::io::Error::other)??;
        assert!(!io.nodelay()?);
        Ok(())
    }
}
