//! Interactive sessions on Kubernetes: `pods/exec` through the API server (a WebSocket,
//! `v5.channel.k8s.io` or `v4.channel.k8s.io`), in the workspace container, as the pod's own
//! non-root user with the pod's isolation unchanged. A port-forward is an exec of the loopback
//! relay like any other command: the pod has no network, so `pods/portforward` (which reaches the
//! pod's network namespace from the node) is not used and not granted.
//!
//! Ending the WebSocket does not end a process without a terminal, and neither the API nor the
//! kubelet has a call to end an exec. So every session runs under [`WRAPPER`], a fixed POSIX `sh`
//! script that gets the session's token and the researcher's argv as separate exec arguments
//! (never a command line: the argv reaches `exec "$@"` byte for byte):
//!
//! 1. It records its pid and start time (`/proc/$$/stat` field 22) in `/tmp/.basho-session-<token>`
//!    (the pod's `/tmp` is its own `emptyDir`). That is the pid report, out of band: nothing is
//!    written to the session's stdout or stderr. The file is created exclusively (`set -C`): when
//!    the agent's kill got there first, it finds the kill's tombstone and runs nothing.
//! 2. It removes records of sessions whose process is gone (so `/tmp` does not fill up), then
//!    `exec`s the argv: the session's process keeps the wrapper's pid. The container runtime makes
//!    every exec a session and process-group leader (runc and crun `setsid`), so that pid is also
//!    the id of the session and process group of everything it starts, jobs of a shell included.
//!
//! [`ExecControl::kill`] runs [`KILLER`] in a second exec, as the same user: it reads the record,
//! checks the start time (a reused pid is left alone), stops (`SIGSTOP`) the recorded process,
//! every process of its session or process group and every descendant of those, again until no
//! new one shows up (a stopped process cannot fork), then sends `SIGKILL` to all of them and
//! removes the record; PID 1 (the workspace's own command) and the killer itself are never
//! touched. A process that left the session with `setsid` *and* whose parent has already exited
//! escapes: the workspace's expiry ends it. Everything runs as the workspace's user inside its own
//! container, so neither script can reach beyond what the researcher already can; a researcher
//! who edits a record can only make a kill miss or hit their own processes.
//!
//! The image needs a POSIX `sh` with `kill` (a builtin of every shell), `rm` and, for
//! port-forwards, `nc`: busybox has them all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess, TerminalSize};
use rand::RngCore;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, watch};
use tokio_util::io::ReaderStream;
use tracing::{Instrument, debug, debug_span, warn};

use super::CALL_TIMEOUT;
use super::error::{brief, classify, code};
use super::spec::CONTAINER;
use crate::backend::BackendError;
use crate::backend::exec::{ExecControl, ExecIo, ExecOutput, ExecRequest, Signal};

/// Where a session's record lives, in the pod (`/tmp` is the pod's own `emptyDir`).
pub const RECORD_PREFIX: &str = "/tmp/.basho-session-";

