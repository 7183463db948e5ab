//! The seam between the agent and a compute system: one `Backend` trait, one module per backend
//! (`docker`, `slurm`, `kubernetes`, `fake`), chosen at run time from the site config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use basho_core::protocol::Capacity;
use basho_core::{Ident, Resources, WorkspaceId};
use chrono::{DateTime, Utc};

use crate::config::{BackendConfig, ClaimSource, SiteConfig};

pub mod docker;
pub mod exec;
pub mod fake;
pub mod kubernetes;
pub mod slurm;
pub mod suite;

/// The site's own load as a backend sees it: what its nodes have in all, and what work other
/// than basho's holds of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiteLoad {
    /// The compute the backend sees (the engine's host, the partition's nodes).
    pub total: Capacity,
    /// What the site's own work holds of it (rounded up).
    pub others: Capacity,
}

/// What a backend can do, so the agent refuses what it cannot honour instead of degrading silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// GPUs can be passed to workspaces.
    pub gpus: bool,
    /// Read-only dataset mounts are recursive (submounts read-only too).
    pub recursive_readonly: bool,
    /// `/work` and `/results` are the agent's own host directories (so it can quarantine them);
    /// not on Kubernetes, whose volumes the agent does not reach.
    pub host_dirs: bool,
    /// A workspace stopped on purpose can be launched again under the same id (to move it to a
    /// dataset's new release). Not on Slurm, where a workspace's job runs once (an ended one is
    /// its end, never submitted again), nor, untested, on Kubernetes.
    pub relaunch: bool,
    /// A running workspace can be started again in place on a dataset's new release
    /// ([`Backend::requeue`]): its datasets are bound through links in the agent's directory
    /// of it, re-pointed before the requeue. Slurm (`scontrol requeue`).
    pub requeue: bool,
}

/// A dataset bound into the workspace at `/data/<id>`, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetMount {
    /// Dataset ID.
    pub id: Ident,
    /// Where the site keeps it (from the site catalog, never from the orchestrator): the
    /// directory of its current release.
    pub host_path: PathBuf,
    /// That release's number (1: the catalog's own path).
    pub release: u32,
    /// The catalog's PersistentVolumeClaim for it, used instead of `host_path` by the Kubernetes
    /// backend (the other backends only bind `host_path`).
    pub claim: Option<ClaimSource>,
}

/// Everything a backend needs to start one workspace, resolved by the agent from an assignment,
/// the site catalog and the image allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Workspace id (label `io.basho.workspace`, job name `basho-<id>`), checked when the
    /// assignment was verified.
    pub workspace: WorkspaceId,
    /// Project (label `io.basho.project`).
    pub project: Ident,
    /// Site that owns it (label `io.basho.site`).
    pub site: Ident,
    /// The pinned image: an image ID (`sha256:...`) or `name@sha256:...` from the allow-list.
    pub image: String,
    /// Command to run.
    pub command: Vec<String>,
    /// Its working directory; `/work` when none.
    pub workdir: Option<String>,
    /// Approved datasets only.
    pub datasets: Vec<DatasetMount>,
    /// Host directory bound read-write at `/work` (per workspace, or per project where the site
    /// shares it); on Kubernetes its name is the sub-path of the site's work volume.
    pub work_dir: PathBuf,
    /// Host directory bound read-write at `/results` (per workspace).
    pub results_dir: PathBuf,
    /// Host directory bound read-only at `/inputs`: a federated job's released partials, one
    /// directory per site, staged by the agent (an aggregation step, which mounts no dataset).
    pub inputs_dir: Option<PathBuf>,
    /// Host file bound read-only at `/etc/basho/workspace.json`.
    pub workspace_json: PathBuf,
    /// `BASHO_WORKSPACE`, `BASHO_PROJECT`, `BASHO_DATASETS`, then a batch workspace's own.
    pub env: Vec<(String, String)>,
    /// CPU, memory, GPU limits.
    pub resources: Resources,
    /// When the workspace must end.
    pub expires_at: DateTime<Utc>,
    /// `uid:gid` the workspace runs as; never root.
    pub user: String,
    /// Process limit.
    pub pids_limit: i64,
    /// Size of the `/tmp` tmpfs.
    pub tmp_size_mib: u64,
}

/// What a backend sees of a workspace it manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// On its way to running: the backend itself will start it (a pending job, a pod being
    /// scheduled, a container the engine is restarting).
    Starting,
    /// Made but never started, and nothing but a launch will start it (a container created by a
    /// launch that was cut short). A desired one is launched again, which starts it; an unwanted
    /// one is removed.
    Created,
    /// Running.
    Running,
    /// Exited by itself with this code.
    Exited(i64),
    /// Could not start and never will as it is (an invalid image name, a container the runtime
    /// cannot create): the reason, for the workspace's failure message.
    Failed(String),
    /// Taken off its compute by the site's own scheduler (Slurm preemption) and requeued: it
    /// runs again by itself, its `/work` kept. Why, for the researcher.
    Preempted(String),
    /// The backend cannot tell.
    Unknown(String),
}

/// One managed workspace as found on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Workspace id, from the label or job name.
    pub workspace: String,
    /// Backend's own handle (container id, job id, pod name).
    pub handle: String,
    /// Its state.
    pub state: RunState,
    /// Expiry from the label, when the backend keeps it.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One sample of what a workspace used, for metering.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UsageSample {
    /// CPU time used since start, seconds.
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// When the workspace started running, where the backend knows: metering starts there.
    pub started_at: Option<DateTime<Utc>>,
}

