//! basho-bench-revoke: revocation latency on the real Docker engine. Three sites (the demo
//! federation of `basho_tests::federation`), workspaces spread over them, then revoked one at a
//! time by visa `jti`; each sample is the time from sending `POST /v1/revocations` to the
//! workspace's container being gone from the engine (polled by label every 10 ms).
//!
//! Then the same again with the revocations of each round sent 10 ms apart (`--burst`), each
//! timed from its own request.
//!
//!     cargo run --release -p basho-tests --bin basho-bench-revoke -- --revocations 100 --per-site 5 --burst 100

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_core::visa::mint::Visa;
use basho_core::{LABEL_PROJECT, LABEL_WORKSPACE};
use basho_tests::bench::{Figure, Report, pct_ms};
use basho_tests::containers_labelled;
use basho_tests::federation::{Federation, SITES};
use bollard::query_parameters::ListContainersOptionsBuilder;
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Revocations to measure one at a time (one workspace each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    revocations: u64,
    /// Workspaces running per site at a time (each site offers 8 CPUs; each workspace takes 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=8))]
    per_site: u64,
    /// Workspaces then revoked together, their revocations sent 10 ms apart (0: none). The
    /// sites offer enough CPUs for all of them to run at once.
    #[arg(long, default_value_t = 100)]
    burst: usize,
}

/// The spacing of the burst's revocations.
const GAP: Duration = Duration::from_millis(10);

const POLL: Duration = Duration::from_millis(10);
const PATIENCE: Duration = Duration::from_secs(60);

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

/// Workspaces of the benchmark whose container the engine still lists.
async fn listed(fed: &Federation) -> Result<BTreeSet<String>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_PROJECT}=P-BENCH")],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    Ok(fed
        .docker
        .list_containers(Some(opts))
        .await?
        .into_iter()
        .filter_map(|c| c.labels?.get(LABEL_WORKSPACE).cloned())
        .collect())
}

/// Creates `want` workspaces spread over the sites and waits until they all run.
async fn round(fed: &Federation, want: usize, n: &mut usize) -> Result<Vec<(String, String)>> {
    let mut round = Vec::with_capacity(want);
    for _ in 0..want {
        round.push(create(fed, *n).await?);
        *n += 1;
    }
    for (id, _) in &round {
        wait_running(fed, id).await?;
    }
    Ok(round)
}

/// Sends one revocation per workspace of `round`, `GAP` apart, and answers for each the time
/// from its own request until its container is gone (one engine listing every `POLL` watches
/// them all, so the watching does not load the engine more than one sample at a time would).
async fn burst(fed: &Federation, round: &[(String, String)]) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let mut sent = Vec::new();
    for (k, (id, jti)) in round.iter().enumerate() {
        let api = fed.api.clone();
        let (id, jti) = (id.clone(), jti.clone());
        sent.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + GAP * k as u32).into()).await;
            let at = Instant::now();
            let body = json!({"visa_jti": jti, "reason": "dac-revoked"});
            let (status, v) = api.call(Method::POST, "/v1/revocations", Some(&body)).await;
            (id, at, status, v)
        }));
    }
    let mut gone_at: BTreeMap<String, Instant> = BTreeMap::new();
    while gone_at.len() < round.len() {
        let now = Instant::now();
        let still = listed(fed).await?;
        for (id, _) in round {
            if !still.contains(id) {
                gone_at.entry(id.clone()).or_insert(now);
            }
        }
        if start.elapsed() > PATIENCE {
            bail!("containers still there {PATIENCE:?} after the burst began");
        }
        tokio::time::sleep(POLL).await;
    }
    let mut out = Vec::new();
    for task in sent {
        let (id, at, status, v) = task.await?;
        if status != StatusCode::ACCEPTED || v["affected"] != json!([id]) {
            bail!("revocation answered {status}: {v}");
        }
        out.push(gone_at[&id].saturating_duration_since(at));
    }
    Ok(out)
}

