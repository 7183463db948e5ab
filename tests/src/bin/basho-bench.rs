//! basho-bench: placement throughput and create latency through the HTTP API with simulated sites
//! (the fake backend), the agent's resident memory idle and with 500 workspaces, and Docker
//! create-to-running against a plain `docker run -d`. Prints figures and the command behind them.
//!
//!     cargo run --release -p basho-tests --bin basho-bench -- [--sites 100] [--workspaces 3000]
//!         [--concurrency 32] [--skip-rss] [--skip-docker] [--docker-runs 10]

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
use clap::Parser;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ISS: &str = "https://dac.bench.invalid";

#[derive(Parser)]
struct Args {
    /// Simulated sites.
    #[arg(long, default_value_t = 100)]
    sites: usize,
    /// Workspaces created in the placement run.
    #[arg(long, default_value_t = 3000)]
    workspaces: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Skip the agent memory figures.
    #[arg(long)]
    skip_rss: bool,
    /// Skip the Docker create-to-running comparison.
    #[arg(long)]
    skip_docker: bool,
    /// Register the simulated sites over the agent API without running their agents, to measure
    /// the orchestrator alone.
    #[arg(long)]
    no_agents: bool,
    /// Docker runs per variant.
    #[arg(long, default_value_t = 10)]
    docker_runs: usize,
}

struct Bench {
    dir: tempfile::TempDir,
    issuer: Issuer,
    jwks: IssuerRef,
    listen: SocketAddr,
    api: Api,
    cancel: CancellationToken,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!("# basho-bench on {} cores ({})", num_cpus(), cpu_model());
    println!(
        "# command: cargo run --release -p basho-tests --bin basho-bench -- --sites {} --workspaces {} --concurrency {}",
        args.sites, args.workspaces, args.concurrency
    );
    let sites: Vec<String> = (0..args.sites).map(|i| format!("sim-{i:03}")).collect();
    let mut extra = vec!["rss-site".to_string()];
    if !args.skip_docker {
        extra.push("docker-site".to_string());
    }
    let bench = Bench::start(&sites, &extra, !args.no_agents).await?;
    placement(&bench, &sites, &args).await?;
    if !args.skip_rss {
        agent_rss(&bench).await?;
    }
    if !args.skip_docker {
        docker_compare(&bench, args.docker_runs).await?;
    }
    bench.cancel.cancel();
    Ok(())
}

