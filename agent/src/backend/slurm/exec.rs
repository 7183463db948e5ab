//! Interactive sessions on Slurm: a job step in the workspace's own allocation that enters the
//! running container with the site's runtime, over one SSH channel held open for the session.
//!
//! - The step is `srun --jobid=<job> --overlap --nodes=1 --ntasks=1 --quiet --quiet
//!   --unbuffered [--pty] /bin/sh -c ENTER …`, so it runs beside the job's own step on the job's
//!   node (`--overlap`, Slurm 20.11 or later) and passes the command's exit code through
//!   (`--quiet` twice keeps srun's own "task 0: Exited with exit code" off the command's stderr).
//! - `ENTER`, a fixed script, reads the container's state and user from the runtime and runs
//!   `<runtime> exec -i [-t] -u <that user> -e BASHO_SESSION=<token> <container> argv…`: the
//!   container's own non-root user, none of the runtime's privilege options, the container's
//!   isolation unchanged. Every value reaches it as a positional parameter, never as script text.
//! - The only shell that parses anything is the login node's, which gets one line of
//!   single-quoted words; that carries any bytes but NUL (so the service account's login shell
//!   must be a POSIX shell: sh, bash, dash, zsh, ksh).
//! - The process lives in the runtime's container, outside the step: closing the channel does
//!   not end it. `kill` runs another step that finds, inside the container and as the same user,
//!   every process whose environment holds the session's token, and kills every process of
//!   their sessions (the runtime makes each exec a session leader, so that is everything the
//!   session started, background jobs included).
//! - `signal` runs a step that sends the signal to the process group of the session's leader.
//! - Apptainer is refused: its job runs `apptainer exec` in the foreground, with no instance to
//!   join, and joining the container's namespaces would need privileges the service account
//!   does not have.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::StreamExt;
use rand::Rng;
use tokio::io::AsyncWrite;

use super::SlurmBackend;
use super::ssh::channel::Request;
use super::ssh::{Login, SshError};
use crate::backend::docker::container_name;
use crate::backend::exec::{ExecControl, ExecIo, ExecOutput, ExecRequest, Signal, refuse_empty};
use crate::backend::{BackendError, RunState};
use crate::config::Runtime;

/// Run on the compute node as `sh -c ENTER basho-exec RUNTIME CONTAINER TOKEN TTY ARGV…`.
const ENTER: &str = r#"rt=$1 c=$2 t=$3 tty=$4
shift 4
x=$("$rt" inspect --type container --format '{{.State.Running}} {{.Config.User}}' "$c" 2>/dev/null) || x=
u=${x#* }
case "$x" in
  "true "*) ;;
  *) echo "basho: the workspace's container is not running (yet); try again in a moment" >&2; exit 125 ;;
esac
case "$u" in
  ''|0|0:*|root|root:*) echo "basho: the workspace's container names no unprivileged user; refusing to enter it" >&2; exit 125 ;;
esac
if [ "$tty" = 1 ]; then
  exec "$rt" exec -i -t -e TERM=xterm-256color -e "BASHO_SESSION=$t" -u "$u" "$c" "$@"
fi
exec "$rt" exec -i -e "BASHO_SESSION=$t" -u "$u" "$c" "$@"
"#;

/// Run on the compute node as `sh -c LEAVE basho-ctl RUNTIME CONTAINER SCRIPT TOKEN ARGS…`:
/// `SCRIPT` (`KILL` or `SIGNAL`) in the container, as its user, with `$0` the token.
const LEAVE: &str = r#"rt=$1 c=$2
shift 2
x=$("$rt" inspect --type container --format '{{.State.Running}} {{.Config.User}}' "$c" 2>/dev/null) || exit 0
u=${x#* }
case "$x" in "true "*) ;; *) exit 0 ;; esac
case "$u" in ''|0|0:*|root|root:*) exit 125 ;; esac
exec "$rt" exec -u "$u" "$c" /bin/sh -c "$@"
"#;

