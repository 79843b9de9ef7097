//! Serving the router on a listener, and stopping cleanly on SIGTERM or SIGINT.

use std::{net::SocketAddr, sync::atomic::Ordering};

use tokio::net::TcpListener;

use crate::{app::App, http::router};

/// Serves until a shutdown signal, then lets in-flight requests finish.
pub async fn serve(app: App, listener: TcpListener) -> std::io::Result<()> {
    let service = router::build(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown_signal(app.clone())).await?;
    app.db.clone().close().await.ok();
    Ok(())
}

async fn shutdown_signal(app: App) {
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
    app.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutdown signal received: draining in-flight requests");
}
