//! The site's side of the results airlock: a researcher's files under a workspace's `/results`
//! are copied, at the site, into a content-addressed store outside every container, read-only
//! once written, and checked there ([`basho_core::airlock`]) before any reviewer sees them. What
//! is reviewed and released is that copy: a file changed in `/results` afterwards is not it.
//!
//! Every name is checked before anything is copied: a relative path of plain components, no
//! symbolic link anywhere on it, a regular file, within the site's limits. Files are opened
//! without following links and checked again through the open descriptor, so a researcher who
//! swaps a path for a link while the request is taken gets a refusal, never a file from
//! elsewhere. A request that is refused leaves nothing in the store.

use basho_core::digest::hex;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use basho_core::airlock::{RowIndex, Rules, check_file};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `[airlock]` table of the site config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirlockConfig {
    /// Most files in one release request.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Most bytes in one release request, all files together.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Where the store keeps the copies (mode 0700); default `<state_dir>/airlock`.
    #[serde(default)]
    pub store_dir: Option<PathBuf>,
    /// Most bytes of the workspace's own datasets read to find copied records, per request;
    /// tables past it are not compared, and the answer says how many.
    #[serde(default = "default_max_index_bytes")]
    pub max_index_bytes: u64,
    /// The automated checks ([`basho_core::airlock::Rules`]).
    #[serde(default)]
    pub checks: Rules,
    /// A federated job's partial results whose every file passed every automated check leave
    /// without a checker (the site's own rule releases them); otherwise they wait for review
    /// as any release request.
    #[serde(default)]
    pub auto_release_partials: bool,
}

fn default_max_index_bytes() -> u64 {
    1 << 30
}

fn default_max_files() -> usize {
    100
}

fn default_max_bytes() -> u64 {
    100 << 20
}

impl Default for AirlockConfig {
    fn default() -> Self {
        Self {
            max_files: default_max_files(),
            max_bytes: default_max_bytes(),
            store_dir: None,
            max_index_bytes: default_max_index_bytes(),
            checks: Rules::default(),
            auto_release_partials: false,
        }
    }
}

impl AirlockConfig {
    /// Where the store is.
    pub fn store_path(&self, state_dir: &Path) -> PathBuf {
        self.store_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("airlock"))
    }

    /// What is wrong with the table, each saying what to fix (`check-config`).
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .checks
            .problems()
            .into_iter()
            .map(|m| format!("airlock.checks: {m}"))
            .collect();
        if self.max_files == 0 || self.max_bytes == 0 {
            p.push("airlock.max_files and airlock.max_bytes of 0 refuse every request".into());
        }
        if let Some(dir) = &self.store_dir
            && !dir.is_absolute()
        {
            p.push(format!(
                "airlock.store_dir {} is not absolute; name it by absolute path",
                dir.display()
            ));
        }
        p
    }
}

/// Why a release request was refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A name that is not a plain relative path under `/results`.
    #[error("{name:?} is not a file under /results: {why}")]
    BadPath {
        /// The name as asked.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A name that is not a regular file (a directory, a link, a device, a FIFO, a socket).
    #[error(
        "{name:?} is {what}, not a regular file; only regular files under /results can be released"
    )]
    NotAFile {
        /// The name as asked.
        name: String,
        /// What it is.
        what: &'static str,
    },
    /// A name that does not exist.
    #[error("{name:?} does not exist under /results")]
    Missing {
        /// The name as asked.
        name: String,
    },
    /// The request is over the site's limits.
    #[error("{0}")]
    TooLarge(String),
    /// The same file named twice.
    #[error("{0:?} is named twice")]
    Duplicate(String),
    /// A workspace the site did not launch, or no longer holds.
    #[error("{0}")]
    Unknown(String),
    /// The disk failed.
    #[error("the site's airlock store failed at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl IntakeError {
    /// The API's error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            IntakeError::BadPath { .. } => "invalid_path",
            IntakeError::NotAFile { .. } => "not_a_file",
            IntakeError::Missing { .. } => "no_such_file",
            IntakeError::TooLarge(_) => "too_large",
            IntakeError::Duplicate(_) => "invalid_path",
            IntakeError::Unknown(_) => "unknown_workspace",
            IntakeError::Io { .. } => "airlock_unavailable",
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IntakeError + '_ {
    move |source| IntakeError::Io {
        path: path.to_owned(),
        source,
    }
}

