//! A federation for one test: an orchestrator on a SQLite file and three Docker sites (`tohoku`,
//! `ncbn`, `bbj`, each name suffixed with a per-test tag so tests running side by side never see
//! each other's containers), all in this process over real HTTP on loopback, with an issuer the
//! test generates itself. Orchestrator and agents can be stopped and started independently.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use basho_agent::config::{BackendConfig, CatalogEntry, Isolation, OrchestratorLink, SiteConfig};
use basho_core::Ident;
use basho_core::protocol::Capacity;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::config::{AgentAuth, Config, Limits};
use bollard::Docker;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::Api;

/// The demo federation's sites and the datasets each holds (docs/design.md section 5).
pub const SITES: [(&str, &[&str]); 3] = [
    ("tohoku", &["JGAD000101", "JGAD000102"]),
    ("ncbn", &["JGAD000201"]),
    ("bbj", &["JGAD000301"]),
];

/// The issuer every federation trusts.
pub const ISSUER: &str = "https://dac.test.invalid";
/// The break-glass approver every site of a federation trusts.
pub const APPROVER: &str = "site-approver";

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stopped within 30 s")
            .expect("task did not panic");
    }
}

/// One test's federation.
pub struct Federation {
    /// Everything on disk lives here.
    pub dir: tempfile::TempDir,
    /// The platform's API client.
    pub api: Api,
    /// The issuer the test generated; its JWKS is trusted by the orchestrator and every site.
    pub issuer: Issuer,
    /// The identity provider every site trusts for sessions: `basho dev`'s, kept under
    /// `<dir>/idp` so `basho dev id-token --data-dir <dir>/idp` mints its tokens.
    pub identity: Issuer,
    /// The key that signs break-glass approvals every site trusts.
    pub approver: Issuer,
    /// The Docker engine.
    pub docker: Docker,
    /// The demo image ID.
    pub image: String,
    tag: String,
    listen: SocketAddr,
    config: Config,
    sites: BTreeMap<String, SiteConfig>,
    orchestrator: Option<Running>,
    agents: BTreeMap<String, Running>,
}

impl Federation {
    /// Starts the orchestrator and all three agents, or `None` when the machine has no Docker.
    pub async fn start() -> Option<Federation> {
        Self::start_with(|_, _| {}).await
    }

    /// Like [`start`](Self::start), with each site's config passed through `customize` (given the
    /// demo site's short name) first: to put a site on another backend, say.
    pub async fn start_with(customize: impl FnMut(&str, &mut SiteConfig)) -> Option<Federation> {
        Self::start_custom(customize, |_| {}).await
    }

