//! The orchestrator's Prometheus metrics, in one struct. Labels are bounded: method, route
//! template, status, site, state, project and quota resource; never a workspace id.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use basho_core::usage::UsageRecord;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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

/// A project at a site, for usage counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectSiteLabels {
    /// Project id.
    pub project: String,
    /// Site name.
    pub site: String,
}

/// A project's budget in one resource.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Project id.
    pub project: String,
    /// `core_hours` or `gpu_hours`.
    pub resource: String,
}

mod revocation;

pub use basho_core::metrics::Declared;
pub use revocation::RevocationTimer;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the orchestrator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Declared,
    /// API requests by method, route template and status.
    pub requests: Family<RequestLabels, Counter>,
    /// API request duration by method and route template.
    pub request_duration: HistogramFamily<RouteLabels>,
    /// Workspaces created (idempotent replays not counted).
    pub workspaces_created: Counter,
    /// Placements by site.
    pub placements: Family<SiteLabels, Counter>,
    /// Time from a create request to its 201 answer (replays and refusals not counted).
    pub create_duration: Histogram,
    /// Observations not applied, by site and reason.
    pub observations_ignored: Family<IgnoredLabels, Counter>,
    /// Workspaces by site and state; set at scrape time.
    pub workspaces: Family<SiteStateLabels, Gauge>,
    /// Seconds since each site's agent was last heard from; set at scrape time.
    pub agent_last_contact_age: Family<SiteLabels, Gauge<f64, AtomicU64>>,
    /// Revocations recorded, by reason.
    pub revocations: Family<ReasonLabels, Counter>,
    /// Time to record a revocation and move every workspace it ends to `revoked` (request to
    /// answer).
    pub revocation_duration: Histogram,
    /// Time from a revocation request until every site has confirmed the containers it ends are
    /// gone; fed by [`Metrics::revocations_pending`].
    pub revocation_confirmed_duration: Histogram,
    /// Revocations waiting for their sites to confirm.
    pub revocations_pending: RevocationTimer,
    /// Workspaces failed for staying placed, starting or stopping past their site's
    /// `start_timeout_s`, by site and the state they were stuck in.
    pub workspaces_timed_out: Family<SiteStateLabels, Counter>,
    /// Audit entries that could not be written.
    pub audit_append_failures: Counter,
    /// 1 while this replica leads (runs the background loops), else 0.
    pub leader: Gauge,
    /// Allocated core-seconds by project and site.
    pub usage_core_seconds: Family<ProjectSiteLabels, FloatCounter>,
    /// CPU-seconds used by project and site.
    pub usage_cpu_seconds: Family<ProjectSiteLabels, FloatCounter>,
    /// Allocated memory GiB-seconds by project and site.
    pub usage_memory_gib_seconds: Family<ProjectSiteLabels, FloatCounter>,
    /// Memory GiB-seconds in use by project and site.
    pub usage_memory_used_gib_seconds: Family<ProjectSiteLabels, FloatCounter>,
    /// Allocated GPU-seconds by project and site.
    pub usage_gpu_seconds: Family<ProjectSiteLabels, FloatCounter>,
    /// Usage records stored, by site.
    pub usage_records: Family<SiteLabels, Counter>,
    /// Share of each project's budget used, by resource.
    pub quota_used_ratio: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    /// Workspaces waiting in the queue at the leader's last pass.
    pub queued: Gauge,
    /// Time queued workspaces waited, from create to placement.
    pub queue_wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `basho` prefix.
    pub fn new() -> Self {
        let mut registry = Declared::new("basho");
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
            "workspace_create_seconds",
            "Time from a create request to its 201 answer",
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
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the background loops (expiry, silent agents, quotas), else 0",
            leader.clone(),
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
            "revocation_record_seconds",
            "Time to record a revocation and move the workspaces it ends to revoked (request to answer)",
            revocation_duration.clone(),
        );
        let revocation_confirmed_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "revocation_seconds",
            "Time from a revocation request until the sites confirmed every container it ends is gone",
            revocation_confirmed_duration.clone(),
        );
        let usage = |registry: &mut Declared, name: &str, help: &str| {
            let family = Family::<ProjectSiteLabels, FloatCounter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let usage_core_seconds = usage(
            &mut registry,
            "usage_core_seconds",
            "Allocated core-seconds metered, by project and site",
        );
        let usage_cpu_seconds = usage(
            &mut registry,
            "usage_cpu_seconds",
            "CPU-seconds used, by project and site",
        );
        let usage_memory_gib_seconds = usage(
            &mut registry,
            "usage_memory_gib_seconds",
            "Allocated memory GiB-seconds metered, by project and site",
        );
        let usage_memory_used_gib_seconds = usage(
            &mut registry,
            "usage_memory_used_gib_seconds",
            "Memory GiB-seconds in use, by project and site",
        );
        let usage_gpu_seconds = usage(
            &mut registry,
            "usage_gpu_seconds",
            "Allocated GPU-seconds metered, by project and site",
        );
        let workspaces_timed_out = Family::<SiteStateLabels, Counter>::default();
        registry.register(
            "workspaces_timed_out",
            "Workspaces failed for staying placed, starting or stopping past the site's start_timeout_s, by site and state",
            workspaces_timed_out.clone(),
        );
        let usage_records = Family::<SiteLabels, Counter>::default();
        registry.register(
            "usage_records",
            "Usage records stored, by site",
            usage_records.clone(),
        );
        let quota_used_ratio = Family::<QuotaLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "quota_used_ratio",
            "Share of the project's budget used (1 = exhausted), by resource",
            quota_used_ratio.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_length",
            "Workspaces waiting in the queue at the leader's last pass",
            queued.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.05, 2.0, 20));
        registry.register(
            "queue_wait_seconds",
            "Time queued workspaces waited, from create to placement",
            queue_wait.clone(),
        );
        Self {
            queued,
            queue_wait,
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
            revocation_confirmed_duration,
            revocations_pending: RevocationTimer::default(),
            workspaces_timed_out,
            audit_append_failures,
            leader,
            usage_core_seconds,
            usage_cpu_seconds,
            usage_memory_gib_seconds,
            usage_memory_used_gib_seconds,
            usage_gpu_seconds,
            usage_records,
            quota_used_ratio,
        }
    }

    /// Adds one stored usage record to its project's counters at `site`. Call it once per record
    /// newly stored (not for a duplicate `(site, seq)`), so the counters follow the ledger.
    pub fn record_usage(&self, r: &UsageRecord, site: &str) {
        let labels = ProjectSiteLabels {
            project: r.project.to_string(),
            site: site.to_owned(),
        };
        // A counter never goes down: a negative or NaN figure adds nothing.
        let add = |family: &Family<ProjectSiteLabels, FloatCounter>, v: f64| {
            if v > 0.0 {
                family.get_or_create(&labels).inc_by(v);
            }
        };
        add(&self.usage_core_seconds, r.allocated_core_seconds);
        add(&self.usage_cpu_seconds, r.used_cpu_seconds);
        add(
            &self.usage_memory_gib_seconds,
            r.allocated_memory_gib_seconds,
        );
        add(
            &self.usage_memory_used_gib_seconds,
            r.used_memory_gib_seconds,
        );
        add(&self.usage_gpu_seconds, r.gpu_seconds);
        self.usage_records
            .get_or_create(&SiteLabels {
                site: site.to_owned(),
            })
            .inc();
    }

    /// Sets the share of `project`'s budget used in `resource` (`core_hours` or `gpu_hours`):
    /// 0.8 is 80%, 1.0 or more is exhausted.
    pub fn set_quota_ratio(&self, project: &str, resource: &str, ratio: f64) {
        self.quota_used_ratio
            .get_or_create(&QuotaLabels {
                project: project.to_owned(),
                resource: resource.to_owned(),
            })
            .set(ratio);
    }

    /// Forgets a project's quota gauges (its budget was removed).
    pub fn clear_quota_ratio(&self, project: &str, resource: &str) {
        self.quota_used_ratio.remove(&QuotaLabels {
            project: project.to_owned(),
            resource: resource.to_owned(),
        });
    }

    /// A revocation recorded at `started` now waits for its sites (see [`RevocationTimer`]).
    pub fn revocation_begin(&self, seq: i64, started: Instant) {
        self.revocations_pending.begin(seq, started);
    }

    /// A site confirmed that `workspace`'s container is gone after a revocation; observes the
    /// end-to-end latency of every revocation that waited only for it.
    pub fn revocation_confirmed(&self, workspace: &str) {
        for seconds in self.revocations_pending.confirmed(workspace) {
            self.revocation_confirmed_duration.observe(seconds);
        }
    }

    /// Every workspace of revocation `seq` is known: observes it now if none waits for a site.
    pub fn revocation_end(&self, seq: i64) {
        if let Some(seconds) = self.revocations_pending.end(seq) {
            self.revocation_confirmed_duration.observe(seconds);
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
        self.registry.encode()
    }
}

