//! Revocation end to end on the real Docker engine: revoking by project, visa `jti`, dataset and
//! subject removes exactly the containers covered, at every site, marks those workspaces
//! `revoked` (and each site confirms), and a revoked visa or project is refused at create
//! afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use basho_core::revocation::SITE_CONFIRMED;
use basho_core::visa::mint::Visa;
use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{audit, token};
use basho_tests::wait_for;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// Creates a workspace from `body` and waits until it runs; returns its id.
async fn running(fed: &Federation, body: &Value) -> String {
    let (status, ws) = fed.api.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "create: {ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    fed.api.wait_state(&id, "running", PATIENCE).await;
    id
}

/// Revokes, checks the affected set is exactly `expected`, and waits until each of them is
/// `revoked` with its container gone.
async fn revoke(fed: &Federation, body: Value, expected: &[&String]) -> Value {
    let (status, v) = fed
        .api
        .call(Method::POST, "/v1/revocations", Some(&body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let got: BTreeSet<&str> = v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = expected.iter().map(|s| s.as_str()).collect();
    assert_eq!(got, want, "{body}");
    for id in expected {
        assert_eq!(fed.api.workspace(id).await["state"], "revoked");
        wait_for(&format!("{id}'s container gone"), PATIENCE, || async {
            fed.containers(id).await.is_empty().then_some(())
        })
        .await;
        wait_for(&format!("{id}'s site confirming"), PATIENCE, || async {
            let w = fed.api.workspace(id).await;
            let message = w["message"].as_str().unwrap_or_default();
            (w["state"] == "revoked" && message.contains(SITE_CONFIRMED)).then_some(())
        })
        .await;
        // The site kept its /work and /results aside, mounted by nothing, and said so in the
        // audit chain.
        let admin = token(fed, Role::Admin, None).await;
        let entries = wait_for(
            &format!("{id}'s confirmation audited"),
            PATIENCE,
            || async {
                let e = audit(fed, &admin, id).await;
                e.iter()
                    .any(|e| e["action"] == "revocation_confirmed")
                    .then_some(e)
            },
        )
        .await;
        let confirmed = entries
            .iter()
            .find(|e| e["action"] == "revocation_confirmed")
            .unwrap_or_else(|| panic!("no revocation_confirmed for {id}"));
        let said = confirmed["detail"]["message"].as_str().unwrap_or_default();
        assert!(said.contains("kept in quarantine at the site"), "{said}");
        let results_root = said
            .rsplit(", ")
            .next()
            .and_then(|p| std::path::Path::new(p).parent())
            .expect("a quarantine path");
        assert!(results_root.ends_with(".quarantine"), "{said}");
        assert!(
            !results_root.parent().unwrap().join(id.as_str()).exists(),
            "{id}'s /results is no longer where a workspace would mount it"
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_stop_exactly_the_covered_containers_at_every_site() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let control = running(&fed, &fed.create_body("P-0001", "alice", &["JGAD000101"])).await;

    // A project ends: its workspaces at all three sites stop.
    let mut ended = Vec::new();
    for d in ["JGAD000101", "JGAD000201", "JGAD000301"] {
        ended.push(running(&fed, &fed.create_body("P-END", "dave", &[d])).await);
    }
    let sites: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        for id in &ended {
            s.insert(fed.api.workspace(id).await["site"].to_string());
        }
        s
    };
    assert_eq!(sites.len(), 3, "one per site: {sites:?}");
    revoke(
        &fed,
        json!({"project": "P-END", "reason": "project-ended"}),
        &ended.iter().collect::<Vec<_>>(),
    )
    .await;
    let (status, v) = fed
        .api
        .create(&fed.create_body("P-END", "dave", &["JGAD000101"]))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "project_revoked");

    // One visa is revoked: its workspace stops and the visa is refused from then on.
    let visa = fed.issuer.sign(&Visa {
        jti: Some(format!("jti-{}", basho_tests::unique("v"))),
        ..Visa::new("alice", "JGAD000102")
    });
    let jti_body = json!({
        "project": "P-0001", "template": "shell", "visas": [visa],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 600,
    });
    let by_jti = running(&fed, &jti_body).await;
    let jti = basho_core::revocation::visa_id(jti_body["visas"][0].as_str().unwrap())
        .unwrap()
        .jti;
    revoke(
        &fed,
        json!({"visa_jti": jti, "reason": "dac-revoked"}),
        &[&by_jti],
    )
    .await;
    let (status, v) = fed.api.create(&jti_body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "visa_revoked");

    // Consent withdrawn for a dataset; then a subject's visas.
    let by_dataset = running(&fed, &fed.create_body("P-0001", "erin", &["JGAD000201"])).await;
    revoke(
        &fed,
        json!({"dataset": "JGAD000201", "reason": "consent-withdrawn"}),
        &[&by_dataset],
    )
    .await;
    let mut bobs = Vec::new();
    for d in ["JGAD000101", "JGAD000301"] {
        bobs.push(running(&fed, &fed.create_body("P-0001", "bob", &[d])).await);
    }
    revoke(
        &fed,
        json!({"subject": "bob", "reason": "security-incident"}),
        &bobs.iter().collect::<Vec<_>>(),
    )
    .await;

    // Nothing else was touched.
    assert_eq!(fed.api.workspace(&control).await["state"], "running");
    assert_eq!(fed.containers(&control).await.len(), 1);
    fed.shutdown().await;
}
