//! The site's own audit log, `<state_dir>/audit.jsonl`: what this agent did (launches,
//! stops and quarantines, sessions opened and refused) and every signed checkpoint of the
//! orchestrator's chain it received, one entry per line, hash-chained exactly as the
//! orchestrator's log is ([`basho_core::audit`]). `basho audit verify --site-audit FILE` checks it
//! and holds the orchestrator's chain to the checkpoints in it: a chain rewritten or cut at the
//! orchestrator no longer matches what the sites kept. Each entry is on disk (fsync) before
//! what it records goes on; a session whose opening cannot be written does not open.

use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use basho_core::audit::{AuditEntry, next_entry, verify_chain};
use chrono::Utc;
use serde_json::{Value, json};

/// The log's file name in the state directory.
pub const FILE: &str = "audit.jsonl";

/// Why the site audit log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SiteAuditError {
    /// Reading or writing it failed.
    #[error("site audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// What is there does not verify.
    #[error(
        "site audit log {path} does not verify ({why}); keep it for the site's auditors and move \
         it aside to start a new one"
    )]
    Broken {
        /// The file.
        path: PathBuf,
        /// Where and why.
        why: String,
    },
}

struct Tail {
    last: Option<(i64, String)>,
    checkpoint: Option<String>,
}

/// An open site audit log; appends are serialized.
pub struct SiteAudit {
    path: PathBuf,
    tail: Mutex<Tail>,
}

impl std::fmt::Debug for SiteAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteAudit")
            .field("path", &self.path)
            .finish()
    }
}

/// Every entry of the site audit log at `path`, oldest first.
pub fn read(path: &Path) -> Result<Vec<AuditEntry>, SiteAuditError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SiteAuditError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut entries = Vec::new();
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| SiteAuditError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let e: AuditEntry = serde_json::from_str(&line).map_err(|e| SiteAuditError::Broken {
            path: path.to_owned(),
            why: format!("line {} does not parse: {e}", i + 1),
        })?;
        entries.push(e);
    }
    Ok(entries)
}

impl SiteAudit {
    /// Opens (or starts) the site audit log in `state_dir`, checking what is there.
    pub fn open(state_dir: &Path) -> Result<Self, SiteAuditError> {
        let path = state_dir.join(FILE);
        let entries = read(&path)?;
        verify_chain(&entries).map_err(|b| SiteAuditError::Broken {
            path: path.clone(),
            why: b.to_string(),
        })?;
        let checkpoint = entries
            .iter()
            .rev()
            .find(|e| e.action == "checkpoint_received")
            .and_then(|e| e.detail["checkpoint"].as_str().map(str::to_owned));
        Ok(Self {
            path,
            tail: Mutex::new(Tail {
                last: entries.last().map(|e| (e.seq, e.hash.clone())),
                checkpoint,
            }),
        })
    }

    /// Appends one entry and flushes it to disk. Blocking.
    pub fn append(&self, action: &str, target: &str, detail: Value) -> Result<(), SiteAuditError> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let prev = tail.last.as_ref().map(|(s, h)| (*s, h.as_str()));
        let e = next_entry(prev, Utc::now(), "agent", action, target, detail);
        let mut line = serde_json::to_vec(&e).expect("an entry serializes");
        line.push(b'\n');
        let io = |source| SiteAuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(&line).map_err(io)?;
        f.sync_data().map_err(io)?;
        tail.last = Some((e.seq, e.hash));
        Ok(())
    }

    /// [`SiteAudit::append`] off the async threads.
    pub async fn record(
        self: &Arc<Self>,
        action: &'static str,
        workspace: &str,
        detail: Value,
    ) -> Result<(), String> {
        let (log, ws) = (self.clone(), workspace.to_owned());
        tokio::task::spawn_blocking(move || log.append(action, &ws, detail))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Records a checkpoint of the orchestrator's chain, unless it is the one recorded last.
    pub fn checkpoint(&self, jws: &str) -> Result<(), SiteAuditError> {
        let same = self
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoint
            .as_deref()
            == Some(jws);
        if same {
            return Ok(());
        }
        self.append("checkpoint_received", "", json!({ "checkpoint": jws }))?;
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoint = Some(jws.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_chain_across_reopening_and_a_checkpoint_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = SiteAudit::open(dir.path()).unwrap();
        j.append("workspace_launched", "ws-1", json!({"project": "P-1"}))
            .unwrap();
        j.checkpoint("cp-1").unwrap();
        j.checkpoint("cp-1").unwrap();
        drop(j);
        let j = SiteAudit::open(dir.path()).unwrap();
        j.checkpoint("cp-1").unwrap();
        j.checkpoint("cp-2").unwrap();
        let entries = read(&dir.path().join(FILE)).unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "workspace_launched",
                "checkpoint_received",
                "checkpoint_received"
            ]
        );
        assert_eq!(verify_chain(&entries), Ok(3));
    }

    #[test]
    fn an_altered_log_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let j = SiteAudit::open(dir.path()).unwrap();
        j.append(
            "session_opened",
            "ws-1",
            json!({"actor": "researcher:alice"}),
        )
        .unwrap();
        j.append(
            "session_opened",
            "ws-1",
            json!({"actor": "researcher:alice"}),
        )
        .unwrap();
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("alice", "mallory", 1)).unwrap();
        let e = SiteAudit::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }
}
