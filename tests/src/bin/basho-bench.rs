//! basho-bench: placement throughput and create latency through the HTTP API with simulated sites
//! (the fake backend), the agent's resident memory idle and with 500 workspaces, and Docker
//! create-to-running against a plain `docker run -d`. Prints figures and the command behind them.
//!
//!     cargo run --release -p basho-tests --bin basho-bench -- [--sites 100] [--workspaces 3000]
//!         [--concurrency 32] [--no-agents] [--skip-placement] [--skip-rss] [--rss-workspaces 500]
//!         [--skip-docker] [--docker-runs 10] [--docker-stopping 3] [--sites-dir-in DIR]
//!
//! `scripts/bench` runs it once per benchmark (placement, placement-agents with the simulated sites
//! on /dev/shm, placement-agents-disk with them on the disk, memory, docker).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_agent::config::{BackendConfig, CatalogEntry, Isolation, OrchestratorLink, SiteConfig};
use basho_core::Ident;
use basho_core::protocol::Capacity;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::config::{AgentAuth, Config, Limits};
use basho_tests::api::Api;
use basho_tests::bench::{Figure, Report, pct_ms};
use clap::Parser;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ISS: &str = "https://dac.bench.invalid";

#[path = "placement/queue.rs"]
mod queue;

#[derive(Parser)]
struct Args {
    /// Simulated sites.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    sites: u64,
    /// Workspaces created in the placement run.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    workspaces: u64,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Skip the placement run.
    #[arg(long)]
    skip_placement: bool,
    /// Skip the agent memory figures.
    #[arg(long)]
    skip_rss: bool,
    /// Workspaces placed at the measured agent for its loaded memory figure.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    rss_workspaces: u64,
    /// Skip the Docker create-to-running comparison.
    #[arg(long)]
    skip_docker: bool,
    /// Instead of one placement run, one per queue length given (comma-separated, ascending):
    /// the queue is filled to each with workspaces waiting at a full site of their own, then
    /// the placement run measured beside it (`queue` figures; with --no-agents).
    #[arg(long, value_delimiter = ',')]
    queued: Vec<usize>,
    /// Register the simulated sites over the agent API without running their agents, to measure
    /// the orchestrator alone.
    #[arg(long)]
    no_agents: bool,
    /// Docker runs per variant.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    docker_runs: u64,
    /// Workspaces being stopped at the Docker site while the measured create arrives.
    #[arg(long, default_value_t = 3)]
    docker_stopping: usize,
    /// Where the simulated sites keep their state, work and results directories (a temporary
    /// directory is made inside): by default beside the orchestrator's database. On a disk whose
    /// inode allocation is slow (journal-less ext4 scans recently deleted inodes), the three
    /// files a placement makes at its site cost more than the control plane; a tmpfs such as
    /// /dev/shm measures the control plane alone.
    #[arg(long)]
    sites_dir_in: Option<std::path::PathBuf>,
}

struct Bench {
    dir: tempfile::TempDir,
    /// Where the simulated sites' directories go, when not under `dir`.
    sites_dir: Option<tempfile::TempDir>,
    issuer: Issuer,
    jwks: IssuerRef,
    listen: SocketAddr,
    api: Api,
    cancel: CancellationToken,
    orchestrator: basho_orchestrator::Orchestrator,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new(match (args.no_agents, &args.sites_dir_in) {
        _ if !args.queued.is_empty() => "queue",
        (true, _) => "placement",
        (false, Some(_)) => "placement-agents",
        (false, None) => "placement-agents-disk",
    });
    println!("# basho-bench on {} cores ({})", num_cpus(), cpu_model());
    let sites: Vec<String> = (0..args.sites).map(|i| format!("sim-{i:03}")).collect();
    let mut extra = vec!["rss-site".to_string(), queue::SITE.to_string()];
    if !args.skip_docker {
        extra.push("docker-site".to_string());
    }
    let sites_dir = match &args.sites_dir_in {
        Some(parent) => Some(
            tempfile::tempdir_in(parent)
                .with_context(|| format!("--sites-dir-in {}", parent.display()))?,
        ),
        None => None,
    };
    let bench = Bench::start(&sites, &extra, !args.no_agents, sites_dir).await?;
    if !args.queued.is_empty() {
        queue::run(&bench, &sites, &args, &report).await?;
    } else if !args.skip_placement {
        placement(&bench, &sites, &args, &report, "").await?;
    }
    if !args.skip_rss {
        agent_rss(
            &bench,
            args.rss_workspaces as usize,
            &report.for_bench("memory"),
        )
        .await?;
    }
    if !args.skip_docker {
        let report = report.for_bench("docker");
        docker_compare(
            &bench,
            args.docker_runs as usize,
            args.docker_stopping,
            &report,
        )
        .await?;
    }
    bench.cancel.cancel();
    Ok(())
}

