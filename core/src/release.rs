//! The results airlock's shared vocabulary: what the orchestrator asks a site's desk over the
//! tunnel ([`Call`], answered by [`Answer`]), what the desk took and found ([`Intake`]), and a
//! release request as the API shows it ([`ReleaseRequest`]) with its states and reviews.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Ident;
use crate::airlock::Checked;
use crate::proof::Proof;

/// One file taken into the site's airlock store, and what the checks found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Taken {
    /// Its name under `/results`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, hex: its name in the store.
    pub sha256: String,
    /// What the site's checks found.
    pub checked: Checked,
}

/// What the desk answers for a request it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Intake {
    /// The files, as stored and checked.
    pub files: Vec<Taken>,
    /// What the copied-record check compared them with.
    pub compared: Compared,
}

/// The dataset tables the copied-record check read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Compared {
    /// Tables read.
    pub tables: u64,
    /// Their rows.
    pub rows: u64,
    /// Tables not read: past `[airlock] max_index_bytes`, or unreadable.
    pub skipped: u64,
}

/// The agent takes `Call` frames and serves release requests (its registration lists it).
pub const FEATURE_AIRLOCK: &str = "airlock";

/// What the orchestrator asks a site's airlock desk (a `Call` frame, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Copy `files` from the workspace's `/results` into the store and check them. Answered by
    /// [`Answer::Intake`], or refused.
    Intake {
        /// The workspace.
        workspace: String,
        /// The release request it is for.
        request: String,
        /// Names under `/results`.
        files: Vec<String>,
        /// Who asked.
        actor: String,
        /// What the site checks before it takes files from the workspace, as for a session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Proof>,
    },
    /// Send the stored copy of `sha256`: [`Answer::Fetch`], then its bytes in data frames
    /// against credit, then `Exit`; or refused.
    Fetch {
        /// The workspace the file came from.
        workspace: String,
        /// The release request.
        request: String,
        /// The reviewed digest.
        sha256: String,
        /// Who downloads it.
        actor: String,
    },
}

impl Call {
    /// The workspace the call is about.
    pub fn workspace(&self) -> &str {
        match self {
            Call::Intake { workspace, .. } | Call::Fetch { workspace, .. } => workspace,
        }
    }
}

/// What the desk answers (an `Answer` frame, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Answer {
    /// The files were taken.
    Intake(Intake),
    /// The file follows: this many bytes.
    Fetch {
        /// Its size.
        size: u64,
    },
}

/// Where a release request stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    /// Taken and checked at the site; not yet sent to the checkers.
    Draft,
    /// Waiting for checkers.
    Submitted,
    /// A checker sent it back for changes; the requester resubmits (new files) or withdraws.
    Returned,
    /// Two checkers approved it: its approved files may be downloaded.
    Approved,
    /// A checker rejected it: nothing in it leaves.
    Rejected,
    /// Approved, and downloaded at least once.
    Released,
    /// The requester withdrew it before a decision.
    Withdrawn,
}

impl ReleaseState {
    /// Every state.
    pub const ALL: [ReleaseState; 7] = [
        ReleaseState::Draft,
        ReleaseState::Submitted,
        ReleaseState::Returned,
        ReleaseState::Approved,
        ReleaseState::Rejected,
        ReleaseState::Released,
        ReleaseState::Withdrawn,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Draft => "draft",
            ReleaseState::Submitted => "submitted",
            ReleaseState::Returned => "returned",
            ReleaseState::Approved => "approved",
            ReleaseState::Rejected => "rejected",
            ReleaseState::Released => "released",
            ReleaseState::Withdrawn => "withdrawn",
        }
    }

    /// Parses [`ReleaseState::as_str`].
    pub fn parse(s: &str) -> Option<ReleaseState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No review changes it any more.
    pub fn is_decided(self) -> bool {
        matches!(
            self,
            ReleaseState::Approved
                | ReleaseState::Rejected
                | ReleaseState::Released
                | ReleaseState::Withdrawn
        )
    }
}

impl std::fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a checker decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Release it (the whole request, or one file).
    Approve,
    /// Release none of it (the whole request), or not this file.
    Reject,
    /// Send it back to the requester for changes.
    Return,
}

/// One checker's decision, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    /// The checker (their token's name).
    pub checker: String,
    /// What they decided.
    pub verdict: Verdict,
    /// The one file it is about; none: the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What they said.
    #[serde(default)]
    pub comment: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The request's round it was given in: a resubmission starts a new round and earlier
    /// approvals no longer count.
    pub round: u32,
}

/// A file of a release request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseFile {
    /// Its name under `/results`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of the copy under review, hex.
    pub sha256: String,
    /// What the site's checks found.
    pub checked: Checked,
    /// A checker rejected this file: it never leaves, whatever happens to the rest.
    #[serde(default)]
    pub rejected: bool,
}

impl ReleaseFile {
    /// The file as the desk took it.
    pub fn taken(t: Taken) -> ReleaseFile {
        ReleaseFile {
            name: t.name,
            size: t.size,
            sha256: t.sha256,
            checked: t.checked,
            rejected: false,
        }
    }

    /// May leave once its request is approved.
    pub fn releasable(&self) -> bool {
        !self.rejected && !self.checked.refused
    }
}

/// A release request, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseRequest {
    /// `rr-<uuid>`.
    pub id: String,
    /// The workspace the files come from.
    pub workspace: String,
    /// Its project.
    #[schema(value_type = String)]
    pub project: Ident,
    /// Its site, which keeps the files.
    #[schema(value_type = String)]
    pub site: Ident,
    /// Who asked (the workspace's owner, or the platform on their behalf).
    pub requester: String,
    /// The workspace's owner: may download once approved, may never review.
    pub owner: String,
    /// Why the files should leave.
    pub justification: String,
    /// Where it stands.
    pub state: ReleaseState,
    /// Starts at 1; each resubmission adds one.
    pub round: u32,
    /// The files under review.
    pub files: Vec<ReleaseFile>,
    /// What the copied-record check compared the files with.
    pub compared: Compared,
    /// Every decision, oldest first.
    pub reviews: Vec<Review>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl ReleaseRequest {
    /// The checkers who approved `file` in the request's current round (directly, or by
    /// approving the whole request).
    pub fn approvers(&self, file: &str) -> std::collections::BTreeSet<&str> {
        self.reviews
            .iter()
            .filter(|v| v.round == self.round && v.verdict == Verdict::Approve)
            .filter(|v| v.file.as_deref().is_none_or(|f| f == file))
            .map(|v| v.checker.as_str())
            .collect()
    }
}

/// `POST /v1/workspaces/{id}/release-requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    /// Names under `/results` (`table.csv`, `figures/plot.png`).
    pub files: Vec<String>,
    /// Why they should leave (shown to the checkers).
    pub justification: String,
    /// Keep it as a draft instead of submitting it at once.
    #[serde(default)]
    pub draft: bool,
    /// The site's proof that the workspace's owner asks (as for a session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub proof: Option<Proof>,
}

/// `POST /v1/release-requests/{id}/reviews`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// What the checker decides.
    pub verdict: Verdict,
    /// One file only (approve or reject it); none: the whole request.
    #[serde(default)]
    pub file: Option<String>,
    /// Required for reject and return: what the requester should know.
    #[serde(default)]
    pub comment: String,
}
