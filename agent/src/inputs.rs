//! A federated job's released partials, staged for its aggregation step: each file fetched from
//! the orchestrator (which relays it from its own site's airlock store and checks it against
//! the reviewed digest), checked again here against the digest the assignment names, and kept
//! under the workspace's state directory as `inputs/<site>/<name>`, bound read-only at
//! `/inputs`. A file already there whole is not fetched again, so a restarted agent or a
//! launch tried again only fetches what is missing.

use std::path::{Path, PathBuf};

use basho_core::digest::hex;
use basho_core::federated::PartialInput;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::client::Client;

/// Why the partials could not be staged; the launch is tried again.
#[derive(Debug, thiserror::Error)]
#[error("the federated job's partials could not be staged: {0}")]
pub struct StageError(pub String);

/// The directory under `state` the partials go to.
pub fn dir(state: &Path) -> PathBuf {
    state.join("inputs")
}

/// Fetches every file of `inputs` not already under `dir` whole; answers how many bytes came.
pub async fn stage(
    client: &Client,
    dir: &Path,
    inputs: &[PartialInput],
) -> Result<u64, StageError> {
    let mut fetched = 0;
    for input in inputs {
        let site_dir = dir.join(input.site.as_str());
        for f in &input.files {
            let dest = site_dir.join(&f.name);
            if whole(&dest, f.size, &f.sha256).await {
                continue;
            }
            let parent = dest.parent().unwrap_or(&site_dir).to_owned();
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(|e| StageError(format!("creating {}: {e}", parent.display())))?;
            let part = parent.join(format!(
                ".{}.part",
                dest.file_name().and_then(|n| n.to_str()).unwrap_or("input")
            ));
            let writing =
                |e: std::io::Error| StageError(format!("writing {}: {e}", part.display()));
            let fetching = |e| StageError(format!("{} of site {}: {e}", f.name, input.site));
            let mut file = tokio::fs::File::create(&part).await.map_err(writing)?;
            let mut resp = client
                .released_file(&input.release, &f.name)
                .await
                .map_err(fetching)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = Client::chunk(&mut resp).await.map_err(fetching)? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(writing)?;
            }
            file.sync_all().await.map_err(writing)?;
            let got = hex(&hasher.finalize());
            if got != f.sha256 || size != f.size {
                let _ = std::fs::remove_file(&part);
                return Err(StageError(format!(
                    "{} of site {} arrived as {size} bytes with SHA-256 {got}, not the {} bytes \
                     released ({})",
                    f.name, input.site, f.size, f.sha256
                )));
            }
            set_read_only(&part)?;
            std::fs::rename(&part, &dest)
                .map_err(|e| StageError(format!("placing {}: {e}", dest.display())))?;
            fetched += size;
        }
    }
    Ok(fetched)
}

/// `path` holds the file whole: the size and digest it was released with.
async fn whole(path: &Path, size: u64, sha256: &str) -> bool {
    let path = path.to_owned();
    let sha256 = sha256.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            return false;
        };
        if !m.is_file() || m.len() != size {
            return false;
        }
        let Ok(mut f) = std::fs::File::open(&path) else {
            return false;
        };
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher).is_ok() && hex(&hasher.finalize()) == sha256
    })
    .await
    .unwrap_or(false)
}

/// Readable by the workspace's user, written by no one.
fn set_read_only(path: &Path) -> Result<(), StageError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| StageError(format!("making {} read-only: {e}", path.display())))
}
