//! GA4GH Task Execution Service 1.1: the task document as the specification's OpenAPI
//! description defines it, what basho accepts of it, and how a workspace's state reads as a TES
//! state (docs/architecture.md, "Tasks through TES"). A task is a batch workspace: its
//! executor is the workspace's image and command, placed, verified at the site, metered and
//! revoked as every workspace is.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::workspace::{MAX_CPUS, MAX_MEMORY_MIB, MAX_VISAS};
use crate::{Ident, State};

/// The specification version served (`type.version` in service-info).
pub const SPEC_VERSION: &str = "1.1.0";
/// The largest `page_size` (the specification: "must be less than 2048").
pub const MAX_PAGE_SIZE: u64 = 2048;
/// `page_size` when a request names none.
pub const DEFAULT_PAGE_SIZE: u64 = 256;
/// The largest inline `content` of an input (the specification asks for at least 128 KiB).
pub const MAX_CONTENT_BYTES: usize = 128 * 1024;
/// Executors in one task today.
pub const MAX_EXECUTORS: usize = 1;
/// The tag naming the task's project.
pub const TAG_PROJECT: &str = "basho_project";
/// The tag carrying visa JWTs (separated by commas or white space); never stored or shown.
pub const TAG_VISAS: &str = "basho_visas";
/// The scheme and host of an input naming a dataset by ID: `basho://datasets/<DATASET>/<path>`.
pub const DATASET_URL: &str = "basho://datasets/";
/// Where executor logs go, in every task's system logs and in service-info.
pub const LOGS_NOTE: &str = "executor stdout and stderr are not returned through TES: a trusted \
    research environment must not leak records through logs. Write them under /results and \
    name them as outputs; they leave through the results airlock once two checkers approve";

/// Where a container may write: its stdout and stderr files go under one of these.
const WRITABLE: [&str; 3] = ["/work/", "/results/", "/tmp/"];
/// The variables that carry an executor's stdin, stdout and stderr files to its wrapper.
const REDIRECTS: [&str; 3] = ["TES_STDIN", "TES_STDOUT", "TES_STDERR"];

const MAX_TAGS: usize = 64;
const MAX_ENV: usize = 128;
const MAX_NAME: usize = 256;
const MAX_TEXT: usize = 4096;
const MAX_FILES: usize = 256;

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

/// The exit code a workspace's message reports (`exited with code N`), as the agent words it.
pub fn exit_code(message: Option<&str>) -> Option<i32> {
    message?.strip_prefix("exited with code ")?.parse().ok()
}

