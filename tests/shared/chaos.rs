//! A TCP proxy the tests put between LexiFlow and a dependency (PostgreSQL, Redis, S3, clamd)
//! and then cut and restore: the dependency becomes unreachable, as if stopped, without
//! touching the real server that other tests share. Cutting drops every open connection and
//! refuses new ones (accepted, then closed at once); restoring lets new connections through.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{net::TcpListener, sync::Mutex, task::JoinHandle};

pub struct ChaosProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl ChaosProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut links = links2.lock().await;
                // Cut while this connection waited for the lock: it must not slip through.
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                links.retain(|l| !l.is_finished());
                links.push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Self { port, up, links, _accept: accept }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for l in self.links.lock().await.drain(..) {
            l.abort();
        }
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
