//! An agent with `[metrics]` serves Prometheus `/metrics`: backend operations, reconcile passes,
//! workspaces by state, orchestrator errors and the last sync, against a stub orchestrator and
//! the fake backend. Without `[metrics]` nothing listens; a taken port stops the agent at start.

use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::Backend;
use basho_agent::backend::fake::FakeBackend;
use basho_agent::config::SiteConfig;
use basho_core::protocol::Assignment;
use basho_core::visa::mint::Issuer;
use basho_core::{Ident, Resources};
use basho_test_util::stub::StubOrchestrator;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "agent-token-sim";
const ISS: &str = "https://dac.test";
const PATIENCE: Duration = Duration::from_secs(20);

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

/// A stub that refuses the first registration (so an orchestrator error is counted) and desires
/// `workspaces`.
async fn stub(workspaces: &[Assignment]) -> StubOrchestrator {
    let stub = StubOrchestrator::start(TOKEN).await;
    stub.refuse_registrations(1);
    stub.set_desired(workspaces);
    stub
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn site_config(dir: &std::path::Path, url: &str, metrics: Option<u16>) -> SiteConfig {
    let data = dir.join("data/JGAD000101");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let metrics = metrics
        .map(|port| format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"))
        .unwrap_or_default();
    let toml = format!(
        r#"
site = "sim"
[orchestrator]
url = "{url}"
token = "{TOKEN}"
poll_wait_s = 1
plain_http_on_loopback = true
[capacity]
cpus = 8
memory_mib = 8192
[backend]
kind = "fake"
[[datasets]]
id = "JGAD000101"
path = "{data}"
[images]
"basho/demo" = "sha256:{digest}"
[[trusted_issuers]]
issuer = "{ISS}"
jwks_file = "{jwks}"
[paths]
state_dir = "{dir}/state"
work_root = "{dir}/work"
results_root = "{dir}/results"
{metrics}"#,
        data = data.display(),
        digest = "d".repeat(64),
        jwks = dir.join("dac.jwks.json").display(),
        dir = dir.display(),
    );
    basho_agent::config::parse(&toml, std::path::Path::new("site.toml")).unwrap()
}

fn assignment(issuer: &Issuer) -> Assignment {
    Assignment {
        id: "ws-metrics-1".into(),
        project: id("P-0001"),
        owner: "alice".into(),
        template: id("shell"),
        image: "basho/demo".into(),
        command: vec!["sleep".into(), "infinity".into()],
        datasets: vec![id("JGAD000101")],
        resources: Resources {
            cpus: 1,
            memory_mib: 256,
            gpus: 0,
        },
        expires_at: Utc::now() + chrono::Duration::hours(1),
        visas: vec![issuer.mint("alice", "JGAD000101")],
        launch: None,
    }
}

/// The value of the first series named exactly `series` (labels included).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn scrape(port: u16) -> Option<String> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    assert_eq!(r.status(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    r.text().await.ok()
}

#[tokio::test]
async fn an_agent_with_metrics_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISS);
    std::fs::write(dir.path().join("dac.jwks.json"), issuer.jwks_json()).unwrap();
    let orch = stub(&[assignment(&issuer)]).await;
    let port = free_port();
    let config = site_config(dir.path(), orch.url(), Some(port));
    let fake = Arc::new(FakeBackend::new(id("sim"), Duration::ZERO, 0.0));
    let backend: Arc<dyn Backend> = fake.clone();
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(basho_agent::run_with_backend(
        config,
        backend,
        cancel.clone(),
    ));

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    let text = loop {
        if let Some(text) = scrape(port).await {
            if value(&text, "basho_agent_workspaces{state=\"running\"}") == Some(1.0)
                && value(&text, "basho_agent_last_sync_timestamp_seconds").unwrap_or(0.0) > 0.0
            {
                break text;
            }
            last = Some(text);
        }
        if agent.is_finished() {
            panic!("the agent stopped: {:?}", agent.await);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not report a running workspace on /metrics: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(fake.inspect("ws-metrics-1").await.unwrap().is_some());

    let op = |op: &str| {
        value(
            &text,
            &format!("basho_agent_backend_operation_seconds_count{{backend=\"fake\",op=\"{op}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(op("launch") >= 1.0, "{text}");
    assert!(op("list_managed") >= 1.0, "{text}");
    assert!(
        value(&text, "basho_agent_reconcile_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "basho_agent_orchestrator_errors_total{kind=\"status\"}"
        ),
        Some(1.0),
        "the refused first registration: {text}"
    );
    let synced = value(&text, "basho_agent_last_sync_timestamp_seconds").unwrap();
    let now = Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&synced),
        "{synced} vs {now}"
    );
    let info = format!(
        "basho_agent_info{{site=\"sim\",backend=\"fake\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &info), Some(1.0), "{text}");
    for family in [
        "# TYPE basho_agent_backend_errors counter",
        "# TYPE basho_agent_usage_journal_pending gauge",
    ] {
        assert!(text.contains(family), "{family} in {text}");
    }
    assert!(!text.contains("ws-metrics-1"), "no workspace id as a label");

    cancel.cancel();
    tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("agent stops promptly")
        .unwrap()
        .unwrap();
    assert!(
        scrape(port).await.is_none(),
        "/metrics stops with the agent"
    );
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_agent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISS);
    std::fs::write(dir.path().join("dac.jwks.json"), issuer.jwks_json()).unwrap();
    let orch = stub(&[]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = site_config(dir.path(), orch.url(), Some(port));
    let fake: Arc<dyn Backend> = Arc::new(FakeBackend::new(id("sim"), Duration::ZERO, 0.0));
    let run = basho_agent::run_with_backend(config, fake, CancellationToken::new());
    let err = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("refused at once")
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("metrics.listen") && message.contains(&port.to_string()),
        "{message}"
    );
}
