//! The host side of a workspace: `<state_dir>/workspaces/<id>/workspace.json` (bound read-only at
//! `/etc/basho/workspace.json`), `<work_root>/<id>/` (`/work`; `<work_root>/<project>/` where the
//! site shares it per project) and `<results_root>/<id>/` (`/results`), owned by the isolation
//! user; a revoked workspace's are moved to `.quarantine/` under their roots. Blocking: call from
//! `spawn_blocking`.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use basho_core::Ident;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Paths;

/// A host directory could not be made or removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}; check that the agent may write there")]
pub struct HostDirError {
    /// What was being done.
    pub action: &'static str,
    /// Where.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> HostDirError + 'p {
    move |source| HostDirError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// `/etc/basho/workspace.json` inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// Workspace id.
    pub id: String,
    /// Project.
    pub project: Ident,
    /// The researcher.
    pub owner: String,
    /// Mounted datasets.
    pub datasets: Vec<Ident>,
    /// When the site ends it.
    pub expires_at: DateTime<Utc>,
    /// The release of each dataset it mounts (1: the catalog's path; later ones are made by
    /// consent withdrawals).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub releases: std::collections::BTreeMap<Ident, u32>,
}

/// Where a prepared workspace's directories are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// `/work`.
    pub work_dir: PathBuf,
    /// `/results`.
    pub results_dir: PathBuf,
    /// `/etc/basho/workspace.json`.
    pub workspace_json: PathBuf,
}

/// How writable directories come to belong to the workspace user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The agent runs as root (a real site): chown to `uid:gid`, mode 0700.
    Chown(u32, u32),
    /// The agent already is the workspace user: mode 0700.
    AlreadyOwned,
    /// Neither (a laptop): the only way the workspace can write is mode 0777.
    WorldWritable,
}

impl Ownership {
    /// What this process can do for a workspace user `uid:gid`.
    pub fn for_user(uid: u32, gid: u32) -> Self {
        match process_uid() {
            Some(0) => Ownership::Chown(uid, gid),
            Some(me) if me == uid => Ownership::AlreadyOwned,
            _ => Ownership::WorldWritable,
        }
    }
}

/// The effective uid of this process (the owner of `/proc/self`), without unsafe code.
fn process_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Where revoked workspaces' directories are kept, under `work_root` and `results_root`.
pub const QUARANTINE: &str = ".quarantine";

/// The agent's host directories.
#[derive(Debug, Clone)]
pub struct HostDirs {
    paths: Paths,
    ownership: Ownership,
}

impl HostDirs {
    /// Directories under `paths`, made writable for the workspace user as `ownership` allows.
    pub fn new(paths: Paths, ownership: Ownership) -> Self {
        Self { paths, ownership }
    }

