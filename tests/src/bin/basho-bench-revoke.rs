//! basho-bench-revoke: revocation latency on the real Docker engine. Three sites (the demo
//! federation of `basho_tests::federation`), workspaces spread over them, then revoked one at a
//! time by visa `jti`; each sample is the time from sending `POST /v1/revocations` to the
//! workspace's container being gone from the engine (polled by label every 10 ms).
//!
//!     cargo run --release -p basho-tests --bin basho-bench-revoke -- --revocations 100

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_core::LABEL_WORKSPACE;
use basho_core::visa::mint::Visa;
use basho_tests::containers_labelled;
use basho_tests::federation::{Federation, SITES};
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Revocations to measure (one workspace each).
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Workspaces running per site at a time (each site offers 8 CPUs; each workspace takes 1).
    #[arg(long, default_value_t = 5)]
    per_site: usize,
}

const POLL: Duration = Duration::from_millis(10);
const PATIENCE: Duration = Duration::from_secs(60);

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Creates a workspace with one visa whose `jti` is fresh, for a dataset of the `n`th site;
/// answers its id and the `jti`.
async fn create(fed: &Federation, n: usize) -> Result<(String, String)> {
    let dataset = SITES[n % SITES.len()].1[0];
    let jti = basho_tests::unique("bench-jti");
    let visa = fed.issuer.sign(&Visa {
        jti: Some(jti.clone()),
        ..Visa::new("alice", dataset)
    });
    let body = json!({
        "project": "P-BENCH", "template": "shell", "visas": [visa],
        "resources": {"cpus": 1, "memory_mib": 64, "gpus": 0}, "duration_s": 3600,
    });
    let (status, ws) = fed.api.create(&body).await;
    if status != StatusCode::CREATED {
        bail!("create answered {status}: {ws}");
    }
    Ok((ws["id"].as_str().context("id")?.to_owned(), jti))
}

async fn state(fed: &Federation, id: &str) -> String {
    fed.api.workspace(id).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_running(fed: &Federation, id: &str) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = state(fed, id).await;
        if s == "running" {
            return Ok(());
        }
        if Instant::now() > deadline || matches!(s.as_str(), "failed" | "stopped" | "revoked") {
            bail!("workspace {id} is {s}, not running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Revokes `jti` and answers (API answer time, time until the container is gone).
async fn revoke(fed: &Federation, id: &str, jti: &str) -> Result<(Duration, Duration)> {
    let body: Value = json!({"visa_jti": jti, "reason": "dac-revoked"});
    let started = Instant::now();
    let (status, v) = fed
        .api
        .call(Method::POST, "/v1/revocations", Some(&body))
        .await;
    let api = started.elapsed();
    if status != StatusCode::ACCEPTED || v["affected"] != json!([id]) {
        bail!("revocation answered {status}: {v}");
    }
    loop {
        if containers_labelled(&fed.docker, LABEL_WORKSPACE, id)
            .await
            .is_empty()
        {
            return Ok((api, started.elapsed()));
        }
        if started.elapsed() > PATIENCE {
            bail!("the container of {id} is still there after {PATIENCE:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let Some(fed) = Federation::start().await else {
        bail!("this benchmark needs a Docker engine");
    };
    let mut api = Vec::with_capacity(args.revocations);
    let mut gone = Vec::with_capacity(args.revocations);
    let batch = (args.per_site * SITES.len()).max(1);
    let mut n = 0;
    while gone.len() < args.revocations {
        let want = batch.min(args.revocations - gone.len());
        let mut round = Vec::with_capacity(want);
        for _ in 0..want {
            round.push(create(&fed, n).await?);
            n += 1;
        }
        for (id, _) in &round {
            wait_running(&fed, id).await?;
        }
        for (id, jti) in &round {
            let (a, g) = revoke(&fed, id, jti).await?;
            api.push(a);
            gone.push(g);
        }
    }
    api.sort();
    gone.sort();
    println!(
        "revocation: {} revocations by visa jti, 3 Docker sites, up to {} workspaces running per site",
        gone.len(),
        args.per_site
    );
    println!(
        "  API answer       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(&api, 0.50),
        pct(&api, 0.99),
        pct(&api, 1.0)
    );
    println!(
        "  container gone   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(&gone, 0.50),
        pct(&gone, 0.99),
        pct(&gone, 1.0)
    );
    println!(
        "  command          cargo run --release -p basho-tests --bin basho-bench-revoke -- --revocations {} --per-site {}",
        args.revocations, args.per_site
    );
    fed.shutdown().await;
    Ok(())
}
