//! The agent's main loop: a poller task fetches the desired state, a reporter task posts
//! observations, and this loop reconciles whenever the desired state changes and every couple of
//! seconds besides, so exits, crashes and expiries are seen without the orchestrator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use basho_core::State;
use basho_core::protocol::{Assignment, Observation, Registration};
use basho_core::revocation::Revocation;
use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Error;
use crate::backend::{Backend, BackendError, Observed};
use crate::catalog::Catalog;
use crate::client::Client;
use crate::config::SiteConfig;
use crate::meter::{Meter, Metered};
use crate::metrics::{InstrumentedBackend, Metrics};
use crate::reconcile::execute::Outcome;
use crate::reconcile::hostdirs::{HostDirs, Ownership};
use crate::reconcile::{Action, Executor, by_workspace, plan, plan_before_sync};
use crate::revocations::{self, DenyList, Grants, recorded_grants};

mod outputs;
pub mod poll;
mod releases;
pub mod report;

use poll::Fetched;
use report::Outbox;

/// How often the backend is looked at when nothing else happens.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Longest the agent's shutdown waits for launches and stops under way, and then for its
/// background tasks: long enough for a Slurm command's timeout, short enough for a supervisor's
/// stop timeout.
pub const DRAIN_GRACE: Duration = Duration::from_secs(60);

/// What the agent serves beyond sessions: the airlock always; a federated job's aggregation only
/// where the backend binds the agent's own directories (it stages the partials there).
fn features(capabilities: crate::backend::Capabilities) -> Vec<String> {
    let mut features = vec![basho_core::release::FEATURE_AIRLOCK.to_owned()];
    if capabilities.host_dirs {
        features.push(basho_core::federated::FEATURE_FEDERATED.to_owned());
    }
    features
}

/// Waits for the tasks of `busy`, each handed to `finished`, for at most `grace`; the ones still
/// running then are aborted. How many were abandoned.
async fn drain<T: 'static>(
    busy: &mut JoinSet<T>,
    grace: Duration,
    mut finished: impl FnMut(Result<T, tokio::task::JoinError>),
) -> usize {
    let deadline = tokio::time::Instant::now() + grace;
    while !busy.is_empty() {
        match tokio::time::timeout_at(deadline, busy.join_next()).await {
            Ok(Some(done)) => finished(done),
            Ok(None) => break,
            Err(_) => {
                let left = busy.len();
                busy.abort_all();
                return left;
            }
        }
    }
    0
}

/// Says, one line per workspace, what the agent found on the backend when it (re)started and
/// what it does about it: after a crash this is the record of how each workspace converged.
fn account_for(actual: &[Observed], actions: &[Action]) {
    let found: BTreeMap<&str, &Observed> =
        actual.iter().map(|o| (o.workspace.as_str(), o)).collect();
    let mut did: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in actions {
        did.entry(a.workspace()).or_default().push(match a {
            Action::Launch(_) => "launch (grants verified again)".to_owned(),
            Action::Stop { reason, .. } => format!("stop ({reason:?})"),
            Action::Report(o) => format!("report {}", o.state),
            Action::Requeue(_) => "requeue on the current release".to_owned(),
        });
    }
    for id in found
        .keys()
        .copied()
        .chain(did.keys().copied())
        .collect::<BTreeSet<_>>()
    {
        let seen = found.get(id).map_or("nothing".to_owned(), |o| {
            format!("{:?} ({})", o.state, o.handle)
        });
        let steps = did.get(id).map_or(
            "nothing yet (a launch or stop is under way)".to_owned(),
            |d| d.join(", then "),
        );
        info!(workspace = id, found = %seen, action = %steps, "at start");
    }
}