/// Runs a session's argv: `sh -c WRAPPER basho-session <token> <tty|notty> ARGV...`.
pub const WRAPPER: &str = r#"r=/tmp/.basho-session-$1
if [ "$2" = tty ]; then TERM=xterm-256color; export TERM; fi
shift 2
st() { read -r l 2>/dev/null <"/proc/$1/stat" || return 1; l=${l##*) }; set -- $l; echo "${20}"; }
for o in /tmp/.basho-session-*; do
  [ -f "$o" ] && [ "$o" != "$r" ] || continue
  read -r p s 2>/dev/null <"$o" || continue
  case $p in ''|*[!0-9]*) continue;; esac
  [ "$(st "$p")" = "$s" ] || rm -f "$o" 2>/dev/null
done
s=$(st $$) || s=0
set -C
if ! { echo "$$ $s" >"$r"; } 2>/dev/null; then
  if [ -e "$r" ]; then rm -f "$r" 2>/dev/null; exit 137; fi
  echo "basho: cannot record the session in /tmp (is it full?); not starting a process that could not be ended" >&2
  exit 126
fi
set +C
exec "$@"
"#;

/// Ends a session: `sh -c KILLER basho-kill <token> <running|ended>`.
pub const KILLER: &str = r#"r=/tmp/.basho-session-$1
if [ "$2" = running ]; then
  set -C
  if { echo killed >"$r"; } 2>/dev/null; then exit 0; fi
  set +C
fi
i=0
until read -r pid start 2>/dev/null <"$r"; do
  i=$((i+1)); [ "$i" -lt 50 ] || exit 0
  sleep 0.1 2>/dev/null || :
done
case $pid in ''|*[!0-9]*|0|1) rm -f "$r" 2>/dev/null; exit 0;; esac
st() { read -r l 2>/dev/null <"/proc/$1/stat" || return 1; l=${l##*) }; set -- $l; echo "${20}"; }
found=' '
if [ -e "/proc/$pid" ]; then
  if [ "$(st "$pid")" != "$start" ]; then rm -f "$r" 2>/dev/null; exit 0; fi
  kill -STOP "$pid" 2>/dev/null
  found=" $pid "
fi
again=1
while [ "$again" = 1 ]; do
  again=0
  for f in /proc/[0-9]*/stat; do
    p=${f#/proc/}; p=${p%/stat}
    case "$found" in *" $p "*) continue;; esac
    if [ "$p" = "$$" ] || [ "$p" = 1 ]; then continue; fi
    read -r l 2>/dev/null <"$f" || continue
    l=${l##*) }
    set -- $l
    case "$found" in *" $2 "*) ;; *) [ "$3" = "$pid" ] || [ "$4" = "$pid" ] || continue;; esac
    kill -STOP "$p" 2>/dev/null
    found="$found$p "
    again=1
  done
done
if [ "$found" != ' ' ]; then kill -KILL $found 2>/dev/null; fi
rm -f "$r" 2>/dev/null
exit 0
"#;

/// Signals a session's process group: `sh -c SIGNALER basho-signal <token> <NAME>`. dash needs
/// `--` before a negative pid and busybox refuses it, hence both forms.
pub const SIGNALER: &str = r#"r=/tmp/.basho-session-$1
read -r pid start 2>/dev/null <"$r" || exit 0
case $pid in ''|*[!0-9]*|0|1) exit 0;; esac
st() { read -r l 2>/dev/null <"/proc/$1/stat" || return 1; l=${l##*) }; set -- $l; echo "${20}"; }
[ "$(st "$pid")" = "$start" ] || exit 0
kill -s "$2" -- "-$pid" 2>/dev/null || kill -s "$2" "-$pid" 2>/dev/null || kill -s "$2" "$pid" 2>/dev/null
exit 0
"#;

/// Longest a kill waits for its exec to finish.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long output already received is still delivered after the connection broke.
const LOST_GRACE: Duration = Duration::from_millis(100);
/// Pipe sizes between kube's WebSocket loop and the session.
const BUF: usize = 64 * 1024;

/// Refuses a request the API could not carry.
pub fn check(req: &ExecRequest) -> Result<(), BackendError> {
    if req.argv.is_empty() {
        return Err(BackendError::refused(
            "an empty command; name a program to run",
        ));
    }
    if req.argv[0].starts_with('-') {
        // The wrapper's `exec` would read it as an option (bash) and dash has no `--` there.
        return Err(BackendError::refused(format!(
            "a program name cannot start with '-' ({:?}); name it by its path",
            req.argv[0]
        )));
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(BackendError::refused(
            "an argument contains a NUL byte, which no process can receive",
        ));
    }
    Ok(())
}

/// The exec `command` of a session: the wrapper, then the argv as separate elements.
pub fn command(token: &str, req: &ExecRequest) -> Vec<String> {
    let mut c = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "basho-session".to_owned(),
        token.to_owned(),
        if req.tty { "tty" } else { "notty" }.to_owned(),
    ];
    c.extend(req.argv.iter().cloned());
    c
}

/// How an exec ended, from its status channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No status yet.
    Running,
    /// The process exited with this code.
    Exited(i64),
    /// The runtime could not run it (the message).
    Failed(String),
    /// The connection ended without a status.
    Lost,
}

/// Reads the exec's status: `Success` is 0, `NonZeroExitCode` carries the code as its
/// `ExitCode` cause, anything else is a failure to run.
pub fn outcome(s: &Status) -> Outcome {
    if s.status.as_deref() == Some("Success") {
        return Outcome::Exited(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.trim().parse().ok())
    {
        return Outcome::Exited(code);
    }
    Outcome::Failed(
        s.message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("the exec failed ({})", s.reason.as_deref().unwrap_or("?"))),
    )
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    basho_core::digest::hex(&b)
}

/// Maps an error of a `pods/exec` call.
fn exec_error(e: kube::Error, ns: &str, pod: &str) -> BackendError {
    match code(&e) {
        403 => BackendError::refused(format!(
            "the agent may not exec in pods of namespace {ns} ({}); grant the agent's service \
             account the verbs \"get\" and \"create\" on \"pods/exec\" in its Role (see \
             REQUIRED_PERMISSIONS and docs/site-kubernetes.md)",
            brief(&e)
        ))
        .caused_by(e),
        404 => BackendError::refused(format!(
            "pod {pod} is gone from namespace {ns}; the workspace is not running"
        ))
        .caused_by(e),
        0 if matches!(e, kube::Error::UpgradeConnection(_)) => BackendError::unavailable(format!(
            "kubernetes API: exec in pod {pod}: {e}; is a proxy between the agent and the API \
             server refusing WebSocket upgrades?"
        ))
        .caused_by(e),
        _ => classify("exec in", "pods", ns, e),
    }
}

