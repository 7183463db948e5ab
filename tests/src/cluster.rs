//! A multi-host test bed on the local Docker engine: the orchestrator and each agent in a container
//! of their own (image `basho-node:test`, built by `scripts/cluster-image` from this checkout's
//! binaries, nothing pulled), each agent on a private network that only it and the orchestrator
//! join, so `docker network disconnect` cuts off exactly one site. The orchestrator serves HTTPS
//! with a certificate from a CA made here (`orchestrator` is its name on every network); the test
//! reaches it on its bridge address. Agents drive workload containers through the host's engine
//! (its socket is mounted) or run the fake backend. The test's directory is mounted at the same
//! path in every node, so the bind mounts an agent asks the engine for resolve on the host.
//!
//! Every object carries the cluster's tag (`mh<pid>x<random>`): a [`Cluster`] removes its
//! containers, workload containers and networks when dropped (also when a test panics), and a
//! new one first removes what clusters of dead test processes left behind.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use basho_agent::config::{BackendConfig, CatalogEntry, Isolation, OrchestratorLink, SiteConfig};
use basho_core::Ident;
use basho_core::protocol::Capacity;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::{Issuer, Visa};
use basho_orchestrator::config::{AgentAuth, Config, Limits};
use bollard::Docker;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::Api;

/// The image the nodes run.
pub const IMAGE: &str = "basho-node:test";
/// The label every container and network of a cluster carries, valued with its tag.
pub const LABEL: &str = "io.basho.cluster";
/// The orchestrator's port inside its container.
pub const PORT: u16 = 8443;
/// The orchestrator's name on the agents' networks and in its certificate.
pub const ORCHESTRATOR_HOST: &str = "orchestrator";
/// The issuer every cluster trusts.
pub const ISSUER: &str = "https://dac.multihost.test.invalid";

/// Which backend the agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Workload containers on the host's engine.
    Docker,
    /// Simulated lifecycles (control-plane scenarios).
    Fake,
}

/// What a cluster looks like.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How many agents (sites).
    pub agents: usize,
    /// Their backend.
    pub backend: Backend,
    /// One private network per agent (partitions possible), or one network for all of them.
    pub network_per_agent: bool,
    /// Puts the orchestrator's data dir on a tmpfs of this size (`"8m"`) instead of a host dir.
    pub orchestrator_tmpfs: Option<String>,
    /// The orchestrator's `limits.agent_silent_s`.
    pub agent_silent_s: u64,
    /// The agents' `[metering] interval_s`.
    pub metering_interval_s: u64,
    /// The agents' long-poll wait, seconds.
    pub poll_wait_s: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            agents: 3,
            backend: Backend::Docker,
            network_per_agent: true,
            orchestrator_tmpfs: None,
            agent_silent_s: 10,
            metering_interval_s: 30,
            poll_wait_s: 5,
        }
    }
}

/// One agent node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its site name.
    pub site: String,
    /// The dataset it holds.
    pub dataset: String,
    /// Its container's name.
    pub container: String,
    /// The network it shares with the orchestrator.
    pub network: String,
    /// Its config (as mounted into the node).
    pub config: SiteConfig,
}

/// One test's cluster.
pub struct Cluster {
    /// The tag in every name.
    pub tag: String,
    /// Everything on disk; mounted at the same path in every node.
    pub dir: tempfile::TempDir,
    /// The issuer the test generated; every node trusts it.
    pub issuer: Issuer,
    /// The host's engine.
    pub docker: Docker,
    /// The demo workload image ID.
    pub image: String,
    /// The orchestrator's container name.
    pub orchestrator: String,
    /// The agents.
    pub agents: Vec<Node>,
    /// The orchestrator's config (as mounted into its node).
    pub config: Config,
    networks: Vec<String>,
    token: String,
    ca_pem: Vec<u8>,
    api: Mutex<Option<Api>>,
}

