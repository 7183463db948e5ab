//! Carrying out a plan on a backend: verify then prepare then launch, stop then clean up, and
//! the observations that result. A failed stop suppresses the reports planned after it: only
//! positive evidence ends a workspace. Each workspace's steps run in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use basho_core::protocol::{Assignment, Observation};
use basho_core::revocation::VisaId;
use basho_core::visa::TrustedIssuers;
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use tracing::{info, info_span, warn};

use super::hostdirs::{HostDirError, HostDirs, Prepared, WorkspaceRecord};
use super::verify::{Approved, Refusal, verify_assignment};
use super::{Action, StopReason, observation_of};
use crate::backend::{Backend, BackendError, LaunchSpec, Observed};
use crate::catalog::Catalog;
use crate::config::Isolation;
use crate::revocations::{GRANTS_FILE, Grants, record_grants};

/// Why one action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The site's own checks refused the assignment.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Host directories could not be prepared or removed.
    #[error(transparent)]
    HostDir(#[from] HostDirError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Blocking file work did not finish (the runtime is shutting down).
    #[error("host directory work did not finish: {0}")]
    Interrupted(String),
    /// A federated job's partials could not be fetched yet.
    #[error(transparent)]
    Inputs(#[from] crate::inputs::StageError),
}

impl ExecuteError {
    /// Whether trying the same launch again would fail the same way (so it is reported `failed`
    /// instead of retried).
    pub fn is_permanent(&self) -> bool {
        match self {
            ExecuteError::Refused(_) | ExecuteError::HostDir(_) => true,
            ExecuteError::Backend(e) => !matches!(e, BackendError::Unavailable { .. }),
            ExecuteError::Interrupted(_) | ExecuteError::Inputs(_) => false,
        }
    }
}

/// What one pass of actions produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Observations to send.
    pub reports: Vec<Observation>,
    /// Assignments refused for good: not to be tried again unless they change.
    pub refused: Vec<Assignment>,
}

/// Carries out actions for one site on one backend.
pub struct Executor {
    site: Ident,
    backend: Arc<dyn Backend>,
    trusted: TrustedIssuers,
    catalog: Catalog,
    dirs: HostDirs,
    isolation: Isolation,
    meter: Option<Arc<crate::meter::Meter>>,
    site_audit: Option<Arc<crate::site_audit::SiteAudit>>,
    /// The release of each dataset each workspace mounts, as its record says: learnt at launch
    /// (or read once from the record), so a reconcile pass reads no file for it.
    mounted: std::sync::Mutex<BTreeMap<String, BTreeMap<Ident, u32>>>,
    /// When each release that moved workspaces was made, from its manifest.
    made: std::sync::Mutex<BTreeMap<(Ident, u32), DateTime<Utc>>>,
    /// How long a workspace may stay on an older release where it cannot move.
    max_consent_delay: chrono::TimeDelta,
    /// Whether the site lets running workspaces move by requeue (`[consent] requeue`).
    requeue: bool,
    /// Fetches a federated job's released partials for its aggregation step.
    inputs: Option<crate::client::Client>,
}

/// The agent's record of `a` as verified: what `workspace.json` says, releases included.
fn record_of(a: &Assignment, approved: &Approved) -> WorkspaceRecord {
    WorkspaceRecord {
        id: a.id.clone(),
        project: a.project.clone(),
        owner: a.owner.clone(),
        datasets: a.datasets.clone(),
        expires_at: approved.expires_at,
        releases: approved
            .datasets
            .iter()
            .map(|d| (d.id.clone(), d.release))
            .collect(),
    }
}

/// Running workspaces on an older release of a dataset than its current one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OlderRelease {
    /// To launch again on the current release now (the backend can).
    pub moves: BTreeSet<String>,
    /// To start again in place on the current release (the backend can requeue them).
    pub requeues: BTreeSet<String>,
    /// Past the site's `max_delay_s` where the backend cannot move them: to end, with why.
    pub overdue: BTreeMap<String, String>,
}

