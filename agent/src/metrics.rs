//! The agent's Prometheus metrics: one [`Metrics`] struct per agent, served on `/metrics` when the
//! site config has a `[metrics]` table. Labels are bounded (site, backend, operation, error kind,
//! workspace state); never a workspace id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State as Shared;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use basho_core::State;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::ClientError;

mod instrumented;

pub use basho_core::metrics::Declared;
pub use instrumented::InstrumentedBackend;

/// `[metrics]` in the site config: where to serve `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9464`. Plain HTTP without a token: keep it on
    /// loopback or a network only the site's Prometheus reaches.
    pub listen: SocketAddr,
}

/// Why `/metrics` cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address is taken or not this host's.
    #[error("cannot serve metrics on {addr}: {source}; change metrics.listen or free the port")]
    Bind {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A backend operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `docker`, `slurm`, `kubernetes` or `fake`.
    pub backend: &'static str,
    /// `launch`, `inspect`, `stop`, `list_managed` or `usage`.
    pub op: &'static str,
}

/// A failed backend operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The backend.
    pub backend: &'static str,
    /// The operation.
    pub op: &'static str,
    /// `unavailable`, `refused` or `unsupported`.
    pub kind: &'static str,
}

/// A workspace state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state's name.
    pub state: &'static str,
}

/// Why a call to the orchestrator failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `transport`, `unauthorized`, `status`, `decode` or `setup`.
    pub kind: &'static str,
}

/// What this agent is.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// Site name.
    pub site: String,
    /// Backend kind.
    pub backend: String,
    /// Agent version.
    pub version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// From a millisecond to about half a minute: a fake backend answers at once, Slurm over SSH or
/// an image pull takes seconds.
fn op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Declared,
    backend_operation: HistogramFamily<OpLabels>,
    backend_errors: Family<ErrorLabels, Counter>,
    workspaces: Family<StateLabels, Gauge>,
    reconcile: Histogram,
    orchestrator_errors: Family<KindLabels, Counter>,
    last_sync: Gauge<f64, AtomicU64>,
    journal_pending: Gauge,
}

impl Metrics {
    /// Registers every metric under the `basho_agent` prefix, for `site` on `backend`.
    pub fn new(site: &str, backend: &str) -> Self {
        let mut registry = Declared::new("basho_agent");
        let backend_operation: HistogramFamily<OpLabels> =
            Family::new_with_constructor(op_histogram);
        registry.register(
            "backend_operation_seconds",
            "Duration of backend calls, by backend and operation",
            backend_operation.clone(),
        );
        let backend_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Failed backend calls, by backend, operation and error kind",
            backend_errors.clone(),
        );
        let workspaces = Family::<StateLabels, Gauge>::default();
        registry.register(
            "workspaces",
            "Workspaces this agent knows, by the state it last observed",
            workspaces.clone(),
        );
        let reconcile = op_histogram();
        registry.register(
            "reconcile_seconds",
            "Duration of a reconcile pass",
            reconcile.clone(),
        );
        let orchestrator_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "orchestrator_errors",
            "Failed calls to the orchestrator, by kind",
            orchestrator_errors.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last desired state received from the orchestrator",
            last_sync.clone(),
        );
        let journal_pending = Gauge::default();
        registry.register(
            "usage_journal_pending",
            "Usage records in the local journal not yet acknowledged by the orchestrator",
            journal_pending.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "info",
            "This agent's site, backend and version; always 1",
            info.clone(),
        );
        info.get_or_create(&InfoLabels {
            site: site.to_owned(),
            backend: backend.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
        let m = Self {
            registry,
            backend_operation,
            backend_errors,
            workspaces,
            reconcile,
            orchestrator_errors,
            last_sync,
            journal_pending,
        };
        m.set_workspaces(std::iter::empty());
        m
    }

    /// Records one backend call; `error` is the error's kind when it failed.
    pub fn observe_backend(
        &self,
        backend: &'static str,
        op: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.backend_operation
            .get_or_create(&OpLabels { backend, op })
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.backend_errors
                .get_or_create(&ErrorLabels { backend, op, kind })
                .inc();
        }
    }

    /// Sets the workspace gauge from each workspace's latest state; every state is present, at
    /// zero when no workspace is in it.
    pub fn set_workspaces(&self, states: impl IntoIterator<Item = State>) {
        let mut counts = [0i64; State::ALL.len()];
        for s in states {
            if let Some(i) = State::ALL.iter().position(|x| *x == s) {
                counts[i] += 1;
            }
        }
        for (s, n) in State::ALL.iter().zip(counts) {
            self.workspaces
                .get_or_create(&StateLabels { state: s.as_str() })
                .set(n);
        }
    }

    /// Records how long a reconcile pass took.
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    /// Counts a failed call to the orchestrator.
    pub fn orchestrator_error(&self, kind: &'static str) {
        self.orchestrator_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// A desired state arrived from the orchestrator at `at`.
    pub fn synced(&self, at: DateTime<Utc>) {
        self.last_sync.set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// Sets how many usage records the local journal holds unacknowledged.
    pub fn set_journal_pending(&self, n: u64) {
        self.journal_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        self.registry.encode()
    }
}

/// The kind label of a failed orchestrator call.
pub fn client_error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Url { .. } | ClientError::Build(_) => "setup",
        ClientError::Transport(_) => "transport",
        ClientError::Unauthorized { .. } => "unauthorized",
        ClientError::Status { .. } => "status",
        ClientError::Decode(_) => "decode",
    }
}