pub use basho_core::release::Taken;

/// The content-addressed store: `<root>/sha256/<first two hex>/<hex>`, each file 0444.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root`, made (mode 0700) when missing.
    pub fn open(root: &Path) -> Result<Store, IntakeError> {
        for dir in [root.to_owned(), root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_at(&dir))?;
        }
        Ok(Store {
            root: root.to_owned(),
        })
    }

    /// Where the copy of `sha256` is (it may not exist); `None` for a digest that is not 64
    /// lowercase hex characters.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        let hex = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then(|| self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Copies at most `limit` bytes of `src` in; the digest, the size, and whether this put
    /// made the copy (an identical file may be there already). More than `limit` bytes is
    /// [`IntakeError::TooLarge`], and nothing is kept.
    fn put(
        &self,
        name: &str,
        src: &mut impl Read,
        limit: u64,
    ) -> Result<(String, u64, bool), IntakeError> {
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_at(&tmp_dir))?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut src = src.take(limit.saturating_add(1));
        loop {
            let n = src.read(&mut buf).map_err(io_at(Path::new(name)))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > limit {
                return Err(IntakeError::TooLarge(format!(
                    "{name:?} grew past the request's limit while it was copied"
                )));
            }
            hash.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_at(tmp.path()))?;
        }
        tmp.as_file().sync_all().map_err(io_at(tmp.path()))?;
        let digest = hex(&hash.finalize());
        let to = self.path(&digest).expect("a SHA-256 in hex");
        if to.exists() {
            return Ok((digest, size, false));
        }
        let dir = to.parent().expect("a store path has a parent");
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o444))
            .map_err(io_at(tmp.path()))?;
        tmp.persist(&to).map_err(|e| IntakeError::Io {
            path: to.clone(),
            source: e.error,
        })?;
        Ok((digest, size, true))
    }

    /// Removes copies this request made (on a refusal).
    fn forget(&self, made: &[String]) {
        for digest in made {
            if let Some(p) = self.path(digest) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// `name` as plain components under `/results`, or why not.
fn components(name: &str) -> Result<Vec<&str>, IntakeError> {
    let bad = |why: &str| IntakeError::BadPath {
        name: name.to_owned(),
        why: why.to_owned(),
    };
    let name_ = name.strip_prefix("/results/").unwrap_or(name);
    if name_.is_empty() || name_.contains('\0') {
        return Err(bad("an empty name or one with a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in Path::new(name_).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| bad("not UTF-8"))?),
            Component::ParentDir => return Err(bad("`..` leaves /results")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("absolute paths outside /results are refused"));
            }
            Component::CurDir => {}
        }
    }
    if parts.is_empty() {
        return Err(bad("it names /results itself"));
    }
    Ok(parts)
}

fn kind_of(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    })
}