    /// How writable directories are handed over.
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// The agent's own directory for workspace `id`.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.paths.state_dir.join("workspaces").join(id)
    }

    /// Creates (or finds) the workspace's directories and writes its `workspace.json`.
    pub fn prepare(&self, record: &WorkspaceRecord) -> Result<Prepared, HostDirError> {
        let state = self.state_dir(&record.id);
        std::fs::create_dir_all(&state).map_err(io_err("create", &state))?;
        set_mode(&state, 0o755)?;
        let json = state.join("workspace.json");
        let tmp = state.join("workspace.json.tmp");
        let body = serde_json::to_vec_pretty(record).map_err(|e| HostDirError {
            action: "encode",
            path: json.clone(),
            source: io::Error::other(e),
        })?;
        std::fs::write(&tmp, body).map_err(io_err("write", &tmp))?;
        set_mode(&tmp, 0o644)?;
        std::fs::rename(&tmp, &json).map_err(io_err("write", &json))?;

        let work_dir = self.work_dir(&record.id, &record.project);
        let results_dir = self.results_dir(&record.id);
        for dir in [&work_dir, &results_dir] {
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            self.hand_over(dir)?;
        }
        Ok(Prepared {
            work_dir,
            results_dir,
            workspace_json: json,
        })
    }

    fn hand_over(&self, dir: &Path) -> Result<(), HostDirError> {
        match self.ownership {
            Ownership::Chown(uid, gid) => {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(io_err("chown", dir))?;
                set_mode(dir, 0o700)
            }
            Ownership::AlreadyOwned => set_mode(dir, 0o700),
            Ownership::WorldWritable => set_mode(dir, 0o777),
        }
    }

    /// Where workspace `id` has its `/results`.
    pub fn results_dir(&self, id: &str) -> PathBuf {
        self.paths.results_root.join(id)
    }

    /// The records of every workspace the site holds.
    pub fn records(&self) -> Vec<WorkspaceRecord> {
        let Ok(entries) = std::fs::read_dir(self.paths.state_dir.join("workspaces")) else {
            return Vec::new();
        };
        let mut out: Vec<WorkspaceRecord> = entries
            .flatten()
            .filter_map(|e| {
                let bytes = std::fs::read(e.path().join("workspace.json")).ok()?;
                serde_json::from_slice(&bytes).ok()
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Where workspace `id` of `project` has its `/work`.
    pub fn work_dir(&self, id: &str, project: &Ident) -> PathBuf {
        self.paths.work_dir(id, project)
    }

    /// Moves the `/work` and `/results` of a revoked workspace aside, into `.quarantine/` under
    /// their roots (the same file system, so nothing is copied): kept for the site's admin,
    /// mounted by no workspace again. A project's shared `/work` goes too: later workspaces of
    /// the project start with an empty one. Answers where they went. Blocking; call before
    /// [`HostDirs::remove`], which drops the record naming the project.
    pub fn quarantine(&self, id: &str, at: DateTime<Utc>) -> Result<Vec<PathBuf>, HostDirError> {
        let text = std::fs::read(self.state_dir(id).join("workspace.json"));
        let project = text
            .ok()
            .and_then(|t| serde_json::from_slice::<WorkspaceRecord>(&t).ok())
            .map(|r| r.project);
        let stamp = at.format("%Y%m%dT%H%M%SZ");
        let mut moved = Vec::new();
        let work = project.map(|p| self.work_dir(id, &p));
        let results = Some(self.results_dir(id));
        for dir in [work, results].into_iter().flatten() {
            if !dir.exists() {
                continue;
            }
            let root = dir.parent().unwrap_or(Path::new("/")).join(QUARANTINE);
            std::fs::create_dir_all(&root).map_err(io_err("create", &root))?;
            set_mode(&root, 0o700)?;
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let to = root.join(format!("{name}-{id}-{stamp}"));
            std::fs::rename(&dir, &to).map_err(io_err("quarantine", &dir))?;
            moved.push(to);
        }
        Ok(moved)
    }

    /// Removes the agent's own directory of workspace `id`; `/work` and `/results` stay.
    pub fn remove(&self, id: &str) -> Result<(), HostDirError> {
        let state = self.state_dir(id);
        match std::fs::remove_dir_all(&state) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &state)(e)),
            _ => Ok(()),
        }
    }

    /// The expiry written when the workspace was launched, for backends that keep none.
    pub fn recorded_expiry(&self, id: &str) -> Option<DateTime<Utc>> {
        let text = std::fs::read(self.state_dir(id).join("workspace.json")).ok()?;
        serde_json::from_slice::<WorkspaceRecord>(&text)
            .ok()
            .map(|r| r.expires_at)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), HostDirError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions on", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{id, t0};

    fn dirs(root: &Path, ownership: Ownership) -> HostDirs {
        HostDirs::new(Paths::under(root), ownership)
    }

    fn record() -> WorkspaceRecord {
        WorkspaceRecord {
            releases: [(id("JGAD000101"), 2)].into(),
            id: "ws-1".into(),
            project: id("P-0001"),
            owner: "alice".into(),
            datasets: vec![id("JGAD000101")],
            expires_at: t0(),
        }
    }

    #[test]
    fn prepares_idempotently_and_removes_only_the_state_dir() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), Ownership::WorldWritable);
        let p = d.prepare(&record()).unwrap();
        assert_eq!(p, d.prepare(&record()).unwrap());
        assert_eq!(p.work_dir, root.path().join("work/ws-1"));
        assert_eq!(p.results_dir, root.path().join("results/ws-1"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p.work_dir), 0o777);
        assert_eq!(mode(&p.workspace_json), 0o644);
        let back: WorkspaceRecord =
            serde_json::from_slice(&std::fs::read(&p.workspace_json).unwrap()).unwrap();
        assert_eq!(back, record());
        assert_eq!(d.recorded_expiry("ws-1"), Some(t0()));

        std::fs::write(p.results_dir.join("out.csv"), "x").unwrap();
        d.remove("ws-1").unwrap();
        d.remove("ws-1").unwrap();
        assert!(!d.state_dir("ws-1").exists());
        assert!(p.results_dir.join("out.csv").exists());
        assert!(p.work_dir.exists());
        assert_eq!(d.recorded_expiry("ws-1"), None);
    }

    #[test]
    fn work_is_per_workspace_unless_the_site_shares_it_per_project() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), Ownership::WorldWritable);
        let other = WorkspaceRecord {
            id: "ws-2".into(),
            ..record()
        };
        assert_ne!(
            d.prepare(&record()).unwrap().work_dir,
            d.prepare(&other).unwrap().work_dir
        );
        let mut paths = d.paths.clone();
        paths.project_work = true;
        let shared = HostDirs::new(paths, Ownership::WorldWritable);
        let a = shared.prepare(&record()).unwrap().work_dir;
        assert_eq!(a, root.path().join("work/P-0001"));
        assert_eq!(a, shared.prepare(&other).unwrap().work_dir);
    }

    #[test]
    fn a_revoked_workspaces_directories_are_quarantined_not_reused() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), Ownership::WorldWritable);
        let p = d.prepare(&record()).unwrap();
        std::fs::write(p.work_dir.join("copy.csv"), "rows").unwrap();
        std::fs::write(p.results_dir.join("out.csv"), "x").unwrap();
        let moved = d.quarantine("ws-1", t0()).unwrap();
        assert_eq!(moved.len(), 2);
        assert!(!p.work_dir.exists() && !p.results_dir.exists());
        let q = root.path().join("work").join(QUARANTINE);
        assert_eq!(moved[0], q.join("ws-1-ws-1-20260101T000000Z"));
        assert_eq!(std::fs::read(moved[0].join("copy.csv")).unwrap(), b"rows");
        assert!(moved[1].join("out.csv").exists());
        let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Nothing there any more: nothing to move, and a new launch starts empty.
        d.remove("ws-1").unwrap();
        assert!(d.quarantine("ws-1", t0()).unwrap().is_empty());
    }

    #[test]
    fn chowns_to_the_workspace_user() {
        let root = tempfile::tempdir().unwrap();
        let me = process_uid().unwrap();
        let gid = std::fs::metadata(root.path()).unwrap().gid();
        // Chown to oneself works without privileges and exercises the same call.
        let d = dirs(root.path(), Ownership::Chown(me, gid));
        let p = d.prepare(&record()).unwrap();
        let meta = std::fs::metadata(&p.results_dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (me, gid));
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        if me != 0 {
            let d = dirs(root.path(), Ownership::Chown(me + 1, gid));
            let err = d.prepare(&record()).unwrap_err();
            assert_eq!(err.action, "chown");
        }
    }
}
