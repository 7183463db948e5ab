//! Federated jobs: one question answered across several sites without a record leaving any. A
//! site step runs once per site as an ordinary batch workspace over that site's datasets only;
//! its partial results leave through the site's airlock (released by the site's own rule when
//! `[airlock] auto_release_partials` allows, otherwise by checkers); an aggregation step at one
//! site reads only the released partials, read-only under `/inputs/<site>/`, never `/data`, and
//! its result is an ordinary release request.
//!
//! ```text
//! running ─every step ended─▶ waiting_for_release ─partials released─▶ aggregating ─▶ completed
//!    └──────── a site failed (fewer than min_sites left), or the aggregation failed ──▶ failed
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Ident, Resources, State};

/// The agent stages released partials and binds them at `/inputs` (its registration lists it).
pub const FEATURE_FEDERATED: &str = "federated";
/// Where an aggregation step finds the released partials: `/inputs/<site>/<name>`.
pub const INPUTS: &str = "/inputs";
/// Most sites one job runs at.
pub const MAX_SITES: usize = 64;
/// Longest job name.
pub const MAX_NAME: usize = 200;

/// `POST /v1/federated-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFederatedJob {
    /// The approved project.
    pub project: Ident,
    /// A name to know the job by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GA4GH Passport visas (JWTs), all for the same `sub`. Each site is sent only the visas
    /// for the datasets it holds.
    pub visas: Vec<String>,
    /// The datasets the site steps read; default: every dataset the visas grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<Vec<Ident>>,
    /// The sites the site step runs at; default: every site holding one of the datasets. Each
    /// must hold one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<Ident>>,
    /// Run once per site over that site's datasets, writing its partial results to `/results`.
    pub site_step: SiteStepSpec,
    /// Run once, at one site, over the released partials.
    pub aggregation: AggregationSpec,
    /// The fewest sites whose partials the aggregate may be made from; default: every site. A
    /// site that fails fails the job only when fewer than this are left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sites: Option<u32>,
}

/// The step every site runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteStepSpec {
    /// An image name on every named site's allow-list.
    pub image: String,
    /// The argv.
    pub command: Vec<String>,
    /// Compute; default the batch template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Lifetime in seconds; default the batch template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
}

/// The step that combines the released partials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregationSpec {
    /// An image name on the aggregation site's allow-list.
    pub image: String,
    /// The argv.
    pub command: Vec<String>,
    /// Where it runs; default the orchestrator's `[federated] aggregation_site`, else the
    /// first of the job's sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Ident>,
    /// Compute; default the batch template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Lifetime in seconds; default the batch template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// Refused unless empty: the aggregation step reads no dataset, only released partials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<Ident>,
}

/// Where a federated job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Site steps are placed or running.
    Running,
    /// Every site step ended; partials wait for the airlock.
    WaitingForRelease,
    /// Enough partials were released; the aggregation step is placed or running.
    Aggregating,
    /// The aggregation ended and its result is a release request.
    Completed,
    /// A site or the aggregation failed: `message` says which and why.
    Failed,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 5] = [
        JobState::Running,
        JobState::WaitingForRelease,
        JobState::Aggregating,
        JobState::Completed,
        JobState::Failed,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::WaitingForRelease => "waiting_for_release",
            JobState::Aggregating => "aggregating",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// Parses [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing changes it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one site's step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Its workspace is placed, starting or running.
    Running,
    /// It ended; its partial waits for the airlock.
    WaitingForRelease,
    /// Its partial was released: it feeds the aggregate.
    Released,
    /// It failed, was revoked or expired, or its partial was refused or rejected.
    Failed,
    /// Stopped because the job ended without it.
    Stopped,
}

impl StepState {
    /// It will not change by itself any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepState::Released | StepState::Failed | StepState::Stopped
        )
    }
}

/// One site's step, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteStep {
    /// The site.
    #[schema(value_type = String)]
    pub site: Ident,
    /// The datasets it reads there.
    #[schema(value_type = Vec<String>)]
    pub datasets: Vec<Ident>,
    /// Its batch workspace.
    pub workspace: String,
    /// Where it stands.
    pub state: StepState,
    /// The workspace's state.
    pub workspace_state: State,
    /// Why, for a failure; what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The release request its partial became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Who released it: the site's rule, or the checkers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

/// The aggregation step, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AggregationStep {
    /// The site it runs at.
    #[schema(value_type = String)]
    pub site: Ident,
    /// Its batch workspace, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The workspace's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_state: Option<State>,
    /// The sites whose partials feed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<Ident>,
    /// The release request its result became (two checkers approve it as any other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// A federated job, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FederatedJob {
    /// `fj-` followed by a UUID.
    pub id: String,
    /// Its name, when it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The project.
    #[schema(value_type = String)]
    pub project: Ident,
    /// The researcher: the visas' `sub`.
    pub owner: String,
    /// Where it stands.
    pub state: JobState,
    /// Why it failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The fewest sites the aggregate may be made from.
    pub min_sites: u32,
    /// One step per site, by site.
    pub sites: Vec<SiteStep>,
    /// The aggregation step.
    pub aggregation: AggregationStep,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A released partial an aggregation step reads: the agent at the aggregation site fetches each
/// file from the orchestrator (which relays it from its own site's airlock store), checks its
/// digest and binds them read-only at `/inputs/<site>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialInput {
    /// The site it came from: its directory under `/inputs`.
    #[schema(value_type = String)]
    pub site: Ident,
    /// The release request it was released as.
    pub release: String,
    /// Its files.
    pub files: Vec<InputFile>,
}

/// One file of a [`PartialInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// Its name under the site's `/results`, and so under `/inputs/<site>/`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of the released bytes, hex.
    pub sha256: String,
}
