//! basho-bench-federated: federated jobs, beside the work they are made of.
//!
//! - The demo job (count by ICD-10 code and age band at tohoku, ncbn and bbj, sum at bbj) on real
//!   Docker through the in-process federation, each site holding `basho dev`'s synthetic
//!   datasets, every site releasing clean partials by rule: `POST /v1/federated-jobs` to
//!   `completed`, in turns with each site's step run alone (the same command as a one-executor
//!   TES task at that site, submit to `COMPLETE`). The overhead is the job's time less the
//!   slowest site's, in the same turn.
//! - `--sites` simulated sites (the fake backend's batch commands, which write one count cell
//!   and exit), each holding one dataset and releasing partials by rule: one job over every site
//!   from its create to `completed`.
//!
//! ```text
//! cargo run --release -p basho-tests --bin basho-bench-federated -- [--runs 5] [--sites 20]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use basho_agent::config::{BackendConfig, CatalogEntry, Isolation, OrchestratorLink, SiteConfig};
use basho_core::Ident;
use basho_core::protocol::Capacity;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::config::{AgentAuth, Config};
use basho_tests::api::Api;
use basho_tests::bench::{Figure, Report, pct_ms};
use basho_tests::federation::{Federation, templates_dir};
use clap::Parser;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Turns of the demo job and of each site's step alone, on Docker; and of the simulated run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Simulated sites the second job runs at.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=64))]
    sites: u64,
}

const JOBS: &str = "/v1/federated-jobs";
const DEMO_SITES: [&str; 3] = ["tohoku", "ncbn", "bbj"];

/// Polls `path` until `field` is one of `done`, for at most a minute: the answer.
async fn until(api: &Api, path: &str, field: &str, done: &[&str]) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api.call(Method::GET, path, None).await;
        if done.contains(&v[field].as_str().unwrap_or("")) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{path} not {done:?} within 60 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `body` and waits for it to complete: the time it took.
async fn run_job(api: &Api, body: &Value) -> Result<Duration> {
    let started = Instant::now();
    let (s, j) = api.call(Method::POST, JOBS, Some(body)).await;
    if s.as_u16() != 201 {
        bail!("job refused: {j}");
    }
    let id = j["id"].as_str().unwrap_or_default();
    let j = until(
        api,
        &format!("{JOBS}/{id}"),
        "state",
        &["completed", "failed"],
    )
    .await?;
    if j["state"] != "completed" {
        bail!("job failed: {j}");
    }
    Ok(started.elapsed())
}

/// The demo job and each site's step alone, in turns: (job, slowest site alone, overhead).
async fn demo(runs: u64) -> Result<Option<(Vec<Duration>, Vec<Duration>, Vec<Duration>)>> {
    let Some(fed) = Federation::start_with(|_, cfg| cfg.airlock.auto_release_partials = true).await
    else {
        return Ok(None);
    };
    // `basho dev`'s synthetic datasets, at their sizes.
    let mut datasets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for site in basho_cli::dev::data::FEDERATION {
        for d in site.datasets {
            let path = fed
                .dir
                .path()
                .join("datasets")
                .join(d.id)
                .join("records.csv");
            std::fs::write(path, basho_cli::dev::data::generate(d.id, d.records))?;
            datasets.entry(site.name).or_default().push(d.id);
        }
    }
    let visas: BTreeMap<&str, String> = datasets
        .values()
        .flatten()
        .map(|d| (*d, fed.issuer.mint("alice", d)))
        .collect();
    let job = json!({
        "project": "P-BENCH", "visas": visas.values().collect::<Vec<_>>(),
        "site_step": {"image": "basho/demo", "command": ["count-cells"]},
        "aggregation": {"image": "basho/demo", "command": ["sum-cells"], "site": fed.site("bbj")},
    });
    let (mut jobs, mut slowest, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut alone = Duration::ZERO;
        for site in DEMO_SITES {
            let ds = &datasets[site];
            let task = json!({
                "inputs": ds.iter().map(|d| json!({"url": format!("basho://datasets/{d}/records.csv"),
                    "path": format!("/data/{d}/records.csv")})).collect::<Vec<_>>(),
                "executors": [{"image": "basho/demo", "command": ["count-cells"]}],
                "tags": {"basho_project": "P-BENCH",
                         "basho_visas": ds.iter().map(|d| visas[d].as_str()).collect::<Vec<_>>().join(" ")},
            });
            let started = Instant::now();
            let (s, v) = fed
                .api
                .call(Method::POST, "/ga4gh/tes/v1/tasks", Some(&task))
                .await;
            if !s.is_success() {
                bail!("task at {site} refused: {v}");
            }
            let id = v["id"].as_str().unwrap_or_default();
            let t = until(
                &fed.api,
                &format!("/ga4gh/tes/v1/tasks/{id}"),
                "state",
                &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"],
            )
            .await?;
            if t["state"] != "COMPLETE" {
                bail!("task at {site}: {t}");
            }
            alone = alone.max(started.elapsed());
        }
        let took = run_job(&fed.api, &job).await?;
        jobs.push(took);
        slowest.push(alone);
        overhead.push(took.saturating_sub(alone));
    }
    fed.shutdown().await;
    for v in [&mut jobs, &mut slowest, &mut overhead] {
        v.sort();
    }
    Ok(Some((jobs, slowest, overhead)))
}