impl Cluster {
    /// Builds the node image if needed, then starts the orchestrator and the agents and waits
    /// until every site has registered. `None` when this machine has no Docker engine.
    pub async fn start(spec: Spec) -> Option<Cluster> {
        let docker = crate::docker().await?;
        sweep_stale();
        build_image();
        let image = basho_cli::dev::image::ensure_demo_image(&docker)
            .await
            .expect("demo image");
        let tag = format!("mh{}x{}", std::process::id(), &crate::unique("r")[2..8]);
        let dir = tempfile::Builder::new()
            .prefix(&format!("basho-{tag}-"))
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let issuer = Issuer::generate(ISSUER).with_rsa();
        let jwks_file = root.join("issuer.jwks.json");
        std::fs::write(&jwks_file, issuer.jwks_json()).unwrap();
        let issuers = vec![IssuerRef {
            issuer: ISSUER.into(),
            jwks_file,
        }];
        let (ca_file, tls, ca_pem) = crate::pki(
            &root.join("pki"),
            "basho multi-host test CA",
            &[ORCHESTRATOR_HOST],
        );
        let token = format!("platform-{tag}");
        let orchestrator = format!("basho-{tag}-orch");

        let mut agents = Vec::new();
        let mut auth = Vec::new();
        let mut networks = Vec::new();
        for i in 0..spec.agents {
            let site = format!("s{i}-{tag}");
            let dataset = format!("JGAD{:06}", 700_000 + i);
            let agent_token = format!("agent-{site}");
            auth.push(AgentAuth {
                site: Ident::parse(&site).unwrap(),
                token: agent_token.clone(),
            });
            let network = if spec.network_per_agent || i == 0 {
                let n = format!("basho-{tag}-n{i}");
                networks.push(n.clone());
                n
            } else {
                networks[0].clone()
            };
            let config = site_config(
                &root,
                &site,
                &dataset,
                &image,
                &issuers,
                &ca_file,
                agent_token,
                &spec,
            );
            agents.push(Node {
                container: format!("basho-{tag}-a{i}"),
                site,
                dataset,
                network,
                config,
            });
        }
        let data_dir = if spec.orchestrator_tmpfs.is_some() {
            PathBuf::from("/data")
        } else {
            root.join("orchestrator")
        };
        let config = Config {
            listen: SocketAddr::from(([0, 0, 0, 0], PORT)),
            data_dir,
            database: None,
            templates_dir: templates_dir(),
            platform_tokens: vec![token.clone()],
            agents: auth,
            trusted_issuers: issuers,
            limits: Limits {
                agent_silent_s: spec.agent_silent_s,
                ..Limits::default()
            },
            tls: Some(tls),
            plain_http_on_loopback: false,
            replica: None,
            metrics: Default::default(),
            audit: Default::default(),
            tes: Default::default(),
            federated: Default::default(),
            scheduler: Default::default(),
        };
        let cluster = Cluster {
            tag: tag.clone(),
            dir,
            issuer,
            docker,
            image,
            orchestrator,
            agents,
            config,
            networks,
            token,
            ca_pem,
            api: Mutex::new(None),
        };

        // The orchestrator, on the default bridge (the test's way in) and every agent network.
        let orch_toml = root.join("orchestrator.toml");
        std::fs::write(&orch_toml, toml::to_string(&cluster.config).unwrap()).unwrap();
        let root_s = root.display().to_string();
        let templates = cluster.config.templates_dir.display().to_string();
        let mut args = vec![
            "run".to_owned(),
            "-d".into(),
            "--name".into(),
            cluster.orchestrator.clone(),
            "--label".into(),
            format!("{LABEL}={tag}"),
            "-v".into(),
            format!("{root_s}:{root_s}"),
            "-v".into(),
            format!("{templates}:{templates}:ro"),
        ];
        if let Some(size) = &spec.orchestrator_tmpfs {
            args.push("--tmpfs".into());
            args.push(format!("/data:size={size}"));
        }
        args.extend([
            IMAGE.to_owned(),
            "basho-orchestrator".into(),
            "serve".into(),
            "--config".into(),
            orch_toml.display().to_string(),
        ]);
        docker_cli(&args);
        for n in &cluster.networks {
            docker_cli(&["network", "create", "--label", &format!("{LABEL}={tag}"), n]);
            docker_cli(&[
                "network",
                "connect",
                "--alias",
                ORCHESTRATOR_HOST,
                n,
                &cluster.orchestrator,
            ]);
        }
        cluster.refresh_api().await;

        for node in &cluster.agents {
            let toml_path = root.join(format!("{}.toml", node.site));
            std::fs::write(&toml_path, toml::to_string(&node.config).unwrap()).unwrap();
            let mut args = vec![
                "run".to_owned(),
                "-d".into(),
                "--name".into(),
                node.container.clone(),
                "--label".into(),
                format!("{LABEL}={tag}"),
                "--network".into(),
                node.network.clone(),
                "-v".into(),
                format!("{root_s}:{root_s}"),
            ];
            if spec.backend == Backend::Docker {
                args.push("-v".into());
                args.push("/var/run/docker.sock:/var/run/docker.sock".into());
            }
            args.extend([
                IMAGE.to_owned(),
                "basho-agent".into(),
                "run".into(),
                "--config".into(),
                toml_path.display().to_string(),
            ]);
            docker_cli(&args);
        }
        for node in &cluster.agents {
            cluster.wait_registered(&node.site).await;
        }
        Some(cluster)
    }