/// The TES state of a task whose workspace is in `state` with `message`; `canceled` when its
/// caller canceled it.
pub fn task_state(state: State, message: Option<&str>, canceled: bool) -> TesState {
    match state {
        State::Pending | State::Placed => TesState::Queued,
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

/// A file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = tesFileType)]
pub enum FileType {
    /// A file.
    #[default]
    File,
    /// A directory.
    Directory,
}

/// A command to run, and its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesExecutor)]
pub struct TesExecutor {
    /// An image name the task's site lists in its allow-list.
    pub image: String,
    /// The argv; never run through a shell.
    pub command: Vec<String>,
    /// The working directory, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A file (absolute path) piped to the command's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// A file under `/work`, `/results` or `/tmp` its stdout goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// A file under `/work`, `/results` or `/tmp` its stderr goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Environment variables (names not starting with `BASHO_`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whether a non-zero exit lets the next executor run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_error: Option<bool>,
}

/// An input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesInput)]
pub struct TesInput {
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `basho://datasets/<DATASET>/<path>`: a dataset's file, by ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the executor sees it: `/data/<DATASET>/<path>`, where the dataset is mounted.
    pub path: String,
    /// File or directory.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileType>,
    /// Inline content; not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Ignored: datasets are mounted, never copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamable: Option<bool>,
}

/// An output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesOutput)]
pub struct TesOutput {
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the caller would like it; basho keeps outputs in its airlock and answers their
    /// release's download address instead.
    pub url: String,
    /// Under `/results`.
    pub path: String,
    /// Wildcards are not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// File or directory.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileType>,
}

/// Compute a task asks for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesResources)]
pub struct TesResources {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<i64>,
    /// Ignored: basho does not preempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    /// Memory, GB (GiB here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<f64>,
    /// Ignored: `/work` is the site's to size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<f64>,
    /// One site's name, to pin the task there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// None are supported; they are dropped with a system log, or refused when strict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_parameters: BTreeMap<String, String>,
    /// Refuse the task when a backend parameter is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_parameters_strict: Option<bool>,
}

/// One executor's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesExecutorLog)]
pub struct TesExecutorLog {
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Always empty (see [`LOGS_NOTE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Always empty (see [`LOGS_NOTE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Its exit code.
    pub exit_code: i32,
}

/// One output file, once its task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesOutputFileLog)]
pub struct TesOutputFileLog {
    /// Where it can be downloaded once released.
    pub url: String,
    /// Its path in the container.
    pub path: String,
    /// Its size in bytes, as a string (the specification's int64 encoding).
    pub size_bytes: String,
}

/// A task's log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesTaskLog)]
pub struct TesTaskLog {
    /// Each executor's.
    pub logs: Vec<TesExecutorLog>,
    /// Where it ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Its output files.
    pub outputs: Vec<TesOutputFileLog>,
    /// What the system says of it (FULL view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_logs: Option<Vec<String>>,
}

/// A task, as submitted and as answered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = tesTask)]
pub struct TesTask {
    /// Assigned by the server: the task's workspace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TesState>,
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<TesInput>>,
    /// Outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<TesOutput>>,
    /// Compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<TesResources>,
    /// What runs (required by the schema, so shown empty in the MINIMAL view).
    #[serde(default)]
    pub executors: Vec<TesExecutor>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Its logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<TesTaskLog>>,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
}

impl TesTask {
    /// The task as `view` shows it.
    pub fn in_view(mut self, view: View) -> TesTask {
        match view {
            View::Minimal => TesTask {
                id: self.id,
                state: self.state,
                ..TesTask::default()
            },
            View::Basic => {
                for i in self.inputs.iter_mut().flatten() {
                    i.content = None;
                }
                for log in self.logs.iter_mut().flatten() {
                    log.system_logs = None;
                    for e in &mut log.logs {
                        e.stdout = None;
                        e.stderr = None;
                    }
                }
                self
            }
            View::Full => self,
        }
    }
}

/// What a workspace for an accepted task is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The `basho_project` tag.
    pub project: Option<Ident>,
    /// The visas of the `basho_visas` tag.
    pub visas: Vec<String>,
    /// Datasets its inputs name, to mount.
    pub datasets: Vec<Ident>,
    /// CPU cores asked for.
    pub cpus: Option<u32>,
    /// Memory asked for, MiB.
    pub memory_mib: Option<u64>,
    /// The site its one zone names.
    pub site: Option<Ident>,
    /// The executor's image name, command, working directory and environment.
    pub executor: TesExecutor,
    /// Said of the task as it was accepted (parameters dropped).
    pub warnings: Vec<String>,
    /// The task as stored: read-only fields cleared, visas taken out of its tags, dropped
    /// backend parameters gone.
    pub stored: TesTask,
}

fn too_long(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes; at most {max}", s.len()));
    }
    Ok(())
}

/// Refuses a path that is not absolute, has `..` or `.` segments, NUL, or ends in `/`.
fn container_path(what: &str, p: &str) -> Result<(), String> {
    let segments: Vec<&str> = p.split('/').skip(1).collect();
    if !p.starts_with('/')
        || p.contains('\0')
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(format!(
            "{what} is {p:?}; name an absolute path without empty, . or .. segments"
        ));
    }
    too_long(what, p, MAX_TEXT)
}

/// The dataset and path in it a `basho://datasets/<DATASET>/<path>` URL names.
fn dataset_url(url: &str) -> Result<(Ident, &str), String> {
    let Some(rest) = url.strip_prefix(DATASET_URL) else {
        return Err(format!(
            "input url {url:?} is not a dataset; name one by ID as \
             {DATASET_URL}<DATASET>/<path> (this platform fetches nothing from outside, and \
             inline content is not supported yet)"
        ));
    };
    let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
    let id = Ident::parse(id).map_err(|e| format!("input url {url:?}: dataset {e}"))?;
    if !path.is_empty() {
        container_path("input url's path", &format!("/{path}"))?;
    }
    Ok((id, path))
}

/// What basho makes of `task`: the checks a TES request meets before anything is stored.
pub fn accept(mut task: TesTask) -> Result<Accepted, String> {
    let mut warnings = Vec::new();
    if let Some(name) = &task.name {
        too_long("name", name, MAX_NAME)?;
    }
    if let Some(d) = &task.description {
        too_long("description", d, MAX_TEXT)?;
    }
    match task.executors.len() {
        0 => return Err("executors is empty; a task runs at least one".into()),
        n if n > MAX_EXECUTORS => {
            return Err(format!(
                "{n} executors; this server runs {MAX_EXECUTORS} per task today"
            ));
        }
        _ => {}
    }
    let executor = task.executors[0].clone();
    if executor.image.trim().is_empty() {
        return Err("executors[0].image is empty; name an image the site allows".into());
    }
    too_long("executors[0].image", &executor.image, MAX_NAME)?;
    if executor.command.is_empty() || executor.command[0].is_empty() {
        return Err("executors[0].command is empty; give the argv to run".into());
    }
    if executor.command.iter().any(|a| a.contains('\0')) {
        return Err("executors[0].command has a NUL byte".into());
    }
    if let Some(w) = &executor.workdir {
        container_path("executors[0].workdir", w)?;
    }
    if let Some(p) = &executor.stdin {
        container_path("executors[0].stdin", p)?;
    }
    for (what, p) in [("stdout", &executor.stdout), ("stderr", &executor.stderr)] {
        if let Some(p) = p {
            container_path(&format!("executors[0].{what}"), p)?;
            if !WRITABLE.iter().any(|dir| p.starts_with(dir)) {
                return Err(format!(
                    "executors[0].{what} is {p:?}; the container's root is read-only, so name a \
                     file under {}",
                    WRITABLE.join(", ")
                ));
            }
        }
    }
    if executor.env.len() > MAX_ENV {
        return Err(format!(
            "executors[0].env has {} variables; at most {MAX_ENV}",
            executor.env.len()
        ));
    }
    for (k, v) in &executor.env {
        let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || v.contains('\0') {
            return Err(format!(
                "executors[0].env {k:?} is not a valid variable (letters, digits and _, not \
                 starting with a digit; no NUL in its value)"
            ));
        }
        if k.starts_with("BASHO_") || REDIRECTS.contains(&k.as_str()) {
            return Err(format!(
                "executors[0].env {k:?}: BASHO_ variables are set by the site, and {} carry the \
                 executor's redirections",
                REDIRECTS.join(", ")
            ));
        }
        too_long("an env value", v, MAX_TEXT)?;
    }
    if task.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(
            "volumes are not supported yet; with one executor, /work is its scratch space".into(),
        );
    }
    let mut datasets: Vec<Ident> = Vec::new();
    let inputs = task.inputs.get_or_insert_with(Vec::new);
    if inputs.len() > MAX_FILES {
        return Err(format!("{} inputs; at most {MAX_FILES}", inputs.len()));
    }
    for (i, input) in inputs.iter().enumerate() {
        container_path(&format!("inputs[{i}].path"), &input.path)?;
        if input.content.is_some() {
            return Err(format!(
                "inputs[{i}].content: inline content is not supported yet; name a dataset's \
                 file as {DATASET_URL}<DATASET>/<path>"
            ));
        }
        let Some(url) = &input.url else {
            return Err(format!("inputs[{i}] has neither url nor content"));
        };
        let (id, path) = dataset_url(url).map_err(|e| format!("inputs[{i}]: {e}"))?;
        let mounted = if path.is_empty() {
            format!("/data/{id}")
        } else {
            format!("/data/{id}/{path}")
        };
        if input.path != mounted {
            return Err(format!(
                "inputs[{i}].path is {:?}; dataset {id} is mounted read-only, never copied, so \
                 its file is at {mounted:?}",
                input.path
            ));
        }
        if !datasets.contains(&id) {
            datasets.push(id);
        }
    }
    let outputs = task.outputs.get_or_insert_with(Vec::new);
    if outputs.len() > MAX_FILES {
        return Err(format!("{} outputs; at most {MAX_FILES}", outputs.len()));
    }
    for (i, output) in outputs.iter().enumerate() {
        container_path(&format!("outputs[{i}].path"), &output.path)?;
        if !output.path.starts_with("/results/") {
            return Err(format!(
                "outputs[{i}].path is {:?}; outputs leave only from under /results, through \
                 the results airlock",
                output.path
            ));
        }
        if output.path.contains(['*', '?', '[']) || output.path_prefix.is_some() {
            return Err(format!(
                "outputs[{i}].path: wildcards are not supported yet; name each file"
            ));
        }
        too_long(&format!("outputs[{i}].url"), &output.url, MAX_TEXT)?;
    }
    let (mut cpus, mut memory_mib, mut site) = (None, None, None);
    if let Some(r) = task.resources.as_mut() {
        if let Some(c) = r.cpu_cores {
            if c < 1 || c > i64::from(MAX_CPUS) {
                return Err(format!(
                    "resources.cpu_cores is {c}; ask for 1 to {MAX_CPUS}"
                ));
            }
            cpus = Some(c as u32);
        }
        if let Some(gb) = r.ram_gb {
            let mib = (gb * 1024.0).ceil();
            if !gb.is_finite() || gb <= 0.0 || mib > MAX_MEMORY_MIB as f64 {
                return Err(format!(
                    "resources.ram_gb is {gb}; ask for more than 0 and at most {} GB",
                    MAX_MEMORY_MIB / 1024
                ));
            }
            memory_mib = Some((mib as u64).max(16));
        }
        if let Some(gb) = r.disk_gb {
            if !gb.is_finite() || gb < 0.0 {
                return Err(format!("resources.disk_gb is {gb}; ask for 0 or more"));
            }
            warnings.push("resources.disk_gb is not applied: /work is sized by the site".into());
        }
        match r.zones.as_slice() {
            [] => {}
            [zone] => {
                site = Some(Ident::parse(zone).map_err(|e| format!("resources.zones: {e}"))?);
            }
            _ => return Err("resources.zones names more than one site; name one, or none".into()),
        }
        if !r.backend_parameters.is_empty() {
            let keys: Vec<_> = r.backend_parameters.keys().cloned().collect();
            if r.backend_parameters_strict == Some(true) {
                return Err(format!(
                    "resources.backend_parameters {keys:?} are not supported (this server \
                     supports none) and backend_parameters_strict is set"
                ));
            }
            warnings.push(format!(
                "resources.backend_parameters {keys:?} are not supported and were dropped"
            ));
            r.backend_parameters.clear();
        }
    }
    let mut visas = Vec::new();
    let mut project = None;
    if let Some(tags) = task.tags.as_mut() {
        if let Some(list) = tags.remove(TAG_VISAS) {
            visas = list
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if tags.len() > MAX_TAGS {
            return Err(format!("{} tags; at most {MAX_TAGS}", tags.len()));
        }
        for (k, v) in tags.iter() {
            too_long("a tag key", k, MAX_NAME)?;
            too_long("a tag value", v, MAX_TEXT)?;
        }
        if let Some(p) = tags.get(TAG_PROJECT) {
            project = Some(Ident::parse(p).map_err(|e| format!("tag {TAG_PROJECT}: {e}"))?);
        }
    }
    if visas.len() > MAX_VISAS {
        return Err(format!("{} visas; at most {MAX_VISAS}", visas.len()));
    }
    task.id = None;
    task.state = None;
    task.logs = None;
    task.creation_time = None;
    Ok(Accepted {
        project,
        visas,
        datasets,
        cpus,
        memory_mib,
        site,
        executor,
        warnings,
        stored: task,
    })
}

/// The argv and environment that run `e`. An executor with `stdin`, `stdout` or `stderr` files is
/// run by `/bin/sh` in the image, as `exec "$@"` with only those redirections, its own argv as
/// the positional parameters and the paths in `TES_STDIN`, `TES_STDOUT`, `TES_STDERR`: nothing
/// of the task is ever parsed by the shell. One without runs its argv as it is.
pub fn executor_argv(e: &TesExecutor) -> (Vec<String>, BTreeMap<String, String>) {
    let mut env = e.env.clone();
    let mut script = String::from("exec \"$@\"");
    for ((file, var), redirect) in [&e.stdin, &e.stdout, &e.stderr]
        .into_iter()
        .zip(REDIRECTS)
        .zip(["<", ">", "2>"])
    {
        if let Some(path) = file {
            env.insert(var.to_owned(), path.clone());
            script.push_str(&format!(" {redirect}\"${var}\""));
        }
    }
    if env.len() == e.env.len() {
        return (e.command.clone(), env);
    }
    let argv = ["/bin/sh", "-c", &script, "tes-executor"]
        .into_iter()
        .map(str::to_owned)
        .chain(e.command.iter().cloned())
        .collect();
    (argv, env)
}

/// The visas a `GA4GH-Passport` header carries: passports (their `ga4gh_passport_v1` visas) or
/// visas themselves, separated by commas or white space. Each visa is verified where it is used;
/// a passport's own signature adds nothing to that and is not checked.
pub fn passport_visas(header: &str) -> Result<Vec<String>, String> {
    let mut visas = Vec::new();
    for jwt in header
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let claims = crate::visa::segment(jwt, 1, "payload")
            .map_err(|e| format!("the GA4GH-Passport header: {e}"))?;
        if let Some(list) = claims.get("ga4gh_passport_v1") {
            let list = list
                .as_array()
                .ok_or("the GA4GH-Passport header: ga4gh_passport_v1 is not a list of visas")?;
            for v in list {
                let v = v.as_str().ok_or(
                    "the GA4GH-Passport header: ga4gh_passport_v1 holds something not a JWT",
                )?;
                visas.push(v.to_owned());
            }
        } else if claims.get("ga4gh_visa_v1").is_some() {
            visas.push(jwt.to_owned());
        } else {
            return Err(
                "the GA4GH-Passport header holds a JWT that is neither a passport nor a visa"
                    .into(),
            );
        }
    }
    Ok(visas)
}

