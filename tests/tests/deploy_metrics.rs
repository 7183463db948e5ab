//! The Grafana dashboard and the Prometheus alert rules under `deploy/` use only metrics that a
//! real orchestrator and a real agent export, and docs/metrics.md lists every metric they export.
//! Both run in this process (the agent on the fake backend), one workspace is created, and both
//! `/metrics` are scraped: a family is known by its `# TYPE` line, which basho writes even for a
//! family with no series yet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::Backend;
use basho_agent::backend::fake::FakeBackend;
use basho_core::Ident;
use basho_core::visa::mint::Issuer;
use basho_tests::api::Api;
use basho_tests::federation::{templates_dir, write_dataset};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ISSUER: &str = "https://dac.test.invalid";
const PLATFORM_TOKEN: &str = "platform-token-deploy";
const AGENT_TOKEN: &str = "agent-token-deploy";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every PromQL expression of a Grafana dashboard: panel targets' `expr` and the template
/// variables' queries.
fn dashboard_exprs(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                dashboard_exprs(x, Some(k), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, key, out)),
        Value::String(s) if matches!(key, Some("expr" | "query" | "definition")) => {
            out.push(s.clone());
        }
        _ => {}
    }
}

/// The `expr:` of every rule, one line or a `|` / `>` block (a line-based reading is enough for
/// a rules file).
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    out
}

/// The `basho_*` metric names an expression uses: identifiers outside quoted strings (so label
/// values and matchers never count).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut ident = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                        break;
                    }
                    ident.push(d);
                    chars.next();
                }
                if ident.starts_with("basho_") {
                    names.insert(ident);
                }
            }
            _ => {}
        }
    }
    names
}

