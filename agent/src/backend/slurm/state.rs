//! Reading what Slurm's commands print: `sbatch --parsable`, `squeue --format`, `sacct
//! --parsable2` and `sstat --parsable2`. Pure functions, so every format quirk is a unit test.

use chrono::{DateTime, Utc};

use crate::backend::{RunState, UsageSample};

/// One job as `squeue` or `sacct` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Job name (`basho-<workspace>` for ours).
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// The site from the job's comment (`squeue` only).
    pub site: Option<String>,
    /// The expiry from the job's comment (`squeue` only).
    pub expires_at: Option<DateTime<Utc>>,
    /// Exit code of the batch script (`sacct` only; 0 otherwise).
    pub exit_code: i64,
    /// When it started running (`squeue` only; `None` while pending).
    pub started_at: Option<DateTime<Utc>>,
    /// How often Slurm requeued it after it ran (the controller's `Restarts`, read for pending
    /// jobs only; 0 otherwise).
    pub restarts: u32,
}

/// Slurm job states, grouped by what they mean for a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources or being set up: PENDING, CONFIGURING, REQUEUED, ...
    Pending,
    /// RUNNING, or COMPLETING/SIGNALING/STAGE_OUT (still holding its nodes).
    Running,
    /// Held by an admin or a suspend: SUSPENDED, STOPPED, ...: neither running nor over.
    Held(String),
    /// COMPLETED: the script exited (with the recorded code).
    Completed,
    /// Ended by Slurm or a failure: FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...
    Ended(String),
}

impl JobState {
    /// Parses a state word; `sacct` may add words (`CANCELLED by 1001`), `squeue` may add `+`.
    pub fn parse(s: &str) -> Self {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        match word {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD"
            | "RESV_DEL_HOLD" | "RESIZING" => Self::Pending,
            "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => Self::Running,
            "SUSPENDED" | "STOPPED" | "SPECIAL_EXIT" => Self::Held(word.to_owned()),
            "COMPLETED" => Self::Completed,
            other => Self::Ended(other.to_owned()),
        }
    }

    /// Orders states for choosing between jobs of one name: running beats pending beats held
    /// beats over.
    pub fn liveness(&self) -> u8 {
        match self {
            Self::Running => 4,
            Self::Pending => 3,
            Self::Held(_) => 2,
            Self::Completed | Self::Ended(_) => 1,
        }
    }

    /// Completed, or ended by Slurm or a failure.
    pub fn is_over(&self) -> bool {
        matches!(self, Self::Completed | Self::Ended(_))
    }

    /// Over, and not by a cancel: the script exited, failed, timed out or lost its node.
    pub fn ended_by_itself(&self) -> bool {
        match self {
            Self::Completed => true,
            Self::Ended(word) => word != "CANCELLED",
            _ => false,
        }
    }

    /// The backend state this means, for a job Slurm requeued `restarts` times after it ran.
    pub fn run_state(&self, exit_code: i64, restarts: u32) -> RunState {
        match self {
            Self::Pending if restarts > 0 => RunState::Preempted(format!(
                "Slurm requeued its job after it ran (restart {restarts}): the site's own work \
                 preempted it, or its node failed; it runs again there with /work kept"
            )),
            Self::Pending => RunState::Starting,
            Self::Running => RunState::Running,
            Self::Held(s) => RunState::Unknown(format!("job is {s}")),
            Self::Completed => RunState::Exited(exit_code),
            // The script's own code when it set one, else a code that says "failed".
            Self::Ended(_) => RunState::Exited(if exit_code == 0 { 1 } else { exit_code }),
        }
    }
}

/// The job id `sbatch --parsable` prints (`123` or `123;cluster`).
pub fn sbatch_job_id(stdout: &str) -> Option<u64> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.split(';').next()?.trim().parse().ok()
}

/// Reads our comment `basho site=<site> expires=<rfc3339>`.
pub fn comment(s: &str) -> (Option<String>, Option<DateTime<Utc>>) {
    let mut words = s.split_whitespace();
    if words.next() != Some("basho") {
        return (None, None);
    }
    let (mut site, mut expires) = (None, None);
    for w in words {
        if let Some(v) = w.strip_prefix("site=") {
            site = Some(v.to_owned());
        } else if let Some(v) = w.strip_prefix("expires=") {
            expires = DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    (site, expires)
}

/// Lines of `squeue --noheader --format '%i|%j|%T|%k'`. Lines that do not parse (another
/// tool's job with a `|` in its name, an array task) are skipped.
pub fn squeue(out: &str) -> Vec<Job> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.splitn(5, '|');
            let id = f.next()?.trim().parse().ok()?;
            let name = f.next()?.trim().to_owned();
            let state = JobState::parse(f.next()?);
            let started_at = local_time(f.next()?);
            let (site, expires_at) = comment(f.next().unwrap_or(""));
            Some(Job {
                id,
                name,
                state,
                site,
                expires_at,
                exit_code: 0,
                started_at,
                restarts: 0,
            })
        })
        .collect()
}