impl Executor {
    /// An executor for `site`.
    pub fn new(
        site: Ident,
        backend: Arc<dyn Backend>,
        trusted: TrustedIssuers,
        catalog: Catalog,
        dirs: HostDirs,
        isolation: Isolation,
    ) -> Self {
        Self {
            site,
            backend,
            trusted,
            catalog,
            dirs,
            isolation,
            meter: None,
            site_audit: None,
            mounted: Default::default(),
            made: Default::default(),
            requeue: true,
            inputs: None,
            max_consent_delay: chrono::TimeDelta::seconds(
                crate::config::DEFAULT_MAX_CONSENT_DELAY_S as i64,
            ),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The site's catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What runs on the backend, with the recorded expiry filled in where the backend keeps none.
    pub async fn observe(&self) -> Result<Vec<Observed>, BackendError> {
        let mut seen = self.backend.list_managed().await?;
        if seen.iter().any(|o| o.expires_at.is_none()) {
            let dirs = self.dirs.clone();
            seen = tokio::task::spawn_blocking(move || {
                for o in seen.iter_mut().filter(|o| o.expires_at.is_none()) {
                    if basho_core::id::validate(&o.workspace).is_ok() {
                        o.expires_at = dirs.recorded_expiry(&o.workspace);
                    }
                }
                seen
            })
            .await
            .map_err(|e| {
                BackendError::unavailable(format!("reading recorded expiries: {e}")).caused_by(e)
            })?;
        }
        Ok(seen)
    }

    /// Carries out `actions`, one workspace's after another, each workspace's in the order
    /// given. The agent's loop runs [`Executor::execute_one`] per workspace side by side.
    pub async fn execute(&self, actions: Vec<Action>, now: DateTime<Utc>) -> Outcome {
        let mut out = Outcome::default();
        for (_, steps) in by_workspace(actions) {
            let o = self.execute_one(steps, now).await;
            out.reports.extend(o.reports);
            out.refused.extend(o.refused);
        }
        out
    }

    /// Carries out one workspace's `actions` in order. A failed stop suppresses the reports
    /// planned after it.
    pub async fn execute_one(&self, actions: Vec<Action>, now: DateTime<Utc>) -> Outcome {
        let mut out = Outcome::default();
        let mut not_stopped = BTreeSet::new();
        let mut quarantined: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
        for action in actions {
            match action {
                Action::Launch(a) => match self.launch(&a, now).await {
                    Ok(seen) => {
                        let visas: Vec<String> = a
                            .visas
                            .iter()
                            .filter_map(|v| {
                                basho_core::revocation::read_visa(v).map(|(id, _)| id.jti)
                            })
                            .collect();
                        let detail = serde_json::json!({"project": a.project, "owner": a.owner,
                            "datasets": a.datasets, "visas": visas, "expires_at": a.expires_at});
                        self.note("workspace_launched", &a.id, detail).await;
                        out.reports.push(observation_of(&seen, now));
                    }
                    Err(e) if e.is_permanent() => {
                        warn!(workspace = %a.id, project = %a.project, error = %e, "not launching");
                        out.reports.push(Observation {
                            workspace: a.id.clone(),
                            state: State::Failed,
                            message: Some(e.to_string()),
                            at: now,
                            outputs: None,
                        });
                        out.refused.push(*a);
                    }
                    Err(e) => {
                        warn!(workspace = %a.id, error = %e, "launch failed; retrying next pass");
                    }
                },
                Action::Stop { workspace, reason } => {
                    match self.stop_for(&workspace, reason, now).await {
                        Ok(moved) => {
                            info!(workspace = %workspace, ?reason, quarantined = ?moved, "stopped");
                            let detail = serde_json::json!({"reason": format!("{reason:?}"),
                                "quarantined": moved});
                            self.note("workspace_stopped", &workspace, detail).await;
                            if !moved.is_empty() {
                                quarantined.insert(workspace, moved);
                            }
                        }
                        Err(e) => {
                            warn!(workspace = %workspace, ?reason, error = %e, "stop failed; retrying next pass");
                            not_stopped.insert(workspace);
                        }
                    }
                }
                Action::Requeue(a) => match self.requeue(&a, now).await {
                    Ok(releases) => {
                        info!(workspace = %a.id, ?releases, "requeued on its datasets' current release");
                    }
                    Err(e) => {
                        warn!(workspace = %a.id, error = %e,
                            "requeue failed; trying again next pass until [consent] max_delay_s");
                    }
                },
                Action::Report(mut o) => {
                    if let Some(moved) = quarantined.get(&o.workspace) {
                        let list: Vec<String> =
                            moved.iter().map(|p| p.display().to_string()).collect();
                        let message = o.message.get_or_insert_default();
                        message.push_str(&format!(
                            "; its /work and /results are kept in quarantine at the site, \
                             mounted by no workspace: {}",
                            list.join(", ")
                        ));
                    }
                    if !not_stopped.contains(&o.workspace) {
                        out.reports.push(o);
                    }
                }
            }
        }
        out
    }

    /// Verifies `a` for this site, prepares its directories and launches it.
    pub async fn launch(
        &self,
        a: &Assignment,
        now: DateTime<Utc>,
    ) -> Result<Observed, ExecuteError> {
        if a.visas.is_empty() && !self.isolation.tasks_without_visas {
            return Err(Refusal::NoVisa.into());
        }
        let approved = info_span!("verify").in_scope(|| {
            verify_assignment(
                a,
                &self.trusted,
                &self.catalog,
                self.backend.capabilities(),
                now,
            )
        })?;
        let jtis: Vec<&str> = approved.grants.iter().map(|g| g.jti.as_str()).collect();
        info!(workspace = %a.id, project = %a.project, owner = %a.owner, datasets = ?a.datasets,
            visas = ?jtis, expires_at = %approved.expires_at, "grants verified; launching");
        basho_core::crash_point!("agent.launch.verified");
        let record = record_of(a, &approved);
        self.mounted_releases()
            .insert(a.id.clone(), record.releases.clone());
        let grants = Grants {
            project: a.project.clone(),
            owner: a.owner.clone(),
            datasets: a.datasets.clone(),
            visas: approved
                .grants
                .iter()
                .map(|g| VisaId {
                    jti: g.jti.clone(),
                    iat: g.iat,
                    datasets: Some(self.catalog.granting(&a.datasets, |d| d.granted_by(g))),
                })
                .collect(),
        };
        let dirs = self.dirs.clone();
        let span = info_span!("host_dirs");
        let prepared = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let prepared = dirs.prepare(&record)?;
            // What it holds, so the deny-list applies to it also when no desired state names it.
            let state = dirs.state_dir(&record.id);
            record_grants(&state, &grants).map_err(|source| HostDirError {
                action: "write",
                path: state.join(GRANTS_FILE),
                source,
            })?;
            Ok::<_, HostDirError>(prepared)
        })
        .await
        .map_err(|e| ExecuteError::Interrupted(e.to_string()))??;
        basho_core::crash_point!("agent.launch.host_dirs");
        let mut approved = approved;
        if self.requeues() {
            self.link_releases(&a.id, &mut approved.datasets).await?;
        }
        let mut spec = self.spec(a, approved, prepared);
        spec.inputs_dir = self.stage_inputs(a).await?;
        if spec.inputs_dir.is_some() {
            basho_core::crash_point!("agent.inputs.staged");
        }
        match self.backend.launch(&spec).await {
            Ok(seen) => {
                basho_core::crash_point!("agent.launch.started");
                Ok(seen)
            }
            Err(e) => {
                if !matches!(e, BackendError::Unavailable { .. }) {
                    // Nothing runs: the agent's own record of it goes too.
                    let _ = self.remove_state(&a.id).await;
                }
                Err(e.into())
            }
        }
    }

