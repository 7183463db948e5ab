//! The `[backend]` table of a Slurm site: the login node the agent reaches over SSH, how jobs are
//! submitted, and the container runtime the job script starts; and its checks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A Slurm site: the login node the agent reaches over SSH, how jobs are submitted, and the
/// container runtime the job script starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// The login node.
    pub login: LoginNode,
    /// `--partition`; the cluster's default when absent.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--account` per project ID; projects not listed use `default_account`.
    #[serde(default)]
    pub accounts: BTreeMap<String, String>,
    /// `--account` for projects not in `accounts`; none (the user's default) when absent.
    #[serde(default)]
    pub default_account: Option<String>,
    /// `--qos`: the site's QOS for basho's jobs (its limits, such as `GrpTRES`, and whether the
    /// site's own users may preempt them, are the site's to set in Slurm); the account's default
    /// when absent.
    #[serde(default)]
    pub qos: Option<String>,
    /// `--nice`: lowers basho's jobs below the site's own at the same priority (0 to 100000).
    #[serde(default)]
    pub nice: Option<u32>,
    /// Extra `#SBATCH` options, each one option such as `--qos=normal`.
    #[serde(default)]
    pub directives: Vec<String>,
    /// The container runtime the job script runs.
    #[serde(default)]
    pub runtime: Runtime,
    /// The runtime's program on the compute nodes; the runtime's own name when absent.
    #[serde(default)]
    pub runtime_path: Option<String>,
    /// Job script template (minijinja); the built-in `templates/slurm/workspace.sh.j2` when absent.
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// Directory on the cluster for the jobs' `--output` files; Slurm's default when absent.
    #[serde(default)]
    pub output_dir: Option<String>,
}

/// The largest `--nice` the agent sends (Slurm's own bound is far higher; no site needs it).
pub const MAX_NICE: u32 = 100_000;

/// How the agent reaches the login node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginNode {
    /// Host name or address.
    pub host: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// The service account jobs are submitted as.
    pub user: String,
    /// Private key file (OpenSSH format) for `user`.
    pub identity_file: PathBuf,
    /// known_hosts file that must hold the login node's host key; there is no blind trust.
    pub known_hosts: PathBuf,
    /// Connect and handshake timeout, seconds.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Longest a Slurm command may take before the agent gives up on it, seconds.
    #[serde(default = "default_command_timeout_s")]
    pub command_timeout_s: u64,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_connect_timeout_s() -> u64 {
    10
}
fn default_command_timeout_s() -> u64 {
    30
}

/// The container runtime inside a Slurm job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Apptainer (Singularity), with a SIF image; the usual choice on HPC.
    #[default]
    Apptainer,
    /// Docker on the compute node.
    Docker,
    /// Podman on the compute node.
    Podman,
}

impl Runtime {
    /// The runtime's name, also its default program.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apptainer => "apptainer",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

impl SlurmConfig {
    /// Every problem of a Slurm `[backend]` table, empty when it is fine.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        let cfg = self;
        let login = &cfg.login;
        if login.host.trim().is_empty() || login.user.trim().is_empty() {
            p.push("backend.login.host and backend.login.user must be set".into());
        }
        if login.port == 0 {
            p.push("backend.login.port must not be 0".into());
        }
        if login.connect_timeout_s == 0 || login.command_timeout_s == 0 {
            p.push("backend.login timeouts must be at least 1 s".into());
        }
        for (what, path) in [
            ("identity_file", &login.identity_file),
            ("known_hosts", &login.known_hosts),
        ] {
            match std::fs::read(path) {
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                    p.push(format!("backend.login.{what} {} is empty", path.display()))
                }
                Ok(_) => {}
                Err(e) => p.push(format!(
                    "backend.login.{what} {} cannot be read: {e}",
                    path.display()
                )),
            }
        }
        let words = cfg
            .accounts
            .values()
            .chain(&cfg.default_account)
            .chain(&cfg.partition)
            .chain(&cfg.qos)
            .chain(&cfg.runtime_path);
        for w in words {
            if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.push(format!(
                    "backend: {w:?} is not a usable account, partition, QOS or program name"
                ));
            }
        }
        if cfg.nice.is_some_and(|n| n > MAX_NICE) {
            p.push(format!(
                "backend.nice must be 0 to {MAX_NICE}; a higher value lowers basho's jobs more"
            ));
        }
        if let Err(e) = crate::backend::slurm::site_template(cfg) {
            p.push(format!("backend (job script): {e}"));
        }
        p
    }
}