/// A Slurm timestamp (`2026-11-30T21:00:00`, the controller's local time); `None` for `N/A`.
pub fn local_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S").ok()?;
    naive
        .and_local_timezone(chrono::Local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Lines of `sacct --noheader --parsable2 --allocations --format JobIDRaw,JobName,State,ExitCode`.
pub fn sacct(out: &str) -> Vec<Job> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            let [id, name, state, exit] = f.as_slice() else {
                return None;
            };
            let id = id.trim().parse().ok()?;
            let (code, signal) = exit.split_once(':').unwrap_or((exit, "0"));
            let code: i64 = code.trim().parse().unwrap_or(0);
            let signal: i64 = signal.trim().parse().unwrap_or(0);
            Some(Job {
                id,
                name: name.trim().to_owned(),
                state: JobState::parse(state),
                site: None,
                expires_at: None,
                started_at: None,
                restarts: 0,
                exit_code: if code == 0 && signal != 0 {
                    128 + signal
                } else {
                    code
                },
            })
        })
        .collect()
}

/// The `ExitCode=CODE:SIGNAL` of `scontrol --oneliner show job` output, as [`sacct`] reads it:
/// a signal without a code is 128 + the signal.
pub fn scontrol_exit_code(out: &str) -> Option<i64> {
    let field = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ExitCode="))?;
    let (code, signal) = field.split_once(':')?;
    let (code, signal): (i64, i64) = (code.parse().ok()?, signal.parse().ok()?);
    Some(if code == 0 && signal != 0 {
        128 + signal
    } else {
        code
    })
}

/// `Restarts=` of `scontrol --oneliner show job`: how often Slurm requeued the job.
pub fn scontrol_restarts(out: &str) -> Option<u32> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("Restarts="))?
        .parse()
        .ok()
}

/// `sacct` saying that accounting is not set up (so it can give no evidence either way).
pub fn accounting_disabled(stderr: &str) -> bool {
    stderr.contains("accounting storage is disabled")
        || stderr.contains("Slurm accounting storage is disabled")
}

/// Seconds in a Slurm duration: `[DD-][HH:]MM:SS[.fff]`.
pub fn duration_s(s: &str) -> Option<f64> {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, sec) = match parts.as_slice() {
        [h, m, s] => (h.parse::<f64>().ok()?, m.parse::<f64>().ok()?, s),
        [m, s] => (0.0, m.parse::<f64>().ok()?, s),
        _ => return None,
    };
    let sec: f64 = sec.parse().ok()?;
    Some(days * 86_400.0 + h * 3_600.0 + m * 60.0 + sec)
}

/// Bytes in a Slurm size: `123`, `4K`, `5.5M`, `2G`, `1T`.
pub fn bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

/// A TRES list (`cpu=00:01:02,mem=12M,energy=0`) as pairs.
pub fn tres(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(',').filter_map(|kv| kv.split_once('='))
}

/// Sums CPU time and memory over the steps `sstat --allsteps --parsable2 --format
/// JobID,TRESUsageInTot` lists.
pub fn sstat_usage(out: &str) -> UsageSample {
    let mut u = UsageSample::default();
    for line in out.lines() {
        let Some((_, usage)) = line.split_once('|') else {
            continue;
        };
        for (k, v) in tres(usage) {
            match k {
                "cpu" => u.cpu_seconds += duration_s(v).unwrap_or(0.0),
                "mem" => u.memory_bytes += bytes(v).unwrap_or(0),
                _ => {}
            }
        }
    }
    u
}

/// `sacct` fields for [`accounting`].
pub const ACCOUNTING_FIELDS: &str =
    "JobIDRaw,State,ElapsedRaw,CPUTimeRAW,AllocTRES,TRESUsageInTot,TRESUsageInMax";