impl Bench {
    async fn start(
        sites: &[String],
        extra: &[String],
        run_agents: bool,
        sites_dir: Option<tempfile::TempDir>,
    ) -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        let issuer = Issuer::generate(ISS);
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, issuer.jwks_json())?;
        let jwks = IssuerRef {
            issuer: ISS.into(),
            jwks_file,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let agents = sites
            .iter()
            .chain(extra)
            .map(|s| AgentAuth {
                site: Ident::parse(s).unwrap(),
                token: format!("tok-{s}"),
            })
            .collect();
        let config = Config {
            listen,
            data_dir: dir.path().join("orchestrator"),
            database: None,
            templates_dir: basho_tests::federation::templates_dir(),
            platform_tokens: vec!["bench".into()],
            agents,
            trusted_issuers: vec![jwks.clone()],
            limits: Limits::default(),
            tls: None,
            plain_http_on_loopback: true,
            replica: None,
            metrics: Default::default(),
            audit: Default::default(),
            tes: Default::default(),
            federated: Default::default(),
            scheduler: Default::default(),
        };
        let orch = basho_orchestrator::Orchestrator::open(config).await?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let orchestrator = orch.clone();
        tokio::spawn(async move { orch.serve(listener, c).await });
        let bench = Bench {
            dir,
            sites_dir,
            issuer,
            jwks,
            listen,
            api: Api::new(format!("http://{listen}"), "bench"),
            cancel,
            orchestrator,
        };
        for s in sites {
            let mut cfg = bench.site_config(
                s,
                BackendConfig::Fake(basho_agent::config::FakeConfig {
                    start_delay_ms: 50,
                    failure_rate: 0.0,
                    exit_after_ms: None,
                }),
                "sha256:".to_string() + &"0".repeat(64),
            );
            if let Some(d) = &bench.sites_dir {
                cfg.paths = basho_agent::config::Paths::under(&d.path().join(s));
            }
            if run_agents {
                let c = bench.cancel.child_token();
                tokio::spawn(async move { basho_agent::run(cfg, c).await });
            } else {
                let api = Api::new(format!("http://{}", bench.listen), format!("tok-{s}"));
                let reg = json!({"site": s, "backend": "fake", "version": "bench",
                    "datasets": [{"id": "JGAD000101", "grant_url": basho_core::visa::default_grant_url("JGAD000101")}],
                    "capacity": {"cpus": 100_000, "memory_mib": 100_000_000, "gpus": 0}, "images": ["basho/demo"]});
                let (status, v) = api
                    .call(reqwest::Method::POST, "/v1/agent/register", Some(&reg))
                    .await;
                if !status.is_success() {
                    bail!("register {s}: {v}");
                }
            }
        }
        wait_sites(&bench.api, sites.len(), None).await?;
        Ok(bench)
    }

    fn site_config(&self, site: &str, backend: BackendConfig, image: String) -> SiteConfig {
        let base = self.dir.path().join("sites").join(site);
        let data = self.dir.path().join("datasets/JGAD000101");
        std::fs::create_dir_all(&data).unwrap();
        SiteConfig {
            consent: Default::default(),
            site: Ident::parse(site).unwrap(),
            orchestrator: OrchestratorLink {
                url: format!("http://{}", self.listen),
                token: Some(format!("tok-{site}")),
                token_file: None,
                poll_wait_s: 25,
                ca_file: None,
                plain_http_on_loopback: true,
            },
            capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
                cpus: 100_000,
                memory_mib: 100_000_000,
                gpus: 0,
            }),
            backend,
            datasets: vec![CatalogEntry {
                participant_column: None,
                filter_command: Vec::new(),
                id: Ident::parse("JGAD000101").unwrap(),
                path: data,
                claim: None,
                grant_url: None,
                issuers: Vec::new(),
                source: None,
            }],
            images: BTreeMap::from([("basho/demo".to_string(), image)]),
            trusted_issuers: vec![self.jwks.clone()],
            paths: basho_agent::config::Paths::under(&base),
            isolation: Isolation::default(),
            metrics: None,
            metering: Default::default(),
            sessions: Default::default(),
            airlock: Default::default(),
            reconcile: Default::default(),
        }
    }

    fn body(&self, site: Option<&str>) -> Value {
        json!({"project": "P-BENCH", "template": "shell", "visas": [self.issuer.mint("alice", "JGAD000101")],
            "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 3600, "site": site})
    }
}

/// Waits until at least `n` sites are registered, or the site named `name` is.
async fn wait_sites(api: &Api, n: usize, name: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api.call(reqwest::Method::GET, "/v1/sites", None).await;
        let sites = v.as_array().cloned().unwrap_or_default();
        let named = name.is_none_or(|n| sites.iter().any(|s| s["name"] == n));
        if sites.len() >= n && named {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} sites registered after 60 s; waited for {n} and {name:?}",
                sites.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `args.workspaces` workspaces that fit, `args.concurrency` at a time: placements/s and
/// create latency, each figure's name and label ending in `suffix` (` with 1000 queued`).
async fn placement(
    bench: &Bench,
    sites: &[String],
    args: &Args,
    report: &Report,
    suffix: &str,
) -> Result<()> {
    // Visas are minted before the clock starts: signing is the platform's cost, not basho's.
    let bodies: Vec<Value> = (0..args.workspaces as usize)
        .map(|_| bench.body(None))
        .collect();
    let bodies = Arc::new(tokio::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let api = bench.api.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut placed: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let Some(body) = bodies.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                let (status, ws) = api.create(&body).await;
                lat.push(t.elapsed());
                assert_eq!(status, reqwest::StatusCode::CREATED, "{ws}");
                *placed
                    .entry(ws["site"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
            (lat, placed)
        }));
    }
    let mut lat = Vec::new();
    let mut per_site: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (l, p) = t.await?;
        lat.extend(l);
        for (k, v) in p {
            *per_site.entry(k).or_default() += v;
        }
    }
    let wall = started.elapsed();
    lat.sort();
    println!(
        "placement: {} workspaces over {} simulated sites, {} concurrent clients{}",
        args.workspaces,
        sites.len(),
        args.concurrency,
        if args.no_agents {
            ", no agents"
        } else {
            ", their agents in process"
        }
    );
    let rate = args.workspaces as f64 / wall.as_secs_f64();
    let floor = if args.no_agents { 3000.0 } else { 700.0 };
    let named =
        |name: &str, label: &str| (format!("{name}{}", key(suffix)), format!("{label}{suffix}"));
    let (n, l) = named("placements_per_s", "placements/s");
    report.figure(Figure::higher(&n, &l, rate, "/s").at_least(floor));
    let (n, l) = named("create_p50", "create p50");
    report.figure(Figure::lower(&n, &l, pct_ms(&lat, 0.50), "ms"));
    let (n, l) = named("create_p99", "create p99");
    report.figure(Figure::lower(&n, &l, pct_ms(&lat, 0.99), "ms").at_most(50.0));
    let (n, l) = named("create_max", "create max");
    report.figure(Figure::lower(&n, &l, pct_ms(&lat, 1.0), "ms"));
    let (min, max) = (
        per_site.values().min().unwrap_or(&0),
        per_site.values().max().unwrap_or(&0),
    );
    report.note(&format!(
        "spread: {} sites used, {min}..{max} workspaces each",
        per_site.len()
    ));
    Ok(())
}

