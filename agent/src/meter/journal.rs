//! The agent's usage journal (`<state_dir>/usage.journal`): JSON lines, appended and synced
//! before anything is sent, so a record exists on disk before the orchestrator can acknowledge
//! it, and survives the agent.
//!
//! Three kinds of line:
//! - `record`: a usage record with its sequence number, and the workspace's *mark* after it (the
//!   cumulative CPU counter and time the record ends at). A record and its mark are written in one
//!   line, so a crash either keeps both or loses both: a lost record's interval is then simply
//!   part of the next one, measured from the previous mark. Nothing is lost, nothing counted twice.
//! - `acked`: the orchestrator has stored every record up to this sequence number.
//! - `mark`: a workspace's mark, carried over when the file is compacted.
//!
//! A torn last line (a crash mid-write) is ignored; the file is rewritten (compacted) at open and
//! whenever enough acknowledged records have piled up, through a temporary file and a rename.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use basho_core::usage::UsageRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The journal's file name in the state directory.
pub const FILE: &str = "usage.journal";
/// Acknowledged lines tolerated before the file is compacted.
const COMPACT_AFTER: usize = 1_000;

/// Where a workspace's metering stands: the backend's cumulative counters at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// Time of the sample.
    pub at: DateTime<Utc>,
    /// Cumulative CPU seconds the backend reported.
    pub cpu_seconds: f64,
    /// Memory in use then, bytes.
    pub memory_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Record {
        record: UsageRecord,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mark: Option<Mark>,
    },
    Acked {
        through: u64,
    },
    Mark {
        workspace: String,
        mark: Mark,
    },
}

/// Journal failures: the disk, or a file that is not a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("usage journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line other than the last does not parse: the file was damaged or edited.
    #[error("usage journal {path}, line {line}: {why}; move the file aside to start a new one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        why: String,
    },
}

