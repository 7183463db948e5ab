//! The Docker backend: one container per workspace, found again by its labels, created with every
//! isolation default of the design (no network, no capabilities, read-only root, non-root user,
//! limits) and never pulling an image.

mod cgroup;
pub mod config;
mod error;
mod exec;
mod load;
pub(crate) mod spec;
mod state;
mod watch;

use std::collections::HashMap;

use async_trait::async_trait;
use basho_core::{Ident, LABEL_NAMESPACE, LABEL_SITE, LABEL_WORKSPACE};
use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use tracing::{debug, info, instrument, warn};

use super::{Backend, BackendError, Capabilities, LaunchSpec, Observed, RunState, UsageSample};

use error::{is_conflict, is_not_found, unavailable};
pub use spec::container_name;

/// The first engine API version with `BindOptions.ReadOnlyForceRecursive`.
const RECURSIVE_READONLY_API: (usize, usize) = (1, 44);
/// Seconds a workspace gets to exit after SIGTERM before the engine kills it.
const STOP_TIMEOUT_S: i32 = 5;
/// How often, and how far apart, a create conflict is resolved by looking up the name.
const ADOPT_ATTEMPTS: u32 = 50;
const ADOPT_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Sockets that give control of the host; never bound into a workspace, nor any parent of them.
const WELL_KNOWN_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];

/// A site's workspaces as containers on one Docker engine. Several agents (sites) may share an
/// engine: each sees only containers labelled with its own site.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    docker: Docker,
    site: Ident,
    namespace: Option<String>,
    api: (usize, usize),
    /// Host paths of engine sockets, refused as mount sources (and their parents).
    sockets: Vec<String>,
    /// `basho-init` on the host, the first process of every workspace when set.
    init: Option<std::path::PathBuf>,
    /// The engine's events of this site's containers, watched from the first `changed`.
    watch: watch::Watch,
}

