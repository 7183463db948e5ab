//! Slurm sites: the agent reaches the login node over SSH, submits one job per workspace with
//! `sbatch`, follows it with `squeue` and `sacct`, and ends it with `scancel`.
//!
//! - A job is named `basho-<workspace id>` and carries `--comment=basho site=<site> expires=<t>`,
//!   so the agent finds its jobs again after a restart, and tells its site's jobs from others'.
//! - Never kill on a hiccup: a query that fails or times out is an error (`Unavailable`), which
//!   makes workspaces `unknown`; only `squeue`/`sacct` output ends one.
//! - Never submit twice: before `sbatch`, the agent looks for a job of that name in `squeue` and,
//!   where accounting runs, in `sacct`, so a workspace whose job already ran is not run again.
//!   `inspect` and `list_managed` see live jobs only (pending, running, ending); ended jobs stay
//!   in accounting, where only `launch` looks.
//! - Interactive sessions are job steps in the workspace's allocation that enter its container
//!   (see [`exec`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::protocol::Capacity;
use chrono::Utc;

use crate::backend::{
    Backend, BackendError, Capabilities, LaunchSpec, Observed, RunState, UsageSample,
};
use crate::config::SlurmConfig;

pub mod config;
pub mod exec;
mod load;
pub mod runtime;
pub mod script;
pub mod ssh;
pub mod state;

use ssh::{Login, Output, SshError};
use state::{Job, JobState};

/// How far back `sacct` looks for a workspace's earlier job.
const SACCT_WINDOW: &str = "now-60days";
/// `squeue` fields: job id, name, state, start time, comment (last: it is free text).
const SQUEUE_FORMAT: &str = "%i|%j|%T|%S|%k";
/// How long `stop` waits for a cancelled job to leave `squeue`, and how often it looks.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(90);
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(300);
/// `sacct` fields for a finished job.
const SACCT_FIELDS: &str = "JobIDRaw,JobName,State,ExitCode";

/// A Slurm cluster behind its login node.
pub struct SlurmBackend {
    site: Ident,
    cfg: SlurmConfig,
    template: String,
    login: Arc<Login>,
}

/// One command line for the login node's shell, which may be any POSIX `sh`: words with control
/// characters (which only bash's `$'...'` could carry) are refused.
fn command_line(argv: &[&str]) -> Result<String, BackendError> {
    if let Some(w) = argv.iter().find(|w| w.chars().any(char::is_control)) {
        return Err(BackendError::refused(format!(
            "{w:?} holds a control character and cannot be sent to the login node"
        )));
    }
    let words: Result<Vec<String>, _> = argv.iter().map(|w| script::shell_quote(w)).collect();
    words
        .map(|w| w.join(" "))
        .map_err(|e| BackendError::refused(e.to_string()).caused_by(e))
}

/// The site's job template, checked for its runtime and rendered once with the site's own
/// directives, account and partition for an example workspace: what would make every
/// submission fail is found at start-up.
pub fn site_template(cfg: &SlurmConfig) -> Result<String, script::ScriptError> {
    let template = script::template_text(cfg)?.into_owned();
    script::validate_for(&template, cfg.runtime)?;
    let spec = script::example::example_spec(cfg.runtime);
    script::render(&template, cfg, &spec, script::example::example_time())?;
    Ok(template)
}

fn unavailable(e: SshError) -> BackendError {
    BackendError::unavailable(e.to_string()).caused_by(e)
}