/// The error a backend failure came from (an engine, API or SSH error), kept for callers that
/// look past the message.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Backend failures. Each says what failed and what an admin can do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached (engine down, API error): state is unknown, not gone.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What failed and what to check, as shown in the workspace's message.
        message: String,
        /// The engine, API or SSH error behind it, when there is one.
        #[source]
        source: Option<Source>,
    },
    /// The backend refused the launch (bad image, bad mount, limits).
    #[error("launch refused: {message}")]
    Refused {
        /// What was refused and what to change, as shown in the workspace's message.
        message: String,
        /// The engine or API answer behind it, when there is one.
        #[source]
        source: Option<Source>,
    },
    /// The backend lacks a capability the workspace needs.
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
}

impl BackendError {
    /// The backend cannot be asked: `message` says what failed and what to check.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// The backend refused: `message` says what and what to change.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::Refused {
            message: message.into(),
            source: None,
        }
    }

    /// The same error, keeping `e` as its source (the message already says what it means).
    #[must_use]
    pub fn caused_by(self, e: impl Into<Source>) -> Self {
        match self {
            Self::Unavailable { message, .. } => Self::Unavailable {
                message,
                source: Some(e.into()),
            },
            Self::Refused { message, .. } => Self::Refused {
                message,
                source: Some(e.into()),
            },
            other @ Self::Unsupported(_) => other,
        }
    }

    /// What the error says, without the kind's prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Unavailable { message, .. } | Self::Refused { message, .. } => message,
            Self::Unsupported(m) => m,
        }
    }
}

/// A compute system the agent drives. Every method is idempotent: launching a workspace that
/// already has a container returns that container; stopping an absent one succeeds.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `docker`, `fake`, ...
    fn kind(&self) -> &'static str;
    /// What it can honour.
    fn capabilities(&self) -> Capabilities;
    /// Starts the workspace (or finds it already there) and returns what it sees.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError>;
    /// The workspace's current state, `None` when the backend has nothing for it.
    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError>;
    /// Stops and removes the workspace; succeeds when there is nothing to stop.
    async fn stop(&self, workspace: &str) -> Result<(), BackendError>;
    /// Every workspace this site manages on the backend (found by label / job name).
    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError>;
    /// A usage sample, `None` when the workspace is not running.
    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError>;
    /// Starts a running workspace again in place (the same job, its `/work` and `/results`),
    /// so it binds what its dataset links point at now. Only where
    /// [`Capabilities::requeue`] says so.
    async fn requeue(&self, workspace: &str) -> Result<(), BackendError> {
        Err(BackendError::refused(format!(
            "{} cannot start workspace {workspace} again in place",
            self.kind()
        )))
    }
    /// The site's own load, for `[capacity] only_idle`; `None` where the backend cannot tell.
    async fn site_load(&self) -> Result<Option<SiteLoad>, BackendError> {
        Ok(None)
    }
    /// A limit the site's scheduler puts on all of basho's work here, with where it comes from
    /// (Slurm: the `GrpTRES` of basho's QOS); `None` when there is none.
    async fn site_limit(&self) -> Result<Option<(Capacity, String)>, BackendError> {
        Ok(None)
    }
    /// Ends what the backend runs in the background (a watch, a connection), when the agent
    /// stops: part of the agent's shutdown, bounded by it. Workspaces keep running.
    async fn close(&self) {}
    /// Resolves when the backend has seen one of the site's workspaces change by itself (a
    /// container exited), so the agent looks again at once instead of at its next recheck. The
    /// default never resolves: such a backend is looked at every
    /// [`RECHECK`](crate::runner::RECHECK).
    async fn changed(&self) {
        std::future::pending::<()>().await;
    }
    /// Starts `req` inside the running workspace as its user, for an interactive session. The
    /// default says the backend cannot yet.
    async fn exec(
        &self,
        workspace: &str,
        req: &exec::ExecRequest,
    ) -> Result<exec::ExecIo, BackendError> {
        let _ = (workspace, req);
        Err(BackendError::Unsupported(format!(
            "interactive sessions (exec, shell, port-forward) are not implemented on the {} \
             backend yet; use a workspace on a Docker site",
            self.kind()
        )))
    }
}

/// The backend the site config names. The fake is only ever built when the config says `fake`.
pub async fn build(config: &SiteConfig) -> Result<Arc<dyn Backend>, BackendError> {
    match &config.backend {
        BackendConfig::Docker(docker) => Ok(Arc::new(
            docker::DockerBackend::connect(docker.socket.as_deref(), config.site.clone())
                .await?
                .with_namespace(docker.namespace.clone())
                .with_init(docker.init.clone()),
        )),
        BackendConfig::Slurm(slurm) => Ok(Arc::new(slurm::SlurmBackend::new(
            config.site.clone(),
            slurm.clone(),
        )?)),
        BackendConfig::Kubernetes(k8s) => Ok(Arc::new(
            kubernetes::KubernetesBackend::connect(config.site.clone(), k8s.clone()).await?,
        )),
        BackendConfig::Fake(fake) => Ok(Arc::new(
            fake::FakeBackend::new(
                config.site.clone(),
                Duration::from_millis(fake.start_delay_ms),
                fake.failure_rate,
            )
            .with_exit_after(fake.exit_after_ms.map(Duration::from_millis)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message reads as it did before sources were kept, and the source is there to look at.
    #[test]
    fn an_error_keeps_its_source_and_its_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BackendError::unavailable("engine: refused").caused_by(io);
        assert_eq!(e.to_string(), "backend unavailable: engine: refused");
        assert_eq!(e.message(), "engine: refused");
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "refused");
        let plain = BackendError::refused("bad image");
        assert!(std::error::Error::source(&plain).is_none());
    }
}