impl DockerBackend {
    /// Connects to the engine at `socket` (a path or `unix://` URL; the local default when
    /// `None`) and negotiates the API version, so older engines are spoken to in their own terms.
    pub async fn connect(socket: Option<&str>, site: Ident) -> Result<DockerBackend, BackendError> {
        let docker = match socket {
            Some(s) => Docker::connect_with_local(s, 120, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|e| {
            BackendError::unavailable(format!(
                "cannot set up a connection to the docker engine at {}: {e}; check \
                 backend.socket in the site config",
                socket.unwrap_or("the default socket")
            ))
            .caused_by(e)
        })?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            BackendError::unavailable(format!(
                "cannot reach the docker engine at {}: {e}; is dockerd running and may the \
                 agent's user use its socket?",
                socket.unwrap_or("the default socket")
            ))
            .caused_by(e)
        })?;
        let version = docker.client_version();
        let api = (version.major_version, version.minor_version);
        let mut sockets: Vec<String> = WELL_KNOWN_SOCKETS.iter().map(|s| s.to_string()).collect();
        if let Some(s) = socket {
            sockets.push(s.trim_start_matches("unix://").to_string());
        }
        if let Ok(host) = std::env::var("DOCKER_HOST")
            && let Some(path) = host.strip_prefix("unix://")
        {
            sockets.push(path.to_string());
        }
        info!(site = %site, api = %format!("{}.{}", api.0, api.1), "connected to docker engine");
        Ok(DockerBackend {
            docker,
            site,
            namespace: None,
            api,
            sockets,
            init: None,
            watch: watch::Watch::default(),
        })
    }

    /// Restricts this backend to containers labelled `io.basho.namespace=<namespace>` and labels
    /// the ones it creates so; `None` manages every container of the site.
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Runs every workspace under `init` (`basho-init`), which ends it at its expiry even while
    /// no agent runs; `None` leaves expiry to the agent.
    pub fn with_init(mut self, init: Option<std::path::PathBuf>) -> Self {
        if init.is_none() {
            tracing::warn!(site = %self.site, "no backend.init: a workspace outlives its expiry \
                for as long as the agent is down; set it to basho-init (scripts/build-init)");
        }
        self.init = init;
        self
    }

    /// The engine API version in use after negotiation, as `(major, minor)`.
    pub fn api_version(&self) -> (usize, usize) {
        self.api
    }

    /// The underlying client, for callers that build on the same connection (the dev image).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn recursive_readonly(&self) -> bool {
        self.api >= RECURSIVE_READONLY_API
    }

    /// This site's containers, all of them or only the one of `workspace`.
    async fn find(&self, workspace: Option<&str>) -> Result<Vec<ContainerSummary>, BackendError> {
        let mut labels = vec![format!("{LABEL_SITE}={}", self.site)];
        if let Some(ns) = &self.namespace {
            labels.push(format!("{LABEL_NAMESPACE}={ns}"));
        }
        match workspace {
            Some(ws) => labels.push(format!("{LABEL_WORKSPACE}={ws}")),
            None => labels.push(LABEL_WORKSPACE.to_string()),
        }
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| unavailable("list containers", e))
    }

    /// The one container of `workspace` on this site, if any.
    async fn find_one(&self, workspace: &str) -> Result<Option<ContainerSummary>, BackendError> {
        let mut found = self.find(Some(workspace)).await?;
        if found.len() > 1 {
            // The container name is unique per engine, so this needs a hand-made duplicate.
            warn!(
                workspace,
                count = found.len(),
                "several containers carry this workspace's labels"
            );
        }
        Ok(if found.is_empty() {
            None
        } else {
            Some(found.swap_remove(0))
        })
    }

    /// Starts a container created earlier (idempotent: an already running one is fine).
    async fn start(&self, workspace: &str, id: &str) -> Result<(), BackendError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if error::is_not_modified(&e) => Ok(()),
            Err(e) if error::is_server_refusal(&e) => {
                // The runtime refused the configuration (bad mount source, limits the kernel
                // cannot apply): retrying the same container would fail the same way.
                warn!(workspace, error = %e, "engine refused to start the container; removing it");
                let _ = self.remove(id).await;
                Err(BackendError::refused(format!(
                    "the engine could not start the workspace container: {e}; check the dataset, \
                     work and results paths and the limits in the site config"
                ))
                .caused_by(e))
            }
            Err(e) => Err(unavailable("start container", e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone already, or another caller is removing it right now.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(unavailable("remove container", e)),
        }
    }

    /// The container as `Observed`, asking the engine for the exit code when it has one.
    async fn observe(&self, summary: &ContainerSummary) -> Result<Option<Observed>, BackendError> {
        let Some(id) = summary.id.as_deref() else {
            return Ok(None);
        };
        let mut observed = state::from_summary(summary);
        if matches!(observed.state, RunState::Exited(_)) {
            match self.docker.inspect_container(id, None).await {
                Ok(details) => observed.state = state::state_of(details.state.as_ref()),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(unavailable("inspect container", e)),
            }
        }
        Ok(Some(observed))
    }

    /// Takes over the container holding the workspace's name after a create conflict: a
    /// concurrent launch of the same workspace, which the engine may still be creating (the name
    /// is reserved before the container shows up), or a container of another site.
    async fn adopt(&self, workspace: &str) -> Result<Observed, BackendError> {
        let name = container_name(workspace);
        for _ in 0..ADOPT_ATTEMPTS {
            let details = match self.docker.inspect_container(&name, None).await {
                Ok(details) => details,
                Err(e) if is_not_found(&e) => {
                    tokio::time::sleep(ADOPT_POLL).await;
                    continue;
                }
                Err(e) => return Err(unavailable("inspect container", e)),
            };
            let labels = details.config.as_ref().and_then(|c| c.labels.as_ref());
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            let namespace_ok = self
                .namespace
                .as_deref()
                .is_none_or(|ns| label(LABEL_NAMESPACE) == Some(ns));
            if label(LABEL_SITE) != Some(self.site.as_str())
                || label(LABEL_WORKSPACE) != Some(workspace)
                || !namespace_ok
            {
                return Err(BackendError::refused(format!(
                    "container name {name} is taken by a container this site does not manage \
                     (another site, or another agent namespace, on the same engine?); remove it with `docker rm -f {name}`"
                )));
            }
            let id = details.id.clone().unwrap_or_default();
            let created = details.state.as_ref().and_then(|s| s.status)
                == Some(ContainerStateStatusEnum::CREATED);
            if !created {
                return Ok(state::from_inspect(workspace, &details));
            }
            debug!(workspace, container = %id, "starting container of a concurrent launch");
            return self.start_and_observe(workspace, &id).await;
        }
        Err(BackendError::unavailable(format!(
            "container name {name} is reserved but no container appeared; try again"
        )))
    }

    /// Starts a created container and answers what the engine then shows of it.
    async fn start_and_observe(&self, workspace: &str, id: &str) -> Result<Observed, BackendError> {
        self.start(workspace, id).await?;
        let details = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| unavailable("inspect container", e))?;
        Ok(state::from_inspect(workspace, &details))
    }

    async fn ensure_started(
        &self,
        workspace: &str,
        summary: ContainerSummary,
    ) -> Result<Observed, BackendError> {
        let id = summary.id.clone().unwrap_or_default();
        if summary.state == Some(ContainerSummaryStateEnum::CREATED) {
            debug!(workspace, container = %id, "starting existing container");
            return self.start_and_observe(workspace, &id).await;
        }
        self.observe(&summary).await?.ok_or_else(|| {
            BackendError::unavailable(format!("container {id} vanished while being adopted"))
        })
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpus: false,
            recursive_readonly: self.recursive_readonly(),
            host_dirs: true,
            relaunch: true,
            requeue: false,
        }
    }

    #[instrument(skip_all, fields(workspace = %spec.workspace, site = %self.site))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        if spec.site != self.site {
            return Err(BackendError::refused(format!(
                "workspace is for site {} but this backend serves site {}",
                spec.site, self.site
            )));
        }
        // Validate before looking anything up: a bad spec must fail the same way every time.
        let checked = spec::check(spec, &self.sockets).await?;
        if let Some(existing) = self.find_one(&spec.workspace).await? {
            debug!("container already there");
            return self.ensure_started(&spec.workspace, existing).await;
        }
        match self.docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(BackendError::refused(format!(
                    "image {} is not present on this engine; sites load images locally, nothing is \
                     pulled (load it with `docker load` and pin its ID in the site's images)",
                    spec.image
                )));
            }
            Err(e) => return Err(unavailable("inspect image", e)),
        }
        let mut body = spec::container_body(spec, &checked, self.recursive_readonly());
        if let Some(init) = &self.init {
            spec::with_init(&mut body, init, spec.expires_at, &self.sockets).await?;
        }
        if let (Some(ns), Some(labels)) = (&self.namespace, body.labels.as_mut()) {
            labels.insert(LABEL_NAMESPACE.to_string(), ns.clone());
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&container_name(&spec.workspace))
            .build();
        let id = match self.docker.create_container(Some(options), body).await {
            Ok(created) => {
                for warning in &created.warnings {
                    warn!(warning = %warning, "engine warning on create");
                }
                created.id
            }
            // Same name: a concurrent launch won the race, or another site owns the name.
            Err(e) if is_conflict(&e) => return self.adopt(&spec.workspace).await,
            Err(e) if error::is_client_error(&e) => {
                return Err(BackendError::refused(format!(
                    "the engine refused the workspace container: {e}"
                ))
                .caused_by(e));
            }
            Err(e) => return Err(unavailable("create container", e)),
        };
        info!(container = %id, "created workspace container");
        basho_core::crash_point!("agent.launch.created");
        self.start(&spec.workspace, &id).await?;
        let details = self
            .docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| unavailable("inspect container", e))?;
        Ok(state::from_inspect(&spec.workspace, &details))
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        match self.find_one(workspace).await? {
            Some(summary) => self.observe(&summary).await,
            None => Ok(None),
        }
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn stop(&self, workspace: &str) -> Result<(), BackendError> {
        for summary in self.find(Some(workspace)).await? {
            let Some(id) = summary.id.as_deref() else {
                continue;
            };
            let options = StopContainerOptionsBuilder::default()
                .t(STOP_TIMEOUT_S)
                .build();
            match self.docker.stop_container(id, Some(options)).await {
                Ok(()) => {}
                Err(e) if error::is_not_modified(&e) || is_not_found(&e) => {}
                Err(e) => return Err(unavailable("stop container", e)),
            }
            basho_core::crash_point!("agent.stop.stopped");
            self.remove(id).await?;
            info!(container = %id, "stopped and removed workspace container");
        }
        Ok(())
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        let mut out = Vec::new();
        for summary in self.find(None).await? {
            if let Some(observed) = self.observe(&summary).await? {
                out.push(observed);
            }
        }
        Ok(out)
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn changed(&self) {
        self.watch.changed(&self.docker, &self.site).await;
    }

    async fn close(&self) {
        self.watch.close();
    }

    async fn site_load(&self) -> Result<Option<super::SiteLoad>, BackendError> {
        self.host_load().await.map(Some)
    }

    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
        let Some(summary) = self.find_one(workspace).await? else {
            return Ok(None);
        };
        if state::from_summary(&summary).state != RunState::Running {
            return Ok(None);
        }
        let id = summary.id.unwrap_or_default();
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let state = match self.docker.inspect_container(&id, None).await {
            Ok(c) => c.state.unwrap_or_default(),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(unavailable("inspect container", e)),
        };
        let started_at = state
            .started_at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        // procfs and cgroupfs reads are answered from kernel memory: nothing to offload.
        if let Some((cpu_seconds, memory_bytes)) = cgroup::usage(state.pid.unwrap_or(0), &id) {
            return Ok(Some(UsageSample {
                cpu_seconds,
                memory_bytes,
                started_at,
            }));
        }
        let mut stats = self.docker.stats(&id, Some(options));
        match stats.next().await {
            Some(Ok(sample)) => Ok(Some(UsageSample {
                started_at,
                ..state::usage_of(&sample)
            })),
            Some(Err(e)) if is_not_found(&e) => Ok(None),
            Some(Err(e)) => Err(unavailable("read container stats", e)),
            None => Ok(None),
        }
    }

    async fn exec(
        &self,
        workspace: &str,
        req: &crate::backend::exec::ExecRequest,
    ) -> Result<crate::backend::exec::ExecIo, BackendError> {
        exec::start(self, workspace, req).await
    }
}