    /// Like [`start_with`](Self::start_with), with the orchestrator's config passed through
    /// `orchestrator` too (other templates, limits).
    pub async fn start_custom(
        mut customize: impl FnMut(&str, &mut SiteConfig),
        orchestrator: impl FnOnce(&mut Config),
    ) -> Option<Federation> {
        let docker = crate::docker().await?;
        let image = basho_cli::dev::image::ensure_demo_image(&docker)
            .await
            .expect("demo image");
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = crate::unique("t");
        let issuer = Issuer::generate(ISSUER).with_rsa();
        let jwks_file = dir.path().join("issuer.jwks.json");
        std::fs::write(&jwks_file, issuer.jwks_json()).unwrap();
        let issuers = vec![IssuerRef {
            issuer: ISSUER.into(),
            jwks_file,
        }];
        let idp = basho_cli::dev::issuer::IssuerFiles::under(&dir.path().join("idp"));
        std::fs::create_dir_all(dir.path().join("idp/issuer")).unwrap();
        let identity = idp.load_or_create().expect("identity provider key");
        let approver = Issuer::generate(APPROVER);
        let approver_jwks = dir.path().join("approver.jwks.json");
        std::fs::write(&approver_jwks, approver.jwks_json()).unwrap();
        let sessions = basho_agent::session::SessionsConfig {
            identity_issuers: vec![idp.identity_issuer()],
            approvers: vec![IssuerRef {
                issuer: APPROVER.into(),
                jwks_file: approver_jwks,
            }],
            ..Default::default()
        };

        // Bind once to learn a free port, then hand the address to the orchestrator.
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let token = format!("platform-{tag}");
        let mut agents = Vec::new();
        let mut sites = BTreeMap::new();
        for (name, datasets) in SITES {
            let site = format!("{name}-{tag}");
            let agent_token = format!("agent-{site}");
            agents.push(AgentAuth {
                site: Ident::parse(&site).unwrap(),
                token: agent_token.clone(),
            });
            let mut cfg = site_config(
                dir.path(),
                &site,
                datasets,
                &image,
                &issuers,
                listen,
                agent_token,
            );
            cfg.sessions = sessions.clone();
            customize(name, &mut cfg);
            sites.insert(name.to_owned(), cfg);
        }
        let mut config = Config {
            listen,
            data_dir: dir.path().join("orchestrator"),
            database: None,
            templates_dir: templates_dir(),
            platform_tokens: vec![token.clone()],
            agents,
            trusted_issuers: issuers,
            limits: Limits {
                agent_silent_s: 10,
                ..Limits::default()
            },
            tls: None,
            plain_http_on_loopback: true,
            replica: None,
            metrics: Default::default(),
            audit: Default::default(),
            tes: Default::default(),
            federated: Default::default(),
            scheduler: Default::default(),
        };
        orchestrator(&mut config);
        let mut fed = Federation {
            api: Api::new(format!("http://{listen}"), token),
            dir,
            issuer,
            identity,
            approver,
            docker,
            image,
            tag,
            listen,
            config,
            sites,
            orchestrator: None,
            agents: BTreeMap::new(),
        };
        fed.start_orchestrator().await;
        for name in SITES.map(|(n, _)| n) {
            fed.start_agent(name).await;
        }
        for name in SITES.map(|(n, _)| n) {
            fed.wait_registered(name).await;
        }
        Some(fed)
    }

    /// The command (`BASHO_ID_TOKEN_COMMAND`) that makes `subject`'s identity tokens.
    pub fn id_token_command(&self, subject: &str) -> String {
        format!(
            "{} dev id-token --data-dir {} --subject {subject}",
            crate::binary("basho").display(),
            self.dir.path().join("idp").display()
        )
    }

    /// A proof of `subject` for sessions in `workspace` sealed with the key whose seed is
    /// `seed`, as `basho` would send it.
    pub fn id_proof(&self, subject: &str, workspace: &str, seed: &str) -> basho_core::proof::Proof {
        let nonce = basho_core::proof::session_nonce(workspace, seed);
        let token = basho_cli::dev::issuer::id_token(&self.identity, subject, &nonce);
        basho_core::proof::Proof::IdToken {
            token,
            seed: seed.to_owned(),
        }
    }

    /// Where `basho` pins the federation's site keys.
    pub fn pins(&self) -> basho_cli::pins::Pins {
        basho_cli::pins::Pins::at(self.dir.path().join("known_sites"))
    }

    /// A session sealed for `workspace`'s site, opened as `basho` with `token` would open it,
    /// with `subject`'s identity token as its proof.
    pub async fn session(
        &self,
        token: &str,
        subject: &str,
        workspace: &str,
        spec: &basho_core::tunnel::SessionSpec,
    ) -> Result<basho_cli::session::Opened, basho_cli::error::Error> {
        let client = self.client(token);
        let sealing =
            basho_cli::session::Sealing::prepare(&client, workspace, &self.pins()).await?;
        let mut spec = spec.clone();
        spec.proof = Some(self.id_proof(subject, workspace, &sealing.seed()));
        sealing.open(&client, workspace, &spec).await
    }

    /// `basho`'s connection settings for this federation with `token`.
    pub fn client(&self, token: &str) -> basho_cli::args::ClientArgs {
        basho_cli::args::ClientArgs {
            addr: self.api.base.clone(),
            token: Some(token.to_owned()),
            ca_file: None,
            output: basho_cli::output::Output::Table,
        }
    }

