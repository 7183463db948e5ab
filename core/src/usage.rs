//! Usage as a ledger (design §2): each agent numbers its usage records per site (1, 2, 3, ...
//! without gaps) and keeps them in a local journal until the orchestrator acknowledges them; the
//! orchestrator stores each `(site, seq)` once. Retries after lost answers and restarts on either
//! side therefore neither lose nor double a record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Ident;

/// What one workspace used over one interval, normalised across backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The site's sequence number for this record, from 1, without gaps.
    pub seq: u64,
    /// Workspace id.
    pub workspace: String,
    /// The workspace's project.
    pub project: Ident,
    /// Start of the interval.
    pub from: DateTime<Utc>,
    /// End of the interval.
    pub to: DateTime<Utc>,
    /// CPUs allocated × seconds.
    pub allocated_core_seconds: f64,
    /// CPU time the workspace used, seconds.
    pub used_cpu_seconds: f64,
    /// Memory allocated, GiB × seconds.
    pub allocated_memory_gib_seconds: f64,
    /// Memory in use, GiB × seconds (from samples over the interval).
    pub used_memory_gib_seconds: f64,
    /// Largest memory use seen in the interval, bytes.
    pub peak_memory_bytes: u64,
    /// GPUs allocated × seconds.
    pub gpu_seconds: f64,
}

/// `POST /v1/agent/usage`: records the orchestrator has not acknowledged yet, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// The site; must match the agent's token.
    pub site: Ident,
    /// Records, by `seq`.
    pub records: Vec<UsageRecord>,
}

/// The answer to a [`UsageBatch`]: every record of the site up to `acked_through` is stored, so
/// the agent may drop them from its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageAck {
    /// Highest `seq` stored for the site with no gap below it.
    pub acked_through: u64,
}

/// Sums of usage records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Records summed.
    pub records: u64,
    /// Allocated core-seconds.
    pub allocated_core_seconds: f64,
    /// CPU-seconds used.
    pub used_cpu_seconds: f64,
    /// Allocated memory, GiB-seconds.
    pub allocated_memory_gib_seconds: f64,
    /// Memory in use, GiB-seconds.
    pub used_memory_gib_seconds: f64,
    /// Largest memory use seen, bytes.
    pub peak_memory_bytes: u64,
    /// GPU-seconds.
    pub gpu_seconds: f64,
}

impl Totals {
    /// Adds one record.
    pub fn add(&mut self, r: &UsageRecord) {
        self.records += 1;
        self.allocated_core_seconds += r.allocated_core_seconds;
        self.used_cpu_seconds += r.used_cpu_seconds;
        self.allocated_memory_gib_seconds += r.allocated_memory_gib_seconds;
        self.used_memory_gib_seconds += r.used_memory_gib_seconds;
        self.peak_memory_bytes = self.peak_memory_bytes.max(r.peak_memory_bytes);
        self.gpu_seconds += r.gpu_seconds;
    }
}

/// Usage of one site in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteUsage {
    /// Site.
    pub site: String,
    /// Its totals.
    pub totals: Totals,
}

/// Usage of one workspace in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceUsage {
    /// Workspace id.
    pub workspace: String,
    /// The site it ran at.
    pub site: String,
    /// Its totals.
    pub totals: Totals,
}

/// A project's usage over a period: records whose interval ends in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Project.
    pub project: String,
    /// Start of the period.
    pub from: DateTime<Utc>,
    /// End of the period.
    pub to: DateTime<Utc>,
    /// Everything.
    pub totals: Totals,
    /// By site.
    pub by_site: Vec<SiteUsage>,
    /// By workspace.
    pub by_workspace: Vec<WorkspaceUsage>,
}