/// Runs the agent for `config` on `backend` until `shutdown`. Workspaces keep running after.
pub async fn run(
    config: SiteConfig,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let token = config.token()?;
    let trusted = config.load_trusted_issuers().map_err(Error::Issuers)?;
    let (uid, gid) = config.isolation.ids()?;
    let metrics = Arc::new(Metrics::new(config.site.as_str(), backend.kind()));
    let backend: Arc<dyn Backend> = Arc::new(InstrumentedBackend::new(backend, metrics.clone()));
    let consent_api = config.consent.api().await.map_err(Error::ConsentApi)?;
    let metrics_listener = match &config.metrics {
        Some(m) => Some(crate::metrics::bind(m).await?),
        None => None,
    };
    let client = Client::new(
        &config.orchestrator.url,
        &token,
        &config.orchestrator.tls_policy(),
    )?
    .with_metrics(metrics.clone());
    let catalog = Catalog::from_config(&config);
    let site = config.site.clone();
    let ownership = Ownership::for_user(uid, gid);
    if ownership == Ownership::WorldWritable {
        warn!(user = %config.isolation.user,
            "agent is not root: /work and /results directories are made world-writable instead of \
             being chowned to the workspace user; run the agent as root on a real site");
    }
    let key = Arc::new(crate::session_key(&config)?);
    let offer = crate::capacity::current(&config.capacity, backend.as_ref()).await;
    info!(
        cpus = offer.capacity.cpus,
        memory_mib = offer.capacity.memory_mib,
        gpus = offer.capacity.gpus,
        ceiling_cpus = offer.ceiling.cpus,
        note = offer.note.as_deref().unwrap_or(""),
        "capacity offered"
    );
    let (offers, offered) = watch::channel(offer.clone());
    let registration = Registration {
        site: site.clone(),
        backend: backend.kind().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        datasets: catalog.inventory(),
        capacity: offer.capacity,
        ceiling: Some(offer.ceiling),
        capacity_note: offer.note.clone(),
        images: catalog.image_names(),
        start_timeout_s: config.reconcile.start_timeout_s,
        session_key: Some(basho_core::e2e::encode_key(&key.public)),
        features: features(backend.capabilities()),
    };
    let dirs = HostDirs::new(config.paths.clone(), ownership);
    let meter = Arc::new(Meter::open(
        backend.clone(),
        &config.paths.state_dir,
        &config.metering,
    )?);
    let deny_path = config.paths.state_dir.join(revocations::FILE);
    let deny = DenyList::load(&deny_path)?;
    if let Some(dir) = &config.sessions.recording_dir {
        crate::session::recording::prepare(dir).await?;
    }
    let gate = crate::session::proof::Gate::load(&config.sessions, dirs.clone())
        .map_err(Error::Issuers)?;
    let site_audit = Arc::new(crate::site_audit::SiteAudit::open(&config.paths.state_dir)?);
    let gate = Arc::new(gate);
    let store = crate::airlock::Store::open(&config.airlock.store_path(&config.paths.state_dir))
        .map_err(|e| Error::Airlock(e.to_string()))?;
    let desk = crate::airlock::desk::Desk::new(
        dirs.clone(),
        catalog.clone(),
        config.airlock.clone(),
        store,
    );
    let desk = Arc::new(desk);
    let counter = Arc::new(crate::airlock::serve::Counter {
        desk: desk.clone(),
        gate: gate.clone(),
        audit: site_audit.clone(),
    });
    let tunnel = crate::session::Tunnel {
        url: config.orchestrator.url.clone(),
        token: token.clone(),
        tls: config.orchestrator.tls_policy(),
        backend: backend.clone(),
        limits: config.sessions.clone(),
        gate,
        site_audit: site_audit.clone(),
        key,
        counter,
    };
    let consent_catalog = catalog.clone();
    let executor = Executor::new(
        site.clone(),
        backend.clone(),
        trusted,
        catalog,
        dirs.clone(),
        config.isolation.clone(),
    )
    .with_meter(meter.clone())
    .with_site_audit(site_audit.clone())
    .with_max_consent_delay(Duration::from_secs(config.consent.max_delay_s))
    .with_requeue(config.consent.requeue)
    .with_inputs(client.clone());
    info!(site = %site, backend = executor.backend().kind(), orchestrator = %config.orchestrator.url, "agent starting");

    let stop = shutdown.child_token();
    let outbox = Arc::new(Outbox::default());
    let (tx, mut fetched) = watch::channel(None::<Fetched>);
    let tasks = TaskTracker::new();
    if let Some(listener) = metrics_listener {
        tasks.spawn(
            crate::metrics::serve(listener, metrics.clone(), stop.clone())
                .instrument(info_span!("metrics", site = %site)),
        );
    }
    tasks.spawn(
        poll::poll_loop(
            client.clone(),
            registration,
            offered,
            config.orchestrator.poll_wait_s,
            tx,
            stop.clone(),
        )
        .instrument(info_span!("poll", site = %site)),
    );
    tasks.spawn(
        crate::capacity::report_loop(
            offer,
            config.capacity.clone(),
            site.clone(),
            backend.clone(),
            client.clone(),
            offers,
            stop.clone(),
        )
        .instrument(info_span!("capacity", site = %site)),
    );
    let client_for_usage = client.clone();
    let client_for_consent = client.clone();
    tasks.spawn(
        report::post_loop(
            client,
            site.clone(),
            outbox.clone(),
            fetched.clone(),
            stop.clone(),
        )
        .instrument(info_span!("report", site = %site)),
    );
    tasks.spawn(
        meter
            .clone()
            .sample_loop(stop.clone())
            .instrument(info_span!("meter", site = %site)),
    );
    tasks.spawn(
        meter
            .clone()
            .deliver_loop(client_for_usage, site.clone(), stop.clone())
            .instrument(info_span!("usage", site = %site)),
    );
    tasks.spawn(
        tunnel
            .run(stop.clone())
            .instrument(info_span!("tunnel", site = %site)),
    );
    if let Some((listener, token)) = consent_api {
        let router = crate::consent::api::router(
            crate::consent::desk::Spool::new(&config.releases_dir()),
            consent_catalog.clone(),
            &token,
        );
        tasks.spawn(
            crate::consent::api::serve(listener, router, stop.clone())
                .instrument(info_span!("consent_api", site = %site)),
        );
    }
    let (mounted, mounted_rx) = watch::channel(None);
    tasks.spawn(
        crate::consent::report::report_loop(
            client_for_consent,
            site.clone(),
            consent_catalog.clone(),
            crate::consent::desk::Spool::new(&config.releases_dir()),
            mounted_rx,
            stop.clone(),
        )
        .instrument(info_span!("consent_report", site = %site)),
    );
    tasks.spawn(
        crate::consent::desk::apply_loop(
            crate::consent::desk::Spool::new(&config.releases_dir()),
            consent_catalog,
            dirs.clone(),
            site_audit.clone(),
            stop.clone(),
        )
        .instrument(info_span!("consent", site = %site)),
    );
    tasks.close();

    let mut reconciler = Reconciler {
        meter,
        slots: Arc::new(Semaphore::new(config.reconcile.parallel_actions.max(1))),
        executor: Arc::new(executor),
        busy: JoinSet::new(),
        busy_ids: BTreeMap::new(),
        outbox,
        refused: BTreeMap::new(),
        backend_down: false,
        deny,
        deny_path,
        deny_unsaved: false,
        dirs,
        accounted: false,
        desk,
        outputs: BTreeMap::new(),
        site_audit: site_audit.clone(),
        mounted,
        running: Vec::new(),
        requeued: BTreeMap::new(),
    };
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut desired: Option<Vec<Assignment>> = None;
    let mut stopping: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = reconciler.busy.join_next(), if !reconciler.busy.is_empty() => {
                reconciler.finished(done);
                // What it changed is reported; the next pass looks again.
                continue;
            }
            changed = fetched.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = fetched.borrow_and_update().as_ref().map(|f| f.state.clone());
                if let Some(state) = state {
                    if let Some(cp) = state.checkpoint.clone() {
                        let log = site_audit.clone();
                        let kept = tokio::task::spawn_blocking(move || log.checkpoint(&cp)).await;
                        if let Ok(Err(e)) = kept {
                            warn!(error = %e, "the orchestrator's audit checkpoint was not kept");
                        }
                    }
                    reconciler.learn(&state.revocations).await;
                    desired = Some(state.workspaces);
                    stopping = state.stopping;
                }
            }
            _ = tick.tick() => {}
            // A workspace changed by itself (a container exited): look now.
            () = backend.changed() => {}
        }
        let span = info_span!("reconcile", site = %site);
        let started = std::time::Instant::now();
        reconciler
            .pass(desired.as_deref(), &stopping)
            .instrument(span)
            .await;
        metrics.observe_reconcile(started.elapsed());
        metrics.set_workspaces(reconciler.outbox.states());
        metrics.set_journal_pending(reconciler.meter.pending_len() as u64);
    }
    // Launches and stops under way finish, as a pass used to, so nothing is left half-made; one
    // stuck on a backend that never answers must not hold the agent's shutdown forever.
    let mut busy = std::mem::take(&mut reconciler.busy);
    let left = drain(&mut busy, DRAIN_GRACE, |done| reconciler.finished(done)).await;
    if left > 0 {
        let abandoned: Vec<&str> = reconciler.busy_ids.keys().map(String::as_str).collect();
        warn!(
            ?abandoned,
            grace_s = DRAIN_GRACE.as_secs(),
            "launches or stops still under way at shutdown were abandoned; the next start looks at \
             these workspaces again"
        );
    }
    stop.cancel();
    let background = async {
        tasks.wait().await;
        backend.close().await;
    };
    if tokio::time::timeout(DRAIN_GRACE, background).await.is_err() {
        warn!(
            grace_s = DRAIN_GRACE.as_secs(),
            "background tasks (poll, report, meter, usage, sessions, the backend's watch) did not \
             end in time; abandoned"
        );
    }
    info!(site = %site, "agent stopped; workspaces keep running");
    Ok(())
}