/// What Slurm's accounting recorded for one job: the allocation (from the job's own line) and
/// what its steps used (summed or maximised over the step lines).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobAccounting {
    /// Job id.
    pub job_id: u64,
    /// The job's state word.
    pub state: String,
    /// Wall time so far or in all, seconds (`ElapsedRaw`).
    pub elapsed_s: u64,
    /// Allocated core-seconds (`CPUTimeRAW`: elapsed × allocated CPUs).
    pub allocated_core_seconds: u64,
    /// Allocated CPUs (`AllocTRES` cpu).
    pub cpus: u64,
    /// Allocated memory, bytes (`AllocTRES` mem).
    pub memory_bytes: u64,
    /// Allocated GPUs (`AllocTRES` gres/gpu).
    pub gpus: u64,
    /// CPU time the steps used, seconds (`TRESUsageInTot` cpu, summed over steps).
    pub used_cpu_seconds: f64,
    /// Largest memory use of any step, bytes (`TRESUsageInMax` mem).
    pub peak_memory_bytes: u64,
}

/// Reads `sacct --noheader --parsable2 --format` [`ACCOUNTING_FIELDS`] for one job (its line and
/// its steps' lines). `None` when the job's own line is missing.
pub fn accounting(out: &str) -> Option<JobAccounting> {
    let mut job: Option<JobAccounting> = None;
    let mut used = 0.0;
    let mut peak = 0;
    for line in out.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let [id, state, elapsed, cputime, alloc, tot, max] = f.as_slice() else {
            continue;
        };
        if id.contains('.') {
            used += tres(tot)
                .find(|(k, _)| *k == "cpu")
                .and_then(|(_, v)| duration_s(v))
                .unwrap_or(0.0);
            let m = tres(max)
                .find(|(k, _)| *k == "mem")
                .and_then(|(_, v)| bytes(v))
                .unwrap_or(0);
            peak = peak.max(m);
            continue;
        }
        let Ok(job_id) = id.trim().parse() else {
            continue;
        };
        let mut a = JobAccounting {
            job_id,
            state: state.split_whitespace().next().unwrap_or("").to_owned(),
            elapsed_s: elapsed.trim().parse().unwrap_or(0),
            allocated_core_seconds: cputime.trim().parse().unwrap_or(0),
            ..JobAccounting::default()
        };
        for (k, v) in tres(alloc) {
            match k {
                "cpu" => a.cpus = v.parse().unwrap_or(0),
                "mem" => a.memory_bytes = bytes(v).unwrap_or(0),
                "gres/gpu" => a.gpus = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        job = Some(a);
    }
    job.map(|mut j| {
        j.used_cpu_seconds = used;
        j.peak_memory_bytes = peak;
        j
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_ids_with_and_without_a_cluster() {
        assert_eq!(sbatch_job_id("42\n"), Some(42));
        assert_eq!(sbatch_job_id("\n 43;basho\n"), Some(43));
        assert_eq!(sbatch_job_id("Submitted batch job 44\n"), None);
        assert_eq!(sbatch_job_id(""), None);
    }

    #[test]
    fn squeue_lines_with_our_comment_and_others() {
        let out = "17|basho-ws-1|RUNNING|2030-01-02T03:00:00|basho site=tohoku expires=2030-01-02T03:04:05Z\n\
                   18|basho-ws-2|PENDING|N/A|basho site=kyoto expires=2030-01-02T03:04:05Z\n\
                   19|someone-else|RUNNING|2030-01-02T03:00:00|(null)\n\
                   20_[1-3]|array|PENDING|N/A|\n\
                   garbage\n\
                   21|basho-ws-3|COMPLETING|2030-01-02T03:00:00|basho site=tohoku expires=bad\n";
        let jobs = squeue(out);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].id, 17);
        assert_eq!(jobs[0].state, JobState::Running);
        assert_eq!(jobs[0].site.as_deref(), Some("tohoku"));
        assert_eq!(
            jobs[0].expires_at.map(|t| t.to_rfc3339()),
            Some("2030-01-02T03:04:05+00:00".into())
        );
        assert_eq!(jobs[1].state, JobState::Pending);
        assert_eq!(jobs[1].started_at, None);
        assert_eq!(jobs[0].started_at, local_time("2030-01-02T03:00:00"));
        assert!(jobs[0].started_at.is_some());
        assert_eq!(jobs[2].site, None);
        assert_eq!(jobs[3].state, JobState::Running);
        assert_eq!(jobs[3].expires_at, None);
    }

    #[test]
    fn a_pending_job_that_ran_before_is_preempted() {
        let line = "JobId=6 JobName=basho-ws-1 JobState=PENDING Reason=BeginTime Requeue=1 \
                    Restarts=1 BatchFlag=1";
        assert_eq!(scontrol_restarts(line), Some(1));
        assert_eq!(scontrol_restarts("JobId=6"), None);
        match JobState::Pending.run_state(0, 1) {
            RunState::Preempted(why) => assert!(why.contains("restart 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(JobState::Pending.run_state(0, 0), RunState::Starting);
        assert_eq!(JobState::Running.run_state(0, 2), RunState::Running);
    }

    #[test]
    fn scontrol_exit_codes() {
        let line = "JobId=2 JobName=basho-ws-1 UserId=basho(1000) JobState=FAILED Reason=NonZeroExitCode \
                    Dependency=(null) Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:01";
        assert_eq!(scontrol_exit_code(line), Some(3));
        assert_eq!(scontrol_exit_code("JobId=3 ExitCode=0:9"), Some(137));
        assert_eq!(
            scontrol_exit_code("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn sacct_states_and_exit_codes() {
        let out = "30|basho-a|COMPLETED|0:0\n\
                   31|basho-b|FAILED|3:0\n\
                   32|basho-c|CANCELLED by 1001|0:15\n\
                   33|basho-d|TIMEOUT|0:0\n\
                   34|basho-e|OUT_OF_MEMORY|0:125\n";
        let jobs = sacct(out);
        let states: Vec<RunState> = jobs
            .iter()
            .map(|j| j.state.run_state(j.exit_code, 0))
            .collect();
        assert_eq!(
            states,
            vec![
                RunState::Exited(0),
                RunState::Exited(3),
                RunState::Exited(143),
                RunState::Exited(1),
                RunState::Exited(253),
            ]
        );
    }

    #[test]
    fn held_jobs_are_unknown_not_gone() {
        assert!(matches!(
            JobState::parse("SUSPENDED").run_state(0, 0),
            RunState::Unknown(_)
        ));
        assert!(JobState::parse("RUNNING").liveness() > JobState::parse("PENDING").liveness());
        assert!(JobState::parse("PENDING").liveness() > JobState::parse("CANCELLED").liveness());
    }

    #[test]
    fn only_an_end_of_its_own_is_an_exit() {
        for word in [
            "COMPLETED",
            "FAILED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ] {
            let s = JobState::parse(word);
            assert!(s.is_over() && s.ended_by_itself(), "{word}");
        }
        let cancelled = JobState::parse("CANCELLED by 1001");
        assert!(cancelled.is_over() && !cancelled.ended_by_itself());
        for word in ["PENDING", "RUNNING", "SUSPENDED"] {
            let s = JobState::parse(word);
            assert!(!s.is_over() && !s.ended_by_itself(), "{word}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration_s("00:01:02"), Some(62.0));
        assert_eq!(duration_s("01:02"), Some(62.0));
        assert_eq!(duration_s("1-00:00:01"), Some(86_401.0));
        assert_eq!(duration_s("00:00:01.500"), Some(1.5));
        assert_eq!(duration_s("x"), None);
        assert_eq!(bytes("4K"), Some(4096));
        assert_eq!(bytes("1.5M"), Some(1_572_864));
        assert_eq!(bytes("100"), Some(100));
        assert_eq!(bytes("G"), None);
    }

    #[test]
    fn accounting_reads_the_allocation_and_the_steps() {
        let out = "24|COMPLETED|61|122|billing=2,cpu=2,gres/gpu=1,mem=128M,node=1||\n\
                   24.batch|COMPLETED|61|122|cpu=2,mem=128M,node=1|cpu=00:00:59,energy=0,mem=27896K|cpu=00:00:59,mem=30000K\n\
                   24.extern|COMPLETED|61|122|cpu=2,mem=128M,node=1|cpu=00:00:00.500,mem=1K|cpu=00:00:00.500,mem=1K\n";
        let a = accounting(out).unwrap();
        assert_eq!(a.job_id, 24);
        assert_eq!(a.state, "COMPLETED");
        assert_eq!((a.elapsed_s, a.allocated_core_seconds), (61, 122));
        assert_eq!((a.cpus, a.gpus, a.memory_bytes), (2, 1, 128 << 20));
        assert!((a.used_cpu_seconds - 59.5).abs() < 1e-9);
        assert_eq!(a.peak_memory_bytes, 30_000 * 1024);
        assert_eq!(accounting("24.batch|RUNNING|1|1|||\n"), None);
    }

    #[test]
    fn sstat_sums_the_steps() {
        let out = "7.batch|cpu=00:00:10,energy=0,fs/disk=100,mem=2M,pages=0,vmem=8M\n\
                   7.extern|cpu=00:00:00.500,mem=1M\n";
        let u = sstat_usage(out);
        assert!((u.cpu_seconds - 10.5).abs() < 1e-9);
        assert_eq!(u.memory_bytes, 3 << 20);
    }
}
