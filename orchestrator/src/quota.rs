//! Project quotas: budgets in core-hours and GPU-hours, measured in allocated resources from the
//! usage ledger.
//!
//! - A create is refused when what the project used, plus what its live workspaces still hold
//!   until they expire, plus what the new workspace would hold for its whole lifetime, exceeds
//!   the budget. The refusal names the balance.
//! - A loop watches every project with a quota: at 80% of a budget each live workspace gets a
//!   `quota_warning` audit event (once); at 100% a `quota_exhausted` event, and after
//!   `limits.quota_grace_s` the project's live workspaces are stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_core::{Ident, Resources, State, Workspace};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Orchestrator;
use crate::store::{Quota, StoreError, WorkspaceFilter};

/// Share of a budget at which live workspaces are warned.
pub const WARN_AT: f64 = 0.8;
/// How often the loop looks at quotas.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// States in which a workspace holds (or is about to hold) its allocation.
pub const LIVE: [State; 6] = [
    State::Pending,
    State::Placed,
    State::Starting,
    State::Running,
    State::Preempted,
    State::Unknown,
];

/// A project's budget and where it stands, in hours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Balance {
    /// The budget.
    pub quota: Quota,
    /// Core-hours metered so far.
    pub used_core_hours: f64,
    /// Core-hours live workspaces hold until they expire.
    pub committed_core_hours: f64,
    /// GPU-hours metered so far.
    pub used_gpu_hours: f64,
    /// GPU-hours live workspaces hold until they expire.
    pub committed_gpu_hours: f64,
}

/// Hours of `resources` held from `now` to `until`: (core-hours, GPU-hours).
pub fn hours(resources: &Resources, now: DateTime<Utc>, until: DateTime<Utc>) -> (f64, f64) {
    let h = ((until - now).num_milliseconds().max(0) as f64) / 3_600_000.0;
    (f64::from(resources.cpus) * h, f64::from(resources.gpus) * h)
}

impl Balance {
    /// The share of each budget that is used (metered only): `core_hours`, `gpu_hours`.
    pub fn ratios(&self) -> Vec<(&'static str, f64)> {
        let core = self
            .quota
            .core_hours
            .map(|b| ("core_hours", ratio(self.used_core_hours, b)));
        let gpu = self
            .quota
            .gpu_hours
            .map(|b| ("gpu_hours", ratio(self.used_gpu_hours, b)));
        core.into_iter().chain(gpu).collect()
    }

    /// The larger share of either budget that is used, `None` without a budget.
    pub fn used_ratio(&self) -> Option<f64> {
        self.ratios().into_iter().map(|(_, r)| r).reduce(f64::max)
    }

    /// Refuses a workspace that needs `need` (core-hours, GPU-hours) when it would not fit.
    pub fn admit(&self, project: &Ident, need: (f64, f64)) -> Result<(), String> {
        let check = |what: &str, budget: Option<f64>, used: f64, held: f64, need: f64| {
            let Some(budget) = budget else { return Ok(()) };
            let remaining = budget - used - held;
            if need <= remaining + 1e-9 {
                return Ok(());
            }
            Err(format!(
                "project {project} would exceed its quota of {budget:.2} {what}: {used:.2} used, \
                 {held:.2} held by its live workspaces, {rem:.2} remaining; this workspace needs \
                 {need:.2}. Ask for a shorter duration or fewer resources, end a workspace, or \
                 raise the quota (PUT /v1/projects/{project}/quota)",
                rem = remaining.max(0.0),
            ))
        };
        check(
            "core-hours",
            self.quota.core_hours,
            self.used_core_hours,
            self.committed_core_hours,
            need.0,
        )?;
        check(
            "GPU-hours",
            self.quota.gpu_hours,
            self.used_gpu_hours,
            self.committed_gpu_hours,
            need.1,
        )
    }
}

fn ratio(used: f64, budget: f64) -> f64 {
    if budget <= 0.0 {
        // A zero budget forbids the resource; it is exhausted only once something used it.
        if used > 0.0 { f64::INFINITY } else { 0.0 }
    } else {
        used / budget
    }
}

/// The project's balance, `None` when it has no quota.
pub async fn balance(
    o: &Orchestrator,
    project: &Ident,
    now: DateTime<Utc>,
) -> Result<Option<(Balance, Vec<Workspace>)>, StoreError> {
    let store = &o.inner().store;
    let Some(quota) = store.quota(project).await? else {
        return Ok(None);
    };
    let (core_s, gpu_s) = store.usage_totals(project).await?;
    let live = live_workspaces(o, project).await?;
    let (mut core_h, mut gpu_h) = (0.0, 0.0);
    for w in &live {
        let (c, g) = hours(&w.resources, now, w.expires_at);
        core_h += c;
        gpu_h += g;
    }
    Ok(Some((
        Balance {
            quota,
            used_core_hours: core_s / 3600.0,
            committed_core_hours: core_h,
            used_gpu_hours: gpu_s / 3600.0,
            committed_gpu_hours: gpu_h,
        },
        live,
    )))
}

async fn live_workspaces(o: &Orchestrator, project: &Ident) -> Result<Vec<Workspace>, StoreError> {
    let filter = WorkspaceFilter {
        project: Some(project.clone()),
        states: LIVE.to_vec(),
        ..WorkspaceFilter::default()
    };
    Ok(o.inner()
        .store
        .list_workspaces(&filter)
        .await?
        .into_iter()
        .map(|r| r.workspace)
        .collect())
}