struct Reconciler {
    meter: Arc<Meter>,
    executor: Arc<Executor>,
    /// Launches and stops under way, one task per workspace, each reporting as it finishes.
    busy: JoinSet<(String, Outcome)>,
    /// The workspaces of `busy` and their tasks: a pass leaves them alone until it is done.
    busy_ids: BTreeMap<String, tokio::task::Id>,
    /// At most the site's `parallel_actions` tasks touch the backend at once.
    slots: Arc<Semaphore>,
    outbox: Arc<Outbox>,
    /// Assignments refused for good, kept until they change or stop being desired.
    refused: BTreeMap<String, Assignment>,
    backend_down: bool,
    /// Every revocation heard of; applied to each pass, also without the orchestrator.
    deny: DenyList,
    deny_path: PathBuf,
    /// The last save failed: try again on the next pass.
    deny_unsaved: bool,
    dirs: HostDirs,
    /// The first pass that knew the desired state has said, per workspace, what it found.
    accounted: bool,
    /// Takes an ended batch workspace's outputs into the airlock store.
    desk: Arc<crate::airlock::desk::Desk>,
    /// What each desired batch workspace that has outputs takes of its `/results`.
    outputs: BTreeMap<String, basho_core::protocol::Launch>,
    site_audit: Arc<crate::site_audit::SiteAudit>,
    /// The release each running workspace mounts, for the consent report.
    mounted: watch::Sender<Option<crate::consent::report::Mounted>>,
    /// The workspaces the last pass saw running.
    running: Vec<String>,
    /// Workspaces requeued on a new release: when, and whether they have left `running` since.
    requeued: BTreeMap<String, (std::time::Instant, bool)>,
}

