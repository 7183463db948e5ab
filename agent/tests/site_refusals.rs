//! The site is sovereign: an orchestrator with a bug, or in an attacker's hands, serves desired
//! states that no DAC approved, and the agent must refuse each assignment itself. A stub
//! orchestrator (axum on 127.0.0.1:0) serves the hostile assignments, and a deny-list of
//! revocations some of them fall under, next to one honest control;
//! the fake backend must launch the control and nothing else, and every refusal must come back
//! as a `failed` observation that says why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::Backend;
use basho_agent::backend::fake::FakeBackend;
use basho_agent::config::SiteConfig;
use basho_core::visa::mint::{Issuer, Visa};
use basho_core::{Ident, State};
use basho_test_util::stub::StubOrchestrator;
use chrono::Utc;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "agent-token-hostile";
const ISS: &str = "https://dac.site-refusals.test";
/// A second issuer the site trusts, bound to JGAD000102 only.
const OTHER_ISS: &str = "https://other-dac.site-refusals.test";
const SITE: &str = "sovereign";
const PATIENCE: Duration = Duration::from_secs(20);

// ---- the site ----

/// A site config built through serde, so it takes whatever defaults the config has; a plain
/// `http://` link to loopback is allowed where the config knows that switch.
fn site_config(dir: &std::path::Path, url: &str, issuer: &Issuer, other: &Issuer) -> SiteConfig {
    let jwks = dir.join("dac.jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let other_jwks = dir.join("other-dac.jwks.json");
    std::fs::write(&other_jwks, other.jwks_json()).unwrap();
    let mut datasets = Vec::new();
    for (d, iss) in [("JGAD000101", ISS), ("JGAD000102", OTHER_ISS)] {
        let path = dir.join("data").join(d);
        std::fs::create_dir_all(&path).unwrap();
        datasets.push(json!({"id": d, "path": path, "issuers": [iss]}));
    }
    let v = json!({
        "site": SITE,
        "orchestrator": {"url": url, "token": TOKEN, "poll_wait_s": 1},
        "capacity": {"cpus": 8, "memory_mib": 8192, "gpus": 0},
        "backend": {"kind": "fake"},
        "datasets": datasets,
        "images": {"basho/demo": format!("sha256:{}", "d".repeat(64))},
        "trusted_issuers": [{"issuer": ISS, "jwks_file": jwks},
            {"issuer": OTHER_ISS, "jwks_file": other_jwks}],
        "paths": {"state_dir": dir.join("state"), "work_root": dir.join("work"),
            "results_root": dir.join("results")},
    });
    let config: SiteConfig = serde_json::from_value(v).expect("site config");
    let mut round = serde_json::to_value(&config).unwrap();
    if round["orchestrator"]
        .get("plain_http_on_loopback")
        .is_some()
    {
        round["orchestrator"]["plain_http_on_loopback"] = json!(true);
    }
    let config: SiteConfig = serde_json::from_value(round).unwrap();
    assert_eq!(basho_agent::check_config(&config), Vec::<String>::new());
    config
}

/// An assignment as the orchestrator would send it, for `alice`, granting what `visas` grant.
fn assignment(id: &str, datasets: &[&str], visas: Vec<String>) -> Value {
    json!({
        "id": id,
        "project": "P-0001",
        "owner": "alice",
        "template": "shell",
        "image": "basho/demo",
        "command": ["sleep", "infinity"],
        "datasets": datasets,
        "resources": {"cpus": 1, "memory_mib": 256, "gpus": 0},
        "expires_at": Utc::now() + chrono::Duration::hours(1),
        "visas": visas,
    })
}

/// One hostile assignment and a word its `failed` message must contain.
struct Case {
    assignment: Value,
    reason: &'static str,
}

fn cases(issuer: &Issuer, other: &Issuer) -> Vec<Case> {
    let good = |d: &str| issuer.mint("alice", d);
    let bent = |f: &dyn Fn(&mut Visa)| {
        let mut v = Visa::new("alice", "JGAD000101");
        f(&mut v);
        issuer.sign(&v)
    };
    let mut out = Vec::new();
    let mut case = |a: Value, reason: &'static str| {
        out.push(Case {
            assignment: a,
            reason,
        })
    };
    case(
        assignment(
            "ws-dataset-without-visa",
            &["JGAD000101", "JGAD000102"],
            vec![good("JGAD000101")],
        ),
        "no visa grants dataset JGAD000102",
    );
    case(
        assignment("ws-no-visa", &["JGAD000101"], vec![]),
        "carries no visa",
    );
    // Trusted by the site, but not for this dataset.
    case(
        assignment(
            "ws-issuer-not-bound",
            &["JGAD000101"],
            vec![other.mint("alice", "JGAD000101")],
        ),
        "no visa grants dataset JGAD000101",
    );
    case(
        assignment(
            "ws-forged-visa",
            &["JGAD000101"],
            vec![Issuer::generate(ISS).mint("alice", "JGAD000101")],
        ),
        "signature",
    );
    let whole = good("JGAD000101");
    let parts: Vec<&str> = whole.split('.').collect();
    case(
        assignment(
            "ws-unsigned-visa",
            &["JGAD000101"],
            vec![format!("{}.{}.", parts[0], parts[1])],
        ),
        "refused by this site",
    );
    case(
        assignment(
            "ws-untrusted-issuer",
            &["JGAD000101"],
            vec![Issuer::generate("https://evil.example").mint("alice", "JGAD000101")],
        ),
        "not trusted",
    );
    case(
        assignment(
            "ws-expired-visa",
            &["JGAD000101"],
            vec![bent(&|v| v.exp_in = -30)],
        ),
        "expired",
    );
    case(
        assignment(
            "ws-conditional-visa",
            &["JGAD000101"],
            vec![bent(&|v| v.conditions = true)],
        ),
        "conditions",
    );
    case(
        assignment(
            "ws-other-subject",
            &["JGAD000101"],
            vec![issuer.mint("mallory", "JGAD000101")],
        ),
        "mallory",
    );
    let mut image = assignment(
        "ws-image-off-list",
        &["JGAD000101"],
        vec![good("JGAD000101")],
    );
    image["image"] = json!("evil/miner");
    case(image, "allow-list");
    for (id, trick) in [
        ("ws-image-dotdot", "../basho/demo"),
        ("ws-image-suffix", "basho/demo/../../evil"),
        ("ws-image-digest", "basho/demo@sha256:0000"),
        ("ws-image-nul", "basho/demo\0"),
        ("ws-image-pinned-ref", &format!("sha256:{}", "d".repeat(64))),
    ] {
        let mut a = assignment(id, &["JGAD000101"], vec![good("JGAD000101")]);
        a["image"] = json!(trick);
        case(a, "allow-list");
    }
    case(
        assignment(
            "ws-dataset-not-held",
            &["JGAD000999"],
            vec![good("JGAD000999")],
        ),
        "JGAD000999",
    );
    case(
        assignment("../../etc", &["JGAD000101"], vec![good("JGAD000101")]),
        "not a plain identifier",
    );
    // Covered by the deny-list the desired state carries (see `revocations`).
    let revoked_jti = bent(&|v| v.jti = Some(REVOKED_JTI.into()));
    case(
        assignment("ws-revoked-jti", &["JGAD000101"], vec![revoked_jti]),
        "revoked",
    );
    let mut project = assignment(
        "ws-revoked-project",
        &["JGAD000101"],
        vec![good("JGAD000101")],
    );
    project["project"] = json!(REVOKED_PROJECT);
    case(project, "revoked");
    let mut subject = assignment(
        "ws-revoked-subject",
        &["JGAD000101"],
        vec![issuer.mint(REVOKED_SUBJECT, "JGAD000101")],
    );
    subject["owner"] = json!(REVOKED_SUBJECT);
    case(subject, "revoked");
    out
}

