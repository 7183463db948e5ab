//! basho-bench-tes: GA4GH TES through basho, beside what it is compared with.
//!
//! - A one-executor task (`echo`) from `POST /ga4gh/tes/v1/tasks` to `COMPLETE` on real Docker
//!   (the in-process federation), in turns with a plain `docker run --rm` of the same command
//!   with the same isolation flags.
//! - Tasks created by concurrent clients over HTTP against one orchestrator (SQLite, one site
//!   registered through the agent API): tasks accepted per second and the create latency.
//! - `GET /tasks?view=MINIMAL` paged through a store holding `--stored` tasks, 256 a page: the
//!   latency of each page.
//!
//! ```text
//! cargo run --release -p basho-tests --bin basho-bench-tes -- [--runs 10] [--creates 1000]
//!     [--clients 16] [--stored 100000]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_core::protocol::{Capacity, DatasetEntry, Launch, Registration};
use basho_core::tes::TesTask;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_core::{Ident, Resources, State, Workspace};
use basho_orchestrator::config::{AgentAuth, Config};
use basho_orchestrator::store::{NewTask, SqliteStore, Store, TaskStore, WorkspaceRecord};
use basho_tests::bench::{Figure, Report, pct_ms, plain_isolation};
use basho_tests::federation::{Federation, templates_dir, write_dataset};
use clap::Parser;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Tasks run to COMPLETE on Docker (and as many plain runs).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Tasks created over HTTP by the concurrent clients.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
    /// Concurrent clients creating.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Tasks in the store the list is paged through.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    stored: u64,
}

const PLATFORM: &str = "bench-platform-token";
const AGENT: &str = "bench-agent-token";
const ISSUER: &str = "https://dac.bench.example";
const TASKS: &str = "/ga4gh/tes/v1/tasks";

fn task_body(visa: &str, command: &[&str]) -> Value {
    json!({
        "inputs": [{"url": "basho://datasets/JGAD000101/records.csv",
                    "path": "/data/JGAD000101/records.csv"}],
        "resources": {"ram_gb": 0.125},
        "executors": [{"image": "basho/demo", "command": command}],
        "tags": {"basho_project": "P-BENCH", "basho_visas": visa},
    })
}

