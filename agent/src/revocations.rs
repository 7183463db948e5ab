//! The site's own deny-list: every revocation the orchestrator ever sent, kept in
//! `<state_dir>/revocations.json` and never forgotten (an orchestrator restored from an old backup
//! cannot un-revoke a visa here). Each reconcile pass screens what runs and what is to be launched
//! against it, also while the orchestrator is unreachable: a covered workspace is stopped and
//! reported `revoked`, a covered assignment is refused (`failed`, with the revocation).
//!
//! To match a running workspace the site needs its project, owner, datasets and visa ids even
//! when no desired state names it (after a restart, with the orchestrator down), so each launch
//! records them beside the workspace's state, in `<state_dir>/workspaces/<id>/grants.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use basho_core::protocol::{Assignment, Observation};
use basho_core::revocation::{Holder, Revocation, VisaId, first_match, read_visa};
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Observed;
use crate::catalog::Catalog;
use crate::reconcile::{Action, StopReason};

/// The deny-list file under the agent's state directory.
pub const FILE: &str = "revocations.json";
/// The per-workspace record of what it holds, under its state directory.
pub const GRANTS_FILE: &str = "grants.json";

/// The deny-list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DenyListError {
    /// The file exists but cannot be read.
    #[error("cannot read the deny-list {path}: {source}; check that the agent may read it")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not decode. The agent refuses to start rather than forget revocations.
    #[error(
        "the deny-list {path} does not decode ({message}); restore it from a backup, or remove it \
         only if this site never received a revocation"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The file cannot be written.
    #[error("cannot write the deny-list {path}: {source}; check that the agent may write there")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What a workspace holds, as revocation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Project.
    pub project: Ident,
    /// Owner (the visas' `sub`).
    pub owner: String,
    /// Datasets mounted.
    pub datasets: Vec<Ident>,
    /// Its visas' ids.
    pub visas: Vec<VisaId>,
}

impl Grants {
    /// What an assignment holds. Visa ids and grant URLs are read without verification: enough
    /// to deny, never to grant. Each visa stands for the assignment's datasets whose grant URL in
    /// `catalog` it carries; a visa that does not decode counts as issued at time 0 for every
    /// dataset, so it stays covered.
    pub fn of(a: &Assignment, catalog: &Catalog) -> Self {
        Self {
            project: a.project.clone(),
            owner: a.owner.clone(),
            datasets: a.datasets.clone(),
            visas: a
                .visas
                .iter()
                .map(|v| match read_visa(v) {
                    Some((id, Some(url))) => {
                        id.granting(catalog.granting(&a.datasets, |d| d.grant_url == url))
                    }
                    Some((id, None)) => id,
                    None => VisaId {
                        jti: String::new(),
                        iat: 0,
                        datasets: None,
                    },
                })
                .collect(),
        }
    }

