//! Serving: the API on a listener and the background loops, until a cancellation token says
//! stop; then a drain bounded by [`SHUTDOWN_GRACE`].

use std::future::IntoFuture as _;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::{Error, Orchestrator, api, expiry, quota, replicas, tls};

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Orchestrator {
    /// The HTTP API (every route, with auth, body limits, metrics and the error fallback).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves the API on `listener` and runs the background loops until `shutdown` is cancelled;
    /// then stops accepting, lets in-flight requests finish (long-polls answer at once) and
    /// waits for the loops.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let tracker = TaskTracker::new();
        self.spawn_loops(&tracker, shutdown.clone());
        tracker.close();
        if let Ok(addr) = listener.local_addr() {
            let scheme = if self.inner().tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(%addr, scheme, "serving the basho API");
        }
        if let Some(addr) = self.inner().config.metrics.listen {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(Error::Serve)?;
            tracing::info!(addr = %metrics.local_addr().unwrap_or(addr),
                "serving /metrics without a token (metrics.listen)");
            let router = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(crate::api::meta::open_metrics),
                )
                .with_state(self.clone());
            let stop = shutdown.clone();
            tracker.reopen();
            tracker.spawn(async move {
                let served = axum::serve(metrics, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
            tracker.close();
        }
        let closing = self.inner().closing.clone();
        let stop = shutdown.clone();
        let signal = async move {
            stop.cancelled().await;
            closing.cancel();
        };
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match self.inner().tls.clone() {
                Some(acceptor) => Box::pin(tls::serve(listener, self.router(), acceptor, signal)),
                None => Box::pin(
                    // No Nagle delay: a session's keystrokes and echoes are single small frames.
                    axum::serve(
                        axum::serve::ListenerExt::tap_io(listener, |tcp| {
                            let _ = tcp.set_nodelay(true);
                        }),
                        self.router(),
                    )
                    .with_graceful_shutdown(signal)
                    .into_future(),
                ),
            };
        // Draining is bounded: a client holding a connection open cannot stall shutdown.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            r = server => r,
            () = grace => {
                tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the grace period; stopping anyway");
                Ok(())
            }
        };
        shutdown.cancel();
        tracker.wait().await;
        tracing::info!("the basho API stopped");
        result.map_err(Error::Serve)
    }

    /// Whether this replica runs the background loops now (always, on SQLite).
    pub fn is_leader(&self) -> bool {
        self.inner().replicas.is_leader()
    }

    /// Every change of leadership, as this replica sees it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner().replicas.subscribe()
    }

    /// Starts the expiry loop, the silent-agent sweep and the quota loop on `tracker` (they act
    /// only while this replica leads), and on PostgreSQL leader election and the replica
    /// listener and refresh.
    pub fn spawn_loops(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        replicas::spawn(self, tracker, &shutdown);
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { expiry::expiry(me, stop).await }
                .instrument(tracing::info_span!("expiry_loop")),
        );
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { expiry::silent_agents(me, stop).await }
                .instrument(tracing::info_span!("silent_agent_sweep")),
        );
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { crate::federated::run_loop(me, stop).await }
                .instrument(tracing::info_span!("federated_loop")),
        );
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { crate::queue::run_loop(me, stop).await }
                .instrument(tracing::info_span!("queue_loop")),
        );
        let me = self.clone();
        tracker.spawn(
            async move { quota::quota_loop(me, shutdown).await }
                .instrument(tracing::info_span!("quota_loop")),
        );
    }
}
