//! The sbatch script of a workspace, rendered from a minijinja template with every value escaped.

use chrono::{DateTime, Utc};

use crate::backend::LaunchSpec;
use crate::config::SlurmConfig;

/// The job name of a workspace, by which the agent finds (and re-adopts) its job.
pub fn job_name(workspace: &str) -> String {
    format!("basho-{workspace}")
}

/// Why a script cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

/// Renders the job script submitted for `spec`.
pub fn render(
    template: &str,
    cfg: &SlurmConfig,
    spec: &LaunchSpec,
    now: DateTime<Utc>,
) -> Result<String, ScriptError> {
    let _ = (template, cfg, spec, now);
    Err(ScriptError(
        "job script rendering is not written yet".into(),
    ))
}
