//! The accept loop: TLS handshake with a deadline, attribution of the connection to a desk,
//! HTTP/1.1 or HTTP/2 by ALPN, a bound on open connections, and a graceful drain that lets
//! in-flight requests finish within the configured grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::Metrics;
use super::identity::DeskDirectory;
use super::tls::ServerTls;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline for a TLS handshake and for reading a request head.
    pub handshake_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the grace period.
    Complete,
    /// The grace period ran out; remaining connections were dropped.
    TimedOut,
}

/// Everything a connection task needs, cheap to clone.
#[derive(Clone)]
pub struct Connections {
    acceptor: TlsAcceptor,
    desks: Arc<DeskDirectory>,
    app: Router,
    metrics: Arc<Metrics>,
    http: Arc<Builder<TokioExecutor>>,
    handshake_timeout: Duration,
}

impl Connections {
    /// Prepares connection handling for `app`.
    pub fn new(
        tls: &ServerTls,
        desks: Arc<DeskDirectory>,
        app: Router,
        metrics: Arc<Metrics>,
        limits: &Limits,
    ) -> Self {
        let mut http = Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout);
        Self {
            acceptor: TlsAcceptor::from(tls.config.clone()),
            desks,
            app,
            metrics,
            http: Arc::new(http),
            handshake_timeout: limits.handshake_timeout,
        }
    }

    async fn handle(self, tcp: TcpStream, remote: SocketAddr, watcher: Watcher) {
        let _ = tcp.set_nodelay(true);
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    self.metrics.observe_handshake_failure();
                    tracing::info!(peer = %remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    self.metrics.observe_handshake_failure();
                    tracing::info!(peer = %remote, "TLS handshake timed out");
                    return;
                }
            };
        let peer = self.desks.attribute(
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first()),
            remote.ip(),
        );
        let app = self.app.clone();
        let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(peer.clone());
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let connection = self
            .http
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
            .into_owned();
        self.metrics.add_connections(1);
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
        }
        self.metrics.add_connections(-1);
    }
}

/// Accepts connections until `shutdown` resolves, then drains them.
pub async fn serve(
    listener: TcpListener,
    connections: Connections,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = slot else { break };
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let task = connections.clone().handle(tcp, remote, graceful.watcher());
        tokio::spawn(async move {
            task.await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        "listener closed; draining in-flight requests"
    );
    match tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Drain::Complete,
        Err(_) => Drain::TimedOut,
    }
}
