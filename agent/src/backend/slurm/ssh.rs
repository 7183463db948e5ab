//! The agent's SSH link to a Slurm login node, through libssh2 (`ssh2`).
//!
//! - Key authentication only, and the login node's host key must be in the site's known_hosts
//!   file: an unknown or changed key is refused, never trusted on first use.
//! - Sessions are reused: a small pool keeps authenticated sessions open, and each command runs
//!   on its own channel. A session that fails in any way is dropped, not returned.
//! - libssh2 blocks, so every call runs on the blocking pool, bounded by the session timeout.
//! - When the node cannot be reached, new attempts back off exponentially (with jitter) instead
//!   of hammering it; calls in between fail at once with the last error.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use ssh2::{CheckResult, KnownHostFileKind, Session};
use tokio::sync::Semaphore;

use crate::config::LoginNode;

pub mod channel;

/// Sessions kept open to the login node, and the most commands run at once.
const POOL_SIZE: usize = 4;
/// First and longest wait between reconnect attempts.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a command did not run (its own failures are in [`Output`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    /// TCP connect or SSH handshake failed, or the link dropped.
    #[error("login node {0}")]
    Unreachable(String),
    /// The host key is not in known_hosts or differs from it.
    #[error("login node host key rejected: {0}")]
    HostKey(String),
    /// The service account's key was not accepted.
    #[error("login node refused the agent's key: {0}")]
    Auth(String),
    /// The command did not finish within the command timeout.
    #[error("command timed out on the login node after {0:?}: {1}")]
    Timeout(Duration, String),
    /// Waiting out a backoff after a failed connect.
    #[error("{0} (next attempt in {1:?})")]
    BackingOff(Box<SshError>, Duration),
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Standard error, trimmed, or the exit status when it is empty.
    pub fn why(&self) -> String {
        let e = self.stderr.trim();
        if e.is_empty() {
            format!("exit status {}", self.status)
        } else {
            e.to_owned()
        }
    }
}

/// An authenticated session and a second handle on its socket (for the reactor to watch while
/// an interactive channel runs on it; see [`channel`]).
pub(crate) struct Linked {
    sess: Session,
    sock: TcpStream,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
    last: Option<SshError>,
}

/// A pooled, host-key-checked link to one login node.
pub struct Login {
    cfg: Arc<LoginNode>,
    idle: Arc<Mutex<Vec<Linked>>>,
    permits: Semaphore,
    backoff: Mutex<Backoff>,
}

impl Login {
    /// A link; nothing is dialled until the first command.
    pub fn new(cfg: LoginNode) -> Self {
        Self {
            cfg: Arc::new(cfg),
            idle: Arc::default(),
            permits: Semaphore::new(POOL_SIZE),
            backoff: Mutex::default(),
        }
    }

    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.cfg.user, self.cfg.host, self.cfg.port)
    }

    /// Runs `command` (one shell line, already quoted) with `stdin`, and returns its output.
    pub async fn run(&self, command: String, stdin: Option<String>) -> Result<Output, SshError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let reused = self.idle.lock().expect("pool lock").pop();
        let session = match reused {
            Some(s) => s,
            None => self.connect().await?,
        };
        let cfg = self.cfg.clone();
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            let out = exec(&session.sess, &command, stdin.as_deref(), &cfg);
            if out.is_ok() {
                idle.lock().expect("pool lock").push(session);
            }
            out
        })
        .await
        .map_err(|e| SshError::Unreachable(format!("ssh task failed: {e}")))?
    }

    /// Opens `command` on a channel of its own that stays open for an interactive session (see
    /// [`channel`]); with `pty`, on a terminal of `cols × rows`. The session it runs on leaves
    /// the pool for as long as the channel is open, so long sessions never starve the queries.
    pub async fn interactive(
        &self,
        command: String,
        pty: Option<(u16, u16)>,
    ) -> Result<channel::Interactive, SshError> {
        let reused = self.idle.lock().expect("pool lock").pop();
        if let Some(s) = reused {
            // A pooled session may have been dropped by the login node while idle; the command
            // has not started when opening fails, so a new connection can try again.
            match channel::open(s, command.clone(), pty, self.cfg.clone(), self.idle.clone()).await
            {
                Ok(i) => return Ok(i),
                Err(e) => {
                    tracing::debug!(error = %e, "a pooled ssh session failed; dialling a new one")
                }
            }
        }
        let session = self.connect().await?;
        channel::open(session, command, pty, self.cfg.clone(), self.idle.clone()).await
    }

    /// A new authenticated session, unless a backoff is running.
    async fn connect(&self) -> Result<Linked, SshError> {
        {
            let b = self.backoff.lock().expect("backoff lock");
            if let (Some(until), Some(last)) = (b.until, &b.last) {
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    return Err(SshError::BackingOff(Box::new(last.clone()), left));
                }
            }
        }
        let cfg = self.cfg.clone();
        let made = tokio::task::spawn_blocking(move || handshake(&cfg))
            .await
            .map_err(|e| SshError::Unreachable(format!("ssh task failed: {e}")))?;
        let mut b = self.backoff.lock().expect("backoff lock");
        match made {
            Ok(s) => {
                if b.failures > 0 {
                    tracing::info!(login = %self.describe(), "login node reachable again");
                }
                *b = Backoff::default();
                Ok(s)
            }
            Err(e) => {
                b.failures = b.failures.saturating_add(1);
                let wait = backoff_delay(b.failures);
                b.until = Some(Instant::now() + wait);
                b.last = Some(e.clone());
                tracing::warn!(login = %self.describe(), error = %e, retry_in = ?wait, "cannot reach the login node");
                Err(e)
            }
        }
    }
}