const REVOKED_JTI: &str = "jti-revoked-by-the-dac";
const REVOKED_PROJECT: &str = "P-REVOKED";
const REVOKED_SUBJECT: &str = "bob";

/// The deny-list served with the desired state: a visa, a project and a subject, none of which
/// covers the control.
fn revocations() -> Vec<Value> {
    let at = Utc::now();
    vec![
        json!({"seq": 1, "visa_jti": REVOKED_JTI, "reason": "dac-revoked", "at": at}),
        json!({"seq": 2, "project": REVOKED_PROJECT, "reason": "project-ended", "at": at}),
        json!({"seq": 3, "subject": REVOKED_SUBJECT, "reason": "consent-withdrawn", "at": at}),
    ]
}

#[tokio::test]
async fn refuses_every_assignment_no_dac_approved() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISS);
    let other = Issuer::generate(OTHER_ISS);
    let config = site_config(dir.path(), orch.url(), &issuer, &other);
    let fake = Arc::new(FakeBackend::seeded(
        Ident::parse(SITE).unwrap(),
        Duration::ZERO,
        0.0,
        1,
    ));
    let cancel = CancellationToken::new();
    let backend: Arc<dyn Backend> = fake.clone();
    let agent = tokio::spawn(basho_agent::run_with_backend(
        config,
        backend,
        cancel.clone(),
    ));

    let hostile = cases(&issuer, &other);
    let control = assignment(
        "ws-control",
        &["JGAD000101", "JGAD000102"],
        vec![
            issuer.mint("alice", "JGAD000101"),
            other.mint("alice", "JGAD000102"),
        ],
    );
    let mut desired: Vec<Value> = hostile.iter().map(|c| c.assignment.clone()).collect();
    desired.push(control);
    orch.set_revocations(&revocations());
    orch.set_desired(&desired);

    // The control proves the site launches what is approved; every other one must be reported.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let control_running = orch
            .last("ws-control")
            .is_some_and(|o| o.state == State::Running);
        let all_reported = hostile
            .iter()
            .all(|c| orch.last(c.assignment["id"].as_str().unwrap()).is_some());
        if control_running && all_reported {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: control running {control_running}, all refusals reported {all_reported}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut refused = BTreeMap::new();
    for c in &hostile {
        let id = c.assignment["id"].as_str().unwrap();
        let o = orch.last(id).unwrap();
        assert_eq!(o.state, State::Failed, "{id}: {o:?}");
        let message = o.message.unwrap_or_default();
        assert!(
            message.contains(c.reason),
            "{id}: the reason names {:?}: {message}",
            c.reason
        );
        assert!(fake.spec(id).is_none(), "{id} was launched");
        assert!(fake.inspect(id).await.unwrap().is_none(), "{id} exists");
        refused.insert(id.to_owned(), message);
    }
    assert_eq!(fake.launch_count(), 1, "only the control was launched");
    let spec = fake.spec("ws-control").unwrap();
    assert_eq!(spec.datasets.len(), 2);

    // A refusal is final: later polls of the same desired state launch nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.launch_count(), 1);
    println!(
        "site refusals: {} hostile assignments, {} refused",
        hostile.len(),
        refused.len()
    );

    cancel.cancel();
    tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("agent stops")
        .expect("agent did not panic")
        .expect("agent ran without error");
}
