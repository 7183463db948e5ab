//! The errors a `basho` command ends with, and the exit code each maps to.

use basho_core::State;

use crate::client::ApiError;
use crate::dev::DevError;

/// Why a command failed. `main` prints `error: <this>` and exits with [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The orchestrator refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Arguments that parse but make no request (no visa at all, zero duration, ...).
    #[error("{0}")]
    Usage(String),
    /// A file named on the command line could not be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The path (or `-` for stdin).
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A waited-for workspace ended in a state other than the one asked for.
    #[error("workspace {id} is {state}: {message}")]
    Ended {
        /// Workspace id.
        id: String,
        /// Where it ended.
        state: State,
        /// The workspace's own message, or a note that it gave none.
        message: String,
    },
    /// `--wait` ran out of time.
    #[error(
        "gave up after {waited_s}s: workspace {id} is still {state}, not {goal}; \
         `basho workspace show {id}` shows it later (or raise --timeout)"
    )]
    Timeout {
        /// Workspace id.
        id: String,
        /// What it was waited for.
        goal: &'static str,
        /// The last state seen (or why none was seen).
        state: String,
        /// Seconds waited.
        waited_s: u64,
    },
    /// `basho dev` failed.
    #[error(transparent)]
    Dev(#[from] DevError),
    /// `basho audit verify` found the chain broken.
    #[error(transparent)]
    AuditBroken(#[from] basho_core::audit::Broken),
    /// `basho audit verify` found the chain not holding what was signed or kept at a site.
    #[error("{0}")]
    AuditMismatch(String),
    /// `basho audit withdrawal` found workspaces still reading withdrawn participants' data.
    #[error("{0}")]
    StillReading(String),
    /// A followed federated job failed, or `--wait` gave up on it.
    #[error("{0}")]
    Job(String),
    /// An interactive session could not start or was cut off.
    #[error("{0}")]
    Session(String),
    /// The command of `basho exec` exited with this nonzero code (printed by nobody).
    #[error("")]
    Exited(i64),
    /// `basho template` refused a template or could not render.
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
}

impl Error {
    /// The process exit code: 2 for usage errors (like clap's own), 64 for an unusable
    /// configuration of `basho dev` or site config of `basho template render`, 1 for everything
    /// else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Dev(DevError::Config(_)) => 64,
            Error::Template(e) => e.exit_code(),
            // Like ssh: the remote command's code, 255 when the session itself failed.
            Error::Exited(c) => u8::try_from(*c).unwrap_or(1).max(1),
            Error::Session(_) => 255,
            _ => 1,
        }
    }
}
