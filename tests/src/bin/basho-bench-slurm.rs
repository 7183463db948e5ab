//! basho-bench-slurm: the Slurm backend against plain `sbatch`, on the real cluster of
//! `scripts/slurm-up`.
//!
//! - Submit-to-RUNNING: the same rendered job script, once submitted by the agent's backend
//!   (`launch`: its `squeue`/`sacct` checks, then `sbatch` over its pooled SSH session) and once
//!   by plain `ssh ... sbatch --parsable < script` (the OpenSSH client). Both are timed from the
//!   call to `squeue` on the node showing the job `RUNNING` (polled every 20 ms), alternating.
//! - Submission rate: `--burst` workspaces launched at once through the backend; jobs per second
//!   accepted by `sbatch`.
//!
//!     cargo run --release -p basho-tests --bin basho-bench-slurm -- --samples 10 --burst 50

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_agent::backend::slurm::{SlurmBackend, script};
use basho_agent::backend::{Backend, LaunchSpec};
use basho_agent::config::Runtime;
use basho_core::Ident;
use basho_tests::bench::{Figure, Report, pct_ms};
use basho_tests::slurm::{Testbed, runnable_spec as spec, slurm};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Submit-to-RUNNING samples of each kind.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Workspaces launched at once for the submission rate.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    burst: u64,
}

const POLL: Duration = Duration::from_millis(20);
const PATIENCE: Duration = Duration::from_secs(60);

fn state(job: &str) -> String {
    slurm(&[
        "squeue",
        "--noheader",
        "--states=all",
        "--jobs",
        job,
        "--format=%T",
    ])
    .trim()
    .to_owned()
}

fn wait_running(job: &str) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match state(job).as_str() {
            "RUNNING" => return Ok(()),
            "PENDING" | "CONFIGURING" | "" => {}
            other => bail!("job {job} is {other}"),
        }
        if Instant::now() > deadline {
            bail!("job {job} not running within {PATIENCE:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Cancels the job and waits until the node is free again, so samples do not queue.
fn cancel(job: &str) -> Result<()> {
    slurm(&["scancel", job]);
    let deadline = Instant::now() + PATIENCE;
    while matches!(state(job).as_str(), "RUNNING" | "PENDING" | "COMPLETING") {
        if Instant::now() > deadline {
            bail!("job {job} did not end");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

fn plain_sbatch(testbed: &Testbed, script: &str) -> Result<String> {
    use std::io::Write;
    let login = testbed.login();
    let mut child = Command::new("ssh")
        .args(["-i", &login.identity_file.to_string_lossy()])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            login.known_hosts.display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-p", &login.port.to_string()])
        .arg(format!("{}@{}", login.user, login.host))
        .args(["sbatch", "--parsable"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("ssh")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("sbatch: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("slurm");
    let testbed = match Testbed::try_load() {
        Ok(t) => t,
        Err(why) => {
            report.skipped(&why);
            return Ok(());
        }
    };
    let docker = basho_tests::docker().await.context("a Docker engine")?;
    let image = basho_cli::dev::image::ensure_demo_image(&docker).await?;
    let site = Ident::parse(&basho_tests::unique("bench"))?;
    let cfg = testbed.backend(Runtime::Docker);
    let backend = SlurmBackend::new(site.clone(), cfg.clone())?;
    let dir = tempfile::tempdir()?;

    // One warm-up through each path: the pool's first connection, the engine's first start.
    let mut basho = Vec::new();
    let mut plain = Vec::new();
    for i in 0..=args.samples {
        let s = spec(dir.path(), &site, &image, &basho_tests::unique("b"));
        let t = Instant::now();
        let job = backend.launch(&s).await?.handle;
        wait_running(&job)?;
        let took = t.elapsed();
        cancel(&job)?;

        let s = spec(dir.path(), &site, &image, &basho_tests::unique("p"));
        let text = script::render(script::DEFAULT_TEMPLATE, &cfg, &s, chrono::Utc::now())?;
        let t = Instant::now();
        let job = plain_sbatch(&testbed, &text)?;
        wait_running(&job)?;
        let plain_took = t.elapsed();
        cancel(&job)?;
        if i > 0 {
            basho.push(took);
            plain.push(plain_took);
        }
    }
    println!(
        "submit-to-RUNNING, {} samples each, same script:",
        args.samples
    );
    basho.sort();
    plain.sort();
    let (b, p) = (pct_ms(&basho, 0.5), pct_ms(&plain, 0.5));
    let peer = "plain ssh + sbatch";
    report.figure(
        Figure::lower(
            "submit_running_p50",
            "through the Slurm backend, median",
            b,
            "ms",
        )
        .peer(peer, p),
    );
    report.figure(
        Figure::lower(
            "submit_running_max",
            "through the Slurm backend, max",
            pct_ms(&basho, 1.0),
            "ms",
        )
        .peer("plain max", pct_ms(&plain, 1.0)),
    );
    report.figure(Figure::lower("ratio", "ratio of medians", b / p, "x").at_most(1.2));

    let specs: Vec<LaunchSpec> = (0..args.burst)
        .map(|_| spec(dir.path(), &site, &image, &basho_tests::unique("burst")))
        .collect();
    let t = Instant::now();
    let launched = futures::future::join_all(specs.iter().map(|s| backend.launch(s))).await;
    let took = t.elapsed();
    let ok = launched.iter().filter(|r| r.is_ok()).count();
    println!(
        "submission: {ok}/{} launches accepted in {:.2} s",
        args.burst,
        took.as_secs_f64()
    );
    report.figure(Figure::higher(
        "submissions_per_s",
        "submission rate",
        ok as f64 / took.as_secs_f64(),
        "jobs/s",
    ));
    for s in &specs {
        slurm(&[
            "scancel",
            &format!("--name={}", script::job_name(&s.workspace)),
        ]);
    }
    if let Some(e) = launched.into_iter().find_map(Result::err) {
        bail!("a launch failed: {e}");
    }
    Ok(())
}
