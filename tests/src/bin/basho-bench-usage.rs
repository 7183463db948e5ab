//! basho-bench-usage: what metering costs, on the real Docker engine.
//!
//! - Agent overhead: `--workspaces` containers run at the `tohoku` site; the real `basho-agent`
//!   binary is started for that site with metering every `--interval-s` seconds, then with
//!   metering effectively off (once an hour); each time the CPU time of the agent process and of
//!   `dockerd` over `--window-s` seconds is read from `/proc`. The difference is metering's cost.
//! - Ingestion: usage records posted to `POST /v1/agent/usage` in batches, as the site's agent
//!   would; records per second stored by the orchestrator (SQLite, one transaction a batch).
//!
//!     cargo run --release -p basho-tests --bin basho-bench-usage -- --workspaces 100

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_tests::bench::{Figure, Report};
use basho_tests::federation::Federation;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Workspaces (containers) to meter.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    workspaces: u64,
    /// Metering interval under test, seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    interval_s: u64,
    /// Measurement window per run, seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    window_s: u64,
    /// Records posted for the ingestion rate.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    /// Records per request (the agent sends at most 200).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // USER_HZ: 100 ticks a second on every Linux this runs on.
    Ok(ticks / 100.0)
}

fn dockerd_pid() -> Option<u32> {
    let out = Command::new("pidof").arg("dockerd").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn start_agent(config: &Path, log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(basho_tests::binary("basho-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Runs the agent binary with metering every `interval_s` and measures CPU over the window.
async fn measure(fed: &Federation, interval_s: u64, window: Duration) -> Result<(f64, f64)> {
    let mut cfg = fed.site_config("tohoku");
    cfg.metering.interval_s = interval_s;
    let dir = fed.dir.path();
    let path = dir.join(format!("tohoku-{interval_s}.toml"));
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    let mut child = start_agent(&path, &dir.join("agent.log"))?;
    // Registration, re-adoption of every container and the first samples.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let dockerd = dockerd_pid();
    let (a0, d0) = (
        cpu_seconds(child.id())?,
        dockerd.map(cpu_seconds).transpose()?,
    );
    tokio::time::sleep(window).await;
    let (a1, d1) = (
        cpu_seconds(child.id())?,
        dockerd.map(cpu_seconds).transpose()?,
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok((a1 - a0, d1.zip(d0).map_or(0.0, |(b, a)| b - a)))
}

async fn ingestion(
    fed: &Federation,
    ids: &[String],
    records: usize,
    batch: usize,
    report: &Report,
) -> Result<()> {
    let site = fed.site("tohoku");
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/agent/usage", fed.config().listen);
    let token = format!("agent-{site}");
    let post = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        let token = token.clone();
        async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("usage answered {}", r.status());
            }
            Ok::<Value, anyhow::Error>(r.json().await?)
        }
    };
    let ack = post(json!({"site": site, "records": []})).await?;
    let mut seq = ack["acked_through"].as_u64().unwrap_or(0);
    let t0 = chrono::Utc::now() - chrono::Duration::days(1);
    let started = Instant::now();
    let mut sent = 0;
    while sent < records {
        let n = batch.min(records - sent);
        let recs: Vec<Value> = (0..n)
            .map(|i| {
                seq += 1;
                let from = t0 + chrono::Duration::seconds(seq as i64);
                json!({"seq": seq, "workspace": ids[i % ids.len()], "project": "P-BENCH",
                    "from": from, "to": from + chrono::Duration::seconds(1),
                    "allocated_core_seconds": 1.0, "used_cpu_seconds": 0.5,
                    "allocated_memory_gib_seconds": 0.0625, "used_memory_gib_seconds": 0.01,
                    "peak_memory_bytes": 1_000_000, "gpu_seconds": 0.0})
            })
            .collect();
        let ack = post(json!({"site": site, "records": recs})).await?;
        if ack["acked_through"].as_u64() != Some(seq) {
            bail!("acknowledged {} of {seq}", ack["acked_through"]);
        }
        sent += n;
    }
    let took = started.elapsed().as_secs_f64();
    println!("ingestion: {records} records in batches of {batch} in {took:.2} s");
    report.figure(Figure::higher(
        "ingestion_per_s",
        "usage records ingested",
        records as f64 / took,
        "records/s",
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("usage");
    let Some(mut fed) = Federation::start_with(|name, cfg| {
        if name == "tohoku" {
            cfg.capacity.cpus = 4096;
            cfg.capacity.memory_mib = 1 << 22;
            cfg.metering.interval_s = 3600;
        }
    })
    .await
    else {
        report.skipped("no Docker engine answers on this machine");
        return Ok(());
    };
    let mut ids = Vec::new();
    for _ in 0..args.workspaces {
        let mut body = fed.create_body("P-BENCH", "alice", &["JGAD000101"]);
        body["resources"] = json!({"cpus": 1, "memory_mib": 32, "gpus": 0});
        let (status, ws) = fed.api.create(&body).await;
        if !status.is_success() {
            bail!("create answered {status}: {ws}");
        }
        ids.push(ws["id"].as_str().context("id")?.to_owned());
    }
    for id in &ids {
        fed.api
            .wait_state(id, "running", Duration::from_secs(300))
            .await;
    }
    println!("{} workspaces running on Docker", ids.len());
    fed.stop_agent("tohoku").await;

    let window = Duration::from_secs(args.window_s);
    let (on_agent, on_docker) = measure(&fed, args.interval_s, window).await?;
    let (off_agent, off_docker) = measure(&fed, 3600, window).await?;
    let pct = |cpu: f64| cpu / window.as_secs_f64() * 100.0;
    println!(
        "agent CPU over {} s, {} workspaces: metering every {} s {on_agent:.2} s, metering off {off_agent:.2} s; \
         dockerd {on_docker:.2} s against {off_docker:.2} s",
        args.window_s, args.workspaces, args.interval_s,
    );
    report.figure(
        Figure::lower(
            "agent_cpu_pct",
            "agent CPU, metering on",
            pct(on_agent),
            "% of a core",
        )
        .peer("metering off", pct(off_agent)),
    );
    report.figure(
        Figure::lower(
            "metering_cost_pct",
            "metering's cost to the agent",
            pct(on_agent - off_agent),
            "% of a core",
        )
        .at_most(1.0),
    );
    report.figure(Figure::lower(
        "engine_cost_pct",
        "metering's cost to dockerd",
        pct(on_docker - off_docker),
        "% of a core",
    ));

    ingestion(
        &fed,
        &ids,
        args.records as usize,
        args.batch as usize,
        &report,
    )
    .await?;
    fed.start_agent("tohoku").await;
    fed.shutdown().await;
    Ok(())
}