impl Reconciler {
    /// One pass; `desired` is `None` until the first desired state has arrived.
    async fn pass(&mut self, desired: Option<&[Assignment]>, stopping: &[String]) {
        let now = Utc::now();
        let actual = match self.executor.observe().await {
            Ok(actual) => actual,
            Err(e) => return self.backend_unavailable(desired, &e, now),
        };
        if std::mem::take(&mut self.backend_down) {
            info!("backend answers again");
        }
        if self.deny_unsaved {
            self.save_deny_list().await;
        }
        let recorded = self.recorded_grants(desired, &actual).await;
        let screened = self.deny.screen(
            desired,
            actual.clone(),
            &recorded,
            self.executor.catalog(),
            now,
        );
        if screened.actions.iter().any(Action::changes) {
            basho_core::crash_point!("agent.revocation.screened");
        }
        let mut actions = screened.actions;
        // One the site stopped as revoked stays revoked, not failed, while it is still listed.
        actions.retain(|a| match a {
            Action::Report(o) if o.state == State::Failed => self
                .outbox
                .latest(&o.workspace)
                .is_none_or(|l| l.state != State::Revoked),
            _ => true,
        });
        actions.extend(match screened.desired.as_deref() {
            Some(d) => plan(d, stopping, &screened.actual, now),
            None => plan_before_sync(&screened.actual, now),
        });
        actions.retain(|a| match a {
            Action::Launch(a) => self.refused.get(&a.id) != Some(&**a),
            _ => true,
        });
        // What the backend showed of a workspace with a task under way is already stale.
        actions.retain(|a| !self.busy_ids.contains_key(a.workspace()));
        if let Some(d) = screened.desired.as_deref() {
            self.reach_current_releases(&mut actions, d, &screened.actual, now);
        }
        self.hide_requeued_starts(&mut actions, &screened.actual);
        if desired.is_some() && !std::mem::replace(&mut self.accounted, true) {
            account_for(&actual, &actions);
        }
        let changes = actions.iter().filter(|a| a.changes()).count();
        debug!(
            desired = desired.map(<[_]>::len),
            actual = actual.len(),
            changes,
            busy = self.busy_ids.len(),
            "reconciling"
        );
        // A batch workspace that ended by itself is reported once its outputs are taken.
        if let Some(d) = screened.desired.as_deref() {
            self.learn_outputs(d);
        }
        self.take_ended_outputs(&mut actions);
        let mut reports = Vec::new();
        for (workspace, steps) in by_workspace(actions) {
            if !steps.iter().any(Action::changes) {
                reports.extend(steps.into_iter().filter_map(|a| match a {
                    Action::Report(o) => Some(o),
                    _ => None,
                }));
                continue;
            }
            self.start(workspace, steps, now);
        }
        self.outbox.record(reports);
        self.meter
            .learn(desired.unwrap_or_default().iter().map(|a| {
                (
                    a.id.clone(),
                    Metered {
                        project: a.project.clone(),
                        resources: a.resources,
                    },
                )
            }));
        if desired.is_some() {
            let live: BTreeSet<&str> = actual.iter().map(|o| o.workspace.as_str()).collect();
            self.meter.forget_except(&live);
            self.running = actual
                .iter()
                .filter(|o| o.state == crate::backend::RunState::Running)
                .map(|o| o.workspace.clone())
                .collect();
            self.publish_mounted();
        }
        if let Some(d) = desired {
            let keep: BTreeSet<&str> = d
                .iter()
                .map(|a| a.id.as_str())
                .chain(actual.iter().map(|o| o.workspace.as_str()))
                .collect();
            self.refused.retain(|id, _| keep.contains(id.as_str()));
            self.outbox.prune(|id| keep.contains(id));
        }
    }

