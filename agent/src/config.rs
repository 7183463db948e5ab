//! The site config (`site.toml`): who the site is, where the orchestrator is, which backend runs
//! workspaces, the dataset catalog, the image allow-list and the trusted visa issuers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use basho_core::Ident;
use basho_core::visa::IssuerRef;
use serde::{Deserialize, Serialize};

mod check;
mod load;

pub use check::check;
pub use load::{ConfigError, ENV_ORCHESTRATOR_URL, ENV_TOKEN, load, load_issuers, parse};

// Each backend's table is defined beside the backend; the site config names them all here.
pub use crate::backend::docker::config::DockerConfig;
pub use crate::backend::fake::config::FakeConfig;
pub use crate::backend::kubernetes::config::{ClaimSource, KubernetesConfig, VolumeConfig};
pub(crate) use crate::backend::kubernetes::config::{is_dns_subdomain, node_path_problem};
pub use crate::backend::slurm::config::{LoginNode, Runtime, SlurmConfig};

/// The whole site config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site name, as the orchestrator knows it.
    pub site: Ident,
    /// How to reach the orchestrator.
    pub orchestrator: OrchestratorLink,
    /// Compute offered to basho, and how it follows the site's own users.
    pub capacity: crate::capacity::CapacityConfig,
    /// Which backend runs workspaces.
    pub backend: BackendConfig,
    /// Dataset catalog: ID to local path.
    #[serde(default)]
    pub datasets: Vec<CatalogEntry>,
    /// Image allow-list: the names templates use, each pinned to an image ID or digest.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Issuers whose visas this site accepts.
    #[serde(default)]
    pub trusted_issuers: Vec<IssuerRef>,
    /// Where the agent keeps its own files and the workspaces' writable areas.
    pub paths: Paths,
    /// Isolation settings.
    #[serde(default)]
    pub isolation: Isolation,
    /// Serves Prometheus `/metrics` when present.
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// Usage sampling.
    #[serde(default)]
    pub metering: crate::meter::MeteringConfig,
    /// Limits on interactive sessions (shell, exec, port-forward).
    #[serde(default)]
    pub sessions: crate::session::SessionsConfig,
    /// The results airlock: limits of a release request and the automated checks.
    #[serde(default)]
    pub airlock: crate::airlock::AirlockConfig,
    /// How the agent carries out what it decides.
    #[serde(default)]
    pub reconcile: Reconcile,
    /// `[consent]`: where the site keeps its datasets' releases.
    #[serde(default)]
    pub consent: Consent,
}

/// How the agent reaches the orchestrator (it always dials out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorLink {
    /// Base URL, e.g. `https://basho.example.org`.
    pub url: String,
    /// The site's agent token (prefer `token_file` or `BASHO_AGENT_TOKEN`).
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Longest long-poll wait, seconds.
    #[serde(default = "default_poll_wait_s")]
    pub poll_wait_s: u64,
    /// PEM bundle the orchestrator's certificate must chain to; the bundled web PKI roots when
    /// absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allows an `http://` URL, and only to a loopback host (development and tests).
    #[serde(default)]
    pub plain_http_on_loopback: bool,
}

impl OrchestratorLink {
    /// How the agent trusts the orchestrator's endpoint.
    pub fn tls_policy(&self) -> crate::client::TlsPolicy {
        crate::client::TlsPolicy {
            ca_file: self.ca_file.clone(),
            plain_http_on_loopback: self.plain_http_on_loopback,
        }
    }
}

fn default_poll_wait_s() -> u64 {
    25
}

/// The backend and its settings: one variant per backend, each with its own config type and
/// checks (`backend/<name>/config.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// A Docker engine.
    Docker(DockerConfig),
    /// A Slurm cluster reached over SSH on its login node.
    Slurm(SlurmConfig),
    /// A Kubernetes cluster: one pod per workspace in a namespace.
    Kubernetes(KubernetesConfig),
    /// Simulated lifecycles, for tests and benchmarks only.
    Fake(FakeConfig),
}

