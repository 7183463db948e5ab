//! The real one-node Slurm cluster `scripts/slurm-up` starts on this machine: how to reach its
//! login node over SSH, and small helpers to look at it from the test's side (`squeue`, `sacct`,
//! stopping and starting its sshd).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use basho_agent::backend::LaunchSpec;
use basho_agent::backend::suite::example_spec;
use basho_agent::config::{LoginNode, Runtime, SlurmConfig};
use basho_core::Ident;

/// Where `scripts/slurm-up` writes `testbed.env`, unless `BASHO_SLURM_TESTBED` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/basho-slurm-testbed";

/// What `testbed.env` says.
#[derive(Debug, Clone)]
pub struct Testbed {
    vars: BTreeMap<String, String>,
}

impl Testbed {
    /// Reads `testbed.env`; panics with the command to run when the cluster was never set up, so
    /// a missing cluster fails the test instead of skipping it.
    pub fn load() -> Testbed {
        Self::try_load().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads `testbed.env` and checks that the cluster's controller answers; says why not.
    pub fn try_load() -> Result<Testbed, String> {
        let dir = std::env::var("BASHO_SLURM_TESTBED").unwrap_or_else(|_| DEFAULT_DIR.into());
        let file = PathBuf::from(&dir).join("testbed.env");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "no Slurm testbed at {} ({e}); run scripts/slurm-up (scripts/test does)",
                file.display()
            )
        })?;
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        match Command::new("squeue").arg("--noheader").output() {
            Ok(out) if out.status.success() => Ok(Testbed { vars }),
            Ok(out) => Err(format!(
                "the Slurm test cluster does not answer (squeue: {}); run scripts/slurm-up",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!(
                "no squeue on this machine ({e}); run scripts/slurm-up"
            )),
        }
    }

    /// One key of `testbed.env`.
    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("testbed.env has no {key}; re-run scripts/slurm-up"))
    }

    /// The login node as a site config names it.
    pub fn login(&self) -> LoginNode {
        LoginNode {
            host: self.get("SLURM_SSH_HOST").into(),
            port: self.get("SLURM_SSH_PORT").parse().expect("a port"),
            user: self.get("SLURM_SSH_USER").into(),
            identity_file: self.get("SLURM_SSH_KEY").into(),
            known_hosts: self.get("SLURM_KNOWN_HOSTS").into(),
            connect_timeout_s: 5,
            command_timeout_s: 20,
        }
    }

    /// A Slurm backend config for this cluster with `runtime`.
    pub fn backend(&self, runtime: Runtime) -> SlurmConfig {
        SlurmConfig {
            qos: None,
            nice: None,
            login: self.login(),
            partition: Some(self.get("SLURM_PARTITION").into()),
            accounts: BTreeMap::new(),
            default_account: Some(self.get("SLURM_ACCOUNT").into()),
            directives: Vec::new(),
            runtime,
            runtime_path: None,
            template: None,
            output_dir: None,
        }
    }

    /// Stops the login node's sshd and every connection it holds.
    pub fn stop_sshd(&self) {
        let pid = std::fs::read_to_string(self.get("SLURM_SSHD_PID_FILE")).unwrap_or_default();
        let pid = pid.trim();
        if pid.is_empty() {
            return;
        }
        // Per-connection sshd processes are children of the listener: end them too, or pooled
        // sessions would survive the "outage".
        let _ = Command::new("pkill").args(["-KILL", "-P", pid]).status();
        let _ = Command::new("kill").args(["-KILL", pid]).status();
        let _ = std::fs::remove_file(self.get("SLURM_SSHD_PID_FILE"));
    }

    /// Starts the login node's sshd again.
    pub fn start_sshd(&self) {
        let ok = Command::new("/usr/sbin/sshd")
            .args(["-f", self.get("SLURM_SSHD_CONFIG")])
            .status()
            .expect("sshd runs")
            .success();
        assert!(ok, "sshd did not start");
    }
}

/// Runs a Slurm command on this machine (the cluster's own node) and returns its stdout.
pub fn slurm(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(job id, state)` of every job named `basho-<workspace>` that Slurm still lists, ended ones
/// included.
pub fn jobs_of(workspace: &str) -> Vec<(u64, String)> {
    let name = format!("--name=basho-{workspace}");
    slurm(&[
        "squeue",
        "--noheader",
        "--states=all",
        &name,
        "--format=%i|%T",
    ])
    .lines()
    .filter_map(|l| {
        let (id, state) = l.split_once('|')?;
        Some((id.trim().parse().ok()?, state.trim().to_owned()))
    })
    .collect()
}

/// How many jobs accounting has ever recorded for `basho-<workspace>`. Accounting lags the
/// controller a little, so this waits (up to 15 s) for at least one record.
pub fn jobs_ever(workspace: &str) -> usize {
    let name = format!("--name=basho-{workspace}");
    let count = || {
        slurm(&[
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            "--allusers",
            &name,
            "--starttime=now-1days",
            "--format=JobIDRaw",
        ])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let n = count();
        if n > 0 || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A spec the docker runtime inside a job can start: `image` (the demo image) and real
/// directories under `dir`.
pub fn runnable_spec(dir: &std::path::Path, site: &Ident, image: &str, id: &str) -> LaunchSpec {
    let mut spec = example_spec(site, id);
    spec.image = image.to_owned();
    spec.work_dir = dir.join("work");
    spec.results_dir = dir.join("results").join(id);
    spec.workspace_json = dir.join(format!("{id}.json"));
    std::fs::create_dir_all(&spec.work_dir).unwrap();
    std::fs::create_dir_all(&spec.results_dir).unwrap();
    std::fs::write(&spec.workspace_json, "{}").unwrap();
    spec
}
