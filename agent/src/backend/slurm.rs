//! Slurm sites: the agent reaches the login node over SSH, submits one job per workspace with
//! `sbatch`, follows it with `squeue` and `sacct`, and ends it with `scancel`.

pub mod runtime;
pub mod script;