impl BackendConfig {
    /// `docker`, `slurm`, `kubernetes` or `fake`, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Docker(_) => "docker",
            Self::Slurm(_) => "slurm",
            Self::Kubernetes(_) => "kubernetes",
            Self::Fake(_) => "fake",
        }
    }

    /// Every problem of the `[backend]` table, empty when it is fine.
    pub fn check(&self) -> Vec<String> {
        match self {
            Self::Docker(c) => c.check(),
            Self::Slurm(c) => c.check(),
            Self::Kubernetes(c) => c.check(),
            Self::Fake(c) => c.check(),
        }
    }
}

/// One dataset the site holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Dataset ID.
    pub id: Ident,
    /// Local path (a directory), bound read-only at `/data/<id>`; on a Kubernetes site a
    /// directory on the nodes (a `hostPath`), unless `claim` is set.
    #[serde(default)]
    pub path: PathBuf,
    /// Kubernetes only: the PersistentVolumeClaim holding the dataset, used instead of `path`.
    #[serde(default)]
    pub claim: Option<ClaimSource>,
    /// Grant URL; `https://ddbj.nig.ac.jp/search/entry/jga-dataset/<id>` when absent.
    #[serde(default)]
    pub grant_url: Option<String>,
    /// The trusted issuers (`iss`) whose visas may grant this dataset. Empty: the site's one
    /// trusted issuer; a site that trusts several must name them for every dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    /// When set, a granting visa's `ga4gh_visa_v1.source` (the DAC) must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The CSV/TSV column holding the pseudonymous participant ID: a withdrawal removes the rows
    /// it names (`basho-agent withdraw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_column: Option<String>,
    /// For files that are neither tables nor VCF: run as `argv... WITHDRAWN_FILE INPUT OUTPUT`
    /// to write INPUT without the withdrawn participants to OUTPUT. None: such files are kept
    /// as they are (and a withdrawn ID left in one stops the release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_command: Vec<String>,
}

/// The agent's directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// The agent's own state (per-workspace `workspace.json`, journals).
    pub state_dir: PathBuf,
    /// Parent of the `/work` directories: one per workspace, or per project with
    /// `project_work`.
    pub work_root: PathBuf,
    /// Parent of the per-workspace `/results` directories.
    pub results_root: PathBuf,
    /// Give the workspaces of a project one shared `/work` (`<work_root>/<project>`) instead of
    /// one each (`<work_root>/<workspace>`). A member without a dataset's visa then reads what
    /// another copied there; only for projects whose members all hold the same grants.
    #[serde(default)]
    pub project_work: bool,
}

impl Paths {
    /// `state/`, `work/` and `results/` under `root`, `/work` per workspace (`basho dev`, tests).
    pub fn under(root: &Path) -> Self {
        Self {
            state_dir: root.join("state"),
            work_root: root.join("work"),
            results_root: root.join("results"),
            project_work: false,
        }
    }

    /// Where workspace `id` of `project` has its `/work`: its own directory, or its project's
    /// with `project_work`.
    pub fn work_dir(&self, id: &str, project: &Ident) -> PathBuf {
        if self.project_work {
            self.work_root.join(project.as_str())
        } else {
            self.work_root.join(id)
        }
    }
}

/// Isolation settings a site may tune (never loosen below the contract's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolation {
    /// `uid:gid` workspaces run as; must not be root.
    #[serde(default = "default_user")]
    pub user: String,
    /// Process limit per workspace.
    #[serde(default = "default_pids")]
    pub pids_limit: i64,
    /// Size of `/tmp`, MiB.
    #[serde(default = "default_tmp")]
    pub tmp_size_mib: u64,
    /// Run batch tasks that mount no dataset and so carry no visa (TES tasks with only inline
    /// inputs); `false` refuses every assignment without a visa.
    #[serde(default = "crate::session::default_true")]
    pub tasks_without_visas: bool,
}

fn default_user() -> String {
    "65534:65534".into()
}
fn default_pids() -> i64 {
    256
}
fn default_tmp() -> u64 {
    64
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            user: default_user(),
            pids_limit: default_pids(),
            tmp_size_mib: default_tmp(),
            tasks_without_visas: true,
        }
    }
}