/// Opens `name` under `results` with no link followed anywhere on the way: each directory is
/// checked not to be a link, and the file is opened without following one and checked again
/// through its descriptor.
fn open_under(results: &Path, name: &str) -> Result<(File, u64), IntakeError> {
    let parts = components(name)?;
    let mut at = results.to_owned();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IntakeError::Missing {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(io_at(&at)(e)),
        };
        let last = i + 1 == parts.len();
        let what = kind_of(&meta);
        match (last, what) {
            (false, _) if meta.file_type().is_dir() => {}
            (false, Some(what)) | (true, Some(what)) => {
                return Err(IntakeError::NotAFile {
                    name: name.to_owned(),
                    what: if last {
                        what
                    } else {
                        "under a path that is not a directory"
                    },
                });
            }
            (false, None) => {
                return Err(IntakeError::NotAFile {
                    name: name.to_owned(),
                    what: "under a file",
                });
            }
            (true, None) => {}
        }
    }
    // O_NOFOLLOW: a link swapped in since the check is not followed; O_NONBLOCK: a FIFO swapped
    // in does not hold the agent waiting for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(&at)
        .map_err(|e| match e.raw_os_error() {
            Some(n) if n == rustix::io::Errno::LOOP.raw_os_error() => IntakeError::NotAFile {
                name: name.to_owned(),
                what: "a symbolic link",
            },
            _ => io_at(&at)(e),
        })?;
    let meta = file.metadata().map_err(io_at(&at))?;
    if let Some(what) = kind_of(&meta) {
        return Err(IntakeError::NotAFile {
            name: name.to_owned(),
            what,
        });
    }
    // The descriptor's own path: a directory on the way swapped for a link since the walk shows
    // here as a path outside /results.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", raw_fd(&file))).ok();
    let root = std::fs::canonicalize(results).map_err(io_at(results))?;
    if real.as_deref().is_some_and(|r| !r.starts_with(&root)) {
        return Err(IntakeError::BadPath {
            name: name.to_owned(),
            why: "it resolved outside /results while it was opened".into(),
        });
    }
    Ok((file, meta.len()))
}

fn raw_fd(f: &File) -> i32 {
    use std::os::fd::AsRawFd as _;
    f.as_raw_fd()
}

/// `O_NOFOLLOW | O_NONBLOCK` on Linux.
fn libc_flags() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Takes the files `names` under `results` into `store` and checks each against `rules`, the
/// workspace's dataset rows in `index`. Refused as a whole (nothing kept) when any name does not
/// hold or the request is over `config`'s limits. Blocking: run it off the runtime's threads.
pub fn take(
    results: &Path,
    names: &[String],
    config: &AirlockConfig,
    store: &Store,
    index: &RowIndex,
) -> Result<Vec<Taken>, IntakeError> {
    if names.is_empty() {
        return Err(IntakeError::BadPath {
            name: String::new(),
            why: "name at least one file".into(),
        });
    }
    if names.len() > config.max_files {
        return Err(IntakeError::TooLarge(format!(
            "{} files in one request, more than the site's {} (airlock.max_files); split it",
            names.len(),
            config.max_files
        )));
    }
    let mut opened = Vec::with_capacity(names.len());
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    for name in names {
        let (file, size) = open_under(results, name)?;
        let meta = file.metadata().map_err(io_at(results))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            return Err(IntakeError::Duplicate(name.clone()));
        }
        total = total.saturating_add(size);
        opened.push((name.trim_start_matches("/results/").to_owned(), file));
    }
    if total > config.max_bytes {
        return Err(IntakeError::TooLarge(format!(
            "the files hold {total} bytes, more than the site's {} (airlock.max_bytes)",
            config.max_bytes
        )));
    }
    let mut made = Vec::new();
    let mut taken = Vec::new();
    let mut budget = config.max_bytes;
    for (name, mut file) in opened {
        let put = store.put(&name, &mut file, budget);
        let (sha256, size, new) = match put {
            Ok(p) => p,
            Err(e) => {
                store.forget(&made);
                return Err(e);
            }
        };
        if new {
            made.push(sha256.clone());
        }
        budget -= size;
        let copy = store.path(&sha256).expect("a digest in hex");
        let checked = File::open(&copy).map_err(io_at(&copy)).and_then(|f| {
            check_file(&name, io::BufReader::new(f), &config.checks, index)
                .map_err(|e| io_at(&copy)(io::Error::other(e)))
        });
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                store.forget(&made);
                return Err(e);
            }
        };
        taken.push(Taken {
            name,
            size,
            sha256,
            checked,
        });
    }
    Ok(taken)
}

pub mod desk;
pub mod serve;

#[cfg(test)]
mod tests;
