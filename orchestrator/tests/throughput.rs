//! Create throughput through HTTP: 100 sites, a WAL SQLite file, concurrent clients. Prints its
//! figures; asserts only that every create succeeded and that placement spread the load.
//!
//! cargo test --release -p basho-orchestrator --test throughput -- --ignored --nocapture

mod common;

use std::time::Instant;

use basho_core::visa::mint::Issuer;
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::AgentAuth;
use common::*;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SITES: usize = 100;
const CREATES: usize = 3000;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn creates_per_second_with_100_sites() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let mut config = config(dir.path(), &issuer);
    config.database = None;
    config.agents = (0..SITES)
        .map(|i| AgentAuth {
            site: format!("site-{i:03}").parse().unwrap(),
            token: agent_token(&format!("site-{i:03}")),
        })
        .collect();
    let o = Orchestrator::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(o.serve(listener, stop.clone()));
    let client = reqwest::Client::new();

    // Every site holds the shared dataset and one of its own.
    for i in 0..SITES {
        let site = format!("site-{i:03}");
        let own = format!("D-{i:03}");
        let res = client
            .post(format!("{base}/v1/agent/register"))
            .bearer_auth(agent_token(&site))
            .json(&registration(&site, &["JGAD000101", &own], 4096, 16 << 20))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let bodies: Vec<String> = (0..CREATES)
        .map(|i| {
            let dataset = if i % 2 == 0 {
                "JGAD000101".to_owned()
            } else {
                format!("D-{:03}", i % SITES)
            };
            json!({"project": "P-0001", "template": "shell",
                "visas": [issuer.mint("r-1", &dataset)], "datasets": [dataset]})
            .to_string()
        })
        .collect();

    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(bodies)
        .map(|b| {
            let client = client.clone();
            let url = format!("{base}/v1/workspaces");
            async move {
                client
                    .post(url)
                    .bearer_auth(PLATFORM)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 201), "some creates failed");
    println!(
        "{CREATES} creates over HTTP with {SITES} sites, {CONCURRENCY} concurrent clients: \
         {:.2} s, {:.0} creates/s\n  reproduce: cargo test --release -p basho-orchestrator \
         --test throughput -- --ignored --nocapture",
        elapsed.as_secs_f64(),
        CREATES as f64 / elapsed.as_secs_f64()
    );

    let sites: Vec<Value> = client
        .get(format!("{base}/v1/sites"))
        .bearer_auth(PLATFORM)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let busiest = sites
        .iter()
        .map(|s| s["workspaces"].as_u64().unwrap())
        .max()
        .unwrap();
    let idlest = sites
        .iter()
        .map(|s| s["workspaces"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(
        busiest - idlest <= 2,
        "placement spreads the load: {idlest}..{busiest}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}