/// `[consent]`: consent withdrawal's releases of the site's datasets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Where each dataset's releases after the first are made (`<dir>/<DATASET>/<n>/`); on the
    /// same file system as the datasets, files not changed are hard links. Default
    /// `<state_dir>/releases`; on Slurm and Kubernetes sites a directory the nodes see too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases_dir: Option<PathBuf>,
    /// Longest a running workspace may stay on an older release after a withdrawal made a new
    /// one. Docker workspaces move within seconds; where the backend cannot launch one again
    /// (a Slurm job runs once), one still on the older release this long after is stopped.
    #[serde(default = "default_max_consent_delay_s")]
    pub max_delay_s: u64,
    /// Move a running Slurm job to the new release with `scontrol requeue` (its datasets are
    /// bound through links the agent re-points first); false, or a cluster that refuses
    /// requeues: it ends past `max_delay_s`.
    #[serde(default = "default_true")]
    pub requeue: bool,
    /// Where the agent serves the consent API to the platform's consent service (a loopback
    /// address, behind the site's own TLS proxy or tunnel); none: withdrawals come only from
    /// `basho-agent withdraw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<std::net::SocketAddr>,
    /// The bearer token the consent service presents (the file's content, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

/// A minute: the longest a workspace reads a withdrawn participant's data by default.
pub const DEFAULT_MAX_CONSENT_DELAY_S: u64 = 60;

fn default_true() -> bool {
    true
}

fn default_max_consent_delay_s() -> u64 {
    DEFAULT_MAX_CONSENT_DELAY_S
}

impl Default for Consent {
    fn default() -> Self {
        Consent {
            releases_dir: None,
            max_delay_s: DEFAULT_MAX_CONSENT_DELAY_S,
            requeue: true,
            api_listen: None,
            api_token_file: None,
        }
    }
}

impl Consent {
    /// The consent API's listener and token, when the site serves it; why not, when its
    /// settings are unusable.
    pub async fn api(&self) -> Result<Option<(tokio::net::TcpListener, String)>, String> {
        let Some(addr) = self.api_listen else {
            return Ok(None);
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "[consent] api_listen {addr} is not a loopback address: the consent API carries \
                 participant IDs in plain HTTP; listen on loopback behind the site's own TLS \
                 proxy or tunnel"
            ));
        }
        let path = self.api_token_file.as_ref().ok_or(
            "[consent] api_listen needs api_token_file, the token the consent service presents",
        )?;
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("[consent] api_token_file {}: {e}", path.display()))?
            .trim()
            .to_owned();
        if token.len() < 16 {
            return Err(format!(
                "[consent] api_token_file {} holds a token shorter than 16 characters",
                path.display()
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("[consent] api_listen {addr}: {e}"))?;
        Ok(Some((listener, token)))
    }
}

impl SiteConfig {
    /// Where the datasets' releases are made.
    pub fn releases_dir(&self) -> PathBuf {
        self.consent
            .releases_dir
            .clone()
            .unwrap_or_else(|| self.paths.state_dir.join("releases"))
    }
}

/// `[reconcile]`: how the agent carries out launches and stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Workspaces whose launch or stop may be under way at once (at least 1). A slow engine,
    /// `sbatch` or API call then holds back only its own workspace; the bound keeps a burst of
    /// creates or a revocation covering hundreds of workspaces from flooding the backend.
    #[serde(default = "default_parallel_actions")]
    pub parallel_actions: usize,
    /// Longest a workspace may stay placed, starting or stopping (a queued Slurm job counts as
    /// starting) before the orchestrator marks it `failed` and this agent removes what it made;
    /// 0: no limit. Sent in the registration; shown by `basho site list`.
    #[serde(default = "default_start_timeout_s")]
    pub start_timeout_s: u64,
}

fn default_start_timeout_s() -> u64 {
    basho_core::protocol::DEFAULT_START_TIMEOUT_S
}

/// Eight launches or stops at once: enough that a slow one never queues the rest, few enough
/// for a login node's sshd and a 2-core engine host.
fn default_parallel_actions() -> usize {
    8
}

impl Default for Reconcile {
    fn default() -> Self {
        Self {
            parallel_actions: default_parallel_actions(),
            start_timeout_s: default_start_timeout_s(),
        }
    }
}
