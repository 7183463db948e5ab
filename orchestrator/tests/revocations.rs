//! `POST /v1/revocations`: each selector ends the workspaces it covers, later creates it covers
//! are refused, and every agent's desired state carries the list.

mod common;

use axum::http::{Method, StatusCode};
use basho_core::visa::mint::Visa;
use common::*;
use serde_json::{Value, json};

async fn revoke(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/v1/revocations", PLATFORM, Some(body))
        .await
}

/// Creates a workspace and answers its id.
async fn created(h: &Harness, body: Value) -> String {
    let (status, w) = h.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    w["id"].as_str().unwrap().to_owned()
}

fn affected(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_revoked_jti_ends_its_workspace_and_is_refused_forever() {
    let h = Harness::new().await;
    h.register_demo().await;
    let visa = h.issuer.sign(&Visa {
        jti: Some("visa-7".into()),
        ..Visa::new("r-1", "JGAD000101")
    });
    let body = json!({"project": "P-0001", "template": "shell", "visas": [visa]});
    let ws = created(&h, body.clone()).await;
    let other = created(&h, h.body(&["JGAD000101"])).await;
    let (status, v) = revoke(&h, json!({"visa_jti": "visa-7", "reason": "dac-revoked"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(affected(&v), vec![ws.clone()]);
    assert_eq!(v["revocation"]["seq"], 1);
    assert_eq!(v["revocation"]["reason"], "dac-revoked");
    assert_eq!(h.state(&ws).await, "revoked");
    assert_eq!(h.state(&other).await, "placed");
    let (_, shown) = h.get(&format!("/v1/workspaces/{ws}")).await;
    assert!(shown["message"].as_str().unwrap().contains("dac-revoked"));

    let before = h.workspaces().await.len();
    let got = h.create(body).await;
    assert_error(&got, StatusCode::FORBIDDEN, "visa_revoked");
    let msg = got.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("revocation 1") && msg.contains("dac-revoked"),
        "{msg}"
    );
    assert_eq!(
        h.workspaces().await.len(),
        before,
        "a refused create was stored"
    );

    // Revoking again affects nothing more: the workspace already is revoked.
    let (_, again) = revoke(&h, json!({"visa_jti": "visa-7", "reason": "other"})).await;
    assert!(affected(&again).is_empty());
}

#[tokio::test]
async fn a_dataset_revocation_spares_visas_issued_after_it() {
    let h = Harness::new().await;
    h.register_demo().await;
    let a = created(&h, h.body(&["JGAD000101"])).await;
    let b = created(&h, h.body(&["JGAD000101", "JGAD000102"])).await;
    let c = created(&h, h.body(&["JGAD000102"])).await;
    let (status, v) = revoke(
        &h,
        json!({"dataset": "JGAD000101", "reason": "consent-withdrawn"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(affected(&v), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(h.state(&c).await, "placed");

    // An old visa for the dataset is refused; a fresh approval is fine.
    let got = h.create(h.body(&["JGAD000101"])).await;
    assert_error(&got, StatusCode::FORBIDDEN, "visa_revoked");
    let fresh = h.issuer.sign(&Visa {
        iat_in: 5,
        ..Visa::new("r-1", "JGAD000101")
    });
    created(
        &h,
        json!({"project": "P-0001", "template": "shell", "visas": [fresh]}),
    )
    .await;

    // Beside an old visa for another dataset, the fresh approval still stands: only the visas
    // for the revoked dataset are weighed against it.
    let old_other = h.visa("r-1", "JGAD000102");
    let fresh = h.issuer.sign(&Visa {
        iat_in: 30,
        ..Visa::new("r-1", "JGAD000101")
    });
    let both = created(
        &h,
        json!({"project": "P-0001", "template": "shell", "visas": [old_other, fresh]}),
    )
    .await;
    let (_, again) = revoke(
        &h,
        json!({"dataset": "JGAD000101", "reason": "consent-withdrawn"}),
    )
    .await;
    assert!(
        !affected(&again).contains(&both),
        "a fresh visa for JGAD000101 is not undone by an old one for JGAD000102: {again}"
    );
    assert_eq!(h.state(&both).await, "placed");
}

#[tokio::test]
async fn a_subject_revocation_ends_that_researchers_workspaces_only() {
    let h = Harness::new().await;
    h.register_demo().await;
    let mine = created(&h, h.body(&["JGAD000201"])).await;
    let visa = h.visa("r-2", "JGAD000201");
    let theirs = created(
        &h,
        json!({"project": "P-0001", "template": "shell", "visas": [visa]}),
    )
    .await;
    let (status, v) = revoke(&h, json!({"subject": "r-1", "reason": "security-incident"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(affected(&v), vec![mine]);
    assert_eq!(h.state(&theirs).await, "placed");
}

#[tokio::test]
async fn an_ended_project_loses_every_workspace_and_takes_no_new_one() {
    let h = Harness::new().await;
    h.register_demo().await;
    let a = created(&h, h.body(&["JGAD000101"])).await;
    let b = created(&h, h.body(&["JGAD000301"])).await;
    let mut other = h.body(&["JGAD000101"]);
    other["project"] = json!("P-0002");
    let c = created(&h, other.clone()).await;
    // A workspace being stopped is still live: it is revoked too.
    h.observe("bbj", &[(&b, "running", None)]).await;
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{b}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = revoke(&h, json!({"project": "P-0001", "reason": "project-ended"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(affected(&v), sorted(vec![a, b]));
    assert_eq!(h.state(&c).await, "placed");
    let got = h.create(h.body(&["JGAD000201"])).await;
    assert_error(&got, StatusCode::FORBIDDEN, "project_revoked");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("P-0001")
    );
    created(&h, other).await;
}

#[tokio::test]
async fn requests_need_a_selector_and_a_known_reason() {
    let h = Harness::new().await;
    for body in [
        json!({"reason": "dac-revoked"}),
        json!({"dataset": "JGAD000101", "reason": "because"}),
        json!({"dataset": "JGAD000101"}),
        json!({"dataset": "../etc", "reason": "other"}),
        json!({"visa_jti": "v", "reason": "other", "extra": 1}),
        json!({"visa_jti": "", "reason": "other"}),
    ] {
        let got = revoke(&h, body.clone()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    let got = revoke(&h, json!({"dataset": "JGAD000101", "reason": "because"})).await;
    let msg = got.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("consent-withdrawn") && msg.contains("project-ended"),
        "{msg}"
    );
    let got = h
        .call(
            Method::POST,
            "/v1/revocations",
            &agent_token("tohoku"),
            Some(json!({"visa_jti": "v", "reason": "other"})),
        )
        .await;
    assert!(
        got.0 == StatusCode::FORBIDDEN || got.0 == StatusCode::UNAUTHORIZED,
        "{}",
        got.1
    );
}

#[tokio::test]
async fn every_site_hears_of_a_revocation_and_may_report_revoked() {
    let h = Harness::new().await;
    h.register_demo().await;
    let ws = created(&h, h.body(&["JGAD000301"])).await;
    let desired = |site: &'static str| {
        let h = &h;
        async move {
            let (status, v) = h
                .call(
                    Method::GET,
                    &format!("/v1/agent/desired?site={site}"),
                    &agent_token(site),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v
        }
    };
    let before = desired("tohoku").await;
    assert!(before.get("revocations").is_none(), "{before}");
    let (_, v) = revoke(&h, json!({"visa_jti": "nobody-has-it", "reason": "other"})).await;
    assert!(affected(&v).is_empty());
    let after = desired("tohoku").await;
    assert!(
        after["revision"].as_i64() > before["revision"].as_i64(),
        "a revocation must wake every site: {before} {after}"
    );
    assert_eq!(after["revocations"][0]["visa_jti"], "nobody-has-it");
    assert_eq!(
        desired("bbj").await["revocations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An agent that stopped a workspace on its own deny-list reports `revoked`.
    let (status, v) = h
        .observe("bbj", &[(&ws, "revoked", Some("visa revoked"))])
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], 1);
    assert_eq!(h.state(&ws).await, "revoked");
    let (_, metrics) = h
        .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
        .await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("basho_revocations_total{reason=\"other\"} 1"),
        "{text}"
    );
    assert!(text.contains("basho_revocation_record_seconds"));
}

#[tokio::test]
async fn a_site_registering_after_a_revocation_starts_from_its_revision() {
    let h = Harness::new().await;
    h.register("tohoku", &["JGAD000101"], 8, 8192).await;
    revoke(&h, json!({"subject": "r-9", "reason": "other"})).await;
    let (status, reg) = h
        .call(
            Method::POST,
            "/v1/agent/register",
            &agent_token("bbj"),
            Some(registration("bbj", &["JGAD000301"], 8, 8192)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reg}");
    let (_, d) = h
        .call(
            Method::GET,
            "/v1/agent/desired?site=bbj",
            &agent_token("bbj"),
            None,
        )
        .await;
    // Equal revisions: its long-poll `after` that revision waits instead of answering at once.
    assert_eq!(reg["revision"], d["revision"], "{reg} {d}");
    assert_eq!(d["revocations"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_site_confirms_a_revoked_container_is_gone() {
    use basho_core::revocation::{NOTHING_REPORTED, SITE_CONFIRMED};
    let h = Harness::new().await;
    h.register_demo().await;
    let running = created(&h, h.body(&["JGAD000301"])).await;
    let placed = created(&h, h.body(&["JGAD000201"])).await;
    h.observe("bbj", &[(&running, "running", None)]).await;
    revoke(&h, json!({"subject": "r-1", "reason": "dac-revoked"})).await;
    let message = |id: String| {
        let h = &h;
        async move {
            let (_, w) = h.get(&format!("/v1/workspaces/{id}")).await;
            assert_eq!(w["state"], "revoked", "{w}");
            w["message"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert!(message(placed.clone()).await.contains(NOTHING_REPORTED));
    assert!(!message(running.clone()).await.contains(SITE_CONFIRMED));
    let confirmed_count = || async {
        let (_, metrics) = h
            .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
            .await;
        let text = metrics.as_str().unwrap().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("basho_revocation_seconds_count "))
            .map(str::to_owned)
    };
    // The end-to-end latency waits for the running workspace's site, not for the placed one.
    assert_eq!(confirmed_count().await.as_deref(), Some("0"));
    // Another site's word counts for nothing.
    h.observe("tohoku", &[(&running, "stopped", None)]).await;
    assert!(!message(running.clone()).await.contains(SITE_CONFIRMED));
    assert_eq!(confirmed_count().await.as_deref(), Some("0"));
    for _ in 0..2 {
        let (status, v) = h.observe("bbj", &[(&running, "stopped", None)]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let m = message(running.clone()).await;
    assert!(m.contains("dac-revoked"), "{m}");
    assert_eq!(m.matches(SITE_CONFIRMED).count(), 1, "{m}");
    assert_eq!(
        confirmed_count().await.as_deref(),
        Some("1"),
        "observed once"
    );
}