/// Run in the container as `sh -c SIGNAL TOKEN NAME`: sends signal `NAME` to the process group
/// of the session's leader, as a terminal does to its foreground job. The leader is the exec's
/// own process: a session leader holding the token whose parent is outside the container
/// (parent pid 0); failing that (outside a pid namespace), the oldest such session leader.
const SIGNAL: &str = r#"sig=$1 g= first=
for d in /proc/[0-9]*; do
  grep -q "BASHO_SESSION=$0" "$d/environ" 2>/dev/null || continue
  read -r l 2>/dev/null < "$d/stat" || continue
  set -- ${l##*\) }
  p=${d#/proc/}
  [ "$4" = "$p" ] || continue
  [ "$2" = 0 ] && g=$3
  [ -z "$first" ] || [ "$p" -lt "$first" ] && first=$p
done
[ -n "$g" ] || g=$first
[ -n "$g" ] && [ "$g" -gt 1 ] || exit 0
kill -s "$sig" -- "-$g" 2>/dev/null
exit 0
"#;

/// Run in the container as `sh -c KILL TOKEN`: kills every process of every session that holds
/// a process with `BASHO_SESSION=TOKEN` in its environment (never session 0 or 1: the init).
const KILL: &str = r#"s=
for d in /proc/[0-9]*; do
  grep -q "BASHO_SESSION=$0" "$d/environ" 2>/dev/null || continue
  read -r l 2>/dev/null < "$d/stat" || continue
  set -- ${l##*\) }
  [ "$4" -gt 1 ] && s="$s $4"
  s="$s ${d#/proc/}"
done
[ -n "$s" ] || exit 0
p=
for d in /proc/[0-9]*; do
  read -r l 2>/dev/null < "$d/stat" || continue
  set -- ${l##*\) }
  case " $s " in *" $4 "*|*" ${d#/proc/} "*) p="$p ${d#/proc/}" ;; esac
done
[ -z "$p" ] || kill -KILL $p 2>/dev/null
exit 0
"#;

/// One word for a POSIX shell: as is when plain, else single-quoted, which keeps every byte
/// (newlines and other control characters included) except NUL, refused by the caller.
pub fn posix_quote(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_-./:@%+,=".contains(&b);
    if !word.is_empty() && !word.starts_with('=') && word.bytes().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| posix_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `srun` words that start a step of `job` running `script` with `args`.
fn step(job: &str, tty: bool, script: &str, name: &str, args: Vec<String>) -> Vec<String> {
    let mut words: Vec<String> = [
        "srun",
        &format!("--jobid={job}"),
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        "--quiet",
        "--quiet",
        "--unbuffered",
    ]
    .map(String::from)
    .to_vec();
    if tty {
        words.push("--pty".into());
    }
    words.extend(["/bin/sh", "-c", script, name].map(String::from));
    words.extend(args);
    words
}

/// The login node's command line that runs `req` in the container of `workspace`.
pub fn enter_line(
    job: &str,
    program: &str,
    workspace: &str,
    token: &str,
    req: &ExecRequest,
) -> String {
    let mut args = vec![
        program.to_owned(),
        container_name(workspace),
        token.to_owned(),
        if req.tty { "1" } else { "0" }.to_owned(),
    ];
    args.extend(req.argv.iter().cloned());
    line(&step(job, req.tty, ENTER, "basho-exec", args))
}

/// The login node's command line that runs `script` for session `token` in the container of
/// `workspace`, with `extra` after the token.
fn control_line(
    job: &str,
    program: &str,
    workspace: &str,
    script: &str,
    token: &str,
    extra: &[&str],
) -> String {
    let mut args = vec![
        program.to_owned(),
        container_name(workspace),
        script.to_owned(),
        token.to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    line(&step(job, false, LEAVE, "basho-ctl", args))
}

/// The login node's command line that ends session `token` in the container of `workspace`.
pub fn kill_line(job: &str, program: &str, workspace: &str, token: &str) -> String {
    control_line(job, program, workspace, KILL, token, &[])
}

/// The login node's command line that sends `signal` to session `token`'s foreground job.
pub fn signal_line(
    job: &str,
    program: &str,
    workspace: &str,
    token: &str,
    signal: Signal,
) -> String {
    control_line(job, program, workspace, SIGNAL, token, &[signal.name()])
}

/// Starts `req` in the container of `workspace`.
pub(super) async fn start(
    backend: &SlurmBackend,
    workspace: &str,
    req: &ExecRequest,
) -> Result<ExecIo, BackendError> {
    refuse_empty(req)?;
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(BackendError::refused(
            "an argument holds a NUL byte, which no command line can carry",
        ));
    }
    if backend.cfg.runtime == Runtime::Apptainer {
        return Err(BackendError::Unsupported(
            "interactive sessions on a Slurm site with runtime = \"apptainer\": the job runs \
             its container in the foreground with no instance to join, and joining its \
             namespaces would need privileges the service account lacks; use a site whose \
             runtime is docker or podman"
                .into(),
        ));
    }
    let Some(job) = backend.live(workspace).await? else {
        return Err(BackendError::refused(format!(
            "workspace {workspace} has no job at this site"
        )));
    };
    if job.state != RunState::Running {
        return Err(BackendError::refused(format!(
            "workspace {workspace} is not running (job {} is {:?})",
            job.handle, job.state
        )));
    }
    let token: String = {
        let mut rng = rand::thread_rng();
        (0..16)
            .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
            .collect()
    };
    let program = backend.program().to_owned();
    let command = enter_line(&job.handle, &program, workspace, &token, req);
    let pty = req.tty.then_some((req.cols.max(1), req.rows.max(1)));
    let chan = backend
        .login
        .interactive(command, pty)
        .await
        .map_err(unavailable)?;
    tracing::debug!(workspace, job = %job.handle, tty = req.tty, "session step started");
    let handle = Arc::new(Handle {
        requests: Mutex::new(chan.requests),
    });
    let output = futures::stream::unfold(chan.output, |mut rx| async move {
        let (stream, bytes) = rx.recv().await?;
        let item = if stream == 1 {
            ExecOutput::Stderr(bytes)
        } else {
            ExecOutput::Stdout(bytes)
        };
        Some((Ok(item), rx))
    })
    .boxed();
    Ok(ExecIo {
        input: Box::pin(Input(handle.clone())),
        output,
        control: Box::new(SlurmExec {
            handle,
            exit: chan.exit,
            login: backend.login.clone(),
            job: job.handle,
            program,
            workspace: workspace.to_owned(),
            token,
        }),
    })
}

fn unavailable(e: SshError) -> BackendError {
    BackendError::unavailable(e.to_string()).caused_by(e)
}

/// The session's channel, closed when the last of its input and control is dropped.
struct Handle {
    requests: Mutex<std::sync::mpsc::Sender<Request>>,
}

impl Handle {
    fn send(&self, r: Request) -> bool {
        self.requests.lock().expect("requests lock").send(r).is_ok()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.send(Request::Close);
    }
}

/// Standard input: each write is queued for the channel's thread at once; the tunnel's credit
/// bounds what can be queued.
struct Input(Arc<Handle>);

impl AsyncWrite for Input {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(if self.0.send(Request::Input(buf.to_vec())) {
            Ok(buf.len())
        } else {
            Err(std::io::ErrorKind::BrokenPipe.into())
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.send(Request::Eof);
        Poll::Ready(Ok(()))
    }
}

/// One session's step.
struct SlurmExec {
    handle: Arc<Handle>,
    exit: Arc<Mutex<Option<i64>>>,
    login: Arc<Login>,
    job: String,
    program: String,
    workspace: String,
    token: String,
}

impl SlurmExec {
    /// Runs a control step; an error only when the login node cannot be reached.
    async fn control(&self, line: String, what: &str) -> Result<(), BackendError> {
        let out = self.login.run(line, None).await.map_err(unavailable)?;
        if out.status != 0 {
            tracing::warn!(status = out.status, stderr = %out.stderr.trim(), "the step that {what} failed");
        }
        Ok(())
    }

    fn ended(&self) -> bool {
        self.exit.lock().expect("exit lock").is_some()
    }
}

#[async_trait]
impl ExecControl for SlurmExec {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        self.handle.send(Request::Resize(cols, rows));
        Ok(())
    }

    async fn exit_code(&self) -> Result<Option<i64>, BackendError> {
        Ok(*self.exit.lock().expect("exit lock"))
    }

    async fn kill(&self) -> Result<(), BackendError> {
        if self.ended() {
            return Ok(());
        }
        let line = kill_line(&self.job, &self.program, &self.workspace, &self.token);
        let done = self.control(line, "ends a session").await;
        // Whatever the kill step found, the channel has no more use.
        self.handle.send(Request::Close);
        done
    }

    async fn signal(&self, sig: Signal) -> Result<(), BackendError> {
        if self.ended() {
            return Ok(());
        }
        let line = signal_line(&self.job, &self.program, &self.workspace, &self.token, sig);
        self.control(line, "signals a session").await
    }
}

#[cfg(test)]
mod tests;