/// What the loop remembers per project between checks.
#[derive(Debug, Default)]
struct Watch {
    warned: std::collections::BTreeSet<String>,
    exhausted_since: Option<DateTime<Utc>>,
}

/// One look at every quota; returns how many workspaces it stopped.
async fn check_once(
    o: &Orchestrator,
    watches: &mut BTreeMap<Ident, Watch>,
    grace: chrono::Duration,
) -> Result<usize, StoreError> {
    let now = Utc::now();
    let mut stopped = 0;
    let quotas = o.inner().store.quotas().await?;
    watches.retain(|p, _| quotas.iter().any(|(q, _)| q == p));
    for (project, _) in quotas {
        let Some((b, live)) = balance(o, &project, now).await? else {
            continue;
        };
        let Some(r) = b.used_ratio() else { continue };
        for (resource, ratio) in b.ratios() {
            o.inner()
                .metrics
                .set_quota_ratio(project.as_str(), resource, ratio);
        }
        let watch = watches.entry(project.clone()).or_default();
        if r < 1.0 {
            watch.exhausted_since = None;
        }
        if r >= WARN_AT {
            for w in &live {
                if watch.warned.insert(w.id.clone()) {
                    let detail = json!({"project": project.as_str(), "used_ratio": r,
                        "quota": b.quota, "used_core_hours": b.used_core_hours,
                        "used_gpu_hours": b.used_gpu_hours});
                    o.audit("orchestrator", "quota_warning", &w.id, detail)
                        .await;
                    tracing::warn!(workspace = %w.id, %project, ratio = r, "project nearing its quota");
                }
            }
        }
        if r < 1.0 {
            continue;
        }
        let since = *watch.exhausted_since.get_or_insert(now);
        if since == now {
            let detail = json!({"used_ratio": r, "quota": b.quota,
                "stop_after_s": grace.num_seconds()});
            o.audit("orchestrator", "quota_exhausted", project.as_str(), detail)
                .await;
        }
        if now - since < grace {
            continue;
        }
        for w in live {
            let why = format!(
                "quota exhausted: project {project} used {:.0}% of its budget",
                r * 100.0
            );
            let t = o
                .transition_as("orchestrator", &w.id, State::Stopping, Some(&why))
                .await?;
            if matches!(t, crate::store::Transition::Changed { .. }) {
                stopped += 1;
            }
        }
    }
    Ok(stopped)
}

/// Watches quotas until `shutdown`.
pub async fn quota_loop(o: Orchestrator, shutdown: CancellationToken) {
    let grace = chrono::Duration::seconds(
        i64::try_from(o.inner().config.limits.quota_grace_s).unwrap_or(i64::MAX),
    );
    let mut watches = BTreeMap::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !o.is_leader() {
            // A replica that leads again starts from the store, not from what it saw before.
            watches.clear();
            continue;
        }
        match check_once(&o, &mut watches, grace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(stopped = n, "workspaces stopped for exhausted quotas"),
            Err(e) => tracing::warn!(error = %e, "quota check failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance(core: Option<f64>, used: f64, held: f64) -> Balance {
        Balance {
            quota: Quota {
                core_hours: core,
                gpu_hours: Some(0.0),
            },
            used_core_hours: used,
            committed_core_hours: held,
            used_gpu_hours: 0.0,
            committed_gpu_hours: 0.0,
        }
    }

    #[test]
    fn admission_counts_used_held_and_needed() {
        let p = Ident::parse("P-1").unwrap();
        assert!(balance(Some(10.0), 4.0, 3.0).admit(&p, (3.0, 0.0)).is_ok());
        let e = balance(Some(10.0), 4.0, 3.0)
            .admit(&p, (3.5, 0.0))
            .unwrap_err();
        assert!(
            e.contains("3.00 remaining") && e.contains("needs 3.50"),
            "{e}"
        );
        assert!(balance(None, 100.0, 0.0).admit(&p, (5.0, 0.0)).is_ok());
        // A zero GPU budget refuses any GPU.
        let e = balance(None, 0.0, 0.0).admit(&p, (1.0, 0.5)).unwrap_err();
        assert!(e.contains("GPU-hours"), "{e}");
    }

    #[test]
    fn the_ratio_is_the_larger_share() {
        let mut b = balance(Some(10.0), 8.0, 0.0);
        assert_eq!(b.used_ratio(), Some(0.8));
        b.quota.gpu_hours = Some(1.0);
        b.used_gpu_hours = 1.5;
        assert_eq!(b.used_ratio(), Some(1.5));
        b.quota = Quota {
            core_hours: None,
            gpu_hours: None,
        };
        assert_eq!(b.used_ratio(), None);
    }

    #[test]
    fn hours_of_a_lifetime() {
        let r = Resources {
            cpus: 4,
            memory_mib: 1,
            gpus: 1,
        };
        let now = Utc::now();
        let (c, g) = hours(&r, now, now + chrono::Duration::minutes(30));
        assert!((c - 2.0).abs() < 1e-9 && (g - 0.5).abs() < 1e-9);
        assert_eq!(
            hours(&r, now, now - chrono::Duration::minutes(1)),
            (0.0, 0.0)
        );
    }
}