    /// Stages the released partials `a` reads (an aggregation step), answering their directory.
    async fn stage_inputs(
        &self,
        a: &Assignment,
    ) -> Result<Option<std::path::PathBuf>, ExecuteError> {
        let Some(inputs) = a
            .launch
            .as_ref()
            .map(|l| &l.inputs)
            .filter(|i| !i.is_empty())
        else {
            return Ok(None);
        };
        let client = self.inputs.as_ref().ok_or_else(|| {
            crate::inputs::StageError("this agent fetches no partials (no orchestrator)".into())
        })?;
        let dir = crate::inputs::dir(&self.dirs.state_dir(&a.id));
        let fetched = crate::inputs::stage(client, &dir, inputs).await?;
        let files: usize = inputs.iter().map(|i| i.files.len()).sum();
        info!(workspace = %a.id, files, fetched, "partials staged");
        let sites: Vec<&str> = inputs.iter().map(|i| i.site.as_str()).collect();
        let releases: Vec<&str> = inputs.iter().map(|i| i.release.as_str()).collect();
        self.note(
            "partials_staged",
            &a.id,
            serde_json::json!({"sites": sites, "releases": releases, "files": files,
                "bytes_fetched": fetched}),
        )
        .await;
        Ok(Some(dir))
    }

    /// Binds `datasets` of workspace `id` through links in its state directory
    /// (`<state>/data/<DATASET>` → the release), each replaced atomically, so a requeue starts it
    /// on what they point at then; each mount's `host_path` becomes its link.
    async fn link_releases(
        &self,
        id: &str,
        datasets: &mut [crate::backend::DatasetMount],
    ) -> Result<(), ExecuteError> {
        let dir = self.dirs.state_dir(id).join("data");
        let targets: Vec<(Ident, std::path::PathBuf)> = datasets
            .iter()
            .map(|d| (d.id.clone(), d.host_path.clone()))
            .collect();
        let links = tokio::task::spawn_blocking(move || {
            let err = |path: &std::path::Path| {
                let path = path.to_owned();
                move |source| HostDirError {
                    action: "link",
                    path,
                    source,
                }
            };
            std::fs::create_dir_all(&dir).map_err(err(&dir))?;
            let mut links = Vec::new();
            for (d, target) in targets {
                let link = dir.join(d.as_str());
                let tmp = dir.join(format!(".{d}.link"));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&target, &tmp).map_err(err(&tmp))?;
                std::fs::rename(&tmp, &link).map_err(err(&link))?;
                links.push(link);
            }
            Ok::<_, HostDirError>(links)
        })
        .await
        .map_err(|e| ExecuteError::Interrupted(e.to_string()))??;
        for (d, link) in datasets.iter_mut().zip(links) {
            d.host_path = link;
        }
        Ok(())
    }

    /// Starts running workspace `a` again in place on its datasets' current releases: its grants
    /// verified again, its dataset links re-pointed, the backend's requeue, and only then its
    /// record (`workspace.json`) and what the agent reports of it. The releases it now mounts.
    pub async fn requeue(
        &self,
        a: &Assignment,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<Ident, u32>, ExecuteError> {
        basho_core::id::validate(&a.id)
            .map_err(|e| ExecuteError::Interrupted(format!("workspace id: {e}")))?;
        let mut approved = verify_assignment(
            a,
            &self.trusted,
            &self.catalog,
            self.backend.capabilities(),
            now,
        )?;
        self.link_releases(&a.id, &mut approved.datasets).await?;
        self.backend.requeue(&a.id).await?;
        let record = record_of(a, &approved);
        let releases = record.releases.clone();
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || dirs.prepare(&record))
            .await
            .map_err(|e| ExecuteError::Interrupted(e.to_string()))??;
        self.mounted_releases()
            .insert(a.id.clone(), releases.clone());
        self.note(
            "workspace_moved",
            &a.id,
            serde_json::json!({"releases": releases, "by": "requeue"}),
        )
        .await;
        Ok(releases)
    }

    /// The launch spec of a verified, prepared assignment.
    pub fn spec(&self, a: &Assignment, approved: Approved, prepared: Prepared) -> LaunchSpec {
        let datasets = a
            .datasets
            .iter()
            .map(Ident::as_str)
            .collect::<Vec<_>>()
            .join(",");
        LaunchSpec {
            workspace: approved.workspace,
            project: a.project.clone(),
            site: self.site.clone(),
            image: approved.image,
            command: a.command.clone(),
            workdir: a.launch.as_ref().and_then(|l| l.workdir.clone()),
            datasets: approved.datasets,
            work_dir: prepared.work_dir,
            results_dir: prepared.results_dir,
            inputs_dir: None,
            workspace_json: prepared.workspace_json,
            env: [
                ("BASHO_WORKSPACE".into(), a.id.clone()),
                ("BASHO_PROJECT".into(), a.project.to_string()),
                ("BASHO_DATASETS".into(), datasets),
            ]
            .into_iter()
            .chain(a.launch.iter().flat_map(|l| l.env.clone()))
            .collect(),
            resources: a.resources,
            expires_at: approved.expires_at,
            user: self.isolation.user.clone(),
            pids_limit: self.isolation.pids_limit,
            tmp_size_mib: self.isolation.tmp_size_mib,
        }
    }

    /// Fetches federated jobs' partials through `client`.
    pub fn with_inputs(mut self, client: crate::client::Client) -> Self {
        self.inputs = Some(client);
        self
    }

    /// Meters workspaces once more just before stopping them.
    pub fn with_meter(mut self, meter: Arc<crate::meter::Meter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Records launches and stops in the site's own audit log.
    pub fn with_site_audit(mut self, log: Arc<crate::site_audit::SiteAudit>) -> Self {
        self.site_audit = Some(log);
        self
    }

    /// The running workspaces among `actual` (and `desired`) that mount an older release of a
    /// dataset than its current one: a consent withdrawal made a new release since they
    /// launched. Where the backend can launch a workspace again (Docker) they are to move at
    /// once; elsewhere (a Slurm job runs once) one still on the older release `max_delay` after
    /// the newer one was made is overdue, and ends, with why.
    pub fn on_older_release(
        &self,
        desired: &[Assignment],
        actual: &[Observed],
        now: DateTime<Utc>,
    ) -> OlderRelease {
        let mut out = OlderRelease::default();
        let running: BTreeSet<&str> = actual
            .iter()
            .filter(|o| o.state == crate::backend::RunState::Running)
            .map(|o| o.workspace.as_str())
            .collect();
        let relaunch = self.backend.capabilities().relaunch;
        let mut current: BTreeMap<&basho_core::Ident, u32> = BTreeMap::new();
        for a in desired.iter().filter(|a| running.contains(a.id.as_str())) {
            let newer: Vec<(&basho_core::Ident, u32)> = a
                .datasets
                .iter()
                .map(|d| {
                    let n = *current.entry(d).or_insert_with(|| {
                        self.catalog
                            .dataset(d)
                            .map_or(1, |ds| self.catalog.current_release(d, ds).0)
                    });
                    (d, n)
                })
                .filter(|(_, n)| *n > 1)
                .collect();
            if newer.is_empty() || basho_core::id::validate(&a.id).is_err() {
                continue;
            }
            let Some(releases) = self.releases_of(&a.id) else {
                continue;
            };
            let behind: Vec<(&Ident, u32, u32)> = newer
                .iter()
                .filter_map(|(d, n)| {
                    let on = releases.get(*d).copied().unwrap_or(1);
                    (on < *n).then_some((*d, on, *n))
                })
                .collect();
            let Some(&(d, on, n)) = behind.first() else {
                continue;
            };
            if relaunch {
                out.moves.insert(a.id.clone());
                continue;
            }
            let made = self.made_at(d, on + 1).unwrap_or(now);
            if now - made < self.max_consent_delay {
                // Until the deadline, a backend that can start it again in place does; one whose
                // requeue fails is tried again each pass.
                if self.requeues() {
                    out.requeues.insert(a.id.clone());
                }
            } else {
                out.overdue.insert(
                    a.id.clone(),
                    format!(
                        "stopped: a consent withdrawal made release {n} of {d}, and this \
                         workspace, on release {on}, could not move to it within the site's \
                         max_delay_s ({} s); start a new one to work on release {n}",
                        self.max_consent_delay.num_seconds()
                    ),
                );
            }
        }
        out
    }

    /// When release `n` of `dataset` was made current, from its manifest (read once).
    fn made_at(&self, dataset: &Ident, n: u32) -> Option<DateTime<Utc>> {
        let mut known = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = known.get(&(dataset.clone(), n)) {
            return Some(*at);
        }
        let at = self
            .catalog
            .releases(dataset)?
            .manifests()
            .into_iter()
            .find(|m| m.release == n)?
            .made_at;
        known.insert((dataset.clone(), n), at);
        Some(at)
    }

    /// Whether running workspaces move to a new release by the backend's requeue.
    fn requeues(&self) -> bool {
        self.requeue && self.backend.capabilities().requeue
    }

    /// Moves running workspaces by the backend's requeue where it can (builder; default true).
    pub fn with_requeue(mut self, requeue: bool) -> Self {
        self.requeue = requeue;
        self
    }

    /// How long a workspace may stay on an older release where it cannot be moved (builder).
    pub fn with_max_consent_delay(mut self, delay: std::time::Duration) -> Self {
        self.max_consent_delay =
            chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
        self
    }

    /// The release of each dataset workspace `id` mounts: learnt at its launch, or read once
    /// from its record; `None` when it has none (not launched by this site, or not a valid id).
    fn releases_of(&self, id: &str) -> Option<BTreeMap<Ident, u32>> {
        if let Some(r) = self.mounted_releases().get(id) {
            return Some(r.clone());
        }
        basho_core::id::validate(id).ok()?;
        let path = self.dirs.state_dir(id).join("workspace.json");
        let record = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<WorkspaceRecord>(&b).ok())?;
        self.mounted_releases()
            .entry(id.to_owned())
            .or_insert(record.releases)
            .clone()
            .into()
    }

    /// The release of each dataset each workspace mounts: those launched (from the moment
    /// their launch began until they are stopped) and those of `running`.
    pub fn mounted_by<'a>(
        &self,
        running: impl IntoIterator<Item = &'a str>,
    ) -> crate::consent::report::Mounted {
        let mut out = self.mounted_releases().clone();
        for id in running {
            if !out.contains_key(id)
                && let Some(r) = self.releases_of(id)
            {
                out.insert(id.to_owned(), r);
            }
        }
        out
    }

    fn mounted_releases(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<Ident, u32>>> {
        self.mounted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the site's audit log, if there is one; what it records already happened, so
    /// a failure is logged.
    async fn note(&self, action: &'static str, workspace: &str, detail: serde_json::Value) {
        let Some(log) = &self.site_audit else {
            return;
        };
        if let Err(e) = log.record(action, workspace, detail).await {
            warn!(workspace, action, error = %e, "not written to the site's audit log");
        }
    }

    /// Stops `workspace` on the backend (metering it a last time first), then removes the
    /// agent's own directory of it.
    pub async fn stop(&self, workspace: &str) -> Result<(), ExecuteError> {
        self.stop_for(workspace, StopReason::NotDesired, Utc::now())
            .await
            .map(drop)
    }

    /// [`Executor::stop`] for `reason`: a workspace stopped as revoked has its `/work` and
    /// `/results` quarantined before its record goes (where they went, for its report).
    async fn stop_for(
        &self,
        workspace: &str,
        reason: StopReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<std::path::PathBuf>, ExecuteError> {
        if let Some(m) = &self.meter {
            m.sample(workspace).await;
        }
        self.backend.stop(workspace).await?;
        basho_core::crash_point!("agent.stop.removed");
        // A label is not to be trusted as a path component.
        let mut moved = Vec::new();
        if reason == StopReason::Revoked
            && self.backend.capabilities().host_dirs
            && basho_core::id::validate(workspace).is_ok()
        {
            let dirs = self.dirs.clone();
            let ws = workspace.to_owned();
            moved = tokio::task::spawn_blocking(move || dirs.quarantine(&ws, now))
                .await
                .map_err(|e| ExecuteError::Interrupted(e.to_string()))??;
        }
        self.remove_state(workspace).await?;
        Ok(moved)
    }

    async fn remove_state(&self, workspace: &str) -> Result<(), ExecuteError> {
        self.mounted_releases().remove(workspace);
        // A label is not to be trusted as a path component.
        if basho_core::id::validate(workspace).is_err() {
            return Ok(());
        }
        let dirs = self.dirs.clone();
        let ws = workspace.to_owned();
        tokio::task::spawn_blocking(move || dirs.remove(&ws))
            .await
            .map_err(|e| ExecuteError::Interrupted(e.to_string()))??;
        Ok(())
    }
}

/// `actions` grouped by the workspace they act on, each group in its original order, groups in
/// the order their workspace first appears.
pub fn by_workspace(actions: Vec<Action>) -> Vec<(String, Vec<Action>)> {
    let mut groups: Vec<(String, Vec<Action>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for action in actions {
        let ws = action.workspace().to_owned();
        match index.get(&ws) {
            Some(&i) => groups[i].1.push(action),
            None => {
                index.insert(ws.clone(), groups.len());
                groups.push((ws, vec![action]));
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests;