/// A figure name's ending for a label's: ` with 1000 queued` → `_with_1000_queued`.
fn key(suffix: &str) -> String {
    let s = suffix.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("_{}", s.replace(' ', "_"))
    }
}

/// A `/proc/<pid>/status` figure in KiB: `VmRSS` (all resident pages) or `RssAnon` (those not
/// backed by a file: heap and stacks, without the binary's own code pages).
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("{key} value"))?
        .parse()?)
}

async fn agent_rss(bench: &Bench, n: usize, report: &Report) -> Result<()> {
    let cfg = bench.site_config(
        "rss-site",
        BackendConfig::Fake(basho_agent::config::FakeConfig {
            start_delay_ms: 10,
            failure_rate: 0.0,
            exit_after_ms: None,
        }),
        "sha256:".to_string() + &"0".repeat(64),
    );
    let path = bench.dir.path().join("rss-site.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    let agent = basho_tests::binary("basho-agent");
    let mut child = tokio::process::Command::new(&agent)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("agent pid")?;
    wait_sites(&bench.api, 0, Some("rss-site")).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, idle_anon) = (status_kib(pid, "VmRSS:")?, status_kib(pid, "RssAnon:")?);
    for _ in 0..n {
        let (s, v) = bench.api.create(&bench.body(Some("rss-site"))).await;
        if s != reqwest::StatusCode::CREATED {
            bail!("create at rss-site: {v}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = bench
            .api
            .call(
                reqwest::Method::GET,
                "/v1/workspaces?site=rss-site&state=running",
                None,
            )
            .await;
        if v.as_array().map(Vec::len).unwrap_or(0) >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("{n} workspaces not running at rss-site after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (loaded, loaded_anon) = (status_kib(pid, "VmRSS:")?, status_kib(pid, "RssAnon:")?);
    println!("agent resident memory ({}, fake backend):", agent.display());
    let mib = |kib: u64| kib as f64 / 1024.0;
    report.figure(Figure::lower("rss_idle", "idle, 0 workspaces", mib(idle), "MiB").at_most(10.0));
    let label = format!("{n} workspaces running");
    report.figure(Figure::lower("rss_loaded", &label, mib(loaded), "MiB").at_most(20.0));
    let label = format!("anonymous, {n} workspaces running");
    report.figure(Figure::lower(
        "anon_idle",
        "anonymous (not file-backed), idle",
        mib(idle_anon),
        "MiB",
    ));
    report.figure(Figure::lower(
        "anon_loaded",
        &label,
        mib(loaded_anon),
        "MiB",
    ));
    child.kill().await.ok();
    Ok(())
}

async fn docker_compare(
    bench: &Bench,
    runs: usize,
    stopping: usize,
    report: &Report,
) -> Result<()> {
    let Some(docker) = basho_tests::docker().await else {
        report.skipped("no Docker engine answers on this machine");
        return Ok(());
    };
    let image = basho_cli::dev::image::ensure_demo_image(&docker).await?;
    let cfg = bench.site_config(
        "docker-site",
        BackendConfig::Docker(basho_agent::config::DockerConfig {
            socket: None,
            namespace: None,
            init: None,
        }),
        image.clone(),
    );
    let data = cfg.datasets[0].path.clone();
    let c = bench.cancel.child_token();
    tokio::spawn(async move { basho_agent::run(cfg, c).await });
    wait_sites(&bench.api, 0, Some("docker-site")).await?;
    // Alternating, so both paths see the same engine and the same load.
    let (mut via_api, mut plain) = (Vec::new(), Vec::new());
    let (mut busy, mut plain_busy) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let id = create_running(bench).await?;
        via_api.push(id.1);
        bench.api.delete(&id.0).await;
        plain.push(plain_run(&image, &data, i)?);
        // The same create arriving while the agent stops `stopping` others at the site.
        let mut others = Vec::new();
        for _ in 0..stopping {
            others.push(create_running(bench).await?.0);
        }
        wait_gone(&docker, &id.0).await?;
        for o in &others {
            bench.api.delete(o).await;
        }
        let id = create_running(bench).await?;
        busy.push(id.1);
        bench.api.delete(&id.0).await;
        for o in others.iter().chain([&id.0]) {
            wait_gone(&docker, o).await?;
        }
        plain_busy.push(plain_run_while_stopping(&image, &data, i, stopping)?);
    }
    via_api.sort();
    plain.sort();
    busy.sort();
    plain_busy.sort();
    println!(
        "docker create-to-running over {runs} runs (engine {}):",
        engine_version(&docker).await
    );
    let plain_p50 = pct_ms(&plain, 0.5);
    let peer = "plain `docker run -d`, same flags";
    let alone = pct_ms(&via_api, 0.5);
    report.figure(
        Figure::lower(
            "create_running_p50",
            "basho create -> running p50",
            alone,
            "ms",
        )
        .peer(peer, plain_p50),
    );
    report.figure(
        Figure::lower(
            "create_running_max",
            "basho create -> running max",
            pct_ms(&via_api, 1.0),
            "ms",
        )
        .peer("plain max", pct_ms(&plain, 1.0)),
    );
    let label = format!("the same while {stopping} others stop, p50");
    let b = pct_ms(&busy, 0.5);
    let busy_peer = format!("plain `docker run -d` while {stopping} plain containers stop");
    let plain_busy_p50 = pct_ms(&plain_busy, 0.5);
    report.figure(
        Figure::lower("create_running_stopping_p50", &label, b, "ms")
            .peer(&busy_peer, plain_busy_p50),
    );
    report.figure(
        Figure::lower("ratio", "ratio to plain (p50)", alone / plain_p50, "x").at_most(1.1),
    );
    report.figure(
        Figure::lower(
            "ratio_stopping",
            "ratio to plain while others stop, both (p50)",
            b / plain_busy_p50,
            "x",
        )
        .at_most(1.1),
    );
    basho_tests::remove_labelled(&docker, basho_core::LABEL_SITE, "docker-site").await;
    Ok(())
}

/// Creates a workspace at the Docker site and waits for `running`: its id and the time taken.
async fn create_running(bench: &Bench) -> Result<(String, Duration)> {
    let t = Instant::now();
    let (s, ws) = bench.api.create(&bench.body(Some("docker-site"))).await;
    if s != reqwest::StatusCode::CREATED {
        bail!("create at docker-site: {ws}");
    }
    let id = ws["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let w = bench.api.workspace(&id).await;
        if w["state"] == "running" {
            return Ok((id, t.elapsed()));
        }
        if t.elapsed() > Duration::from_secs(60) || w["state"] == "failed" {
            bail!("docker workspace did not run: {w}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the engine has no container of workspace `id`.
async fn wait_gone(docker: &bollard::Docker, id: &str) -> Result<()> {
    let t = Instant::now();
    while !basho_tests::containers_labelled(docker, basho_core::LABEL_WORKSPACE, id)
        .await
        .is_empty()
    {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the container of {id} is still there 60 s after its delete");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One `docker run -d` of the demo image with the isolation flags basho applies, removed again:
/// the time the run took.
fn plain_run(image: &str, data: &std::path::Path, i: usize) -> Result<Duration> {
    let (name, took) = plain_start(image, data, &format!("{i}"))?;
    plain_remove(&name)?;
    Ok(took)
}

/// [`plain_run`] sent while `stopping` other plain containers are being stopped and removed, as
/// basho's agent stops them (`docker stop`, then `docker rm`): the engine's own cost of the
/// same contention.
fn plain_run_while_stopping(
    image: &str,
    data: &std::path::Path,
    i: usize,
    stopping: usize,
) -> Result<Duration> {
    let mut others = Vec::new();
    for k in 0..stopping {
        others.push(plain_start(image, data, &format!("{i}-other-{k}"))?.0);
    }
    let stops = others
        .iter()
        .map(|name| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("docker stop {name} && docker rm {name}"))
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let (name, took) = plain_start(image, data, &format!("{i}-busy"))?;
    for mut s in stops {
        s.wait()?;
    }
    plain_remove(&name)?;
    Ok(took)
}

/// Starts one plain container named after `tag`: its name and the time `docker run -d` took.
fn plain_start(image: &str, data: &std::path::Path, tag: &str) -> Result<(String, Duration)> {
    let name = format!("basho-bench-plain-{}-{tag}", std::process::id());
    let t = Instant::now();
    let out = std::process::Command::new("docker")
        .args(["run", "-d", "--name", &name])
        .args(basho_tests::bench::plain_isolation(data))
        .args([
            image,
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        ])
        .output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((name, took))
}

fn plain_remove(name: &str) -> Result<()> {
    std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .output()?;
    Ok(())
}

async fn engine_version(docker: &bollard::Docker) -> String {
    docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "?".into())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}