impl Bench {
    async fn start(sites: &[String], extra: &[String], run_agents: bool) -> Result<Bench> {
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
        };
        let orch = basho_orchestrator::Orchestrator::open(config).await?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move { orch.serve(listener, c).await });
        let bench = Bench {
            dir,
            issuer,
            jwks,
            listen,
            api: Api::new(format!("http://{listen}"), "bench"),
            cancel,
        };
        for s in sites {
            let cfg = bench.site_config(
                s,
                BackendConfig::Fake {
                    start_delay_ms: 50,
                    failure_rate: 0.0,
                },
                "sha256:".to_string() + &"0".repeat(64),
            );
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
            site: Ident::parse(site).unwrap(),
            orchestrator: OrchestratorLink {
                url: format!("http://{}", self.listen),
                token: Some(format!("tok-{site}")),
                token_file: None,
                poll_wait_s: 25,
                ca_file: None,
                plain_http_on_loopback: true,
            },
            capacity: Capacity {
                cpus: 100_000,
                memory_mib: 100_000_000,
                gpus: 0,
            },
            backend,
            datasets: vec![CatalogEntry {
                id: Ident::parse("JGAD000101").unwrap(),
                path: data,
                claim: None,
                grant_url: None,
            }],
            images: BTreeMap::from([("basho/demo".to_string(), image)]),
            trusted_issuers: vec![self.jwks.clone()],
            paths: basho_tests::site_paths(&base),
            isolation: Isolation::default(),
            metrics: None,
            metering: Default::default(),
            sessions: Default::default(),
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

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn placement(bench: &Bench, sites: &[String], args: &Args) -> Result<()> {
    // Visas are minted before the clock starts: signing is the platform's cost, not basho's.
    let bodies: Vec<Value> = (0..args.workspaces).map(|_| bench.body(None)).collect();
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
        "placement: {} workspaces over {} simulated sites, {} concurrent clients",
        args.workspaces,
        sites.len(),
        args.concurrency
    );
    println!(
        "  placements/s      {:.0}",
        args.workspaces as f64 / wall.as_secs_f64()
    );
    println!("  create p50 (ms)   {:.2}", pct(&lat, 0.50));
    println!("  create p99 (ms)   {:.2}", pct(&lat, 0.99));
    println!("  create max (ms)   {:.2}", pct(&lat, 1.0));
    let (min, max) = (
        per_site.values().min().unwrap_or(&0),
        per_site.values().max().unwrap_or(&0),
    );
    println!(
        "  spread            {} sites used, {min}..{max} workspaces each",
        per_site.len()
    );
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

async fn agent_rss(bench: &Bench) -> Result<()> {
    let cfg = bench.site_config(
        "rss-site",
        BackendConfig::Fake {
            start_delay_ms: 10,
            failure_rate: 0.0,
        },
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
    let idle = rss_kib(pid)?;
    let n = 500;
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
            bail!("500 workspaces not running at rss-site after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loaded = rss_kib(pid)?;
    println!("agent resident memory ({}, fake backend):", agent.display());
    println!("  idle, 0 workspaces     {:.1} MiB", idle as f64 / 1024.0);
    println!("  500 workspaces running {:.1} MiB", loaded as f64 / 1024.0);
    child.kill().await.ok();
    Ok(())
}

async fn docker_compare(bench: &Bench, runs: usize) -> Result<()> {
    let Some(docker) = basho_tests::docker().await else {
        return Ok(());
    };
    let image = basho_cli::dev::image::ensure_demo_image(&docker).await?;
    let cfg = bench.site_config(
        "docker-site",
        BackendConfig::Docker {
            socket: None,
            namespace: None,
        },
        image.clone(),
    );
    let data = cfg.datasets[0].path.clone();
    let c = bench.cancel.child_token();
    tokio::spawn(async move { basho_agent::run(cfg, c).await });
    wait_sites(&bench.api, 0, Some("docker-site")).await?;
    let mut via_api = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (s, ws) = bench.api.create(&bench.body(Some("docker-site"))).await;
        if s != reqwest::StatusCode::CREATED {
            bail!("create at docker-site: {ws}");
        }
        let id = ws["id"].as_str().unwrap_or_default().to_owned();
        loop {
            let w = bench.api.workspace(&id).await;
            if w["state"] == "running" {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) || w["state"] == "failed" {
                bail!("docker workspace did not run: {w}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        via_api.push(t.elapsed());
        bench.api.delete(&id).await;
    }
    let mut plain = Vec::new();
    for i in 0..runs {
        let name = format!("basho-bench-plain-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = std::process::Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "none",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--read-only",
                "--tmpfs",
                "/tmp:rw,noexec,nosuid,size=64m",
                "--user",
                "65534:65534",
                "--pids-limit",
                "256",
                "--memory",
                "128m",
                "--cpus",
                "1",
            ])
            .arg("--mount")
            .arg(format!(
                "type=bind,source={},target=/data/JGAD000101,readonly",
                data.display()
            ))
            .args([
                image.as_str(),
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
            ])
            .output()?;
        plain.push(t.elapsed());
        if !out.status.success() {
            bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .output()?;
    }
    via_api.sort();
    plain.sort();
    println!(
        "docker create-to-running over {runs} runs (engine {}):",
        engine_version(&docker).await
    );
    println!(
        "  basho API create -> state running  p50 {:.0} ms  max {:.0} ms",
        pct(&via_api, 0.5),
        pct(&via_api, 1.0)
    );
    println!(
        "  plain `docker run -d` (same flags) p50 {:.0} ms  max {:.0} ms",
        pct(&plain, 0.5),
        pct(&plain, 1.0)
    );
    println!(
        "  ratio (p50)                        {:.2}x",
        pct(&via_api, 0.5) / pct(&plain, 0.5)
    );
    basho_tests::remove_labelled(&docker, basho_core::LABEL_SITE, "docker-site").await;
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