    /// A file holding a break-glass approval letting `who` into `workspace` for `reason`.
    pub fn approval(&self, who: &str, workspace: &str, reason: &str) -> PathBuf {
        let now = chrono::Utc::now().timestamp();
        let claims =
            basho_core::proof::approval_claims(APPROVER, who, workspace, reason, now, 3600);
        let jwt = self
            .approver
            .sign_claims(&claims, Some(basho_core::proof::APPROVAL_TYP));
        let path = self
            .dir
            .path()
            .join(format!("approval-{}", crate::unique("a")));
        std::fs::write(&path, jwt).unwrap();
        path
    }

    /// The full site name of a demo site (`tohoku` → `tohoku-<tag>`).
    pub fn site(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    /// The site config of demo site `name`, to inspect or run elsewhere.
    pub fn site_config(&self, name: &str) -> SiteConfig {
        self.sites[name].clone()
    }

    /// The orchestrator's config, to inspect or reuse.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts (or restarts) the orchestrator on the same address and data dir.
    pub async fn start_orchestrator(&mut self) {
        assert!(self.orchestrator.is_none(), "orchestrator already running");
        let orch = basho_orchestrator::Orchestrator::open(self.config.clone())
            .await
            .expect("orchestrator opens");
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .expect("bind api");
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            orch.serve(listener, c).await.expect("orchestrator serves");
        });
        self.orchestrator = Some(Running { cancel, task });
    }

    /// Stops the orchestrator; agents keep running and retry.
    pub async fn stop_orchestrator(&mut self) {
        self.orchestrator
            .take()
            .expect("orchestrator running")
            .stop()
            .await;
    }

    /// Starts (or restarts) the agent of demo site `name`.
    pub async fn start_agent(&mut self, name: &str) {
        assert!(
            !self.agents.contains_key(name),
            "agent {name} already running"
        );
        let cfg = self.sites[name].clone();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            basho_agent::run(cfg, c).await.expect("agent runs");
        });
        self.agents
            .insert(name.to_owned(), Running { cancel, task });
    }

    /// Stops the agent of demo site `name`; its workspaces keep running.
    pub async fn stop_agent(&mut self, name: &str) {
        self.agents
            .remove(name)
            .expect("agent running")
            .stop()
            .await;
    }

    /// Waits until the site appears in `GET /v1/sites`.
    pub async fn wait_registered(&self, name: &str) {
        let site = self.site(name);
        crate::wait_for(
            &format!("site {site} registered"),
            Duration::from_secs(30),
            || async {
                let (s, v) = self.api.call(reqwest::Method::GET, "/v1/sites", None).await;
                (s.is_success() && v.as_array()?.iter().any(|x| x["name"] == site.as_str()))
                    .then_some(())
            },
        )
        .await
    }

    /// A create body for `datasets`, with one fresh visa per dataset for `sub`.
    pub fn create_body(&self, project: &str, sub: &str, datasets: &[&str]) -> Value {
        let visas: Vec<String> = datasets.iter().map(|d| self.issuer.mint(sub, d)).collect();
        json!({
            "project": project,
            "template": "shell",
            "visas": visas,
            "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0},
            "duration_s": 600,
        })
    }

    /// Creates a workspace and waits until it runs; returns its JSON.
    pub async fn create_running(&self, project: &str, datasets: &[&str]) -> Value {
        self.create_and_wait(&self.create_body(project, "alice", datasets))
            .await
    }

    /// Creates the workspace `body` asks for, asserting 201, and waits until it runs.
    pub async fn create_and_wait(&self, body: &Value) -> Value {
        let (status, ws) = self.api.create(body).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "create: {ws}");
        let id = ws["id"].as_str().unwrap().to_owned();
        self.api
            .wait_state(&id, "running", Duration::from_secs(60))
            .await
    }

    /// Records a consent withdrawal of `participants` from `dataset` at site `name`, as
    /// `basho-agent withdraw` does, and waits for its agent's answer.
    pub async fn withdraw(
        &self,
        name: &str,
        dataset: &str,
        participants: &[&str],
    ) -> basho_agent::consent::desk::Answer {
        let config = self.site_config(name);
        let spool = basho_agent::consent::desk::Spool::new(&config.releases_dir());
        let ids: Vec<String> = participants.iter().map(|p| (*p).to_owned()).collect();
        let request = spool
            .record(
                &basho_agent::catalog::Catalog::from_config(&config),
                &Ident::parse(dataset).unwrap(),
                &ids,
                "consent withdrawn",
                chrono::Utc::now(),
            )
            .unwrap();
        crate::wait_for("the agent's answer", Duration::from_secs(30), || async {
            spool.answer(&request.id)
        })
        .await
    }

    /// Containers of workspace `id` on the engine.
    pub async fn containers(&self, id: &str) -> Vec<String> {
        crate::containers_labelled(&self.docker, basho_core::LABEL_WORKSPACE, id).await
    }

    /// Stops everything and removes the federation's containers.
    pub async fn shutdown(mut self) {
        for (_, a) in std::mem::take(&mut self.agents) {
            a.stop().await;
        }
        if let Some(o) = self.orchestrator.take() {
            o.stop().await;
        }
        for name in SITES.map(|(n, _)| n) {
            crate::remove_labelled(&self.docker, basho_core::LABEL_SITE, &self.site(name)).await;
        }
    }
}

