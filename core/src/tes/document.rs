//! The TES 1.1 task document, field for field as the specification's schemas name them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TesState, View};

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
    /// Where the executor sees it: `/data/<DATASET>/<path>`, where the dataset is mounted, or
    /// where inline content is written.
    pub path: String,
    /// File or directory.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileType>,
    /// Inline content, written to `path` (under `/work` or `/tmp`) before the first executor.
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