    /// Starts one workspace's launch or stop as its own task.
    fn start(&mut self, workspace: String, steps: Vec<Action>, now: DateTime<Utc>) {
        let (executor, slots) = (self.executor.clone(), self.slots.clone());
        let span = info_span!("actions", workspace = %workspace);
        let key = workspace.clone();
        let task = self.busy.spawn(
            async move {
                let started = std::time::Instant::now();
                // The semaphore is never closed; a permit is always granted in the end.
                let _slot = slots.acquire_owned().await.ok();
                let queued = started.elapsed();
                let out = executor.execute_one(steps, now).await;
                debug!(
                    queued_ms = queued.as_millis() as u64,
                    took_ms = started.elapsed().as_millis() as u64,
                    reports = out.reports.len(),
                    "actions done"
                );
                (workspace, out)
            }
            .instrument(span),
        );
        self.busy_ids.insert(key, task.id());
    }

    /// Takes in what a finished task reports.
    fn finished(&mut self, done: Result<(String, Outcome), tokio::task::JoinError>) {
        let (workspace, out) = match done {
            Ok(done) => done,
            Err(e) => {
                // A task that panicked: the next pass looks at its workspace afresh.
                warn!(error = %e, "a launch or stop task ended without an outcome");
                self.busy_ids.retain(|_, id| *id != e.id());
                return;
            }
        };
        self.busy_ids.remove(&workspace);
        for a in out.refused {
            self.refused.insert(a.id.clone(), a);
        }
        // A launch that saw its batch workspace end already: its outputs first.
        let mut reports = Vec::new();
        for r in out.reports {
            match self.outputs_to_take(&r) {
                Some(launch) => self.take_outputs(r, launch),
                None => reports.push(r),
            }
        }
        self.outbox.record(reports);
        if self.mounted.borrow().is_some() {
            self.publish_mounted();
        }
    }

    /// Adds what the orchestrator sent to the deny-list and saves it when it grew.
    async fn learn(&mut self, revocations: &[Revocation]) {
        if self.deny.merge(revocations) {
            info!(revocations = self.deny.entries().len(), "deny-list updated");
            self.save_deny_list().await;
        }
    }

