//! GA4GH Task Execution Service 1.1: the task document as the specification's OpenAPI
//! description defines it, what basho accepts of it, and how a workspace's state reads as a TES
//! state (docs/architecture.md, "Batch tasks: GA4GH TES"). A task is a batch workspace: its
//! executors run in order in the workspace's one container, placed, verified at the site,
//! metered and revoked as every workspace is. The document's types are in `document`, what is
//! accepted of it in `accept`, how its executors run in `runner`, page tokens in `page`.

use serde::{Deserialize, Serialize};

use crate::State;

mod accept;
mod document;
mod page;
mod runner;

pub use accept::{Accepted, accept, passport_visas};
pub use document::{
    FileType, TesExecutor, TesExecutorLog, TesInput, TesOutput, TesOutputFileLog, TesResources,
    TesTask, TesTaskLog,
};
pub use page::{page_size, page_token, parse_page_token};
pub use runner::{Inline, RUNNER, RUNNER_NAME, task_argv};

/// The specification version served (`type.version` in service-info).
pub const SPEC_VERSION: &str = "1.1.0";
/// The largest `page_size` (the specification: "must be less than 2048").
pub const MAX_PAGE_SIZE: u64 = 2048;
/// `page_size` when a request names none.
pub const DEFAULT_PAGE_SIZE: u64 = 256;
/// Most executors in one task.
pub const MAX_EXECUTORS: usize = 32;
/// The tag naming the task's project.
pub const TAG_PROJECT: &str = "basho_project";
/// The tag carrying visa JWTs (separated by commas or white space); never stored or shown.
pub const TAG_VISAS: &str = "basho_visas";
/// The scheme and host of an input naming a dataset by ID: `basho://datasets/<DATASET>/<path>`.
pub const DATASET_URL: &str = "basho://datasets/";
/// Where executor logs go, in every task's system logs and in service-info.
pub const LOGS_NOTE: &str = "executor stdout and stderr are not returned through TES: a trusted \
    research environment must not leak records through logs. Give an executor stdout or stderr \
    files under /results: they are outputs, and leave through the results airlock once two \
    checkers approve";

/// Task state as defined by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = tesState)]
pub enum TesState {
    /// The state cannot be told.
    Unknown,
    /// Waiting for placement or for its site to launch it.
    Queued,
    /// Its site is launching it.
    Initializing,
    /// Its executor runs.
    Running,
    /// Never produced by basho.
    Paused,
    /// The executor exited with 0.
    Complete,
    /// The executor exited with another code.
    ExecutorError,
    /// The task could not start, or ended at its time limit.
    SystemError,
    /// Canceled by its caller, or ended because a grant was revoked.
    Canceled,
    /// Never produced by basho: it does not preempt.
    Preempted,
    /// Canceled, and its site is stopping it.
    Canceling,
}

impl TesState {
    /// Every state, in the specification's order.
    pub const ALL: [TesState; 11] = [
        TesState::Unknown,
        TesState::Queued,
        TesState::Initializing,
        TesState::Running,
        TesState::Paused,
        TesState::Complete,
        TesState::ExecutorError,
        TesState::SystemError,
        TesState::Canceled,
        TesState::Preempted,
        TesState::Canceling,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TesState::Unknown => "UNKNOWN",
            TesState::Queued => "QUEUED",
            TesState::Initializing => "INITIALIZING",
            TesState::Running => "RUNNING",
            TesState::Paused => "PAUSED",
            TesState::Complete => "COMPLETE",
            TesState::ExecutorError => "EXECUTOR_ERROR",
            TesState::SystemError => "SYSTEM_ERROR",
            TesState::Canceled => "CANCELED",
            TesState::Preempted => "PREEMPTED",
            TesState::Canceling => "CANCELING",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<TesState> {
        TesState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The exit code a workspace's message reports (`exited with code N`, maybe followed by `; ` and
/// a note), as the agent words it.
pub fn exit_code(message: Option<&str>) -> Option<i32> {
    let rest = message?.strip_prefix("exited with code ")?;
    rest.split(';').next()?.parse().ok()
}

/// The TES state of a task whose workspace is in `state` with `message`; `canceled` when its
/// caller canceled it.
pub fn task_state(state: State, message: Option<&str>, canceled: bool) -> TesState {
    match state {
        State::Pending | State::Queued | State::Placed | State::Preempted => TesState::Queued,
        State::Starting => TesState::Initializing,
        State::Running => TesState::Running,
        State::Stopping if canceled => TesState::Canceling,
        // Stopping without a cancel: the site is ending it (expiry, revocation).
        State::Stopping => TesState::Running,
        State::Stopped if canceled => TesState::Canceled,
        State::Stopped => TesState::Complete,
        State::Failed => match exit_code(message) {
            Some(code) if code != 0 => TesState::ExecutorError,
            _ => TesState::SystemError,
        },
        State::Expired => TesState::SystemError,
        State::Revoked => TesState::Canceled,
        State::Unknown => TesState::Unknown,
    }
}

/// What the system logs say of a task in `state`: why it ended, when that is not plain.
pub fn state_log(state: State, message: Option<&str>) -> Option<String> {
    let why = message.map_or(String::new(), |m| format!(": {m}"));
    match state {
        State::Revoked => Some(format!("canceled because a grant was revoked{why}")),
        State::Expired => Some(format!("ended at its time limit{why}")),
        State::Failed if exit_code(message).is_none() => {
            Some(format!("the task could not run{why}"))
        }
        State::Unknown => Some(format!("its site cannot tell the task's state{why}")),
        // What its site said beside the exit: outputs not found, say.
        State::Stopped | State::Failed => message
            .and_then(|m| m.split_once("; "))
            .map(|(_, note)| note.to_owned()),
        _ => None,
    }
}

/// How much of a task an answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Only `id` and `state`.
    #[default]
    Minimal,
    /// All but executor stdout/stderr, inputs' content and system logs.
    Basic,
    /// Everything.
    Full,
}

impl View {
    /// Parses the `view` query parameter.
    pub fn parse(s: &str) -> Result<View, String> {
        match s {
            "MINIMAL" => Ok(View::Minimal),
            "BASIC" => Ok(View::Basic),
            "FULL" => Ok(View::Full),
            other => Err(format!("view is {other:?}; use MINIMAL, BASIC or FULL")),
        }
    }
}

#[cfg(test)]
mod tests;
