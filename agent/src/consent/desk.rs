//! Withdrawals recorded at the site and applied by its agent: `basho-agent withdraw` writes a
//! request into the releases directory, the running agent (which owns the site's audit log)
//! makes the release, records it and answers; a request written while the agent is down is
//! applied when it starts.
//!
//! ```text
//! <releases_dir>/.requests/<id>.json   waiting (0600: it holds the IDs)
//! <releases_dir>/.answers/<id>.json    what became of it (0600)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use basho_core::Ident;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ConsentError, Manifest, check_ids, ids_digest, json_files, write_atomically};
use crate::catalog::Catalog;
use crate::reconcile::hostdirs::{HostDirs, WorkspaceRecord};

const REQUESTS: &str = ".requests";
const ANSWERS: &str = ".answers";

/// A withdrawal the site recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `wd-...`, ordered by time.
    pub id: String,
    /// The dataset.
    pub dataset: Ident,
    /// The pseudonymous participant IDs.
    pub participants: Vec<String>,
    /// Why, for the record.
    pub reason: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The request's id.
    pub id: String,
    /// The dataset.
    pub dataset: Ident,
    /// When the request was recorded.
    #[serde(default = "Utc::now")]
    pub at: DateTime<Utc>,
    /// Participants it named.
    #[serde(default)]
    pub participants: u64,
    /// SHA-256 of their sorted IDs, one per line.
    #[serde(default)]
    pub participants_sha256: String,
    /// The release made current, if one was.
    pub made: Option<Manifest>,
    /// The release current before.
    pub previous: u32,
    /// IDs the current release did not hold.
    pub unknown: Vec<String>,
    /// Why no release was made, when that failed.
    pub error: Option<String>,
    /// Workspaces at the site still mounting an older release.
    pub on_older: Vec<String>,
    /// Files in the `/work` and `/results` of the dataset's workspaces that hold a withdrawn
    /// ID, by workspace (paths as the workspace sees them): for the site admin and the owner.
    #[serde(default)]
    pub hits: std::collections::BTreeMap<String, Vec<String>>,
}

