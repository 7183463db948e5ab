//! The agent protocol (`/v1/agent/*`): an agent registers its inventory, long-polls for its site's
//! desired workspaces, and posts batched observations of what actually runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Ident, Resources, State};

/// Total compute a site offers to basho.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// CPU cores.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
}

/// A dataset a site holds, as its catalog names it (never its host path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Dataset ID (`JGAD000101`).
    pub id: Ident,
    /// The grant URL a visa's `value` must carry for this dataset.
    pub grant_url: String,
}

/// `POST /v1/agent/register`: what the agent brings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The site; must match the agent's token.
    pub site: Ident,
    /// Backend kind (`docker`, `slurm`, `kubernetes`, `fake`).
    pub backend: String,
    /// Agent version.
    pub version: String,
    /// Datasets from the site catalog.
    pub datasets: Vec<DatasetEntry>,
    /// Compute basho may use now: what the orchestrator places within. With `[capacity]
    /// max_share`, `only_idle` or quiet hours it moves with the site's own load, and the agent
    /// reports each change ([`CapacityReport`]).
    pub capacity: Capacity,
    /// The most basho may ever use here (the configured compute times `max_share`); the same as
    /// `capacity` when absent. A request larger than every ceiling is refused, not queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Capacity>,
    /// Why `capacity` is below the ceiling now (`quiet hours mon,tue,wed,thu,fri 09:00-18:00
    /// +09:00`, `the site's own work holds 3 of 4 cpus`); shown with a queued workspace's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_note: Option<String>,
    /// Workspace images the site allows, by the names templates use.
    #[serde(default)]
    pub images: Vec<String>,
    /// Longest a workspace may stay placed, starting or stopping at this site before the
    /// orchestrator marks it `failed` (and the agent removes what it made); 0: no limit. The
    /// site's `[reconcile] start_timeout_s`; an agent that does not send it gets the default.
    #[serde(default = "default_start_timeout_s")]
    pub start_timeout_s: u64,
    /// The public half of the site's session key (X25519, base64): the command line seals
    /// sessions for it ([`crate::e2e`]) and pins it. None from agents that predate encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// What the agent serves beyond sessions ([`crate::release::FEATURE_AIRLOCK`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl Registration {
    /// The most basho may ever use at this site.
    pub fn ceiling(&self) -> Capacity {
        self.ceiling.unwrap_or(self.capacity)
    }
}

/// `PUT /v1/agent/capacity`: what basho may use at a site now, sent by its agent whenever it
/// changes (the site's own load, quiet hours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityReport {
    /// The site; must match the agent's token.
    pub site: Ident,
    /// Compute basho may use now; never above the registered ceiling.
    pub capacity: Capacity,
    /// Why it is below the ceiling, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Two minutes: a launch on Docker takes under a second and an idle Slurm queue a few.
pub const DEFAULT_START_TIMEOUT_S: u64 = 120;

fn default_start_timeout_s() -> u64 {
    DEFAULT_START_TIMEOUT_S
}

/// One workspace the orchestrator wants running at a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// Workspace id.
    pub id: String,
    /// Project.
    pub project: Ident,
    /// Owner (the visas' `sub`).
    pub owner: String,
    /// Template name.
    pub template: Ident,
    /// Image name from the template; the site resolves it through its allow-list.
    pub image: String,
    /// Command from the template.
    pub command: Vec<String>,
    /// Datasets to mount read-only.
    pub datasets: Vec<Ident>,
    /// Compute.
    pub resources: Resources,
    /// When the site must stop it, whether or not it hears from the orchestrator.
    pub expires_at: DateTime<Utc>,
    /// The original visa JWTs, so the site can verify the grants for itself.
    pub visas: Vec<String>,
    /// How a batch workspace's command runs beyond its image and argv (a TES task's executor);
    /// none for an interactive one. The site checks it as it checks the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// A batch workspace's working directory and environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// The command's working directory (absolute); `/work` when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Variables beside the site's `BASHO_*` ones, which they may not name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Files under `/results` (names relative to it) the site takes into its airlock store
    /// when the workspace ends by itself: they become its release request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Every file under `/results` is an output (a federated job's step), besides `outputs`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_results: bool,
    /// The outputs are a federated job's partial results: the site releases them itself when
    /// its `[airlock] auto_release_partials` allows and every automated check passed, and
    /// refuses them whole when one is a link or anything but a file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Released partials the workspace reads, read-only at `/inputs/<site>/`; a workspace with
    /// inputs mounts no dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<crate::federated::PartialInput>,
}