    async fn save_deny_list(&mut self) {
        let (deny, path) = (self.deny.clone(), self.deny_path.clone());
        let saved = tokio::task::spawn_blocking(move || deny.save(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        self.deny_unsaved = saved.is_err();
        if let Err(e) = saved {
            warn!(error = %e, "deny-list not saved; it applies from memory and is saved again next pass");
        }
    }

    /// What running workspaces that no desired assignment names recorded at launch, so the
    /// deny-list can judge them too (after a restart, while the orchestrator is unreachable).
    async fn recorded_grants(
        &self,
        desired: Option<&[Assignment]>,
        actual: &[Observed],
    ) -> BTreeMap<String, Grants> {
        if self.deny.entries().is_empty() {
            return BTreeMap::new();
        }
        let named: BTreeSet<&str> = desired
            .unwrap_or_default()
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        let unnamed: Vec<String> = actual
            .iter()
            .map(|o| o.workspace.clone())
            .filter(|w| !named.contains(w.as_str()) && basho_core::id::validate(w).is_ok())
            .collect();
        if unnamed.is_empty() {
            return BTreeMap::new();
        }
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || {
            unnamed
                .into_iter()
                .filter_map(|w| recorded_grants(&dirs.state_dir(&w)).map(|g| (w, g)))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// The backend cannot say what runs: every desired workspace is `unknown`, none is `stopped`
    /// and nothing is launched until it answers again.
    fn backend_unavailable(
        &mut self,
        desired: Option<&[Assignment]>,
        e: &BackendError,
        now: DateTime<Utc>,
    ) {
        if !std::mem::replace(&mut self.backend_down, true) {
            warn!(error = %e, "backend does not answer; workspaces are unknown until it does");
        }
        let Some(desired) = desired else { return };
        let unknown = desired
            .iter()
            .filter(|a| !self.refused.contains_key(&a.id))
            // An end already seen stays the end: unknown is for what may still run.
            .filter(|a| {
                !self
                    .outbox
                    .latest(&a.id)
                    .is_some_and(|o| o.state.is_terminal())
            })
            .map(|a| Observation {
                workspace: a.id.clone(),
                state: State::Unknown,
                message: Some(e.to_string()),
                at: now,
                outputs: None,
            })
            .collect();
        self.outbox.record(unknown);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use basho_core::Ident;

    use super::*;

    #[test]
    fn only_a_backend_the_agent_stages_into_offers_to_aggregate() {
        let caps = |host_dirs| crate::backend::Capabilities {
            gpus: false,
            recursive_readonly: true,
            host_dirs,
            relaunch: false,
            requeue: false,
        };
        assert_eq!(features(caps(true)), ["airlock", "federated"]);
        assert_eq!(
            features(caps(false)),
            ["airlock"],
            "Kubernetes: its volumes are not ours"
        );
    }
    use crate::backend::fake::FakeBackend;
    use crate::backend::{Capabilities, LaunchSpec, UsageSample};

    /// The fake, but a stop never returns (an engine or login node that hangs).
    struct StuckStop(FakeBackend);

    #[async_trait]
    impl Backend for StuckStop {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
            self.0.launch(spec).await
        }
        async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
            self.0.inspect(workspace).await
        }
        async fn stop(&self, _workspace: &str) -> Result<(), BackendError> {
            std::future::pending().await
        }
        async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
            self.0.list_managed().await
        }
        async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
            self.0.usage(workspace).await
        }
    }

    /// A stop stuck on the backend holds the drain for the grace and no longer; what finished in
    /// time is handed over.
    #[tokio::test(start_paused = true)]
    async fn the_drain_returns_after_the_grace_with_a_stuck_stop() {
        let site = Ident::parse("sim").unwrap();
        let backend = Arc::new(StuckStop(FakeBackend::new(site, Duration::ZERO, 0.0)));
        let mut busy = JoinSet::new();
        let b = backend.clone();
        busy.spawn(async move { b.stop("ws-stuck").await.map(|()| "ws-stuck") });
        busy.spawn(async { Ok("ws-quick") });
        let started = tokio::time::Instant::now();
        let mut done = Vec::new();
        let left = drain(&mut busy, Duration::from_secs(5), |r| {
            done.push(r.unwrap().unwrap())
        })
        .await;
        assert_eq!(left, 1);
        assert_eq!(done, ["ws-quick"]);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(busy.join_next().await.unwrap().unwrap_err().is_cancelled());
    }
}
