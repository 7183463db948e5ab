//! basho's binaries as real processes (`basho-orchestrator serve`, `basho-agent run`) from a
//! config file, their output appended to one log, killable with SIGKILL or armed with crash
//! points (`FAILPOINTS`, see `basho_core::crash`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// One running binary.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` (`basho-orchestrator` or `basho-agent`) on `config`, appending to `log`.
    pub fn start(bin: &str, config: &Path, log: &Path) -> Proc {
        Self::start_armed(bin, config, log, None)
    }

    /// Like [`start`](Self::start), with `FAILPOINTS` set to `failpoints` when given.
    pub fn start_armed(bin: &str, config: &Path, log: &Path, failpoints: Option<&str>) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let sub = if bin == "basho-orchestrator" {
            "serve"
        } else {
            "run"
        };
        let mut cmd = Command::new(crate::binary(bin));
        cmd.args([sub, "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        Proc {
            child: cmd.spawn().unwrap(),
            log: log.to_owned(),
        }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status once it has ended by itself, waiting up to `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log it shares with the other processes of the test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
