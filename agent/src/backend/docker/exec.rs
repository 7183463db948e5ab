//! Interactive sessions on Docker: an engine exec in the workspace's container, as the
//! container's own (non-root) user, never privileged, with the container's isolation unchanged.
//!
//! The engine has no call to end an exec, and dropping the attached stream does not end it. To
//! leave nothing behind, `DockerExec::kill` finds the exec's host pid (`inspect_exec`), every
//! process of the session it leads (runc makes each exec a session leader, so that is all it
//! started, background jobs included), maps each to its pid inside the container through the
//! host's `/proc/<pid>/status` (`NSpid`; so the agent must see the engine's pid namespace, as an
//! agent on the Docker host does), and runs `kill -KILL <pids>` in the container as the same
//! user. The image needs `kill` (and `nc` for port-forwards).
//!
//! `DockerExec::signal` does what a terminal does for its foreground job: it delivers the signal
//! to every process in the exec's process group (the exec leads its own group, and a
//! non-interactive shell keeps its children in it), mapped to container pids the same way and
//! sent with `kill -s NAME` as the same user. A shell waiting on `sleep` then sees `sleep` end
//! and runs its trap at once, instead of after the `sleep`.

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;
use tracing::{debug, warn};

use super::DockerBackend;
use super::error::unavailable;
use crate::backend::exec::{ExecControl, ExecIo, ExecOutput, ExecRequest, Signal, refuse_empty};
use crate::backend::{BackendError, RunState};

/// Starts `req` in the container of `workspace`.
pub(super) async fn start(
    backend: &DockerBackend,
    workspace: &str,
    req: &ExecRequest,
) -> Result<ExecIo, BackendError> {
    refuse_empty(req)?;
    let Some(summary) = backend.find_one(workspace).await? else {
        return Err(BackendError::refused(format!(
            "workspace {workspace} has no container at this site"
        )));
    };
    if super::state::from_summary(&summary).state != RunState::Running {
        return Err(BackendError::refused(format!(
            "workspace {workspace} is not running"
        )));
    }
    let container = summary.id.unwrap_or_default();
    let user = backend
        .docker
        .inspect_container(&container, None)
        .await
        .map_err(|e| unavailable("inspect container", e))?
        .config
        .and_then(|c| c.user)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            BackendError::refused(format!(
                "the container of {workspace} names no user; refusing to exec as root"
            ))
        })?;
    super::spec::check_user(&user)?;
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(req.tty),
        cmd: Some(req.argv.clone()),
        privileged: Some(false),
        user: Some(user.clone()),
        working_dir: Some("/work".to_owned()),
        env: req.tty.then(|| vec!["TERM=xterm-256color".to_owned()]),
        ..Default::default()
    };
    let docker = backend.docker.clone();
    let id = docker
        .create_exec(&container, options)
        .await
        .map_err(|e| unavailable("create an exec", e))?
        .id;
    let started = docker
        .start_exec(
            &id,
            Some(StartExecOptions {
                detach: false,
                tty: req.tty,
                output_capacity: Some(64 * 1024),
            }),
        )
        .await
        .map_err(|e| unavailable("start an exec", e))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(BackendError::unavailable(
            "the engine detached an attached exec",
        ));
    };
    let control = DockerExec {
        docker,
        container,
        id,
        user,
    };
    if req.tty && req.cols > 0 && req.rows > 0 {
        // Best effort: a shell that starts before the size arrives redraws on the next resize.
        let _ = control.resize(req.cols, req.rows).await;
    }
    let output = output
        .filter_map(|item| async move {
            match item {
                Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message.to_vec()))),
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(ExecOutput::Stdout(message.to_vec())))
                }
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(unavailable("read an exec's output", e))),
            }
        })
        .boxed();
    Ok(ExecIo {
        input,
        output,
        control: Box::new(control),
    })
}

/// One engine exec.
struct DockerExec {
    docker: Docker,
    container: String,
    id: String,
    user: String,
}