    /// The platform's API client for the orchestrator as it is now.
    pub fn api(&self) -> Api {
        self.api
            .lock()
            .unwrap()
            .clone()
            .expect("the orchestrator was started")
    }

    /// Finds the orchestrator's bridge address again (it may change when its container restarts)
    /// and waits until it answers `/healthz`.
    pub async fn refresh_api(&self) {
        let ip = crate::wait_for(
            "the orchestrator's bridge address",
            Duration::from_secs(30),
            || async {
                let out = docker_try(&[
                    "inspect",
                    "-f",
                    "{{.NetworkSettings.Networks.bridge.IPAddress}}",
                    &self.orchestrator,
                ])?;
                out.trim().parse::<IpAddr>().ok()
            },
        )
        .await;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .resolve(ORCHESTRATOR_HOST, SocketAddr::new(ip, PORT))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let api = Api::with_client(
            format!("https://{ORCHESTRATOR_HOST}:{PORT}"),
            self.token.clone(),
            http.clone(),
        );
        crate::wait_for("the orchestrator healthy", Duration::from_secs(60), || {
            let http = http.clone();
            let url = format!("{}/healthz", api.base);
            async move {
                let r = http.get(url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        *self.api.lock().unwrap() = Some(api);
    }

    /// Like [`Api::call_with`], but a failed connection is an `Err` rather than a panic: for
    /// clients that keep going while the orchestrator is down.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let api = self.api();
        let mut req = api
            .http()
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Waits until `site` appears in `GET /v1/sites`.
    pub async fn wait_registered(&self, site: &str) {
        crate::wait_for(
            &format!("site {site} registered"),
            Duration::from_secs(60),
            || async {
                let (s, v) = self
                    .try_call(Method::GET, "/v1/sites", None, &[])
                    .await
                    .ok()?;
                (s.is_success() && v.as_array()?.iter().any(|x| x["name"] == site)).then_some(())
            },
        )
        .await
    }

    /// A create body for agent `i`'s dataset, for `sub`, with a visa valid for `visa_s` seconds.
    pub fn create_body(&self, i: usize, project: &str, sub: &str, visa_s: i64) -> Value {
        let visa = self
            .issuer
            .sign(&Visa::new(sub, &self.agents[i].dataset).expires_in(visa_s));
        json!({
            "project": project,
            "template": "shell",
            "visas": [visa],
            "resources": {"cpus": 1, "memory_mib": 64, "gpus": 0},
            "duration_s": 3600,
        })
    }

    /// Workload containers (running or not) of workspace `id`.
    pub async fn containers(&self, id: &str) -> Vec<String> {
        crate::containers_labelled(&self.docker, basho_core::LABEL_WORKSPACE, id).await
    }

    /// `(container, workspace)` of every workload container of agent `i`'s site.
    pub async fn site_containers(&self, i: usize) -> Vec<(String, String)> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!(
                "{}={}",
                basho_core::LABEL_SITE,
                self.agents[i].site
            )],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .expect("docker list containers")
            .into_iter()
            .map(|c| {
                let ws = c
                    .labels
                    .unwrap_or_default()
                    .get(basho_core::LABEL_WORKSPACE)
                    .cloned()
                    .unwrap_or_default();
                (c.id.unwrap_or_default(), ws)
            })
            .collect()
    }

    /// Whether container `name` exists and runs.
    pub fn running(&self, name: &str) -> bool {
        docker_try(&["inspect", "-f", "{{.State.Running}}", name])
            .is_some_and(|s| s.trim() == "true")
    }

    /// `docker kill` (SIGKILL) of a node.
    pub fn kill(&self, container: &str) {
        docker_cli(&["kill", "--signal", "KILL", container]);
    }

    /// `docker start` of a stopped node (same config, same state dir).
    pub fn start_node(&self, container: &str) {
        docker_cli(&["start", container]);
    }

    /// `docker pause` of a node.
    pub fn pause(&self, container: &str) {
        docker_cli(&["pause", container]);
    }

    /// `docker unpause` of a node.
    pub fn unpause(&self, container: &str) {
        docker_cli(&["unpause", container]);
    }

    /// Cuts agent `i` off its network (and so from the orchestrator); its engine socket stays.
    pub fn partition(&self, i: usize) {
        let n = &self.agents[i];
        docker_cli(&["network", "disconnect", &n.network, &n.container]);
    }

    /// Joins agent `i` to its network again.
    pub fn heal(&self, i: usize) {
        let n = &self.agents[i];
        docker_cli(&["network", "connect", &n.network, &n.container]);
    }

    /// Runs `cmd` in node `container`; its exit status and output.
    pub fn exec(&self, container: &str, cmd: &[&str]) -> (bool, String) {
        let out = std::process::Command::new("docker")
            .arg("exec")
            .arg(container)
            .args(cmd)
            .output()
            .expect("docker exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// A node's log lines since `since` (RFC 3339), each prefixed with the engine's timestamp.
    pub fn logs_since(&self, container: &str, since: &str) -> String {
        let out = std::process::Command::new("docker")
            .args(["logs", "--timestamps", "--since", since, container])
            .output()
            .expect("docker logs");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Every node's log, for a failing test's output.
    pub fn dump_logs(&self) {
        for c in std::iter::once(&self.orchestrator).chain(self.agents.iter().map(|a| &a.container))
        {
            let out = std::process::Command::new("docker")
                .args(["logs", "--tail", "40", c])
                .output();
            if let Ok(out) = out {
                eprintln!(
                    "--- {c}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Removes every container, workload container and network of this cluster.
    fn remove(&self) {
        remove_tagged(&self.tag);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.remove();
    }
}

/// Builds (or confirms up to date) the node image from the binaries next to this test.
fn build_image() {
    let bindir = crate::binary("basho-agent")
        .parent()
        .expect("binary dir")
        .to_path_buf();
    crate::binary("basho-orchestrator");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster-image");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&bindir)
        .output()
        .expect("run scripts/cluster-image");
    assert!(
        out.status.success(),
        "scripts/cluster-image failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the docker CLI, panicking (with its output) unless it succeeds; its stdout.
pub fn docker_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {:?}: {}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the docker CLI; its stdout, or `None` when it failed.
fn docker_try(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lines of `docker <args>` output, empty when the command fails.
fn docker_lines(args: &[&str]) -> Vec<String> {
    docker_try(args)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Removes the containers (nodes and workloads) and networks whose tag is `tag`.
fn remove_tagged(tag: &str) {
    let mut ids = Vec::new();
    for line in docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}={tag}"),
        "--format",
        "{{.ID}}",
    ]) {
        ids.push(line);
    }
    for line in docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={}", basho_core::LABEL_SITE),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{}\"}}}}", basho_core::LABEL_SITE),
    ]) {
        if let Some((id, site)) = line.split_once(' ')
            && site.ends_with(&format!("-{tag}"))
        {
            ids.push(id.to_owned());
        }
    }
    if !ids.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
    for net in docker_lines(&[
        "network",
        "ls",
        "--filter",
        &format!("label={LABEL}={tag}"),
        "--format",
        "{{.Name}}",
    ]) {
        let _ = docker_try(&["network", "rm", &net]);
    }
}

/// Removes what clusters of test processes that no longer run left behind (a test killed before
/// its guard ran).
fn sweep_stale() {
    let mut tags = std::collections::BTreeSet::new();
    for args in [
        vec![
            "ps",
            "-a",
            "--filter",
            "label=io.basho.cluster",
            "--format",
            "{{.Label \"io.basho.cluster\"}}",
        ],
        vec![
            "network",
            "ls",
            "--filter",
            "label=io.basho.cluster",
            "--format",
            "{{.Label \"io.basho.cluster\"}}",
        ],
    ] {
        tags.extend(docker_lines(&args));
    }
    for tag in tags {
        let pid = tag
            .strip_prefix("mh")
            .and_then(|t| t.split_once('x'))
            .and_then(|(p, _)| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            eprintln!("removing the leftovers of cluster {tag}");
            remove_tagged(&tag);
        }
    }
}

/// The repository's workspace templates, as an absolute path without `..`.
fn templates_dir() -> PathBuf {
    crate::federation::templates_dir()
        .canonicalize()
        .expect("templates dir")
}

#[allow(clippy::too_many_arguments)]
fn site_config(
    root: &Path,
    site: &str,
    dataset: &str,
    image: &str,
    issuers: &[IssuerRef],
    ca_file: &Path,
    token: String,
    spec: &Spec,
) -> SiteConfig {
    let base = root.join("sites").join(site);
    let backend = match spec.backend {
        Backend::Docker => BackendConfig::Docker(basho_agent::config::DockerConfig {
            socket: None,
            namespace: None,
            init: None,
        }),
        Backend::Fake => BackendConfig::Fake(basho_agent::config::FakeConfig {
            start_delay_ms: 200,
            failure_rate: 0.0,
            exit_after_ms: None,
        }),
    };
    let metering = basho_agent::meter::MeteringConfig {
        interval_s: spec.metering_interval_s,
    };
    SiteConfig {
        consent: Default::default(),
        site: Ident::parse(site).unwrap(),
        orchestrator: OrchestratorLink {
            url: format!("https://{ORCHESTRATOR_HOST}:{PORT}"),
            token: Some(token),
            token_file: None,
            poll_wait_s: spec.poll_wait_s,
            ca_file: Some(ca_file.to_path_buf()),
            plain_http_on_loopback: false,
        },
        capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
            cpus: 1000,
            memory_mib: 1024 * 1024,
            gpus: 0,
        }),
        backend,
        datasets: vec![CatalogEntry {
            participant_column: None,
            filter_command: Vec::new(),
            id: Ident::parse(dataset).unwrap(),
            path: crate::federation::write_dataset(root, dataset),
            claim: None,
            grant_url: None,
            issuers: issuers.iter().map(|i| i.issuer.clone()).collect(),
            source: None,
        }],
        images: BTreeMap::from([("basho/demo".to_owned(), image.to_owned())]),
        trusted_issuers: issuers.to_vec(),
        paths: basho_agent::config::Paths::under(&base),
        isolation: Isolation::default(),
        metrics: None,
        metering,
        sessions: Default::default(),
        airlock: Default::default(),
        reconcile: Default::default(),
    }
}