impl Drop for Federation {
    /// Containers outlive a panicking test otherwise; remove them with the CLI (no runtime here).
    fn drop(&mut self) {
        for name in SITES.map(|(n, _)| n) {
            let filter = format!("label={}={}", basho_core::LABEL_SITE, self.site(name));
            if let Ok(out) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids = String::from_utf8_lossy(&out.stdout);
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
        }
    }
}

/// The repository's workspace templates.
pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces")
}

/// Writes a small synthetic dataset readable by the workspace user.
pub fn write_dataset(root: &Path, id: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("datasets").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("record_id,age_band,sex,prefecture,icd10\n");
    for i in 0..5 {
        csv.push_str(&format!("{id}-{i},40-49,F,Miyagi,E11\n"));
    }
    std::fs::write(dir.join("records.csv"), csv).unwrap();
    std::fs::set_permissions(
        dir.join("records.csv"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn site_config(
    root: &Path,
    site: &str,
    datasets: &[&str],
    image: &str,
    issuers: &[IssuerRef],
    listen: SocketAddr,
    token: String,
) -> SiteConfig {
    let base = root.join("sites").join(site);
    SiteConfig {
        consent: Default::default(),
        site: Ident::parse(site).unwrap(),
        orchestrator: OrchestratorLink {
            url: format!("http://{listen}"),
            token: Some(token),
            token_file: None,
            poll_wait_s: 5,
            ca_file: None,
            plain_http_on_loopback: true,
        },
        capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
            cpus: 8,
            memory_mib: 8192,
            gpus: 0,
        }),
        backend: BackendConfig::Docker(basho_agent::config::DockerConfig {
            socket: None,
            namespace: None,
            // Every workspace runs under basho-init, as on a site that sets it.
            init: basho_test_util::init_binary(),
        }),
        datasets: datasets
            .iter()
            .map(|d| CatalogEntry {
                // One row per participant, as in `basho dev`: a withdrawal names record IDs.
                participant_column: Some("record_id".into()),
                filter_command: Vec::new(),
                id: Ident::parse(d).unwrap(),
                path: write_dataset(root, d),
                claim: None,
                grant_url: None,
                issuers: issuers.iter().map(|i| i.issuer.clone()).collect(),
                source: None,
            })
            .collect(),
        images: BTreeMap::from([("basho/demo".to_owned(), image.to_owned())]),
        trusted_issuers: issuers.to_vec(),
        paths: basho_agent::config::Paths::under(&base),
        isolation: Isolation::default(),
        metrics: None,
        metering: Default::default(),
        sessions: Default::default(),
        airlock: Default::default(),
        reconcile: Default::default(),
    }
}