/// Where requests and answers are kept.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// The spool of the site whose releases are under `releases_dir`.
    pub fn new(releases_dir: &Path) -> Spool {
        Spool {
            root: releases_dir.to_owned(),
        }
    }

    /// Checks and records a withdrawal of `participants` from `dataset`, which `catalog` must hold.
    pub fn record(
        &self,
        catalog: &Catalog,
        dataset: &Ident,
        participants: &[String],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Request, ConsentError> {
        catalog
            .dataset(dataset)
            .map_err(|e| ConsentError::Invalid(e.to_string()))?;
        let ids = check_ids(participants)?;
        if reason.trim().is_empty() {
            return Err(ConsentError::Invalid(
                "the reason is empty; say why, for the record".into(),
            ));
        }
        let request = Request {
            id: format!("wd-{}", uuid::Uuid::now_v7()),
            dataset: dataset.clone(),
            participants: ids.into_iter().collect(),
            reason: reason.to_owned(),
            at: now,
        };
        let dir = self.root.join(REQUESTS);
        let io = |e: std::io::Error| ConsentError::Invalid(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let json = serde_json::to_vec(&request).expect("a request serializes");
        write_atomically(&dir.join(format!("{}.json", request.id)), &json, 0o600).map_err(io)?;
        Ok(request)
    }

    /// The answer to request `id`, once there is one.
    pub fn answer(&self, id: &str) -> Option<Answer> {
        let bytes = std::fs::read(self.root.join(ANSWERS).join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every answer given, oldest first.
    pub fn answers(&self) -> Vec<Answer> {
        let mut out: Vec<Answer> = json_files(&self.root.join(ANSWERS));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Waits up to `timeout` for the answer to request `id`, calling `waiting` with the time
    /// waited about every 10 s; `None` when there is none yet. Blocking.
    pub fn wait(
        &self,
        id: &str,
        timeout: std::time::Duration,
        mut waiting: impl FnMut(std::time::Duration),
    ) -> Option<Answer> {
        let started = std::time::Instant::now();
        let mut said = std::time::Instant::now();
        loop {
            if let Some(a) = self.answer(id) {
                return Some(a);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            if said.elapsed() >= std::time::Duration::from_secs(10) {
                waiting(started.elapsed());
                said = std::time::Instant::now();
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The requests waiting, oldest first.
    pub fn pending(&self) -> Vec<Request> {
        let mut out: Vec<Request> = json_files(&self.root.join(REQUESTS));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Applies `r` to `catalog`'s dataset, answers it and removes it; `dirs` are the site's
    /// workspace directories, to say which still mount an older release and which hold a
    /// withdrawn ID in their `/work` or `/results`. Blocking.
    pub fn apply(&self, r: &Request, catalog: &Catalog, dirs: &HostDirs) -> Answer {
        // Answered before the agent died, the request not yet removed: the answer stands.
        if let Some(a) = self.answer(&r.id) {
            let _ = std::fs::remove_file(self.root.join(REQUESTS).join(format!("{}.json", r.id)));
            return a;
        }
        let ids: BTreeSet<String> = r.participants.iter().cloned().collect();
        let made = match (catalog.dataset(&r.dataset), catalog.releases(&r.dataset)) {
            (Ok(d), Some(releases)) => {
                let previous = releases.current(&d.path).0;
                releases
                    .withdraw(&d.consent_source(), &ids, &r.reason, Utc::now())
                    .map_err(|e| (previous, e.to_string()))
            }
            (Err(e), _) => Err((0, e.to_string())),
            (_, None) => Err((0, "this site keeps no releases".into())),
        };
        let mut answer = match made {
            Ok(o) => Answer {
                id: r.id.clone(),
                dataset: r.dataset.clone(),
                at: r.at,
                participants: ids.len() as u64,
                participants_sha256: ids_digest(&ids),
                made: o.made,
                previous: o.previous,
                unknown: o.unknown,
                error: None,
                on_older: Vec::new(),
                hits: Default::default(),
            },
            Err((previous, why)) => Answer {
                id: r.id.clone(),
                dataset: r.dataset.clone(),
                at: r.at,
                participants: ids.len() as u64,
                participants_sha256: ids_digest(&ids),
                made: None,
                previous,
                unknown: Vec::new(),
                error: Some(why),
                on_older: Vec::new(),
                hits: Default::default(),
            },
        };
        if answer.made.is_some() {
            basho_core::crash_point!("agent.consent.current");
        }
        let current = answer.made.as_ref().map_or(answer.previous, |m| m.release);
        let records: Vec<WorkspaceRecord> = dirs
            .records()
            .into_iter()
            .filter(|w| w.datasets.contains(&r.dataset))
            .collect();
        answer.on_older = records
            .iter()
            .filter(|w| w.releases.get(&r.dataset).copied().unwrap_or(1) < current)
            .map(|w| w.id.clone())
            .collect();
        let withdrawn = catalog
            .releases(&r.dataset)
            .map(|rel| rel.withdrawn())
            .unwrap_or_default();
        if let Ok(Some(m)) = super::scan::Matcher::new(&withdrawn) {
            for w in &records {
                let mut found = copies(&m, &dirs.work_dir(&w.id, &w.project), "/work");
                found.extend(copies(&m, &dirs.results_dir(&w.id), "/results"));
                if !found.is_empty() {
                    answer.hits.insert(w.id.clone(), found);
                }
            }
        }
        let dir = self.root.join(ANSWERS);
        let json = serde_json::to_vec_pretty(&answer).expect("an answer serializes");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| write_atomically(&dir.join(format!("{}.json", r.id)), &json, 0o600));
        if let Err(e) = written {
            tracing::warn!(error = %e, request = %r.id, "the withdrawal's answer was not written");
        }
        basho_core::crash_point!("agent.consent.answered");
        let _ = std::fs::remove_file(self.root.join(REQUESTS).join(format!("{}.json", r.id)));
        answer
    }
}

impl Answer {
    /// What it says, a line each, for the site admin; `Err` when no release could be made.
    pub fn summary(&self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        if !self.unknown.is_empty() {
            lines.push(format!(
                "not in release {} (withdrawn before, or never in it): {}",
                self.previous,
                self.unknown.join(", ")
            ));
        }
        if let Some(e) = &self.error {
            return Err(format!(
                "no new release of {}: {e}; release {} stays current",
                self.dataset, self.previous
            ));
        }
        lines.push(match &self.made {
            Some(m) => format!(
                "release {} of {} is current (was {}): {} row(s) and sample(s) removed, {} \
                 participant(s) in it, sha256 {}",
                m.release, self.dataset, self.previous, m.removed, m.participants, m.digest
            ),
            None => format!(
                "no new release of {}: none of the participants is in release {}",
                self.dataset, self.previous
            ),
        });
        if !self.on_older.is_empty() {
            lines.push(format!(
                "on an older release: {} (launched again on the current one at once, /work and \
                 /results kept, where the site's backend can; a Slurm job keeps its release \
                 until it ends)",
                self.on_older.join(", ")
            ));
        }
        for (workspace, files) in &self.hits {
            lines.push(format!(
                "workspace {workspace} holds a withdrawn participant's ID in {} (its files \
                 cannot leave through the airlock; tell its owner)",
                files.join(", ")
            ));
        }
        Ok(lines)
    }
}

/// What the site's audit log records of an applied withdrawal: counts and a digest, never IDs.
pub fn audit_detail(r: &Request, a: &Answer) -> serde_json::Value {
    let ids: BTreeSet<String> = r.participants.iter().cloned().collect();
    serde_json::json!({
        "request": r.id,
        "dataset": r.dataset,
        "participants": ids.len(),
        "participants_sha256": ids_digest(&ids),
        "unknown": a.unknown.len(),
        "reason": r.reason,
        "previous": a.previous,
        "release": a.made.as_ref().map(|m| m.release),
        "release_sha256": a.made.as_ref().map(|m| m.digest.clone()),
        "error": a.error,
        "on_older": a.on_older,
        "hits": a.hits,
    })
}

/// Largest file searched for withdrawn IDs in a workspace's directories.
const MAX_SCANNED: u64 = 256 << 20;

/// The files under `root` (links not followed) that hold one of the IDs `m` finds, named as the
/// workspace sees them (`shown` + the relative path); a file too large to read is named too.
fn copies(m: &super::scan::Matcher, root: &Path, shown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let path = e.path();
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let big = e.metadata().map_or(true, |md| md.len() > MAX_SCANNED);
            let hit = big || std::fs::read(&path).is_ok_and(|b| m.find(&b).is_some());
            if hit {
                let note = if big { " (too large to search)" } else { "" };
                out.push(format!("{shown}/{rel}{note}"));
            }
        }
    }
    out.sort();
    out
}

/// How often the agent looks for recorded withdrawals.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies recorded withdrawals until `stop`, one at a time, each in the site's audit log.
pub async fn apply_loop(
    spool: Spool,
    catalog: Catalog,
    dirs: HostDirs,
    audit: std::sync::Arc<crate::site_audit::SiteAudit>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        for r in spool.pending() {
            let (s, c, w, req) = (spool.clone(), catalog.clone(), dirs.clone(), r.clone());
            let Ok(answer) = tokio::task::spawn_blocking(move || s.apply(&req, &c, &w)).await
            else {
                continue;
            };
            match (&answer.made, &answer.error) {
                (Some(m), _) => tracing::info!(dataset = %r.dataset, release = m.release,
                    removed = m.removed, on_older = answer.on_older.len(),
                    "withdrawal applied: a new release is current"),
                (None, Some(e)) => tracing::warn!(dataset = %r.dataset, error = %e,
                    "withdrawal not applied; the current release stays"),
                (None, None) => tracing::info!(dataset = %r.dataset,
                    "withdrawal recorded; none of its participants is in the current release"),
            }
            if let Err(e) = audit
                .record(
                    "consent_withdrawal",
                    r.dataset.as_str(),
                    audit_detail(&r, &answer),
                )
                .await
            {
                tracing::error!(error = %e, request = %r.id,
                    "a withdrawal was applied but could not be written to the site's audit log");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
