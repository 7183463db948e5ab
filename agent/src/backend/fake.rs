//! The fake backend: simulated workspace lifecycles held in memory, for tests and benchmarks. It is
//! never chosen unless a site config names it (`kind = "fake"`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use basho_core::Ident;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub mod config;

use super::{Backend, BackendError, Capabilities, LaunchSpec, Observed, RunState, UsageSample};

/// Memory a simulated workspace holds: half of what it asked for.
const RESIDENT_SHARE: u64 = 2;

/// One simulated workspace.
#[derive(Debug, Clone)]
struct Sim {
    handle: String,
    launched: Instant,
    /// Decided at launch: this one exits with code 1 once its start delay has passed.
    doomed: bool,
    /// Set by [`FakeBackend::exit`]: it exited by itself with this code.
    exited: Option<i64>,
    cpus: u32,
    memory_mib: u64,
    expires_at: DateTime<Utc>,
    spec: LaunchSpec,
}

struct Inner {
    rng: StdRng,
    workspaces: BTreeMap<String, Sim>,
    /// The simulated site's own load, when a test set one.
    load: Option<super::SiteLoad>,
}

/// Simulated lifecycles: `Starting` until `start_delay` has passed, then `Running`, except for a
/// `failure_rate` share of launches, which end `Exited(1)` instead.
pub struct FakeBackend {
    site: Ident,
    start_delay: Duration,
    failure_rate: f64,
    inner: Mutex<Inner>,
    launches: AtomicU64,
    next_handle: AtomicU64,
    unavailable: AtomicBool,
    /// Simulated batch commands: how long each runs before it exits 0, its result written.
    exit_after: Option<Duration>,
}

/// What a simulated batch command leaves in `/results`: one count cell, above every small-cell
/// threshold.
pub const FAKE_RESULT: &str = "icd10,age_band,count\nE11,40-49,12\n";

impl FakeBackend {
    /// A fake backend for `site` whose failures are drawn from the operating system's randomness.
    pub fn new(site: Ident, start_delay: Duration, failure_rate: f64) -> Self {
        Self::with_rng(site, start_delay, failure_rate, StdRng::from_entropy())
    }

    /// The same, with failures drawn from a seeded generator so a test sees the same run each time.
    pub fn seeded(site: Ident, start_delay: Duration, failure_rate: f64, seed: u64) -> Self {
        Self::with_rng(site, start_delay, failure_rate, StdRng::seed_from_u64(seed))
    }

    fn with_rng(site: Ident, start_delay: Duration, failure_rate: f64, rng: StdRng) -> Self {
        Self {
            site,
            start_delay,
            failure_rate: if failure_rate.is_nan() {
                0.0
            } else {
                failure_rate.clamp(0.0, 1.0)
            },
            inner: Mutex::new(Inner {
                rng,
                workspaces: BTreeMap::new(),
                load: None,
            }),
            launches: AtomicU64::new(0),
            next_handle: AtomicU64::new(1),
            unavailable: AtomicBool::new(false),
            exit_after: None,
        }
    }

    /// Makes every workspace a simulated batch command: it writes [`FAKE_RESULT`] to
    /// `/results/counts.csv` as it launches and exits 0 `after` it runs.
    pub fn with_exit_after(mut self, after: Option<Duration>) -> Self {
        self.exit_after = after;
        self
    }

