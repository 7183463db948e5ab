//! What a backend offers for interactive sessions: a process started inside a running
//! workspace, as the workspace's own user, with its standard streams and a way to resize its
//! terminal and to end it with everything it started.

use std::pin::Pin;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::io::AsyncWrite;

use super::BackendError;
pub use basho_core::tunnel::Signal;

/// A process to start inside a workspace. `argv` goes to the runtime as an argument vector,
/// never through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Whether the process gets a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// Terminal width, when `tty`.
    pub cols: u16,
    /// Terminal height, when `tty`.
    pub rows: u16,
}

/// Refuses a request with no program to run.
pub(crate) fn refuse_empty(req: &ExecRequest) -> Result<(), BackendError> {
    if req.argv.is_empty() {
        return Err(BackendError::refused(
            "an empty command; name a program to run",
        ));
    }
    Ok(())
}

/// A chunk of the process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Standard output (with a terminal, everything).
    Stdout(Vec<u8>),
    /// Standard error.
    Stderr(Vec<u8>),
}

/// Controls a running process.
#[async_trait]
pub trait ExecControl: Send + Sync {
    /// Sets the terminal's size.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError>;
    /// The exit code once the process has ended (`None` while it runs or when unknown).
    async fn exit_code(&self) -> Result<Option<i64>, BackendError>;
    /// Ends the process and everything it started inside the workspace.
    async fn kill(&self) -> Result<(), BackendError>;
    /// Delivers `sig` to the process and its process group (what a terminal does for its
    /// foreground job), as the workspace's user. Succeeds when the process has already ended.
    /// The default says the backend cannot; the session then tells the client so.
    async fn signal(&self, sig: Signal) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "forwarding {sig} to a session's process is not implemented on this backend yet; \
             end the session instead (a second Ctrl-C, or Close)"
        )))
    }
}

/// A started process: its input, its output (ends when the process does) and its control.
pub struct ExecIo {
    /// Standard input.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Standard output and error, in order.
    pub output: BoxStream<'static, Result<ExecOutput, BackendError>>,
    /// Resize, exit code, kill.
    pub control: Box<dyn ExecControl>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo").finish_non_exhaustive()
    }
}
