//! Consent withdrawal as the orchestrator sees it: each site reports its datasets' releases,
//! the withdrawals it applied and which release each running workspace mounts. Counts and
//! digests only: participant IDs never leave the site.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Ident;

/// `POST /v1/agent/consent`: the site's whole consent state, sent again whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentReport {
    /// The site; must match the agent's token.
    pub site: Ident,
    /// Every dataset the site keeps releases of.
    #[serde(default)]
    pub datasets: Vec<DatasetReleases>,
    /// Every withdrawal the site applied or tried to, oldest first.
    #[serde(default)]
    pub withdrawals: Vec<Withdrawal>,
    /// The release of each dataset each running workspace mounts.
    #[serde(default)]
    pub workspaces: BTreeMap<String, BTreeMap<Ident, u32>>,
    /// Files in a workspace's `/work` or `/results` that hold a withdrawn participant's ID, as
    /// the workspace sees them (a name that itself holds one is not sent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, Vec<String>>,
}

/// The answer to a [`ConsentReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentAck {
    /// Entries it added to the audit chain (releases, withdrawals, moves, copies found).
    pub audited: u64,
}

/// The releases of one dataset at a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetReleases {
    /// Dataset ID.
    pub dataset: Ident,
    /// The release new workspaces mount.
    pub current: u32,
    /// Its releases, oldest first.
    pub releases: Vec<Release>,
}

/// One immutable release of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Its number; 1 is the dataset as the site's catalog first held it.
    pub release: u32,
    /// The release it was made from (none for release 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// SHA-256 over its files' names and digests, hex; none while the site is still measuring
    /// release 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Files in it.
    pub files: u64,
    /// Table rows in it (header lines not counted).
    pub rows: u64,
    /// Distinct participants in its participant columns and VCF samples.
    pub participants: u64,
    /// Rows and samples this release removed from its parent.
    pub removed: u64,
    /// The withdrawal that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal: Option<String>,
    /// When it became current (none for release 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<DateTime<Utc>>,
}

/// One withdrawal as the site applied it: how many participants and a digest of their IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    /// `wd-...`, unique across sites.
    pub id: String,
    /// The dataset.
    pub dataset: Ident,
    /// When the site recorded it.
    pub at: DateTime<Utc>,
    /// Participants named.
    pub participants: u64,
    /// SHA-256 of their sorted IDs, one per line, hex: whoever holds the list can show it is
    /// this one; nobody can read it back.
    pub participants_sha256: String,
    /// Of them, how many the current release did not hold.
    pub unknown: u64,
    /// The release current before.
    pub previous: u32,
    /// The release made without them; none when none of them was in the current one, or when
    /// it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u32>,
    /// Why no release was made, when that failed: the previous release stays current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/sites/{site}/datasets/{id}/releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseList {
    /// The site.
    pub site: Ident,
    /// The dataset.
    pub dataset: Ident,
    /// The release new workspaces mount.
    pub current: u32,
    /// Its releases, oldest first, with the running workspaces on each.
    pub releases: Vec<ReleaseUse>,
    /// When the site last reported.
    pub reported_at: DateTime<Utc>,
}

/// A release and how many running workspaces still mount it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseUse {
    /// The release.
    #[serde(flatten)]
    pub release: Release,
    /// Running workspaces that mount it.
    pub workspaces: u64,
}

/// `GET /v1/withdrawals/{id}`: is any workspace still reading data of these participants?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WithdrawalStatus {
    /// The site that applied it.
    pub site: Ident,
    /// The withdrawal.
    #[serde(flatten)]
    pub withdrawal: Withdrawal,
    /// Whether a running workspace still mounts a release that holds them.
    pub still_reading: bool,
    /// Those workspaces, and the release each mounts.
    pub workspaces: Vec<StillReading>,
    /// Workspaces with a copy of a withdrawn participant's data in their `/work` or `/results`
    /// (files that cannot leave through the airlock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<String>,
    /// When the site last reported.
    pub reported_at: DateTime<Utc>,
}

/// A workspace that mounts a release older than a withdrawal's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StillReading {
    /// Workspace id.
    pub workspace: String,
    /// The release it mounts.
    pub release: u32,
}

impl ConsentReport {
    /// The releases of `id`, when the site keeps them.
    pub fn dataset(&self, id: &Ident) -> Option<&DatasetReleases> {
        self.datasets.iter().find(|d| &d.dataset == id)
    }

    /// The running workspaces that mount a release of `dataset` older than `release`.
    pub fn older_than(&self, dataset: &Ident, release: u32) -> Vec<StillReading> {
        self.workspaces
            .iter()
            .filter_map(|(w, r)| {
                let n = *r.get(dataset)?;
                (n < release).then(|| StillReading {
                    workspace: w.clone(),
                    release: n,
                })
            })
            .collect()
    }

    /// What a withdrawal left behind: the workspaces still on a release that holds its
    /// participants (every one on the dataset when it made no release because it failed; none
    /// when none of them was in the current release).
    pub fn status(&self, w: &Withdrawal, reported_at: DateTime<Utc>) -> WithdrawalStatus {
        let workspaces = match (w.release, &w.error) {
            (Some(n), _) => self.older_than(&w.dataset, n),
            (None, Some(_)) => self.older_than(&w.dataset, u32::MAX),
            (None, None) => Vec::new(),
        };
        let on_dataset: std::collections::BTreeSet<&String> = self
            .workspaces
            .iter()
            .filter(|(_, r)| r.contains_key(&w.dataset))
            .map(|(id, _)| id)
            .collect();
        WithdrawalStatus {
            site: self.site.clone(),
            withdrawal: w.clone(),
            still_reading: !workspaces.is_empty(),
            workspaces,
            copies: self
                .copies
                .keys()
                .filter(|id| on_dataset.contains(id))
                .cloned()
                .collect(),
            reported_at,
        }
    }
}