    /// How many times `launch` was called, including calls that found the workspace already there.
    pub fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::SeqCst)
    }

    /// Makes every call fail with [`BackendError::Unavailable`] (an engine outage) until cleared.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Sets the simulated site's own load, which `site_load` answers (`None`: cannot tell).
    pub fn set_load(&self, load: Option<super::SiteLoad>) {
        self.lock().load = load;
    }

    /// Simulates the workspace's process exiting by itself with `code`. False when it is absent.
    pub fn exit(&self, workspace: &str, code: i64) -> bool {
        let mut inner = self.lock();
        match inner.workspaces.get_mut(workspace) {
            Some(sim) => {
                sim.exited = Some(code);
                true
            }
            None => false,
        }
    }

    /// The spec a workspace was launched with, as a real backend would have applied it.
    pub fn spec(&self, workspace: &str) -> Option<LaunchSpec> {
        self.lock()
            .workspaces
            .get(workspace)
            .map(|s| s.spec.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_available(&self) -> Result<(), BackendError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(BackendError::unavailable(
                "fake backend set unavailable; clear it with set_unavailable(false)",
            ));
        }
        Ok(())
    }

    fn state_of(&self, sim: &Sim, now: Instant) -> RunState {
        if let Some(code) = sim.exited {
            return RunState::Exited(code);
        }
        if now.duration_since(sim.launched) < self.start_delay {
            return RunState::Starting;
        }
        if let Some(after) = self.exit_after
            && now.duration_since(sim.launched) >= self.start_delay + after
        {
            return RunState::Exited(0);
        }
        if sim.doomed {
            RunState::Exited(1)
        } else {
            RunState::Running
        }
    }

    fn observe(&self, workspace: &str, sim: &Sim, now: Instant) -> Observed {
        Observed {
            workspace: workspace.to_owned(),
            handle: sim.handle.clone(),
            state: self.state_of(sim, now),
            expires_at: Some(sim.expires_at),
        }
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpus: true,
            recursive_readonly: true,
            host_dirs: true,
            relaunch: true,
            requeue: false,
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        self.check_available()?;
        if spec.site != self.site {
            return Err(BackendError::refused(format!(
                "spec is for site {} but this backend serves {}",
                spec.site, self.site
            )));
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(sim) = inner.workspaces.get(spec.workspace.as_str()) {
            return Ok(self.observe(&spec.workspace, sim, now));
        }
        if self.exit_after.is_some() {
            std::fs::write(spec.results_dir.join("counts.csv"), FAKE_RESULT).map_err(|e| {
                BackendError::refused(format!(
                    "the simulated command cannot write its result: {e}"
                ))
            })?;
        }
        let doomed = self.failure_rate > 0.0 && inner.rng.gen_range(0.0..1.0) < self.failure_rate;
        let n = self.next_handle.fetch_add(1, Ordering::SeqCst);
        let sim = Sim {
            handle: format!("fake-{}-{n}", self.site),
            launched: now,
            doomed,
            exited: None,
            cpus: spec.resources.cpus,
            memory_mib: spec.resources.memory_mib,
            expires_at: spec.expires_at,
            spec: spec.clone(),
        };
        let seen = self.observe(&spec.workspace, &sim, now);
        inner.workspaces.insert(spec.workspace.to_string(), sim);
        Ok(seen)
    }

    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        self.check_available()?;
        let now = Instant::now();
        Ok(self
            .lock()
            .workspaces
            .get(workspace)
            .map(|sim| self.observe(workspace, sim, now)))
    }

    async fn stop(&self, workspace: &str) -> Result<(), BackendError> {
        self.check_available()?;
        self.lock().workspaces.remove(workspace);
        Ok(())
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        self.check_available()?;
        let now = Instant::now();
        Ok(self
            .lock()
            .workspaces
            .iter()
            .map(|(id, sim)| self.observe(id, sim, now))
            .collect())
    }

    async fn site_load(&self) -> Result<Option<super::SiteLoad>, BackendError> {
        self.check_available()?;
        Ok(self.lock().load)
    }

    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
        self.check_available()?;
        let now = Instant::now();
        let inner = self.lock();
        let Some(sim) = inner.workspaces.get(workspace) else {
            return Ok(None);
        };
        if self.state_of(sim, now) != RunState::Running {
            return Ok(None);
        }
        let running_for = now
            .duration_since(sim.launched)
            .saturating_sub(self.start_delay);
        Ok(Some(UsageSample {
            cpu_seconds: running_for.as_secs_f64() * f64::from(sim.cpus),
            memory_bytes: sim.memory_mib * 1024 * 1024 / RESIDENT_SHARE,
            started_at: chrono::Duration::from_std(running_for)
                .ok()
                .map(|d| chrono::Utc::now() - d),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::suite::example_spec;

    fn site() -> Ident {
        Ident::parse("sim").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn starting_then_running_and_usage_grows_with_cpus() {
        let b = FakeBackend::seeded(site(), Duration::from_secs(5), 0.0, 1);
        let mut spec = example_spec(&site(), "ws-1");
        spec.resources.cpus = 4;
        assert_eq!(b.launch(&spec).await.unwrap().state, RunState::Starting);
        assert_eq!(b.usage("ws-1").await.unwrap(), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            b.inspect("ws-1").await.unwrap().unwrap().state,
            RunState::Running
        );
        let first = b.usage("ws-1").await.unwrap().unwrap().cpu_seconds;
        tokio::time::advance(Duration::from_secs(10)).await;
        let second = b.usage("ws-1").await.unwrap().unwrap().cpu_seconds;
        assert!((second - first - 40.0).abs() < 1e-6, "{first} -> {second}");
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_one_always_exits_with_code_1() {
        let b = FakeBackend::seeded(site(), Duration::from_millis(10), 1.0, 3);
        b.launch(&example_spec(&site(), "ws-1")).await.unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(
            b.inspect("ws-1").await.unwrap().unwrap().state,
            RunState::Exited(1)
        );
    }

    #[tokio::test]
    async fn failure_share_is_roughly_the_rate_and_seeded_runs_repeat() {
        let outcomes = |seed| async move {
            let b = FakeBackend::seeded(site(), Duration::ZERO, 0.3, seed);
            let mut failed = Vec::new();
            for i in 0..200 {
                let id = format!("ws-{i}");
                let seen = b.launch(&example_spec(&site(), &id)).await.unwrap();
                failed.push(seen.state == RunState::Exited(1));
            }
            failed
        };
        let a = outcomes(42).await;
        assert_eq!(a, outcomes(42).await);
        let share = a.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&share), "{share} of 200 failed");
    }

    #[tokio::test]
    async fn counts_launches_exits_and_goes_unavailable() {
        let b = FakeBackend::seeded(site(), Duration::ZERO, 0.0, 1);
        let spec = example_spec(&site(), "ws-1");
        b.launch(&spec).await.unwrap();
        b.launch(&spec).await.unwrap();
        assert_eq!(b.launch_count(), 2);
        assert!(b.exit("ws-1", 3));
        assert!(!b.exit("ws-2", 3));
        assert_eq!(
            b.inspect("ws-1").await.unwrap().unwrap().state,
            RunState::Exited(3)
        );
        b.set_unavailable(true);
        assert!(matches!(
            b.list_managed().await,
            Err(BackendError::Unavailable { .. })
        ));
        b.set_unavailable(false);
        assert_eq!(b.list_managed().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refuses_a_spec_for_another_site() {
        let b = FakeBackend::seeded(site(), Duration::ZERO, 0.0, 1);
        let other = Ident::parse("elsewhere").unwrap();
        assert!(matches!(
            b.launch(&example_spec(&other, "ws-1")).await,
            Err(BackendError::Refused { .. })
        ));
    }
}