#[cfg(test)]
mod tests {
    use basho_core::Ident;
    use chrono::{TimeZone, Utc};

    use super::*;

    fn record(seq: u64, project: &str) -> UsageRecord {
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        UsageRecord {
            seq,
            workspace: format!("ws-{seq}"),
            project: Ident::parse(project).unwrap(),
            from,
            to: from + chrono::Duration::seconds(60),
            allocated_core_seconds: 120.0,
            used_cpu_seconds: 59.5,
            allocated_memory_gib_seconds: 30.0,
            used_memory_gib_seconds: 12.25,
            peak_memory_bytes: 1 << 30,
            gpu_seconds: 0.0,
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn usage_adds_up_per_project_and_site_without_workspace_ids() {
        let m = Metrics::new();
        m.record_usage(&record(1, "P-0001"), "tohoku");
        m.record_usage(&record(2, "P-0001"), "tohoku");
        m.record_usage(&record(3, "P-0002"), "bbj");
        let text = m.encode();
        let p1 = "{project=\"P-0001\",site=\"tohoku\"}";
        assert_eq!(
            sample(&text, &format!("basho_usage_core_seconds_total{p1}")),
            Some("240.0"),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("basho_usage_cpu_seconds_total{p1}")),
            Some("119.0")
        );
        assert_eq!(
            sample(&text, &format!("basho_usage_memory_gib_seconds_total{p1}")),
            Some("60.0")
        );
        assert_eq!(
            sample(
                &text,
                &format!("basho_usage_memory_used_gib_seconds_total{p1}")
            ),
            Some("24.5")
        );
        assert_eq!(
            sample(
                &text,
                "basho_usage_core_seconds_total{project=\"P-0002\",site=\"bbj\"}"
            ),
            Some("120.0")
        );
        assert_eq!(
            sample(&text, "basho_usage_records_total{site=\"tohoku\"}"),
            Some("2")
        );
        // No GPU used: the family is declared, with no series.
        assert!(
            text.contains("# TYPE basho_usage_gpu_seconds counter"),
            "{text}"
        );
        assert!(!text.contains("basho_usage_gpu_seconds_total{"), "{text}");
        assert!(!text.contains("ws-1"), "no workspace id as a label: {text}");
    }

    #[test]
    fn a_negative_figure_never_lowers_a_counter() {
        let m = Metrics::new();
        let mut r = record(1, "P-0001");
        r.used_cpu_seconds = -5.0;
        r.gpu_seconds = f64::NAN;
        m.record_usage(&r, "tohoku");
        let text = m.encode();
        assert!(!text.contains("basho_usage_cpu_seconds_total{"), "{text}");
        assert!(!text.contains("basho_usage_gpu_seconds_total{"), "{text}");
    }

    #[test]
    fn quota_ratios_are_set_replaced_and_cleared() {
        let m = Metrics::new();
        m.set_quota_ratio("P-0001", "core_hours", 0.5);
        m.set_quota_ratio("P-0001", "core_hours", 0.85);
        m.set_quota_ratio("P-0001", "gpu_hours", 1.0);
        let text = m.encode();
        let core = "basho_quota_used_ratio{project=\"P-0001\",resource=\"core_hours\"}";
        assert_eq!(sample(&text, core), Some("0.85"), "{text}");
        let gpu = "basho_quota_used_ratio{project=\"P-0001\",resource=\"gpu_hours\"}";
        assert_eq!(sample(&text, gpu), Some("1.0"));
        m.clear_quota_ratio("P-0001", "gpu_hours");
        assert_eq!(sample(&m.encode(), gpu), None);
    }

    #[test]
    fn revocation_latency_is_observed_once_its_sites_confirm() {
        let m = Metrics::new();
        m.revocation_begin(1, Instant::now());
        m.revocations_pending.expect(1, "ws-a");
        m.revocation_end(1);
        assert_eq!(
            sample(&m.encode(), "basho_revocation_seconds_count"),
            Some("0")
        );
        m.revocation_confirmed("ws-a");
        assert_eq!(
            sample(&m.encode(), "basho_revocation_seconds_count"),
            Some("1")
        );
    }
}
