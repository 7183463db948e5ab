//! The command line that starts a workspace's container inside its Slurm job, one builder per
//! runtime (Apptainer, Docker, Podman), each applying the contract's isolation defaults in its
//! own words.

use crate::backend::{BackendError, LaunchSpec};
use crate::config::Runtime;

/// The argv that runs the workspace's container in the foreground of the job.
pub fn container_argv(
    runtime: Runtime,
    program: &str,
    spec: &LaunchSpec,
) -> Result<Vec<String>, BackendError> {
    let _ = (runtime, program, spec);
    Err(BackendError::Unsupported(
        "runtime builders are not written yet".into(),
    ))
}