/// One orchestrator and `n` simulated sites in this process, each holding dataset
/// `JGAD9<nnnnn>` and releasing partials by rule: one job over all of them, `runs` times.
async fn simulated(n: u64, runs: u64) -> Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let issuer = Issuer::generate("https://dac.bench.example");
    let jwks = IssuerRef {
        issuer: "https://dac.bench.example".into(),
        jwks_file: dir.path().join("jwks.json"),
    };
    std::fs::write(&jwks.jwks_file, issuer.jwks_json())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let listen = listener.local_addr()?;
    let sites: Vec<String> = (1..=n).map(|i| format!("sim-{i:02}")).collect();
    let dataset = |i: usize| format!("JGAD9{:05}", i + 1);
    let mut config = Config::for_tests(templates_dir(), "bench");
    config.listen = listen;
    config.database = None;
    config.data_dir = dir.path().join("orchestrator");
    config.trusted_issuers = vec![jwks.clone()];
    config.agents = sites
        .iter()
        .map(|s| AgentAuth {
            site: Ident::parse(s).unwrap(),
            token: format!("tok-{s}"),
        })
        .collect();
    std::fs::create_dir_all(&config.data_dir)?;
    let orch = basho_orchestrator::Orchestrator::open(config).await?;
    let cancel = CancellationToken::new();
    tokio::spawn(orch.serve(listener, cancel.clone()));
    for (i, s) in sites.iter().enumerate() {
        let data = dir.path().join("datasets").join(dataset(i));
        std::fs::create_dir_all(&data)?;
        std::fs::write(
            data.join("records.csv"),
            "record_id,age_band,icd10\nx-1,40-49,E11\n",
        )?;
        let cfg = SiteConfig {
            consent: Default::default(),
            site: Ident::parse(s)?,
            orchestrator: OrchestratorLink {
                url: format!("http://{listen}"),
                token: Some(format!("tok-{s}")),
                token_file: None,
                poll_wait_s: 25,
                ca_file: None,
                plain_http_on_loopback: true,
            },
            capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
                cpus: 64,
                memory_mib: 65536,
                gpus: 0,
            }),
            backend: BackendConfig::Fake(basho_agent::config::FakeConfig {
                start_delay_ms: 0,
                failure_rate: 0.0,
                exit_after_ms: Some(0),
            }),
            datasets: vec![CatalogEntry {
                participant_column: None,
                filter_command: Vec::new(),
                id: Ident::parse(&dataset(i))?,
                path: data,
                claim: None,
                grant_url: None,
                issuers: Vec::new(),
                source: None,
            }],
            images: BTreeMap::from([(
                "basho/demo".to_string(),
                format!("sha256:{}", "0".repeat(64)),
            )]),
            trusted_issuers: vec![jwks.clone()],
            paths: basho_agent::config::Paths::under(&dir.path().join("sites").join(s)),
            isolation: Isolation::default(),
            metrics: None,
            metering: Default::default(),
            sessions: Default::default(),
            airlock: basho_agent::airlock::AirlockConfig {
                auto_release_partials: true,
                ..Default::default()
            },
            reconcile: Default::default(),
        };
        let c = cancel.child_token();
        tokio::spawn(async move { basho_agent::run(cfg, c).await });
    }
    let api = Api::new(format!("http://{listen}"), "bench");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api.call(Method::GET, "/v1/sites", None).await;
        if v.as_array().map_or(0, Vec::len) == sites.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the simulated sites did not all register within 60 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let visas: Vec<String> = (0..sites.len())
        .map(|i| issuer.mint("alice", &dataset(i)))
        .collect();
    let job = json!({
        "project": "P-BENCH", "visas": visas,
        "site_step": {"image": "basho/demo", "command": ["count"]},
        "aggregation": {"image": "basho/demo", "command": ["sum"], "site": sites[0]},
    });
    let mut took = Vec::new();
    for _ in 0..runs {
        took.push(run_job(&api, &job).await?);
    }
    cancel.cancel();
    took.sort();
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("federated");
    match demo(args.runs).await? {
        None => report.skipped("no Docker engine answers on this machine: no demo job"),
        Some((jobs, slowest, overhead)) => {
            println!(
                "the demo job over 3 Docker sites (count-cells, sum-cells), {} turns:",
                jobs.len()
            );
            let peer = "the slowest site's step alone (TES task)";
            for (name, label, p) in [
                ("job_p50", "create -> completed p50", 0.5),
                ("job_max", "create -> completed max", 1.0),
            ] {
                report.figure(
                    Figure::lower(name, label, pct_ms(&jobs, p), "ms")
                        .peer(peer, pct_ms(&slowest, p)),
                );
            }
            report.figure(
                Figure::lower(
                    "overhead_p50",
                    "beyond the slowest site (p50)",
                    pct_ms(&overhead, 0.5),
                    "ms",
                )
                .at_most(1000.0),
            );
            report.figure(Figure::lower(
                "overhead_max",
                "beyond the slowest site (max)",
                pct_ms(&overhead, 1.0),
                "ms",
            ));
        }
    }
    let took = simulated(args.sites, args.runs).await?;
    println!(
        "one job over {} simulated sites, partials released by rule, {} runs:",
        args.sites,
        took.len()
    );
    let fanout = report.for_bench("federated");
    fanout.figure(
        Figure::lower(
            "simulated_p50",
            &format!("{} sites: create -> completed p50", args.sites),
            pct_ms(&took, 0.5),
            "ms",
        )
        .at_most(5000.0),
    );
    fanout.figure(Figure::lower(
        "simulated_max",
        &format!("{} sites: create -> completed max", args.sites),
        pct_ms(&took, 1.0),
        "ms",
    ));
    Ok(())
}
