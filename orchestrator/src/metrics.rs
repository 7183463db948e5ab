//! The orchestrator's Prometheus metrics, in one struct. Labels are bounded: method, route
//! template, status, site and state; never a workspace id or a project.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route template (`/v1/workspaces/{id}`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a request duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// The route template.
    pub route: String,
}

/// A site.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabels {
    /// Site name.
    pub site: String,
}

/// A site and a workspace state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteStateLabels {
    /// Site name.
    pub site: String,
    /// Workspace state.
    pub state: String,
}

/// A site and why an observation was not applied.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IgnoredLabels {
    /// Site name.
    pub site: String,
    /// `unknown_workspace`, `other_site` or `illegal_transition`.
    pub reason: &'static str,
}

/// Why access was revoked.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `consent-withdrawn`, `dac-revoked`, ...
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the orchestrator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// API requests by method, route template and status.
    pub requests: Family<RequestLabels, Counter>,
    /// API request duration by method and route template.
    pub request_duration: HistogramFamily<RouteLabels>,
    /// Workspaces created (idempotent replays not counted).
    pub workspaces_created: Counter,
    /// Placements by site.
    pub placements: Family<SiteLabels, Counter>,
    /// Time to admit, place and store a workspace.
    pub create_duration: Histogram,
    /// Observations not applied, by site and reason.
    pub observations_ignored: Family<IgnoredLabels, Counter>,
    /// Workspaces by site and state; set at scrape time.
    pub workspaces: Family<SiteStateLabels, Gauge>,
    /// Seconds since each site's agent was last heard from; set at scrape time.
    pub agent_last_contact_age: Family<SiteLabels, Gauge<f64, AtomicU64>>,
    /// Revocations recorded, by reason.
    pub revocations: Family<ReasonLabels, Counter>,
    /// Time to record a revocation and move every workspace it ends to `revoked`.
    pub revocation_duration: Histogram,
    /// Audit entries that could not be written.
    pub audit_append_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `basho` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("basho");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        let workspaces_created = Counter::default();
        let placements = Family::<SiteLabels, Counter>::default();
        let create_duration = latency_histogram();
        let observations_ignored = Family::<IgnoredLabels, Counter>::default();
        let workspaces = Family::<SiteStateLabels, Gauge>::default();
        let agent_last_contact_age = Family::<SiteLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "api_requests",
            "API requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request duration by method and route template",
            request_duration.clone(),
        );
        registry.register(
            "workspaces_created",
            "Workspaces created",
            workspaces_created.clone(),
        );
        registry.register("placements", "Placements by site", placements.clone());
        registry.register(
            "workspace_create_duration_seconds",
            "Time to validate, place and store a new workspace",
            create_duration.clone(),
        );
        registry.register(
            "agent_observations_ignored",
            "Agent observations not applied, by site and reason",
            observations_ignored.clone(),
        );
        registry.register(
            "workspaces",
            "Workspaces by site and state",
            workspaces.clone(),
        );
        registry.register(
            "agent_last_contact_age_seconds",
            "Seconds since the site's agent was last heard from",
            agent_last_contact_age.clone(),
        );
        let audit_append_failures = Counter::default();
        registry.register(
            "audit_append_failures",
            "Audit entries that could not be written",
            audit_append_failures.clone(),
        );
        let revocations = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "revocations",
            "Revocations recorded, by reason",
            revocations.clone(),
        );
        let revocation_duration = latency_histogram();
        registry.register(
            "revocation_duration_seconds",
            "Time to record a revocation and move the workspaces it ends to revoked",
            revocation_duration.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            workspaces_created,
            placements,
            create_duration,
            observations_ignored,
            workspaces,
            agent_last_contact_age,
            revocations,
            revocation_duration,
            audit_append_failures,
        }
    }

    /// Records one API request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