/// The `sub` a visa claims, unverified: enough to refuse someone else's visas early, since the
/// workspace's owner is the `sub` of the visas as verified.
pub fn unverified_subject(jwt: &str) -> Option<String> {
    let claims = crate::visa::segment(jwt, 1, "payload").ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

const PAGE_TOKEN_PREFIX: &str = "tes1.";

/// The `next_page_token` of a page whose last task has sequence number `seq`.
pub fn page_token(seq: i64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seq.to_be_bytes());
    format!("{PAGE_TOKEN_PREFIX}{b64}")
}

/// The sequence number a `page_token` names; a token this server did not make is refused.
pub fn parse_page_token(token: &str) -> Result<i64, String> {
    let bad =
        || format!("page_token {token:?} was not made by this server; start from the first page");
    let b64 = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| bad())?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad())?;
    let seq = i64::from_be_bytes(bytes);
    if seq < 1 {
        return Err(bad());
    }
    Ok(seq)
}

/// Checks a `page_size` query value.
pub fn page_size(asked: Option<i64>) -> Result<u64, String> {
    match asked {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if n >= 1 && n as u64 <= MAX_PAGE_SIZE => Ok(n as u64),
        Some(n) => Err(format!("page_size is {n}; ask for 1 to {MAX_PAGE_SIZE}")),
    }
}

#[cfg(test)]
mod tests;