/// The engine alone doing the burst's work: `n` containers of the demo image, each stopped and
/// removed by its own request, `GAP` apart, each timed until the engine has removed it.
async fn plain_burst(fed: &Federation, n: usize) -> Result<Vec<Duration>> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    };
    let tag = basho_tests::unique("bench-plain");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = ContainerCreateBody {
            image: Some(fed.image.clone()),
            cmd: Some(
                [
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
                ]
                .map(String::from)
                .to_vec(),
            ),
            labels: Some(HashMap::from([("io.basho.bench".to_string(), tag.clone())])),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                readonly_rootfs: Some(true),
                ..Default::default()
            }),
            user: Some("65534:65534".into()),
            ..Default::default()
        };
        let name = format!("{tag}-{i}");
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = fed.docker.create_container(Some(opts), body).await?.id;
        fed.docker.start_container(&id, None).await?;
        ids.push(id);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (k, id) in ids.into_iter().enumerate() {
        let docker = fed.docker.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + GAP * k as u32).into()).await;
            let at = Instant::now();
            let stop = StopContainerOptionsBuilder::default().t(5).build();
            docker.stop_container(&id, Some(stop)).await?;
            let rm = RemoveContainerOptionsBuilder::default().force(true).build();
            docker.remove_container(&id, Some(rm)).await?;
            Ok::<_, bollard::errors::Error>(at.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("revoke");
    // Room for the whole burst at once, spread over the three sites.
    let cpus = (args.burst.div_ceil(SITES.len()) as u32 + 1).max(8);
    let Some(fed) = Federation::start_with(|_, site| site.capacity.cpus = cpus).await else {
        report.skipped("no Docker engine answers on this machine");
        return Ok(());
    };
    let revocations = args.revocations as usize;
    let mut api = Vec::with_capacity(revocations);
    let mut gone = Vec::with_capacity(revocations);
    let batch = (args.per_site as usize * SITES.len()).max(1);
    let mut n = 0;
    while gone.len() < revocations {
        let want = batch.min(revocations - gone.len());
        for (id, jti) in &round(&fed, want, &mut n).await? {
            let (a, g) = revoke(&fed, id, jti).await?;
            api.push(a);
            gone.push(g);
        }
    }
    let (mut bursty, mut plain) = (Vec::new(), Vec::new());
    if args.burst > 0 {
        let round = round(&fed, args.burst, &mut n).await?;
        bursty = burst(&fed, &round).await?;
        plain = plain_burst(&fed, args.burst).await?;
    }
    api.sort();
    gone.sort();
    bursty.sort();
    plain.sort();
    println!(
        "revocation: {} revocations by visa jti, one at a time, 3 Docker sites, up to {} workspaces running per site",
        gone.len(),
        args.per_site
    );
    let quantiles = [("p50", 0.50), ("p99", 0.99), ("max", 1.0)];
    for (q, p) in &quantiles[..2] {
        let f = Figure::lower(
            &format!("api_{q}"),
            &format!("API answer {q}"),
            pct_ms(&api, *p),
            "ms",
        );
        report.figure(f);
    }
    for (q, p) in quantiles {
        let label = format!("container gone {q}");
        let f = Figure::lower(&format!("gone_{q}"), &label, pct_ms(&gone, p), "ms");
        report.figure(if q == "p99" { f.at_most(100.0) } else { f });
    }
    if !bursty.is_empty() {
        println!(
            "{} workspaces running over the 3 sites, their revocations sent {} ms apart:",
            bursty.len(),
            GAP.as_millis()
        );
        let peer = "the engine alone: stop + remove, same spacing";
        for (q, p) in quantiles {
            let label = format!("burst: container gone {q}");
            let f = Figure::lower(&format!("burst_gone_{q}"), &label, pct_ms(&bursty, p), "ms")
                .peer(peer, pct_ms(&plain, p));
            report.figure(if q == "p99" { f.at_most(100.0) } else { f });
        }
    }
    fed.shutdown().await;
    Ok(())
}