/// The journal, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    pending: VecDeque<UsageRecord>,
    marks: BTreeMap<String, Mark>,
    acked: u64,
    next_seq: u64,
    /// The file did not exist: the orchestrator may know a later sequence than this journal.
    fresh: bool,
    stale_lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, replays it and compacts it.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let fresh = !path.exists();
        let mut pending: BTreeMap<u64, UsageRecord> = BTreeMap::new();
        let mut marks = BTreeMap::new();
        let mut acked = 0;
        if !fresh {
            let lines: Vec<String> = BufReader::new(File::open(path).map_err(io)?)
                .lines()
                .collect::<Result<_, _>>()
                .map_err(io)?;
            let last = lines.len();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Entry>(line) {
                    Ok(Entry::Record { record, mark }) => {
                        if let Some(m) = mark {
                            marks.insert(record.workspace.clone(), m);
                        }
                        pending.insert(record.seq, record);
                    }
                    Ok(Entry::Acked { through }) => acked = acked.max(through),
                    Ok(Entry::Mark { workspace, mark }) => {
                        marks.insert(workspace, mark);
                    }
                    // A crash while appending leaves a torn last line: that record never was.
                    Err(_) if i + 1 == last => {
                        tracing::warn!(path = %path.display(), "ignoring a torn last line in the usage journal");
                    }
                    Err(e) => {
                        return Err(JournalError::Corrupt {
                            path: path.to_owned(),
                            line: i + 1,
                            why: e.to_string(),
                        });
                    }
                }
            }
        }
        let next_seq = pending.keys().next_back().copied().unwrap_or(0).max(acked) + 1;
        let pending = pending.into_values().filter(|r| r.seq > acked).collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut journal = Self {
            path: path.to_owned(),
            file,
            pending,
            marks,
            acked,
            next_seq,
            fresh,
            stale_lines: 0,
        };
        journal.compact()?;
        Ok(journal)
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialise");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// True when the journal was created at open: see [`Journal::resume_after`].
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Continues numbering after `seq` (what the orchestrator already holds for this site), for a
    /// journal that was lost or moved aside: numbers it already holds would be taken as repeats.
    pub fn resume_after(&mut self, seq: u64) -> Result<(), JournalError> {
        self.fresh = false;
        let first = self.pending.front().map_or(self.next_seq, |r| r.seq);
        if seq >= first {
            let shift = seq + 1 - first;
            for r in &mut self.pending {
                r.seq += shift;
            }
            self.next_seq += shift;
            self.acked = self.acked.max(seq);
            self.compact()?;
        }
        Ok(())
    }

    /// The workspace's mark, if it has been metered.
    pub fn mark(&self, workspace: &str) -> Option<Mark> {
        self.marks.get(workspace).copied()
    }

    /// Numbers `record`, writes it with the workspace's new `mark`, and syncs; returns the number.
    pub fn append(&mut self, mut record: UsageRecord, mark: Mark) -> Result<u64, JournalError> {
        record.seq = self.next_seq;
        let entry = Entry::Record {
            record,
            mark: Some(mark),
        };
        self.write(&entry)?;
        let Entry::Record { record, .. } = entry else {
            unreachable!("built above")
        };
        self.next_seq += 1;
        self.marks.insert(record.workspace.clone(), mark);
        let seq = record.seq;
        self.pending.push_back(record);
        Ok(seq)
    }

    /// Records not acknowledged yet, oldest first, at most `limit`.
    pub fn pending(&self, limit: usize) -> Vec<UsageRecord> {
        self.pending.iter().take(limit).cloned().collect()
    }

    /// How many records wait for acknowledgement.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The highest sequence number acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The orchestrator holds every record through `through`: they leave the journal.
    pub fn ack(&mut self, through: u64) -> Result<(), JournalError> {
        if through <= self.acked {
            return Ok(());
        }
        self.write(&Entry::Acked { through })?;
        self.acked = through;
        while self.pending.front().is_some_and(|r| r.seq <= through) {
            self.pending.pop_front();
            self.stale_lines += 1;
        }
        if self.stale_lines >= COMPACT_AFTER {
            self.compact()?;
        }
        Ok(())
    }

    /// Drops the marks of workspaces not in `live`: they ended, and are not metered again.
    pub fn retain_marks(&mut self, live: impl Fn(&str) -> bool) {
        self.marks.retain(|w, _| live(w));
    }

    /// Rewrites the file with what still matters: the acknowledged high-water mark, the pending
    /// records and the marks.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut out = Vec::new();
        let mut push = |e: &Entry| {
            out.extend(serde_json::to_vec(e).expect("journal entries serialise"));
            out.push(b'\n');
        };
        push(&Entry::Acked {
            through: self.acked,
        });
        for r in &self.pending {
            push(&Entry::Record {
                record: r.clone(),
                mark: None,
            });
        }
        for (w, m) in &self.marks {
            push(&Entry::Mark {
                workspace: w.clone(),
                mark: *m,
            });
        }
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            OpenOptions::new().append(true).open(&self.path)
        };
        self.file = write().map_err(|e| self.io(e))?;
        self.stale_lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basho_core::Ident;

    fn record(ws: &str, cpu: f64) -> UsageRecord {
        let t = Utc::now();
        UsageRecord {
            seq: 0,
            workspace: ws.into(),
            project: Ident::parse("P-1").unwrap(),
            from: t,
            to: t,
            allocated_core_seconds: 1.0,
            used_cpu_seconds: cpu,
            allocated_memory_gib_seconds: 1.0,
            used_memory_gib_seconds: 0.5,
            peak_memory_bytes: 10,
            gpu_seconds: 0.0,
        }
    }

    fn mark(cpu: f64) -> Mark {
        Mark {
            at: Utc::now(),
            cpu_seconds: cpu,
            memory_bytes: 1,
        }
    }

    #[test]
    fn records_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        assert!(j.is_fresh());
        assert_eq!(j.append(record("a", 1.0), mark(1.0)).unwrap(), 1);
        assert_eq!(j.append(record("b", 2.0), mark(2.0)).unwrap(), 2);
        assert_eq!(j.append(record("a", 3.0), mark(4.0)).unwrap(), 3);
        j.ack(1).unwrap();
        drop(j);

        let mut j = Journal::open(&path).unwrap();
        assert!(!j.is_fresh());
        let seqs: Vec<u64> = j.pending(10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(j.mark("a").unwrap().cpu_seconds, 4.0);
        assert_eq!(j.mark("b").unwrap().cpu_seconds, 2.0);
        assert_eq!(j.append(record("b", 1.0), mark(3.0)).unwrap(), 4);
        j.ack(4).unwrap();
        assert_eq!(j.pending_len(), 0);
        drop(j);

        // Numbering goes on after everything was acknowledged and compacted away.
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.acked(), 4);
        assert_eq!(j.append(record("a", 1.0), mark(5.0)).unwrap(), 5);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_damaged_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        j.append(record("a", 1.0), mark(1.0)).unwrap();
        drop(j);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"kind\":\"record\",\"rec");
        std::fs::write(&path, &text).unwrap();
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.pending_len(), 1);
        assert_eq!(j.mark("a").unwrap().cpu_seconds, 1.0);
        drop(j);

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn a_lost_journal_resumes_after_what_the_orchestrator_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        j.append(record("a", 1.0), mark(1.0)).unwrap();
        j.resume_after(41).unwrap();
        assert_eq!(j.pending(1)[0].seq, 42);
        assert_eq!(j.append(record("a", 1.0), mark(2.0)).unwrap(), 43);
        drop(j);
        let j = Journal::open(&path).unwrap();
        let seqs: Vec<u64> = j.pending(10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![42, 43]);
    }

    #[test]
    fn compaction_keeps_the_file_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        for i in 0..2_500u64 {
            let seq = j.append(record("a", i as f64), mark(i as f64)).unwrap();
            j.ack(seq).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2 * COMPACT_AFTER + 10, "{lines} lines");
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.acked(), 2_500);
        assert_eq!(j.mark("a").unwrap().cpu_seconds, 2_499.0);
    }
}