/// The pid in the innermost pid namespace of host pid `pid`, from `/proc/<pid>/status`.
fn pid_in_container(pid: i64) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Field `n` after the command of `/proc/<pid>/stat` (0: state, 2: process group, 3: session).
fn stat_field(pid: i64, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)?.parse().ok()
}

/// The session id of host pid `pid`.
fn session_of(pid: i64) -> Option<i64> {
    stat_field(pid, 3)
}

/// The process group of host pid `pid`.
fn group_of(pid: i64) -> Option<i64> {
    stat_field(pid, 2)
}

/// The pids, inside the container, of the processes with host pid `leader` or for which `of`
/// gives `leader`.
fn members(leader: i64, of: fn(i64) -> Option<i64>) -> Vec<i64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|p| *p == leader || of(*p) == Some(leader))
        .filter_map(pid_in_container)
        .filter(|p| *p > 1)
        .collect()
}

/// The pids, inside the container, of every process in the session led by host pid `leader`
/// (an exec is a session leader, so that is all the session started).
fn session_members(leader: i64) -> Vec<i64> {
    members(leader, session_of)
}

/// The pids, inside the container, of the process group led by host pid `leader`: what a
/// terminal signals for its foreground job.
fn group_members(leader: i64) -> Vec<i64> {
    members(leader, group_of)
}

impl DockerExec {
    /// The exec's host pid while it runs.
    async fn leader(&self) -> Result<Option<i64>, BackendError> {
        let info = self
            .docker
            .inspect_exec(&self.id)
            .await
            .map_err(|e| unavailable("inspect an exec", e))?;
        if info.running != Some(true) {
            return Ok(None);
        }
        Ok(info.pid.filter(|p| *p > 0))
    }

    /// Runs `argv` in the container as the session's user and waits for it.
    async fn run(&self, argv: Vec<String>) -> Result<(), BackendError> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv),
            privileged: Some(false),
            user: Some(self.user.clone()),
            ..Default::default()
        };
        let id = self
            .docker
            .create_exec(&self.container, options)
            .await
            .map_err(|e| unavailable("create an exec", e))?
            .id;
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&id, None)
            .await
            .map_err(|e| unavailable("start an exec", e))?
        {
            let drain = async { while output.next().await.is_some() {} };
            if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
                .await
                .is_err()
            {
                warn!(exec = %id, "an exec that ends a session did not finish within 10 s");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ExecControl for DockerExec {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        self.docker
            .resize_exec(
                &self.id,
                ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(|e| unavailable("resize an exec", e))
    }

    async fn exit_code(&self) -> Result<Option<i64>, BackendError> {
        let info = self
            .docker
            .inspect_exec(&self.id)
            .await
            .map_err(|e| unavailable("inspect an exec", e))?;
        Ok(if info.running == Some(true) {
            None
        } else {
            info.exit_code
        })
    }

    async fn kill(&self) -> Result<(), BackendError> {
        let Some(leader) = self.leader().await? else {
            return Ok(());
        };
        let pids = session_members(leader);
        if pids.is_empty() {
            warn!(exec = %self.id, "cannot find the exec's processes in /proc (is the agent \
                outside the engine's pid namespace?); they may outlive their session");
            return Ok(());
        }
        debug!(exec = %self.id, ?pids, "ending a session's processes");
        let mut argv = vec!["kill".to_owned(), "-KILL".to_owned()];
        argv.extend(pids.iter().map(i64::to_string));
        self.run(argv).await
    }

    async fn signal(&self, sig: Signal) -> Result<(), BackendError> {
        let Some(leader) = self.leader().await? else {
            return Ok(());
        };
        let pids = group_members(leader);
        if pids.is_empty() {
            return Err(BackendError::Unsupported(format!(
                "cannot find the process of exec {} in /proc, so {sig} cannot reach it (the agent \
                 must see the engine's pid namespace)",
                self.id
            )));
        }
        debug!(exec = %self.id, ?pids, signal = sig.name(), "signalling a session's process group");
        let mut argv = vec!["kill".to_owned(), "-s".to_owned(), sig.name().to_owned()];
        argv.extend(pids.iter().map(i64::to_string));
        self.run(argv).await
    }
}
