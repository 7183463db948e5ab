//! The `[backend]` table of a Docker site: which engine, and which of its containers are this
//! agent's; and its checks.

use serde::{Deserialize, Serialize};

/// A Docker engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Engine socket; the local default when absent.
    #[serde(default)]
    pub socket: Option<String>,
    /// Labels this agent's containers `io.basho.namespace=<namespace>` and manages only those,
    /// for engines shared by agents with the same site name (development machines). Leave it
    /// unset on a production site: the agent then manages every container of its site.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `basho-init` on the Docker host (`scripts/build-init` makes it, statically linked): bound
    /// read-only into every workspace as its first process, it ends the workload at the
    /// workspace's expiry even while no agent runs. Unset, expiry is the agent's alone.
    #[serde(default)]
    pub init: Option<std::path::PathBuf>,
}

impl DockerConfig {
    /// Every problem of a Docker `[backend]` table, empty when it is fine.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(ns) = &self.namespace
            && let Err(e) = basho_core::id::validate(ns)
        {
            p.push(format!("backend.namespace: {e}"));
        }
        if let Some(init) = &self.init {
            if !init.is_absolute() {
                p.push(format!(
                    "backend.init {} is not absolute; name basho-init by its absolute path",
                    init.display()
                ));
            } else if !init.is_file() {
                p.push(format!(
                    "backend.init {} is not a file; build it with scripts/build-init",
                    init.display()
                ));
            }
        }
        p
    }
}