/// Starts `req` in the workspace container of `pod` (already seen running).
pub(super) async fn start(
    pods: &Api<Pod>,
    ns: &str,
    pod: &str,
    req: &ExecRequest,
) -> Result<ExecIo, BackendError> {
    check(req)?;
    let token = random_token();
    let params = AttachParams {
        container: Some(CONTAINER.to_owned()),
        stdin: true,
        stdout: true,
        stderr: !req.tty,
        tty: req.tty,
        max_stdin_buf_size: Some(BUF),
        max_stdout_buf_size: Some(BUF),
        max_stderr_buf_size: Some(BUF),
    };
    let mut process =
        tokio::time::timeout(CALL_TIMEOUT, pods.exec(pod, command(&token, req), &params))
            .await
            .map_err(|_| {
                BackendError::unavailable(format!(
                    "kubernetes API: exec in pod {pod} got no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| exec_error(e, ns, pod))?;
    debug!(pod, session = %token, tty = req.tty, "exec started");

    let (outcome_tx, outcome_rx) = watch::channel(Outcome::Running);
    if let Some(status) = process.take_status() {
        crate::spawn_in_span(
            async move {
                let o = status.await.as_ref().map_or(Outcome::Lost, outcome);
                debug!(outcome = ?o, "exec ended");
                let _ = outcome_tx.send(o);
            }
            .instrument(debug_span!("kubernetes exec status", pod)),
        );
    }
    let resize = process.terminal_size();
    let input = process
        .stdin()
        .ok_or_else(|| BackendError::unavailable("the exec has no stdin"))?;
    let stdout = process.stdout().map(|r| {
        ReaderStream::with_capacity(r, BUF)
            .map(|b| b.map(|b| ExecOutput::Stdout(b.to_vec())))
            .boxed()
    });
    let stderr = process.stderr().map(|r| {
        ReaderStream::with_capacity(r, BUF)
            .map(|b| b.map(|b| ExecOutput::Stderr(b.to_vec())))
            .boxed()
    });
    let streams = futures::stream::select_all(stdout.into_iter().chain(stderr)).map(|item| {
        item.map_err(|e| {
            BackendError::unavailable(format!("kubernetes API: reading an exec's output: {e}"))
                .caused_by(e)
        })
    });
    // kube closes its output pipes only after a status: when the connection breaks (or a kill
    // closes it) they would never end, so the output ends shortly after the connection.
    let mut lost = outcome_rx.clone();
    let streams = streams.take_until(async move {
        // After a status kube closes the pipes itself, once everything in them has been read.
        if lost.wait_for(|o| *o == Outcome::Lost).await.is_ok() {
            tokio::time::sleep(LOST_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    });
    // When the runtime could not run the process at all, say why on stderr: there is no code.
    let mut rx = outcome_rx.clone();
    let tail = futures::stream::once(async move {
        let _ = tokio::time::timeout(KILL_WAIT, rx.wait_for(|o| *o != Outcome::Running)).await;
        let o = rx.borrow().clone();
        match o {
            Outcome::Failed(why) => Some(Ok(ExecOutput::Stderr(
                format!("basho: {why}\n").into_bytes(),
            ))),
            _ => None,
        }
    })
    .filter_map(futures::future::ready);
    let control = KubeExec {
        pods: pods.clone(),
        pod: pod.to_owned(),
        token,
        tty: req.tty,
        process: Arc::new(Mutex::new(Some(process))),
        resize,
        outcome: outcome_rx,
    };
    if req.tty && req.cols > 0 && req.rows > 0 {
        // Best effort: a shell that starts before the size arrives redraws on the next resize.
        let _ = control.resize(req.cols, req.rows).await;
    }
    Ok(ExecIo {
        input: Box::pin(input),
        output: streams.chain(tail).boxed(),
        control: Box::new(control),
    })
}

/// One `pods/exec` session.
struct KubeExec {
    pods: Api<Pod>,
    pod: String,
    token: String,
    tty: bool,
    /// The WebSocket: closed (dropped) by a kill, or with the control.
    process: Arc<Mutex<Option<AttachedProcess>>>,
    resize: Option<futures::channel::mpsc::Sender<TerminalSize>>,
    outcome: watch::Receiver<Outcome>,
}

impl KubeExec {
    /// Runs [`KILLER`] for this session and waits for it.
    async fn sweep(&self) -> Result<(), BackendError> {
        let state = if *self.outcome.borrow() == Outcome::Running {
            "running"
        } else {
            "ended"
        };
        self.helper(
            "ending the session's processes",
            KILLER,
            "basho-kill",
            state,
        )
        .await
    }

    /// Runs one of the session's helper scripts in a second exec and waits for it.
    async fn helper(
        &self,
        what: &str,
        script: &str,
        name: &str,
        arg: &str,
    ) -> Result<(), BackendError> {
        let argv = ["sh", "-c", script, name, self.token.as_str(), arg];
        let params = AttachParams {
            container: Some(CONTAINER.to_owned()),
            stdin: false,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let run = async {
            let mut killer = self
                .pods
                .exec(&self.pod, argv, &params)
                .await
                .map_err(|e| exec_error(e, self.pods_ns(), &self.pod))?;
            let status = killer.take_status();
            let mut said = Vec::new();
            for r in [killer.stdout(), killer.stderr()].into_iter().flatten() {
                let _ = r.take(4096).read_to_end(&mut said).await;
            }
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            match status.as_ref().map(outcome) {
                Some(Outcome::Exited(0)) if said.is_empty() => Ok(()),
                o => Err(BackendError::unavailable(format!(
                    "{what} in pod {} did not finish cleanly ({o:?}): {}",
                    self.pod,
                    String::from_utf8_lossy(&said).trim()
                ))),
            }
        };
        tokio::time::timeout(KILL_WAIT, run).await.map_err(|_| {
            BackendError::unavailable(format!(
                "{what} in pod {} took longer than {} s",
                self.pod,
                KILL_WAIT.as_secs()
            ))
        })?
    }

    fn pods_ns(&self) -> &str {
        self.pods.namespace().unwrap_or_default()
    }
}

#[async_trait]
impl ExecControl for KubeExec {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        let Some(tx) = &self.resize else {
            return Ok(());
        };
        if !self.tty || cols == 0 || rows == 0 {
            return Ok(());
        }
        // Never wait on a busy connection: a dropped size is fixed by the next one.
        let _ = tx.clone().try_send(TerminalSize {
            width: cols,
            height: rows,
        });
        Ok(())
    }

    async fn exit_code(&self) -> Result<Option<i64>, BackendError> {
        match &*self.outcome.borrow() {
            Outcome::Running => Ok(None),
            Outcome::Exited(c) => Ok(Some(*c)),
            Outcome::Failed(why) => Err(BackendError::unavailable(format!(
                "the process could not be run in pod {}: {why}",
                self.pod
            ))),
            Outcome::Lost => Err(BackendError::unavailable(format!(
                "the connection to pod {} through the API server ended before the process \
                 reported how it ended",
                self.pod
            ))),
        }
    }

    async fn kill(&self) -> Result<(), BackendError> {
        let swept = self.sweep().await;
        if let Err(e) = &swept {
            warn!(pod = %self.pod, error = %e, "a session's processes may outlive it");
        }
        if let Some(p) = self.process.lock().await.take() {
            p.abort();
        }
        swept
    }

    async fn signal(&self, sig: Signal) -> Result<(), BackendError> {
        if *self.outcome.borrow() != Outcome::Running {
            return Ok(());
        }
        self.helper(
            &format!("sending {sig} to the session's process group"),
            SIGNALER,
            "basho-signal",
            sig.name(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_status_channel_gives_the_exit_code() {
        // As the kubelet sends them.
        let ok = status(serde_json::json!({"metadata": {}, "status": "Success"}));
        assert_eq!(outcome(&ok), Outcome::Exited(0));
        let three = status(serde_json::json!({"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command \
                [sh -c exit 3], exit code 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}));
        assert_eq!(outcome(&three), Outcome::Exited(3));
        let broken = status(serde_json::json!({"metadata": {}, "status": "Failure",
            "message": "OCI runtime exec failed: exec: \"sh\": executable file not found",
            "reason": "InternalError"}));
        assert!(matches!(outcome(&broken), Outcome::Failed(m) if m.contains("not found")));
        let odd = status(serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode"}));
        assert!(matches!(outcome(&odd), Outcome::Failed(_)));
    }

    #[test]
    fn the_command_is_the_wrapper_then_the_argv() {
        let req = ExecRequest {
            argv: vec!["printf".into(), "%s".into(), "$(id); rm -rf /".into()],
            tty: true,
            cols: 80,
            rows: 24,
        };
        let c = command("ab12", &req);
        assert_eq!(
            c[..6],
            ["sh", "-c", WRAPPER, "basho-session", "ab12", "tty"]
        );
        assert_eq!(c[6..], req.argv);
        assert!(check(&req).is_ok());
        for bad in [vec![], vec!["-x".to_owned()], vec!["a\0b".to_owned()]] {
            let r = ExecRequest {
                argv: bad,
                ..req.clone()
            };
            assert!(matches!(check(&r), Err(BackendError::Refused { .. })));
        }
        assert_eq!(random_token().len(), 32);
        assert_ne!(random_token(), random_token());
    }
}
