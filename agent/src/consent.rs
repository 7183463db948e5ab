//! Consent withdrawal at the site: a dataset is a sequence of immutable releases, and a
//! withdrawal makes the next one without the participants who withdrew.
//!
//! ```text
//! <releases_dir>/<DATASET>/
//!   2/ 3/ ...        releases after the first (the first is the catalog's own path), read-only
//!   2.json ...       their manifests: digest, rows, participants, what was withdrawn (a count)
//!   current          link to the release new workspaces mount; replaced atomically
//!   withdrawn        every withdrawn participant ID, one per line (0600; never leaves the site)
//!   .building-N/     a release being made; removed and made again after a crash
//! ```
//!
//! A release is built from the current one: CSV and TSV rows whose participant column names a
//! withdrawn participant are dropped (every other byte kept as it was), VCF samples are removed
//! with `bcftools view -s ^...`, other files go through the dataset's filter command when it has
//! one and are linked unchanged otherwise. Then every file's name and content is searched for
//! every withdrawn ID; one found anywhere and the release is not made current. Only a complete,
//! checked release is renamed into place, and only then does `current` point at it: a crash or a
//! full disk leaves the previous release current and nothing half-written mounted.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use basho_core::Ident;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod api;
pub mod desk;
mod filter;
pub mod report;
pub mod scan;

/// The link to the current release.
const CURRENT: &str = "current";
/// The withdrawn IDs, one per line.
const WITHDRAWN: &str = "withdrawn";

/// Why a withdrawal made no release.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The list of IDs is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a release failed (a full disk, say); the previous release stays current.
    #[error("{what} {path}: {source}; release {current} stays current")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The current release, unchanged.
        current: u32,
        /// Why.
        source: io::Error,
    },
    /// A filter (bcftools, the dataset's command) failed.
    #[error("{0}; the previous release stays current")]
    Filter(String),
    /// A withdrawn ID is still in the new release.
    #[error(
        "a withdrawn participant is still in the new release ({0}); it was not made current. \
         Give the dataset a participant_column for its tables, or a filter_command for this file"
    )]
    Remains(String),
}

/// A dataset as the site's catalog holds it, for making its releases.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The catalog's path: release 1.
    pub original: &'a Path,
    /// The CSV/TSV column holding the pseudonymous participant ID.
    pub participant_column: Option<&'a str>,
    /// `argv` run as `argv... WITHDRAWN_FILE INPUT OUTPUT` for files that are not tables or VCF.
    pub filter_command: &'a [String],
}

/// One release, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its number; 1 is the catalog's path.
    pub release: u32,
    /// The release it was made from.
    pub parent: u32,
    /// SHA-256 over its files' names and digests, hex.
    pub digest: String,
    /// Files in it.
    pub files: u64,
    /// Table rows in it (header lines not counted).
    pub rows: u64,
    /// Distinct participants in its participant columns and VCF samples.
    pub participants: u64,
    /// Rows and samples this release removed.
    pub removed: u64,
    /// Participants withdrawn by the withdrawal that made it.
    pub withdrawn: u64,
    /// SHA-256 of that withdrawal's sorted IDs (one per line), hex: evidence without the IDs.
    pub withdrawal_digest: String,
    /// Why, as the site recorded it.
    pub reason: String,
    /// When it became current.
    pub made_at: DateTime<Utc>,
}

/// What a withdrawal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The release made current, or `None` when none of the IDs was in the current one.
    pub made: Option<Manifest>,
    /// The release current before.
    pub previous: u32,
    /// IDs found in no table column or VCF of the current release (withdrawn before, or never
    /// in it): recorded, nothing else done for them.
    pub unknown: Vec<String>,
}

/// The releases of one dataset at a site.
#[derive(Debug, Clone)]
pub struct Releases {
    root: PathBuf,
}

fn io_err(what: &'static str, path: &Path, current: u32) -> impl FnOnce(io::Error) -> ConsentError {
    let path = path.to_owned();
    move |source| ConsentError::Io {
        what,
        path,
        current,
        source,
    }
}

