//! The `queue` benchmark: placements beside a long queue. Workspaces of their own dataset wait
//! at a one-core site (`queue-site`) that one workspace fills; for each queue length asked, the
//! queue is filled to it and the placement run measured beside it, the leader's queue passes
//! running as they do in service. Then how long one pass over the longest queue takes, and how
//! long from the filler's end (its agent's `stopped`) to the head of the queue `placed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use basho_tests::api::Api;
use basho_tests::bench::{Figure, Report, pct_ms};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Args, Bench, placement};

/// The site the queued workspaces wait for.
pub const SITE: &str = "queue-site";
/// The dataset only it holds.
const DATASET: &str = "JGAD000999";
/// Turns of freeing the site and timing the head of the queue to `placed`.
const FREED_TURNS: usize = 5;

fn body(bench: &Bench) -> Value {
    json!({"project": "P-QUEUE", "template": "shell",
        "visas": [bench.issuer.mint("bob", DATASET)],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 3600})
}

pub async fn run(bench: &Bench, sites: &[String], args: &Args, report: &Report) -> Result<()> {
    if !args.no_agents {
        bail!("--queued measures the orchestrator alone: add --no-agents");
    }
    let agent = Api::new(format!("http://{}", bench.listen), format!("tok-{SITE}"));
    let reg = json!({"site": SITE, "backend": "fake", "version": "bench",
        "datasets": [{"id": DATASET, "grant_url": basho_core::visa::default_grant_url(DATASET)}],
        "capacity": {"cpus": 1, "memory_mib": 1024, "gpus": 0}, "images": ["basho/demo"]});
    let (status, v) = agent
        .call(Method::POST, "/v1/agent/register", Some(&reg))
        .await;
    if !status.is_success() {
        bail!("register {SITE}: {v}");
    }
    let mut filler = created(&bench.api, &body(bench), "placed").await?;
    let mut queued = 0;
    let mut lengths = args.queued.clone();
    lengths.sort_unstable();
    for &target in &lengths {
        let add = target.saturating_sub(queued);
        let bodies: Vec<Value> = (0..add).map(|_| body(bench)).collect();
        let started = Instant::now();
        queued += create_all(&bench.api, bodies, args.concurrency as usize).await?;
        if add > 0 {
            let rate = add as f64 / started.elapsed().as_secs_f64();
            println!("queue: {target} workspaces waiting ({add} queued at {rate:.0}/s)");
        }
        placement(
            bench,
            sites,
            args,
            report,
            &format!(" with {target} queued"),
        )
        .await?;
    }
    let longest = queued;
    let mut passes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        basho_orchestrator::queue::pass(&bench.orchestrator).await?;
        passes.push(t.elapsed());
    }
    passes.sort();
    report.figure(Figure::lower(
        "pass_ms",
        &format!("one queue pass over {longest} queued, p50"),
        pct_ms(&passes, 0.5),
        "ms",
    ));
    if queued == 0 {
        report.note("no workspace queued: nothing to free the site for");
        return Ok(());
    }
    // Each turn ends the workspace holding the site and times the next one placed there (the
    // head of the queue), through the leader's own loop.
    let mut freed = Vec::new();
    for _ in 0..FREED_TURNS.min(queued) {
        let t = Instant::now();
        let obs = json!({"site": SITE, "observations": [{"workspace": filler, "state": "stopped",
            "at": chrono::Utc::now()}]});
        let (status, v) = agent
            .call(Method::POST, "/v1/agent/observations", Some(&obs))
            .await;
        if !status.is_success() {
            bail!("observation: {v}");
        }
        filler = next_placed(&bench.api, &filler).await?;
        freed.push(t.elapsed());
    }
    freed.sort();
    report.figure(
        Figure::lower(
            "freed_to_placed_p50",
            &format!("site freed -> head of {longest} queued placed, p50"),
            pct_ms(&freed, 0.5),
            "ms",
        )
        .at_most(200.0),
    );
    report.figure(Figure::lower(
        "freed_to_placed_max",
        &format!("site freed -> head of {longest} queued placed, max"),
        pct_ms(&freed, 1.0),
        "ms",
    ));
    Ok(())
}

/// Creates `body` and checks it is in `state`: its id.
async fn created(api: &Api, body: &Value, state: &str) -> Result<String> {
    let (status, w) = api.create(body).await;
    if status != reqwest::StatusCode::CREATED || w["state"] != state {
        bail!("expected a {state} workspace, got {status}: {w}");
    }
    Ok(w["id"].as_str().unwrap_or_default().to_owned())
}

/// Creates every body, `concurrency` at a time, each answered `queued`: how many.
async fn create_all(api: &Api, bodies: Vec<Value>, concurrency: usize) -> Result<usize> {
    let bodies = Arc::new(tokio::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (api, bodies) = (api.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = 0;
            loop {
                let Some(body) = bodies.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(made);
                };
                created(&api, &body, "queued").await?;
                made += 1;
            }
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await??;
    }
    Ok(made)
}

/// The workspace placed at the queue's site other than `previous`, once there is one.
async fn next_placed(api: &Api, previous: &str) -> Result<String> {
    let path = format!("/v1/workspaces?site={SITE}&state=placed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = api.call(Method::GET, &path, None).await;
        let next = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["id"] != previous);
        if let Some(w) = next {
            return Ok(w["id"].as_str().unwrap_or_default().to_owned());
        }
        if Instant::now() > deadline {
            bail!("nothing placed at {SITE} within 60 s of freeing it: {list}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
