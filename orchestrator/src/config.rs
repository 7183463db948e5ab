//! The orchestrator config (`orchestrator.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;

use basho_core::visa::IssuerRef;
use basho_core::Ident;
use serde::{Deserialize, Serialize};

/// The whole orchestrator config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve the API on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database (`basho.db`).
    pub data_dir: PathBuf,
    /// Store URL; `sqlite::memory:` for tests. Defaults to the file under `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// Directory of workspace templates (`<name>.toml`).
    pub templates_dir: PathBuf,
    /// Bearer tokens of the platform.
    #[serde(default)]
    pub platform_tokens: Vec<String>,
    /// One token per site agent.
    #[serde(default)]
    pub agents: Vec<AgentAuth>,
    /// Issuers whose visas are accepted.
    #[serde(default)]
    pub trusted_issuers: Vec<IssuerRef>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// A site agent's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAuth {
    /// Site name.
    pub site: Ident,
    /// Its bearer token.
    pub token: String,
}

/// Request and timing limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Longest long-poll an agent may ask for, seconds.
    #[serde(default = "default_poll")]
    pub long_poll_max_s: u64,
    /// A site not heard from for this long has its workspaces shown `unknown`, seconds.
    #[serde(default = "default_silent")]
    pub agent_silent_s: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_body() -> usize {
    256 * 1024
}
fn default_poll() -> u64 {
    30
}
fn default_silent() -> u64 {
    90
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_body(),
            long_poll_max_s: default_poll(),
            agent_silent_s: default_silent(),
        }
    }
}