/// Checks a list of participant IDs: each non-empty, printable, without separators a table or
/// a file of IDs would split, and the list not empty.
pub fn check_ids(ids: &[String]) -> Result<BTreeSet<String>, ConsentError> {
    if ids.is_empty() {
        return Err(ConsentError::Invalid(
            "no participant IDs; name at least one".into(),
        ));
    }
    let mut set = BTreeSet::new();
    for id in ids {
        if id.is_empty()
            || id.len() > 256
            || id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ',' | ';' | '"'))
        {
            return Err(ConsentError::Invalid(format!(
                "participant ID {id:?} is malformed: 1 to 256 printable characters, no white \
                 space, commas, semicolons or quotes"
            )));
        }
        set.insert(id.clone());
    }
    Ok(set)
}

/// SHA-256 of the sorted IDs, one per line, hex.
pub fn ids_digest(ids: &BTreeSet<String>) -> String {
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    basho_core::digest::sha256_hex(text.as_bytes())
}

impl Releases {
    /// The releases of `dataset` under `releases_dir`.
    pub fn new(releases_dir: &Path, dataset: &Ident) -> Releases {
        Releases {
            root: releases_dir.join(dataset.as_str()),
        }
    }

    /// The current release's number and directory: the newest made current, or release 1 (the
    /// catalog's own path) when none was.
    pub fn current(&self, original: &Path) -> (u32, PathBuf) {
        let link = self.root.join(CURRENT);
        match std::fs::read_link(&link) {
            Ok(target) => {
                let n = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok());
                match n {
                    Some(n) => (n, self.root.join(target)),
                    None => (1, original.to_owned()),
                }
            }
            Err(_) => (1, original.to_owned()),
        }
    }

    /// The manifests of the releases made (and of release 1 once [`Releases::first`] measured
    /// it), oldest first.
    pub fn manifests(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = json_files(&self.root);
        out.sort_by_key(|m| m.release);
        out
    }

    /// Release 1's manifest (the catalog's own path, as it is), measured once and kept beside
    /// the others; `now` is when. Blocking: it reads the whole dataset the first time.
    pub fn first(&self, source: &Source<'_>, now: DateTime<Utc>) -> Result<Manifest, ConsentError> {
        let path = self.root.join("1.json");
        if let Some(m) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return Ok(m);
        }
        let err = |what| io_err(what, &self.root, 1);
        let stats = filter::measure(source.original, source).map_err(|e| match e {
            filter::Error::Io(e) => err("measure")(e),
            filter::Error::Tool(why) => ConsentError::Filter(why),
        })?;
        let manifest = Manifest {
            release: 1,
            parent: 0,
            digest: stats.digest,
            files: stats.files,
            rows: stats.rows,
            participants: stats.participants,
            removed: 0,
            withdrawn: 0,
            withdrawal_digest: String::new(),
            reason: String::new(),
            made_at: now,
        };
        std::fs::create_dir_all(&self.root).map_err(err("create"))?;
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        write_atomically(&path, &json, 0o644).map_err(err("write the manifest in"))?;
        Ok(manifest)
    }

    /// Every participant withdrawn so far.
    pub fn withdrawn(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.root.join(WITHDRAWN))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Withdraws `ids` from `source`: records them, makes the next release without them, checks
    /// none of every withdrawn ID remains, and makes it current. Blocking; one at a time per
    /// dataset (the caller serialises).
    pub fn withdraw(
        &self,
        source: &Source<'_>,
        ids: &BTreeSet<String>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, ConsentError> {
        let (previous, current) = self.current(source.original);
        let err = |what| io_err(what, &self.root, previous);
        // Applied again after the agent died between making the release current and answering:
        // the release this withdrawal made is its answer.
        let digest = ids_digest(ids);
        if previous > 1
            && let Some(m) = self
                .manifests()
                .into_iter()
                .find(|m| m.release == previous && m.withdrawal_digest == digest)
        {
            return Ok(Outcome {
                previous: m.parent,
                made: Some(m),
                unknown: Vec::new(),
            });
        }
        std::fs::create_dir_all(&self.root).map_err(err("create"))?;
        // Recorded first: a crash later still leaves them withdrawn for the next attempt.
        let mut all = self.withdrawn();
        all.extend(ids.iter().cloned());
        let list: String = all.iter().map(|i| format!("{i}\n")).collect();
        write_atomically(&self.root.join(WITHDRAWN), list.as_bytes(), 0o600)
            .map_err(err("record the withdrawn IDs in"))?;
        basho_core::crash_point!("agent.consent.recorded");

        let next = previous + 1;
        let building = self.root.join(format!(".building-{next}"));
        remove_sealed(&building).map_err(err("remove the unfinished release in"))?;
        // The current release's participants, when its manifest says: the new one's are those
        // less the withdrawn found, not counted again.
        let known = self
            .manifests()
            .into_iter()
            .find(|m| m.release == previous)
            .map(|m| m.participants);
        let stats = match self.build(source, &current, &building, &all, previous, known) {
            Ok(stats) => stats,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&building);
                return Err(e);
            }
        };
        let unknown: Vec<String> = ids
            .iter()
            .filter(|i| !stats.found.contains(*i))
            .cloned()
            .collect();
        // None of them was in a table or VCF, and no filter command looked at other files:
        // nothing changed, no release is made.
        if stats.removed == 0 && source.filter_command.is_empty() {
            let _ = std::fs::remove_dir_all(&building);
            return Ok(Outcome {
                made: None,
                previous,
                unknown,
            });
        }
        basho_core::crash_point!("agent.consent.built");
        // One placed by a run that died before making it current is made again.
        let dir = self.root.join(next.to_string());
        remove_sealed(&dir).map_err(err("remove the unfinished release in"))?;
        seal(&building).map_err(err("make read-only"))?;
        std::fs::rename(&building, &dir).map_err(err("rename into place"))?;
        basho_core::crash_point!("agent.consent.placed");
        let manifest = Manifest {
            release: next,
            parent: previous,
            digest: stats.digest,
            files: stats.files,
            rows: stats.rows,
            participants: stats.participants,
            removed: stats.removed,
            withdrawn: (ids.len() - unknown.len()) as u64,
            withdrawal_digest: digest,
            reason: reason.to_owned(),
            made_at: now,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        write_atomically(&self.root.join(format!("{next}.json")), &json, 0o644)
            .map_err(err("write the manifest in"))?;
        // The commit point: new workspaces mount this release from here on.
        let tmp = self.root.join(".current");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(next.to_string(), &tmp).map_err(err("link"))?;
        std::fs::rename(&tmp, self.root.join(CURRENT)).map_err(err("make current"))?;
        sync_dir(&self.root).map_err(err("sync"))?;
        Ok(Outcome {
            made: Some(manifest),
            previous,
            unknown,
        })
    }

    fn build(
        &self,
        source: &Source<'_>,
        from: &Path,
        to: &Path,
        withdrawn: &BTreeSet<String>,
        current: u32,
        known: Option<u64>,
    ) -> Result<filter::Stats, ConsentError> {
        let stats = filter::copy_without(from, Some(to), source, withdrawn, known).map_err(
            |e| match e {
                filter::Error::Io(e) => io_err("build", to, current)(e),
                filter::Error::Tool(why) => ConsentError::Filter(why),
            },
        )?;
        if let Some(found) = scan::find(to, withdrawn).map_err(io_err("check", to, current))? {
            return Err(ConsentError::Remains(found));
        }
        Ok(stats)
    }
}

/// The `*.json` files in `dir` that parse as `T`, in no order; none when it is missing.
fn json_files<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes `dir` (a release, read-only once sealed) when it is there: its directories are made
/// writable first, so a site whose agent is not root can remove it too.
fn remove_sealed(dir: &Path) -> io::Result<()> {
    let Ok(kind) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if kind.is_dir() {
        let mut dirs = vec![dir.to_owned()];
        while let Some(d) = dirs.pop() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
            for e in std::fs::read_dir(&d)?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
    }
    std::fs::remove_dir_all(dir)
}

/// Syncs every file and makes the tree read-only (files 0444, directories 0555), deepest first.
/// Files linked from the release before keep their mode: they are that release's too.
fn seal(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            seal(&path)?;
        } else if kind.is_file() && entry.metadata()?.nlink() == 1 {
            std::fs::File::open(&path)?.sync_all()?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
        }
    }
    sync_dir(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o555))
}

#[cfg(test)]
mod tests;