/// Exponential from [`BACKOFF_START`], capped at [`BACKOFF_MAX`], with up to 25% jitter so that
/// many agents do not return at the same instant.
fn backoff_delay(failures: u32) -> Duration {
    let exp = BACKOFF_START.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_MAX);
    let jitter = rand::thread_rng().gen_range(0.0..0.25);
    base.mul_f64(1.0 + jitter).min(BACKOFF_MAX)
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Connects, checks the host key against known_hosts, and authenticates with the key file.
fn handshake(cfg: &LoginNode) -> Result<Linked, SshError> {
    let where_ = format!("{}:{}", cfg.host, cfg.port);
    let connect_timeout = Duration::from_secs(cfg.connect_timeout_s.max(1));
    let addrs: Vec<_> = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| SshError::Unreachable(format!("{where_}: cannot resolve: {e}")))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        SshError::Unreachable(format!(
            "{where_}: cannot connect: {}",
            last.map_or_else(|| "no address".to_owned(), |e| e.to_string())
        ))
    })?;
    let mut sess = Session::new()
        .map_err(|e| SshError::Unreachable(format!("{where_}: cannot start ssh: {e}")))?;
    let sock = tcp
        .try_clone()
        .map_err(|e| SshError::Unreachable(format!("{where_}: {e}")))?;
    sess.set_tcp_stream(tcp);
    sess.set_timeout(millis(connect_timeout));
    sess.handshake()
        .map_err(|e| SshError::Unreachable(format!("{where_}: ssh handshake failed: {e}")))?;
    check_host_key(&sess, cfg)?;
    sess.userauth_pubkey_file(&cfg.user, None, &cfg.identity_file, None)
        .map_err(|e| {
            SshError::Auth(format!(
                "user {} with key {}: {e}",
                cfg.user,
                cfg.identity_file.display()
            ))
        })?;
    if !sess.authenticated() {
        return Err(SshError::Auth(format!(
            "user {} not authenticated",
            cfg.user
        )));
    }
    sess.set_keepalive(true, 30);
    Ok(Linked { sess, sock })
}

fn check_host_key(sess: &Session, cfg: &LoginNode) -> Result<(), SshError> {
    let file = &cfg.known_hosts;
    let mut known = sess
        .known_hosts()
        .map_err(|e| SshError::HostKey(format!("cannot use known_hosts: {e}")))?;
    read_known_hosts(&mut known, file)?;
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| SshError::HostKey("the server sent no host key".into()))?;
    match known.check_port(&cfg.host, cfg.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::HostKey(format!(
            "{}:{} presented a key that differs from the one in {}; the node may have been \
             reinstalled or the connection intercepted. Check with the cluster's admins before \
             updating the file",
            cfg.host,
            cfg.port,
            file.display()
        ))),
        CheckResult::NotFound => Err(SshError::HostKey(format!(
            "{}:{} is not in {}; add its key (e.g. `ssh-keyscan -p {} {}` checked against the \
             cluster's published fingerprint)",
            cfg.host,
            cfg.port,
            file.display(),
            cfg.port,
            cfg.host
        ))),
        CheckResult::Failure => Err(SshError::HostKey(format!(
            "checking {}:{} against {} failed",
            cfg.host,
            cfg.port,
            file.display()
        ))),
    }
}

fn read_known_hosts(known: &mut ssh2::KnownHosts, file: &Path) -> Result<(), SshError> {
    known
        .read_file(file, KnownHostFileKind::OpenSSH)
        .map(|_| ())
        .map_err(|e| SshError::HostKey(format!("cannot read {}: {e}", file.display())))
}

/// Runs one command on a channel of `sess`.
fn exec(
    sess: &Session,
    command: &str,
    stdin: Option<&str>,
    cfg: &LoginNode,
) -> Result<Output, SshError> {
    let timeout = Duration::from_secs(cfg.command_timeout_s.max(1));
    sess.set_timeout(millis(timeout));
    let lost = |e: ssh2::Error| -> SshError {
        if e.code() == ssh2::ErrorCode::Session(-9) {
            // LIBSSH2_ERROR_TIMEOUT
            SshError::Timeout(timeout, command.to_owned())
        } else {
            SshError::Unreachable(format!("{}:{}: {e}", cfg.host, cfg.port))
        }
    };
    let io_lost = |e: std::io::Error| -> SshError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            SshError::Timeout(timeout, command.to_owned())
        } else {
            SshError::Unreachable(format!("{}:{}: {e}", cfg.host, cfg.port))
        }
    };
    let mut ch = sess.channel_session().map_err(lost)?;
    ch.exec(command).map_err(lost)?;
    if let Some(input) = stdin {
        ch.write_all(input.as_bytes()).map_err(io_lost)?;
    }
    ch.send_eof().map_err(lost)?;
    let mut stdout = String::new();
    ch.read_to_string(&mut stdout).map_err(io_lost)?;
    let mut stderr = String::new();
    ch.stderr().read_to_string(&mut stderr).map_err(io_lost)?;
    ch.wait_close().map_err(lost)?;
    let status = ch.exit_status().map_err(lost)?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_bounded_jitter() {
        for failures in 1..40 {
            let d = backoff_delay(failures);
            let base = BACKOFF_START
                .saturating_mul(1u32 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(
                d >= base && d <= BACKOFF_MAX.max(base.mul_f64(1.25)),
                "{failures}: {d:?}"
            );
        }
        assert!(backoff_delay(1) < Duration::from_secs(1));
        assert!(backoff_delay(30) >= Duration::from_secs(29));
    }
}