/// The series names a scrape's families stand for, from their `# TYPE` lines: a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_extraction_finds_what_it_should() {
    let e = r#"sum by (site) (rate(basho_placements_total{site=~"basho_not_a_metric"}[5m]))
        * on (instance) group_left (site) basho_agent_info > 0"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        ["basho_agent_info", "basho_placements_total"]
    );
    let yaml = "  - alert: A\n    expr: basho_a > 1\n    for: 5m\n  - alert: B\n    expr: |\n      sum(basho_b)\n        > 0\n    for: 1m\n";
    assert_eq!(alert_exprs(yaml), ["basho_a > 1", "sum(basho_b)\n> 0"]);
    let scrape =
        "# TYPE basho_x counter\nbasho_x_total 1\n# TYPE basho_h histogram\n# TYPE basho_g gauge\n";
    let known = exported(scrape);
    assert!(known.contains("basho_x_total") && !known.contains("basho_x"));
    assert!(known.contains("basho_h_bucket") && known.contains("basho_g"));
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.expect("metrics answer");
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported_and_documented() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/basho.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, None, &mut exprs);
    let alerts_yaml = read("deploy/prometheus/alerts.yml");
    let alerts = alert_exprs(&alerts_yaml);
    for alert in [
        "AgentSilent",
        "QuotaNearlyUsed",
        "QuotaExhausted",
        "WorkspacesUnknown",
        "BackendErrors",
    ] {
        assert!(
            alerts_yaml.contains(&format!("- alert: {alert}\n")),
            "alert {alert} in deploy/prometheus/alerts.yml"
        );
    }
    assert_eq!(alerts.len(), 5, "one expression per alert: {alerts:?}");
    let used: BTreeSet<(String, &str)> = exprs
        .iter()
        .map(|e| (e, "deploy/grafana/basho.json"))
        .chain(alerts.iter().map(|e| (e, "deploy/prometheus/alerts.yml")))
        .flat_map(|(e, file)| metric_names(e).into_iter().map(move |n| (n, file)))
        .collect();
    assert!(
        used.len() > 20,
        "the dashboard and rules name metrics: {used:?}"
    );

    // A real orchestrator and a real agent (fake backend), with one workspace.
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let jwks = dir.path().join("issuer.jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let listen = free_addr();
    let scrape_listen = free_addr();
    let config: basho_orchestrator::config::Config = toml::from_str(&format!(
        r#"
listen = "{listen}"
data_dir = "{data}"
templates_dir = "{templates}"
platform_tokens = ["{PLATFORM_TOKEN}"]
plain_http_on_loopback = true
[[agents]]
site = "tohoku"
token = "{AGENT_TOKEN}"
[[trusted_issuers]]
issuer = "{ISSUER}"
jwks_file = "{jwks}"
[metrics]
listen = "{scrape_listen}"
"#,
        data = dir.path().join("orchestrator").display(),
        templates = templates_dir().display(),
        jwks = jwks.display(),
    ))
    .unwrap();
    let orchestrator = basho_orchestrator::Orchestrator::open(config)
        .await
        .expect("orchestrator opens");
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { orchestrator.serve(listener, stop).await }
    });

    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("state")).unwrap();
    let dataset = write_dataset(dir.path(), "JGAD000101");
    let agent_metrics = free_addr();
    let site_config = basho_agent::config::parse(
        &format!(
            r#"
site = "tohoku"
[orchestrator]
url = "http://{listen}"
token = "{AGENT_TOKEN}"
poll_wait_s = 1
plain_http_on_loopback = true
[capacity]
cpus = 8
memory_mib = 8192
[backend]
kind = "fake"
[[datasets]]
id = "JGAD000101"
path = "{dataset}"
[images]
"basho/demo" = "sha256:{digest}"
[[trusted_issuers]]
issuer = "{ISSUER}"
jwks_file = "{jwks}"
[paths]
state_dir = "{site}/state"
work_root = "{site}/work"
results_root = "{site}/results"
[metrics]
listen = "{agent_metrics}"
"#,
            dataset = dataset.display(),
            digest = "d".repeat(64),
            jwks = jwks.display(),
            site = site.display(),
        ),
        Path::new("site.toml"),
    )
    .unwrap();
    let fake: Arc<dyn Backend> = Arc::new(FakeBackend::new(
        Ident::parse("tohoku").unwrap(),
        Duration::ZERO,
        0.0,
    ));
    let agent = tokio::spawn(basho_agent::run_with_backend(
        site_config,
        fake,
        stop.clone(),
    ));

    let api = Api::new(format!("http://{listen}"), PLATFORM_TOKEN);
    let body = json!({
        "project": "P-0001",
        "template": "shell",
        "visas": [issuer.mint("alice", "JGAD000101")],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0},
        "duration_s": 600,
    });
    let (status, ws) = basho_tests::wait_for(
        "the agent to register and take a workspace",
        Duration::from_secs(30),
        || async {
            let (status, ws) = api.create(&body).await;
            (status != reqwest::StatusCode::CONFLICT).then_some((status, ws))
        },
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{ws}");
    let id = ws["id"].as_str().unwrap();
    api.wait_state(id, "running", Duration::from_secs(30)).await;

    // The API's /metrics wants a usage reader's token; the scrape listener wants none.
    let anonymous = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let with_token = reqwest::Client::new()
        .get(format!("http://{listen}/metrics"))
        .bearer_auth(PLATFORM_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    assert!(
        with_token
            .text()
            .await
            .unwrap()
            .contains("basho_workspace_create_seconds_count 1")
    );
    let orchestrator_text = scrape(&format!("http://{scrape_listen}/metrics")).await;
    let agent_text = basho_tests::wait_for(
        "the agent's metrics to see the workspace running",
        Duration::from_secs(30),
        || async {
            let text = scrape(&format!("http://{agent_metrics}/metrics")).await;
            text.contains("basho_agent_workspaces{state=\"running\"} 1")
                .then_some(text)
        },
    )
    .await;
    assert!(
        orchestrator_text.contains("basho_workspaces{site=\"tohoku\",state=\"running\"} 1"),
        "{orchestrator_text}"
    );
    assert!(
        orchestrator_text.contains("basho_workspace_create_seconds_count 1"),
        "{orchestrator_text}"
    );
    for text in [&orchestrator_text, &agent_text] {
        assert!(!text.contains(id), "no workspace id as a label: {text}");
    }

    let known: BTreeSet<String> = exported(&orchestrator_text)
        .union(&exported(&agent_text))
        .cloned()
        .collect();
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by the orchestrator or the agent: {missing:?}\nexported: {known:?}"
    );

    // And the reference lists every family either exports.
    let docs = read("docs/metrics.md");
    let undocumented: Vec<&String> = known
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !docs.contains(&format!("`{family}`")) && !docs.contains(&format!("`{name}`"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "missing from docs/metrics.md: {undocumented:?}"
    );

    stop.cancel();
    agent.await.unwrap().expect("agent ran without error");
    serving.await.unwrap().expect("orchestrator served");
}