impl Launch {
    /// Refuses a working directory that is not a [plain absolute path](plain_absolute_path),
    /// and variables that are not [plain names](plain_variable), carry NUL in their value or
    /// name the site's own `BASHO_*` ones. Checked where a task is accepted and again at the
    /// site, which does not trust the orchestrator to have.
    pub fn check(&self) -> Result<(), String> {
        if let Some(w) = &self.workdir
            && !plain_absolute_path(w)
        {
            return Err(format!(
                "working directory {w:?} is not a plain absolute path"
            ));
        }
        for (k, v) in &self.env {
            if !plain_variable(k) || v.contains('\0') {
                return Err(format!(
                    "environment variable {k:?} is not a plain name (letters, digits and _, not \
                     starting with a digit) with a value without NUL"
                ));
            }
            if k.starts_with("BASHO_") {
                return Err(format!("environment variable {k} is the site's to set"));
            }
        }
        if let Some(o) = self
            .outputs
            .iter()
            .find(|o| !plain_absolute_path(&format!("/{o}")))
        {
            return Err(format!("output {o:?} is not a plain path under /results"));
        }
        for i in &self.inputs {
            if let Some(f) = i
                .files
                .iter()
                .find(|f| !plain_absolute_path(&format!("/{}", f.name)))
            {
                return Err(format!(
                    "input {:?} of site {} is not a plain path",
                    f.name, i.site
                ));
            }
        }
        Ok(())
    }
}

/// Absolute, without NUL and without empty, `.` or `..` segments (so not ending in `/`).
pub fn plain_absolute_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains('\0')
        && p.split('/')
            .skip(1)
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Letters, digits and `_`, not starting with a digit: a name every shell and runtime takes.
pub fn plain_variable(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `GET /v1/agent/desired?after=REV&wait_s=N`: the full desired set for the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredState {
    /// Changes whenever the set (or anything in it) changes; pass it back as `after`.
    pub revision: i64,
    /// Every workspace that should have a container at the site. Anything else it runs must go.
    pub workspaces: Vec<Assignment>,
    /// Workspaces being stopped at the site: the orchestrator waits for the agent to confirm each
    /// is gone, also those it never launched (deleted before they started).
    #[serde(default)]
    pub stopping: Vec<String>,
    /// Every revocation recorded, oldest first: the deny-list each agent keeps and applies to
    /// what it runs and launches, also while the orchestrator is unreachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<crate::revocation::Revocation>,
    /// The newest signed checkpoint of the audit chain (a compact JWS, EdDSA), which each site
    /// keeps in its own audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// What the agent saw of one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Workspace id.
    pub workspace: String,
    /// One of `starting`, `running`, `stopped`, `failed`, `expired`, `revoked`, `unknown`.
    pub state: State,
    /// Why, for failures and refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the agent saw it.
    pub at: DateTime<Utc>,
    /// A batch workspace that ended by itself: what the site took of its outputs into its
    /// airlock store, before its container goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<TaskOutputs>,
}

/// What the site took of an ended batch workspace's outputs, checked as any release request's
/// files are; the orchestrator makes them the task's release request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOutputs {
    /// The files taken (those of the outputs that exist), as stored and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake: Option<crate::release::Intake>,
    /// Outputs that were not files under `/results` when the workspace ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Why the site took none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A federated job's partial the site released itself: the rule that did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

/// `POST /v1/agent/observations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservationBatch {
    /// The site; must match the agent's token.
    pub site: Ident,
    /// Observations, oldest first.
    pub observations: Vec<Observation>,
}

/// A site as `GET /v1/sites` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Site {
    /// Site name.
    pub name: Ident,
    /// Backend kind.
    pub backend: String,
    /// Agent version.
    pub version: String,
    /// Datasets held.
    pub datasets: Vec<DatasetEntry>,
    /// Compute basho may use there now.
    pub capacity: Capacity,
    /// The most basho may ever use there (the site's compute times `[capacity] max_share`), as
    /// its agent registered it; absent for agents that predate live capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Capacity>,
    /// Why `capacity` is below the ceiling now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_note: Option<String>,
    /// Compute held by live workspaces.
    pub allocated: Capacity,
    /// Live workspaces.
    pub workspaces: u32,
    /// Last time the agent was heard from.
    pub last_contact: DateTime<Utc>,
    /// Longest a workspace may stay placed, starting or stopping here (0: no limit).
    pub start_timeout_s: u64,
}