/// Submit-to-COMPLETE of one `echo` task through the federation's TES, and a plain
/// `docker run --rm` of the same command, in turns: (basho, plain) in ms, each sorted.
async fn to_complete(runs: u64) -> Result<Option<(Vec<Duration>, Vec<Duration>)>> {
    let Some(fed) = Federation::start().await else {
        return Ok(None);
    };
    let data = write_dataset(fed.dir.path(), "JGAD000101");
    let visa = fed.issuer.mint("alice", "JGAD000101");
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let (s, v) = fed
            .api
            .call(
                reqwest::Method::POST,
                TASKS,
                Some(&task_body(&visa, &["echo", "hi"])),
            )
            .await;
        if !s.is_success() {
            bail!("create: {v}");
        }
        let id = v["id"].as_str().context("id")?.to_owned();
        loop {
            let (_, t) = fed
                .api
                .call(reqwest::Method::GET, &format!("{TASKS}/{id}"), None)
                .await;
            match t["state"].as_str() {
                Some("COMPLETE") => break,
                Some("QUEUED" | "INITIALIZING" | "RUNNING") => {}
                other => bail!("task {id} ended {other:?}: {t}"),
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("task {id} not complete after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ours.push(started.elapsed());

        let started = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["run", "--rm"])
            .args(plain_isolation(&data))
            .args([fed.image.as_str(), "echo", "hi"])
            .output()?;
        if !out.status.success() {
            bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
        }
        plain.push(started.elapsed());
    }
    fed.shutdown().await;
    ours.sort();
    plain.sort();
    Ok(Some((ours, plain)))
}

/// A batch workspace record at site `bench` and its task, as the TES create stores them.
fn record(i: u64, visa: &str, now: chrono::DateTime<chrono::Utc>) -> (WorkspaceRecord, NewTask) {
    let id = format!("ws-bench-{i:09}");
    let body: TesTask = serde_json::from_value(json!({
        "name": format!("stored-{i}"),
        "executors": [{"image": "basho/demo", "command": ["true"]}],
        "tags": {"basho_project": "P-BENCH"},
    }))
    .expect("a task");
    let rec = WorkspaceRecord {
        workspace: Workspace {
            id,
            project: Ident::parse("P-BENCH").expect("an id"),
            owner: "alice".into(),
            template: Ident::parse("batch").expect("an id"),
            site: Ident::parse("bench").expect("an id"),
            state: State::Stopped,
            message: Some("exited with code 0".into()),
            datasets: vec![Ident::parse("JGAD000101").expect("an id")],
            resources: Resources {
                cpus: 1,
                memory_mib: 128,
                gpus: 0,
            },
            created_at: now,
            updated_at: now,
            releases: Default::default(),
            withdrawn_copies: Vec::new(),
            queue: None,
            expires_at: now + chrono::Duration::hours(1),
        },
        visas: vec![visa.to_owned()],
        visa_refs: Vec::new(),
        image: "basho/demo".into(),
        command: vec!["true".into()],
        revision: 0,
        launch: Some(Launch::default()),
    };
    let task = NewTask {
        body,
        warnings: Vec::new(),
    };
    (rec, task)
}

fn registration() -> Registration {
    Registration {
        site: Ident::parse("bench").expect("an id"),
        backend: "fake".into(),
        version: "bench".into(),
        datasets: vec![DatasetEntry {
            id: Ident::parse("JGAD000101").expect("an id"),
            grant_url: basho_core::visa::default_grant_url("JGAD000101"),
        }],
        capacity: Capacity {
            cpus: 1_000_000,
            memory_mib: 1 << 40,
            gpus: 0,
        },
        images: vec!["basho/demo".into()],
        start_timeout_s: 0,
        session_key: None,
        ceiling: None,
        capacity_note: None,
        features: Vec::new(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("tes");

    match to_complete(args.runs).await? {
        None => report.skipped("no Docker engine answers on this machine: no submit-to-COMPLETE"),
        Some((ours, plain)) => {
            println!(
                "one-executor task (echo) submitted to COMPLETE, {} runs:",
                ours.len()
            );
            let peer = "plain `docker run --rm`, same flags";
            for (name, label, p) in [
                ("complete_p50", "submit -> COMPLETE p50", 0.5),
                ("complete_max", "submit -> COMPLETE max", 1.0),
            ] {
                report.figure(
                    Figure::lower(name, label, pct_ms(&ours, p), "ms")
                        .peer(peer, pct_ms(&plain, p)),
                );
            }
            report.figure(
                Figure::lower(
                    "complete_ratio",
                    "ratio to plain (p50)",
                    pct_ms(&ours, 0.5) / pct_ms(&plain, 0.5),
                    "x",
                )
                .at_most(1.3),
            );
        }
    }

    // One orchestrator on SQLite, its store filled with `stored` ended tasks first.
    let dir = tempfile::tempdir()?;
    let issuer = Issuer::generate(ISSUER).with_rsa();
    let jwks = dir.path().join("issuer.jwks.json");
    std::fs::write(&jwks, issuer.jwks_json())?;
    let visa = issuer.mint("alice", "JGAD000101");
    let mut config = Config::for_tests(templates_dir(), PLATFORM);
    config.data_dir = dir.path().to_owned();
    config.database = None;
    config.trusted_issuers.push(IssuerRef {
        issuer: ISSUER.into(),
        jwks_file: jwks,
    });
    config.agents.push(AgentAuth {
        site: Ident::parse("bench")?,
        token: AGENT.into(),
    });
    let filled = Instant::now();
    {
        let store = SqliteStore::open(None, dir.path()).await?;
        let now = chrono::Utc::now();
        store.upsert_site(&registration(), now).await?;
        for i in 0..args.stored {
            let (rec, task) = record(i, &visa, now);
            store.create_task(&rec, &task, None).await?;
        }
    }
    println!(
        "{} tasks stored in {:.1} s",
        args.stored,
        filled.elapsed().as_secs_f64()
    );
    let orchestrator = basho_orchestrator::Orchestrator::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn(orchestrator.serve(listener, stop.clone()));
    let http = reqwest::Client::new();
    let reg = http
        .post(format!("{base}/v1/agent/register"))
        .bearer_auth(AGENT)
        .json(&registration())
        .send()
        .await?;
    if !reg.status().is_success() {
        bail!("register: {}", reg.text().await?);
    }

    // Creates by concurrent clients.
    let body = Arc::new(task_body(&visa, &["true"]));
    let per_client = args.creates.div_ceil(args.clients);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (http, base, body) = (http.clone(), base.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..per_client {
                let t = Instant::now();
                let res = http
                    .post(format!("{base}{TASKS}"))
                    .bearer_auth(PLATFORM)
                    .json(&*body)
                    .send()
                    .await?;
                if !res.status().is_success() {
                    bail!("create: {}", res.text().await?);
                }
                took.push(t.elapsed());
            }
            anyhow::Ok(took)
        }));
    }
    let mut creates = Vec::new();
    for c in clients {
        creates.extend(c.await??);
    }
    let rate = creates.len() as f64 / started.elapsed().as_secs_f64();
    creates.sort();
    let created = report.for_bench("tes");
    println!(
        "{} tasks created by {} clients over HTTP:",
        creates.len(),
        args.clients
    );
    created.figure(Figure::higher("creates_per_s", "tasks accepted/s", rate, "/s").at_least(500.0));
    created.figure(Figure::lower(
        "create_p50",
        "create p50",
        pct_ms(&creates, 0.5),
        "ms",
    ));
    created.figure(Figure::lower(
        "create_p99",
        "create p99",
        pct_ms(&creates, 0.99),
        "ms",
    ));

    // Every page of the list.
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    let mut listed = 0usize;
    loop {
        let mut url = format!("{base}{TASKS}?view=MINIMAL&page_size=256");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let t = Instant::now();
        let page: Value = http
            .get(&url)
            .bearer_auth(PLATFORM)
            .send()
            .await?
            .json()
            .await?;
        pages.push(t.elapsed());
        listed += page["tasks"].as_array().map_or(0, Vec::len);
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    pages.sort();
    println!(
        "GET /tasks?view=MINIMAL, pages of 256 through {listed} tasks ({} pages):",
        pages.len()
    );
    created.figure(Figure::lower(
        "list_page_p50",
        "list page p50",
        pct_ms(&pages, 0.5),
        "ms",
    ));
    created.figure(
        Figure::lower("list_page_p99", "list page p99", pct_ms(&pages, 0.99), "ms").at_most(20.0),
    );
    stop.cancel();
    let _ = server.await;
    Ok(())
}