    fn holder(&self) -> Holder<'_> {
        Holder {
            project: self.project.as_str(),
            owner: &self.owner,
            datasets: &self.datasets,
            visas: &self.visas,
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Records what a launched workspace holds in its state directory. Blocking.
pub fn record_grants(state_dir: &Path, grants: &Grants) -> io::Result<()> {
    let body = serde_json::to_vec(grants).map_err(io::Error::other)?;
    write_atomic(&state_dir.join(GRANTS_FILE), &body)
}

/// What a workspace recorded at launch, `None` when nothing (readable) was recorded. Blocking.
pub fn recorded_grants(state_dir: &Path) -> Option<Grants> {
    let bytes = std::fs::read(state_dir.join(GRANTS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every revocation this site has heard of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    entries: Vec<Revocation>,
}

/// What a reconcile pass may still do once the deny-list has screened it.
#[derive(Debug, Default)]
pub struct Screened {
    /// The desired assignments the deny-list does not cover.
    pub desired: Option<Vec<Assignment>>,
    /// The running workspaces the deny-list does not cover.
    pub actual: Vec<Observed>,
    /// Stops and reports for what it covers.
    pub actions: Vec<Action>,
}

impl DenyList {
    /// Reads the deny-list at `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, DenyListError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(DenyListError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let entries = serde_json::from_slice(&bytes).map_err(|e| DenyListError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self { entries })
    }

    /// Writes the list to `path` atomically. Blocking.
    pub fn save(&self, path: &Path) -> Result<(), DenyListError> {
        let body = serde_json::to_vec_pretty(&self.entries).expect("revocations serialize");
        write_atomic(path, &body).map_err(|source| DenyListError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Adds every revocation of `list` not yet held; true when something was added. Nothing is
    /// ever removed.
    pub fn merge(&mut self, list: &[Revocation]) -> bool {
        let before = self.entries.len();
        for r in list {
            if !self.entries.contains(r) {
                self.entries.push(r.clone());
            }
        }
        self.entries.len() != before
    }

    /// Every revocation held, in the order they arrived.
    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }

    /// The first revocation covering `g`.
    pub fn covering(&self, g: &Grants) -> Option<&Revocation> {
        first_match(&self.entries, g.holder())
    }

    /// Takes out of a pass what the list covers. A covered assignment is never launched and is
    /// reported `failed` with the revocation; a covered running workspace (desired or not, known
    /// from its assignment or from what it recorded at launch, `recorded`) is stopped and reported
    /// `revoked`.
    pub fn screen(
        &self,
        desired: Option<&[Assignment]>,
        actual: Vec<Observed>,
        recorded: &BTreeMap<String, Grants>,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Screened {
        if self.entries.is_empty() {
            return Screened {
                desired: desired.map(<[_]>::to_vec),
                actual,
                actions: Vec::new(),
            };
        }
        let running: BTreeSet<&str> = actual.iter().map(|o| o.workspace.as_str()).collect();
        let mut covered: BTreeMap<String, &Revocation> = BTreeMap::new();
        let mut actions = Vec::new();
        let mut kept = Vec::new();
        for a in desired.unwrap_or_default() {
            match self.covering(&Grants::of(a, catalog)) {
                Some(r) => {
                    covered.insert(a.id.clone(), r);
                    if !running.contains(a.id.as_str()) {
                        actions.push(Action::Report(observation(
                            &a.id,
                            State::Failed,
                            format!("refused by this site: {}", describe(r)),
                            now,
                        )));
                    }
                }
                None => kept.push(a.clone()),
            }
        }
        let desired_ids: BTreeSet<&str> = desired
            .unwrap_or_default()
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        for o in &actual {
            if desired_ids.contains(o.workspace.as_str()) {
                continue;
            }
            if let Some(r) = recorded.get(&o.workspace).and_then(|g| self.covering(g)) {
                covered.insert(o.workspace.clone(), r);
            }
        }
        let mut rest = Vec::new();
        for o in actual {
            match covered.get(&o.workspace) {
                Some(r) => {
                    actions.push(Action::Stop {
                        workspace: o.workspace.clone(),
                        reason: StopReason::Revoked,
                    });
                    actions.push(Action::Report(observation(
                        &o.workspace,
                        State::Revoked,
                        format!("stopped by this site: {}", describe(r)),
                        now,
                    )));
                }
                None => rest.push(o),
            }
        }
        Screened {
            desired: desired.map(|_| kept),
            actual: rest,
            actions,
        }
    }
}

fn describe(r: &Revocation) -> String {
    format!(
        "revoked by revocation {} ({}: {})",
        r.seq,
        r.reason,
        r.selectors()
    )
}

fn observation(workspace: &str, state: State, message: String, now: DateTime<Utc>) -> Observation {
    Observation {
        workspace: workspace.to_owned(),
        state,
        message: Some(message),
        at: now,
        outputs: None,
    }
}

#[cfg(test)]
mod tests {
    use basho_core::revocation::Reason;

    use super::*;
    use crate::backend::RunState;

    fn id(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    fn revocation(seq: i64, jti: &str) -> Revocation {
        Revocation {
            seq,
            dataset: None,
            subject: None,
            project: None,
            visa_jti: Some(jti.into()),
            reason: Reason::DacRevoked,
            at: Utc::now(),
        }
    }

    fn grants(jti: &str) -> Grants {
        Grants {
            project: id("P-1"),
            owner: "alice".into(),
            datasets: vec![id("D1")],
            visas: vec![VisaId {
                jti: jti.into(),
                iat: 1,
                datasets: None,
            }],
        }
    }

    fn running(ws: &str) -> Observed {
        Observed {
            workspace: ws.into(),
            handle: format!("h-{ws}"),
            state: RunState::Running,
            expires_at: None,
        }
    }

    #[test]
    fn the_list_survives_a_restart_and_never_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE);
        let mut list = DenyList::load(&path).unwrap();
        assert!(list.entries().is_empty());
        let first = revocation(1, "a");
        assert!(list.merge(&[first.clone(), revocation(2, "b")]));
        assert!(!list.merge(&[first]), "nothing new");
        list.save(&path).unwrap();
        let mut again = DenyList::load(&path).unwrap();
        assert_eq!(again, list);
        // An orchestrator that no longer lists an entry does not remove it.
        assert!(!again.merge(&[]));
        assert_eq!(again.entries().len(), 2);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_list_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"[{\"seq\":").unwrap();
        let e = DenyList::load(&path).unwrap_err();
        assert!(e.to_string().contains("restore it"), "{e}");
    }

    #[test]
    fn covered_workspaces_stop_even_when_no_assignment_names_them() {
        let mut list = DenyList::default();
        list.merge(&[revocation(3, "bad")]);
        let recorded = BTreeMap::from([
            ("ws-1".to_owned(), grants("bad")),
            ("ws-2".to_owned(), grants("good")),
        ]);
        let out = list.screen(
            None,
            vec![running("ws-1"), running("ws-2")],
            &recorded,
            &Catalog::default(),
            Utc::now(),
        );
        assert!(out.desired.is_none());
        assert_eq!(out.actual, vec![running("ws-2")]);
        assert!(matches!(&out.actions[0],
            Action::Stop { workspace, reason: StopReason::Revoked } if workspace == "ws-1"));
        let Action::Report(o) = &out.actions[1] else {
            panic!("{:?}", out.actions)
        };
        assert_eq!(o.state, State::Revoked);
        assert!(o.message.as_deref().unwrap().contains("revocation 3"));
    }

    #[test]
    fn a_dataset_revocation_weighs_only_that_datasets_visas() {
        use basho_core::visa::mint::Visa;

        use crate::fixtures::{AssignmentExt, ISSUER, catalog};
        let mut list = DenyList::default();
        list.merge(&[Revocation {
            dataset: Some(id("JGAD000102")),
            visa_jti: None,
            ..revocation(1, "unused")
        }]);
        // An old visa for JGAD000101, a fresh one (issued after the revocation) for JGAD000102.
        let mut a = Assignment::test("ws-1").with_dataset("JGAD000101");
        a.datasets.push(id("JGAD000102"));
        a.visas.push(ISSUER.sign(&Visa {
            iat_in: 30,
            ..Visa::new("alice", "JGAD000102")
        }));
        let catalog = catalog(std::path::Path::new("/srv/jga"));
        let out = list.screen(
            Some(&[a.clone()]),
            vec![],
            &BTreeMap::new(),
            &catalog,
            Utc::now(),
        );
        assert_eq!(out.desired, Some(vec![a.clone()]), "{:?}", out.actions);
        // With JGAD000102's own visa old, the revocation covers it.
        a.visas[1] = ISSUER.mint("alice", "JGAD000102");
        let out = list.screen(Some(&[a]), vec![], &BTreeMap::new(), &catalog, Utc::now());
        assert_eq!(out.desired, Some(vec![]));
    }

    #[test]
    fn an_empty_list_changes_nothing() {
        let out = DenyList::default().screen(
            Some(&[]),
            vec![running("ws-1")],
            &BTreeMap::new(),
            &Catalog::default(),
            Utc::now(),
        );
        assert_eq!(out.desired, Some(vec![]));
        assert_eq!(out.actual.len(), 1);
        assert!(out.actions.is_empty());
    }
}