/// Slurm's own words for a controller it could not reach: worth retrying, not a refusal.
fn transient(stderr: &str) -> bool {
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Transient",
        "try again",
        "Connection refused",
        "Zero Bytes were transmitted",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

impl SlurmBackend {
    /// A backend for `site` with `cfg`; reads and checks the job template, dials nothing yet.
    pub fn new(site: Ident, cfg: SlurmConfig) -> Result<Self, BackendError> {
        let template = site_template(&cfg)
            .map_err(|e| BackendError::refused(format!("job script: {e}")).caused_by(e))?;
        let login = Arc::new(Login::new(cfg.login.clone()));
        Ok(Self {
            site,
            cfg,
            template,
            login,
        })
    }

    /// The runtime's program on the compute nodes.
    fn program(&self) -> &str {
        self.cfg
            .runtime_path
            .as_deref()
            .unwrap_or(self.cfg.runtime.name())
    }

    async fn run(&self, argv: &[&str], stdin: Option<String>) -> Result<Output, BackendError> {
        self.login
            .run(command_line(argv)?, stdin)
            .await
            .map_err(unavailable)
    }

    /// Runs a query whose failure means "cannot tell", never "gone".
    async fn query(&self, argv: &[&str]) -> Result<String, BackendError> {
        let out = self.run(argv, None).await?;
        if out.status != 0 {
            return Err(BackendError::unavailable(format!(
                "{} failed on {}: {}",
                argv[0],
                self.login.describe(),
                out.why()
            )));
        }
        Ok(out.stdout)
    }

    /// This site's live jobs (pending, running, completing) as `squeue` lists them; with
    /// `ended`, also those that ended recently enough for the controller to remember them.
    async fn jobs(&self, name: Option<&str>, ended: bool) -> Result<Vec<Job>, BackendError> {
        let user = self.cfg.login.user.clone();
        let mut argv = vec![
            "squeue",
            "--noheader",
            "--user",
            &user,
            "--format",
            SQUEUE_FORMAT,
        ];
        if ended {
            argv.push("--states=all");
        }
        let by_name;
        if let Some(n) = name {
            by_name = format!("--name={n}");
            argv.push(&by_name);
        }
        let out = self.query(&argv).await?;
        let mut jobs: Vec<Job> = state::squeue(&out)
            .into_iter()
            .filter(|j| j.site.as_deref() == Some(self.site.as_str()))
            .collect();
        // A pending job that ran before was requeued by Slurm (preempted, or its node failed):
        // squeue shows no restart count, the controller does.
        for j in jobs.iter_mut().filter(|j| j.state == JobState::Pending) {
            let id = j.id.to_string();
            let out = self
                .query(&["scontrol", "--oneliner", "show", "job", &id])
                .await?;
            j.restarts = state::scontrol_restarts(&out).unwrap_or(0);
        }
        // squeue shows no exit code, and accounting may not have the end yet: a job that failed
        // takes the script's code from the controller.
        for j in jobs
            .iter_mut()
            .filter(|j| matches!(j.state, JobState::Ended(_)))
        {
            if let Some(code) = self.controller_exit_code(j.id).await? {
                j.exit_code = code;
            }
        }
        Ok(jobs)
    }

    /// The workspace's latest job in accounting (any state), if accounting runs and has one.
    async fn accounted_job(&self, workspace: &str) -> Result<Option<Job>, BackendError> {
        let name = format!("--name={}", script::job_name(workspace));
        let user = self.cfg.login.user.clone();
        let out = self
            .run(
                &[
                    "sacct",
                    "--noheader",
                    "--parsable2",
                    "--allocations",
                    "--user",
                    &user,
                    &name,
                    "--starttime",
                    SACCT_WINDOW,
                    "--format",
                    SACCT_FIELDS,
                ],
                None,
            )
            .await?;
        if out.status != 0 {
            if state::accounting_disabled(&out.stderr) {
                return Ok(None);
            }
            return Err(BackendError::unavailable(format!(
                "sacct failed on {}: {}",
                self.login.describe(),
                out.why()
            )));
        }
        Ok(state::sacct(&out.stdout).into_iter().max_by_key(|j| j.id))
    }

    /// Job `id`'s exit code as the controller remembers it (`scontrol show job`), when it does.
    async fn controller_exit_code(&self, id: u64) -> Result<Option<i64>, BackendError> {
        let id = id.to_string();
        let out = self
            .query(&["scontrol", "--oneliner", "show", "job", &id])
            .await?;
        Ok(state::scontrol_exit_code(&out))
    }

    /// The workspace's live job (pending, running or ending), if any.
    async fn live(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        let name = script::job_name(workspace);
        let live = self.jobs(Some(&name), false).await?;
        Ok(pick(live).into_iter().find(|o| o.workspace == workspace))
    }

    /// The workspace's latest job if it ended by itself: as the controller still remembers it or,
    /// once forgotten, as accounting recorded it, with accounting's exit code where it has the
    /// job. A cancelled job is not one: `stop` cancels, and what it stopped is gone.
    async fn ended(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        let name = script::job_name(workspace);
        let remembered = self
            .jobs(Some(&name), true)
            .await?
            .into_iter()
            .filter(|j| j.workspace() == Some(workspace))
            .max_by_key(|j| j.id);
        let accounted = self.accounted_job(workspace).await?;
        let job = match (remembered, accounted) {
            (Some(r), Some(a)) if a.id == r.id && a.state.is_over() => Job {
                site: r.site,
                expires_at: r.expires_at,
                started_at: r.started_at,
                ..a
            },
            (Some(r), _) => r,
            (None, Some(a)) => a,
            (None, None) => return Ok(None),
        };
        Ok(job
            .state
            .ended_by_itself()
            .then(|| job.observed())
            .flatten())
    }
}

impl SlurmBackend {
    /// What accounting recorded for the workspace's latest job (allocation and use), for
    /// metering; `None` when accounting has no job of that name or is not set up.
    pub async fn accounting(
        &self,
        workspace: &str,
    ) -> Result<Option<state::JobAccounting>, BackendError> {
        let Some(job) = self.accounted_job(workspace).await? else {
            return Ok(None);
        };
        let id = job.id.to_string();
        let out = self
            .query(&[
                "sacct",
                "--noheader",
                "--parsable2",
                "--jobs",
                &id,
                "--format",
                state::ACCOUNTING_FIELDS,
            ])
            .await?;
        Ok(state::accounting(&out))
    }
}

/// One observation per workspace; where Slurm has several jobs of one name, the most alive wins.
fn pick(jobs: Vec<Job>) -> Vec<Observed> {
    let mut by_ws: BTreeMap<String, Job> = BTreeMap::new();
    for j in jobs {
        let Some(ws) = j.workspace().map(str::to_owned) else {
            continue;
        };
        match by_ws.get(&ws) {
            Some(prev) if prev.state.liveness() >= j.state.liveness() => {}
            _ => {
                by_ws.insert(ws, j);
            }
        }
    }
    by_ws.into_values().filter_map(|j| j.observed()).collect()
}

#[async_trait]
impl Backend for SlurmBackend {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Slurm allocates GPUs with --gres; only Apptainer (--nv) hands the job's own GPUs
            // to the container.
            gpus: self.cfg.runtime == crate::config::Runtime::Apptainer,
            // Datasets are bound without their submounts on every runtime.
            recursive_readonly: false,
            // The job binds the agent's own directories (a file system the nodes share).
            host_dirs: true,
            relaunch: false,
            requeue: true,
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        let text = script::render(&self.template, &self.cfg, spec, Utc::now())
            .map_err(|e| BackendError::refused(format!("job script: {e}")).caused_by(e))?;
        // A workspace runs once: a job already there is adopted, and one that already ended
        // (still known to the controller, or in accounting) is its end, not a reason to submit.
        let name = script::job_name(&spec.workspace);
        let known = pick(self.jobs(Some(&name), true).await?);
        if let Some(found) = known.into_iter().find(|o| o.workspace == spec.workspace) {
            tracing::info!(workspace = %spec.workspace, job = %found.handle, state = ?found.state, "job already there; not submitting again");
            return Ok(found);
        }
        if let Some(ended) = self
            .accounted_job(&spec.workspace)
            .await?
            .and_then(|j| j.observed())
        {
            tracing::warn!(workspace = %spec.workspace, job = %ended.handle, state = ?ended.state, "its job already ran; not submitting again");
            return Ok(ended);
        }
        let out = self.run(&["sbatch", "--parsable"], Some(text)).await?;
        if out.status != 0 {
            let why = out.why();
            let msg = format!("sbatch on {} refused the job: {why}", self.login.describe());
            return Err(if transient(&why) {
                BackendError::unavailable(msg)
            } else {
                BackendError::refused(msg)
            });
        }
        let id = state::sbatch_job_id(&out.stdout).ok_or_else(|| {
            BackendError::unavailable(format!(
                "sbatch answered {:?}, not a job id; the job will be found by name next pass",
                out.stdout.trim()
            ))
        })?;
        tracing::info!(workspace = %spec.workspace, job = id, "submitted");
        basho_core::crash_point!("agent.launch.created");
        Ok(Observed {
            workspace: spec.workspace.to_string(),
            handle: id.to_string(),
            state: RunState::Starting,
            expires_at: Some(spec.expires_at),
        })
    }

    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        match self.live(workspace).await? {
            Some(live) => Ok(Some(live)),
            None => self.ended(workspace).await,
        }
    }

    async fn stop(&self, workspace: &str) -> Result<(), BackendError> {
        let name = format!("--name={}", script::job_name(workspace));
        let user = self.cfg.login.user.clone();
        let out = self.run(&["scancel", "--user", &user, &name], None).await?;
        if out.status != 0 {
            return Err(BackendError::unavailable(format!(
                "scancel on {} failed: {}",
                self.login.describe(),
                out.why()
            )));
        }
        basho_core::crash_point!("agent.stop.stopped");
        // Done when Slurm no longer lists it live: the job script has had its chance to remove
        // the container (Slurm's KillWait bounds that).
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        while self.live(workspace).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::unavailable(format!(
                    "job basho-{workspace} still ending {STOP_WITHIN:?} after scancel"
                )));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
        Ok(())
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        Ok(pick(self.jobs(None, false).await?))
    }

    async fn site_load(&self) -> Result<Option<super::SiteLoad>, BackendError> {
        let nodes = self
            .query(&["scontrol", "--oneliner", "show", "node"])
            .await?;
        let user = self.cfg.login.user.clone();
        let ours = self
            .query(&[
                "squeue",
                "--noheader",
                "--user",
                &user,
                "--states=RUNNING,COMPLETING",
                "--format",
                load::SQUEUE_HELD,
            ])
            .await?;
        Ok(Some(load::site_load(
            &load::nodes(&nodes),
            self.cfg.partition.as_deref(),
            load::held_by_site(&ours, self.site.as_str()),
        )))
    }

    async fn site_limit(&self) -> Result<Option<(Capacity, String)>, BackendError> {
        let Some(qos) = &self.cfg.qos else {
            return Ok(None);
        };
        let out = self
            .query(&[
                "sacctmgr",
                "--noheader",
                "--parsable2",
                "show",
                "qos",
                qos,
                "format=GrpTRES",
            ])
            .await?;
        let tres = out.lines().next().unwrap_or("").trim();
        Ok(load::tres_limit(tres)
            .map(|c| (c, format!("QOS {qos} allows {tres} at once (GrpTRES)"))))
    }

    async fn requeue(&self, workspace: &str) -> Result<(), BackendError> {
        let Some(job) = self.live(workspace).await? else {
            return Err(BackendError::unavailable(format!(
                "workspace {workspace} has no live job to requeue"
            )));
        };
        let out = self
            .run(&["scontrol", "requeue", job.handle.as_str()], None)
            .await?;
        if out.status != 0 {
            return Err(BackendError::refused(format!(
                "scontrol requeue {} on {}: {}",
                job.handle,
                self.login.describe(),
                out.why()
            )));
        }
        tracing::info!(workspace, job = %job.handle, "requeued: it starts again on its datasets' current releases");
        Ok(())
    }

    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
        let name = script::job_name(workspace);
        let Some(job) = self
            .jobs(Some(&name), false)
            .await?
            .into_iter()
            .find(|j| j.state == JobState::Running)
        else {
            return Ok(None);
        };
        let id = job.id.to_string();
        let out = self
            .query(&[
                "sstat",
                "--noheader",
                "--parsable2",
                "--allsteps",
                "--jobs",
                &id,
                "--format",
                "JobID,TRESUsageInTot",
            ])
            .await?;
        Ok(Some(UsageSample {
            started_at: job.started_at,
            ..state::sstat_usage(&out)
        }))
    }

    async fn exec(
        &self,
        workspace: &str,
        req: &crate::backend::exec::ExecRequest,
    ) -> Result<crate::backend::exec::ExecIo, BackendError> {
        exec::start(self, workspace, req).await
    }
}

impl Job {
    fn workspace(&self) -> Option<&str> {
        self.name.strip_prefix("basho-")
    }

    fn observed(&self) -> Option<Observed> {
        let workspace = self.workspace()?.to_owned();
        Some(Observed {
            workspace,
            handle: self.id.to_string(),
            state: self.state.run_state(self.exit_code, self.restarts),
            expires_at: self.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_real_shell() {
        let words = [
            "plain",
            "",
            "it's",
            "$(rm -rf ~)",
            "`id`",
            "a b c",
            "--name=basho-x",
            "\\",
            "'",
        ];
        let line = format!("printf '%s\\0' {}", command_line(&words).unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .unwrap();
        assert!(out.status.success());
        let back: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(back, words);
        assert!(matches!(
            command_line(&["squeue", "a\nb"]),
            Err(BackendError::Refused { .. })
        ));
    }

    #[test]
    fn slurm_hiccups_are_transient_and_refusals_are_not() {
        assert!(transient(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!transient(
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
        ));
        assert!(!transient(
            "sbatch: error: invalid partition specified: nope"
        ));
    }
}