/// Binds `metrics.listen`, so a taken port stops the agent at start instead of later.
pub async fn bind(config: &MetricsConfig) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: config.listen,
            source,
        })
}

/// The `/metrics` routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(Shared(metrics): Shared<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let addr = listener.local_addr().ok();
    info!(listen = ?addr, "serving metrics");
    let served = axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "metrics server stopped; the agent goes on without /metrics");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_family_is_declared_and_states_start_at_zero() {
        let m = Metrics::new("tohoku", "fake");
        let text = m.encode();
        for name in [
            "# TYPE basho_agent_backend_operation_seconds histogram",
            "# TYPE basho_agent_backend_errors counter",
            "# TYPE basho_agent_orchestrator_errors counter",
            "# TYPE basho_agent_last_sync_timestamp_seconds gauge",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        assert_eq!(
            sample(&text, "basho_agent_workspaces{state=\"unknown\"}"),
            Some("0")
        );
        let info = format!(
            "basho_agent_info{{site=\"tohoku\",backend=\"fake\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &info), Some("1"), "{text}");
    }

    #[test]
    fn records_what_the_agent_does() {
        let m = Metrics::new("tohoku", "fake");
        m.observe_backend("fake", "launch", Duration::from_millis(3), None);
        m.observe_backend(
            "fake",
            "stop",
            Duration::from_millis(1),
            Some("unavailable"),
        );
        m.set_workspaces([State::Running, State::Running, State::Unknown]);
        m.set_journal_pending(7);
        m.orchestrator_error("transport");
        let at = DateTime::from_timestamp(1_800_000_000, 500_000_000).unwrap();
        m.synced(at);
        let text = m.encode();
        let op = "{backend=\"fake\",op=\"launch\"}";
        assert_eq!(
            sample(
                &text,
                &format!("basho_agent_backend_operation_seconds_count{op}")
            ),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "basho_agent_backend_errors_total{backend=\"fake\",op=\"stop\",kind=\"unavailable\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, "basho_agent_workspaces{state=\"running\"}"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "basho_agent_workspaces{state=\"unknown\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "basho_agent_usage_journal_pending"),
            Some("7")
        );
        assert_eq!(
            sample(
                &text,
                "basho_agent_orchestrator_errors_total{kind=\"transport\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, "basho_agent_last_sync_timestamp_seconds"),
            Some("1800000000.5")
        );
    }
}
