//! An agent and the platform against an orchestrator serving HTTPS with a certificate from a CA
//! made at test time: with the CA configured the site registers and its workspace runs (fake
//! backend, no Docker needed); with another CA, or over plain HTTP, nothing gets through and
//! nothing falls back to plain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::fake::FakeBackend;
use basho_agent::client::{Client as AgentClient, ClientError, TlsPolicy};
use basho_agent::config::{BackendConfig, CatalogEntry, Isolation, OrchestratorLink, SiteConfig};
use basho_cli::client::Client as PlatformClient;
use basho_core::protocol::{Capacity, Registration};
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_core::{CreateWorkspace, Ident};
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::{AgentAuth, Config, Limits, TlsConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ISS: &str = "https://dac.tls-test.invalid";
const SITE: &str = "tls-site";
const SITE_TOKEN: &str = "tls-site-token";
const PLATFORM: &str = "tls-platform-token";

/// A CA (its certificate in `ca.pem`) and a server certificate it signed for `localhost` and
/// 127.0.0.1 (`server.crt`, `server.key`), written under `dir`.
fn pki(dir: &Path) -> (PathBuf, TlsConfig) {
    let (ca_file, tls, _) = basho_tests::pki(dir, "basho test CA", &["localhost", "127.0.0.1"]);
    (ca_file, tls)
}

struct World {
    dir: tempfile::TempDir,
    issuer: Issuer,
    jwks: IssuerRef,
    ca_file: PathBuf,
    port: u16,
    stop: CancellationToken,
}

/// An orchestrator serving HTTPS on 127.0.0.1:0 that knows one site.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, tls) = pki(&dir.path().join("pki"));
    let issuer = Issuer::generate(ISS);
    let jwks = IssuerRef {
        issuer: ISS.into(),
        jwks_file: dir.path().join("dac.jwks.json"),
    };
    std::fs::write(&jwks.jwks_file, issuer.jwks_json()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let config = Config {
        listen,
        data_dir: dir.path().join("orchestrator"),
        database: Some("sqlite::memory:".into()),
        templates_dir: basho_tests::federation::templates_dir(),
        platform_tokens: vec![PLATFORM.into()],
        agents: vec![AgentAuth {
            site: Ident::parse(SITE).unwrap(),
            token: SITE_TOKEN.into(),
        }],
        trusted_issuers: vec![jwks.clone()],
        limits: Limits::default(),
        tls: Some(tls),
        plain_http_on_loopback: false,
        replica: None,
        metrics: Default::default(),
        audit: Default::default(),
        tes: Default::default(),
        federated: Default::default(),
        scheduler: Default::default(),
    };
    let orchestrator = Orchestrator::open(config).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(orchestrator.serve(listener, stop.clone()));
    World {
        dir,
        issuer,
        jwks,
        ca_file,
        port: listen.port(),
        stop,
    }
}

impl World {
    fn site(&self, url: String, ca_file: Option<PathBuf>) -> SiteConfig {
        let base = self.dir.path().join("site");
        let data = base.join("data/JGAD000101");
        std::fs::create_dir_all(&data).unwrap();
        SiteConfig {
            consent: Default::default(),
            site: Ident::parse(SITE).unwrap(),
            orchestrator: OrchestratorLink {
                url,
                token: Some(SITE_TOKEN.into()),
                token_file: None,
                poll_wait_s: 1,
                ca_file,
                plain_http_on_loopback: false,
            },
            capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
                cpus: 8,
                memory_mib: 8192,
                gpus: 0,
            }),
            backend: BackendConfig::Fake(basho_agent::config::FakeConfig {
                start_delay_ms: 0,
                failure_rate: 0.0,
                exit_after_ms: None,
            }),
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
            images: BTreeMap::from([("basho/demo".into(), format!("sha256:{}", "d".repeat(64)))]),
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

    fn platform(&self) -> PlatformClient {
        PlatformClient::with_ca(
            &format!("https://localhost:{}", self.port),
            Some(PLATFORM.into()),
            Some(&self.ca_file),
        )
        .unwrap()
    }

    async fn sites(&self) -> Vec<Value> {
        let answer = self.platform().list_sites().await.unwrap();
        serde_json::from_str::<Vec<Value>>(&answer.body).unwrap()
    }
}

fn registration() -> Registration {
    Registration {
        site: Ident::parse(SITE).unwrap(),
        backend: "fake".into(),
        version: "0".into(),
        datasets: vec![],
        capacity: Capacity::default(),
        images: vec![],
        start_timeout_s: basho_core::protocol::DEFAULT_START_TIMEOUT_S,
        session_key: None,
        ceiling: None,
        capacity_note: None,
        features: Vec::new(),
    }
}

#[tokio::test]
async fn an_agent_trusting_the_ca_registers_and_runs_workspaces_over_https() {
    let w = world().await;
    let config = w.site(
        format!("https://localhost:{}", w.port),
        Some(w.ca_file.clone()),
    );
    assert_eq!(basho_agent::check_config(&config), Vec::<String>::new());
    let fake = Arc::new(FakeBackend::seeded(
        Ident::parse(SITE).unwrap(),
        Duration::ZERO,
        0.0,
        1,
    ));
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(basho_agent::run_with_backend(
        config,
        fake,
        agent_stop.clone(),
    ));

    let platform = w.platform();
    let body = CreateWorkspace {
        project: Ident::parse("P-0001").unwrap(),
        template: Ident::parse("shell").unwrap(),
        visas: vec![w.issuer.mint("alice", "JGAD000101")],
        datasets: None,
        resources: None,
        duration_s: Some(3600),
        site: None,
        max_queue_s: None,
    };
    let mut created: Option<String> = None;
    let mut state = String::new();
    for _ in 0..300 {
        let registered = w.sites().await.iter().any(|s| s["name"] == SITE);
        if registered && created.is_none() {
            let answer = platform.create_workspace(&body, "tls-1").await.unwrap();
            let v: Value = serde_json::from_str(&answer.body).unwrap();
            created = Some(v["id"].as_str().unwrap().to_owned());
        }
        if let Some(id) = &created {
            let answer = platform.get_workspace(id).await.unwrap();
            let v: Value = serde_json::from_str(&answer.body).unwrap();
            state = v["state"].as_str().unwrap_or_default().to_owned();
            if state == "running" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created.is_some(), "the site never registered over HTTPS");
    assert_eq!(state, "running", "the workspace never ran");
    agent_stop.cancel();
    agent.await.unwrap().unwrap();
    w.stop.cancel();
}

#[tokio::test]
async fn another_ca_or_plain_http_gets_nothing_through() {
    let w = world().await;
    let other = pki(&w.dir.path().join("other")).0;
    let https = format!("https://localhost:{}", w.port);

    // The handshake fails on the certificate; the error is a transport error, nothing else.
    let policy = TlsPolicy {
        ca_file: Some(other.clone()),
        plain_http_on_loopback: false,
    };
    let err = AgentClient::new(&https, SITE_TOKEN, &policy)
        .unwrap()
        .register(&registration())
        .await
        .unwrap_err();
    let ClientError::Transport(why) = &err else {
        panic!("not a transport error: {err}");
    };
    assert!(
        why.contains("UnknownIssuer") || why.contains("certificate"),
        "{why}"
    );

    // The bundled web roots do not know the test CA either.
    let err = AgentClient::new(&https, SITE_TOKEN, &TlsPolicy::default())
        .unwrap()
        .register(&registration())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");

    // Plain HTTP to the TLS port, when allowed on loopback, reaches no API either.
    let err = AgentClient::new(
        &format!("http://127.0.0.1:{}", w.port),
        SITE_TOKEN,
        &TlsPolicy::plain_loopback(),
    )
    .unwrap()
    .register(&registration())
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");

    // A whole agent with the wrong CA keeps retrying and never registers.
    let config = w.site(https, Some(other));
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(basho_agent::run_with_backend(
        config,
        Arc::new(FakeBackend::new(
            Ident::parse(SITE).unwrap(),
            Duration::ZERO,
            0.0,
        )),
        agent_stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !agent.is_finished(),
        "the agent gave up instead of retrying"
    );
    assert!(w.sites().await.is_empty(), "{:?}", w.sites().await);
    agent_stop.cancel();
    agent.await.unwrap().unwrap();
    w.stop.cancel();
}

#[tokio::test]
async fn an_agent_refuses_to_start_on_plain_http_to_another_host() {
    let w = world().await;
    let mut config = w.site("http://basho.example.org".into(), None);
    config.orchestrator.plain_http_on_loopback = true;
    let problems = basho_agent::check_config(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("only to a loopback host"),
        "{problems:?}"
    );
    let err = basho_agent::run_with_backend(
        config.clone(),
        Arc::new(FakeBackend::new(
            Ident::parse(SITE).unwrap(),
            Duration::ZERO,
            0.0,
        )),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, basho_agent::Error::Client(ClientError::Url { .. })),
        "{err}"
    );

    // Loopback without the opt-in is refused too.
    config.orchestrator.url = format!("http://127.0.0.1:{}", w.port);
    config.orchestrator.plain_http_on_loopback = false;
    let problems = basho_agent::check_config(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("plain_http_on_loopback = true"),
        "{problems:?}"
    );
    w.stop.cancel();
}
