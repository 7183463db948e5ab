//! The audit log: what is written for each kind of event, that no token or visa ends up in it,
//! and that tampering with the database is named by chain verification.

mod common;

use axum::http::{Method, StatusCode};
use basho_core::audit::{AuditEntry, verify_chain};
use basho_orchestrator::store::{Role, SqliteStore};
use basho_orchestrator::tokens::{self, NewToken};
use common::*;
use serde_json::{Value, json};

async fn harness() -> (Harness, SqliteStore, String) {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    let new = NewToken {
        role: Role::Auditor,
        subject: None,
        site: None,
        name: None,
        ttl: None,
    };
    let (_, auditor) = tokens::create(&store, new, "operator").await.unwrap();
    (h, store, auditor)
}

/// Every entry, through the API, page by page.
async fn entries(h: &Harness, token: &str) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = h
            .call(
                Method::GET,
                &format!("/v1/audit?after={after}&limit=3"),
                token,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let list: Vec<AuditEntry> = serde_json::from_value(page["entries"].clone()).unwrap();
        out.extend(list);
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

fn find<'a>(all: &'a [AuditEntry], action: &str) -> Vec<&'a AuditEntry> {
    all.iter().filter(|e| e.action == action).collect()
}

async fn db_text(h: &Harness) -> String {
    let url = format!("sqlite://{}", h.config.data_dir.join("basho.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT actor, action, target, detail FROM audit")
            .fetch_all(&pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(a, b, c, d)| format!("{a} {b} {c} {d}\n"))
        .collect()
}

#[tokio::test]
async fn events_are_written_without_tokens_or_visas() {
    let (h, _store, auditor) = harness().await;
    h.register_demo().await;
    let body = h.body(&["JGAD000101"]);
    let visa = body["visas"][0].as_str().unwrap().to_owned();
    let (s, w) = h.create(body).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let id = w["id"].as_str().unwrap();
    // A refusal: a visa from an untrusted issuer.
    let stranger = basho_core::visa::mint::Issuer::generate("https://stranger.example");
    let bad_visa = stranger.mint("r-1", "JGAD000101");
    let refused = h
        .create(json!({"project": "P-0001", "template": "shell", "visas": [bad_visa]}))
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);
    // A body whose parse error would quote the visa.
    let quoted = h
        .create(json!({"project": "P-0001", "template": "shell", "visas": visa.clone()}))
        .await;
    assert_eq!(quoted.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", quoted.1);
    // Authentication failures.
    let wrong = "wrong-secret-token-value";
    let got = h.call(Method::GET, "/v1/workspaces", wrong, None).await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED);
    let got = h.call(Method::GET, "/v1/audit", PLATFORM, None).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    // A transition observed by the agent, and a delete.
    let (s, _) = h.observe("tohoku", &[(id, "running", None)]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{id}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);

    let all = entries(&h, &auditor).await;
    assert_eq!(verify_chain(&all), Ok(all.len()));
    assert_eq!(find(&all, "token_create").len(), 1);
    assert_eq!(find(&all, "agent_register").len(), 3);
    assert!(
        find(&all, "agent_register")
            .iter()
            .all(|e| e.actor.starts_with("agent:"))
    );

    let created = find(&all, "workspace_create");
    assert_eq!(created.len(), 1);
    let c = created[0];
    assert_eq!((c.actor.as_str(), c.target.as_str()), ("platform", id));
    assert_eq!(c.detail["owner"], "r-1");
    assert_eq!(c.detail["site"], "tohoku");
    assert_eq!(c.detail["project"], "P-0001");
    assert_eq!(c.detail["datasets"], json!(["JGAD000101"]));
    assert_eq!(c.detail["visas"][0]["iss"], ISSUER);
    assert!(
        c.detail["visas"][0]["jti"]
            .as_str()
            .is_some_and(|j| !j.is_empty())
    );
    assert_eq!(find(&all, "workspace_placed").len(), 1);

    let refusals = find(&all, "workspace_refused");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[0].detail["status"], 403);
    assert_eq!(refusals[0].detail["project"], "P-0001");
    assert!(refusals[0].detail["code"].as_str().is_some());
    assert_eq!(refusals[1].detail["status"], 422);
    assert_eq!(refusals[1].detail.get("message"), None);

    let failures = find(&all, "auth_failed");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0].actor, "anonymous");
    assert_eq!(failures[0].target, "/v1/workspaces");
    assert_eq!(failures[0].detail["status"], 401);
    assert_eq!(failures[1].actor, "platform");
    assert_eq!(failures[1].detail["status"], 403);

    let states: Vec<(&str, &Value, &Value)> = find(&all, "workspace_state")
        .iter()
        .map(|e| (e.actor.as_str(), &e.detail["from"], &e.detail["to"]))
        .collect();
    assert_eq!(
        states,
        vec![
            ("agent:tohoku", &json!("placed"), &json!("running")),
            ("platform", &json!("running"), &json!("stopping")),
        ]
    );
    assert_eq!(find(&all, "workspace_delete").len(), 1);

    let text = db_text(&h).await;
    for secret in [
        visa.as_str(),
        &bad_visa,
        wrong,
        PLATFORM,
        &auditor,
        &agent_token("tohoku"),
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    // Not even a visa's signature or payload segment.
    for part in visa.split('.') {
        assert!(!text.contains(part), "the audit log holds part of a visa");
    }
}

#[tokio::test]
async fn tampering_with_the_database_is_named() {
    let (h, _store, auditor) = harness().await;
    h.register_demo().await;
    for _ in 0..3 {
        let (s, _) = h.create(h.body(&["JGAD000101"])).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let all = entries(&h, &auditor).await;
    assert_eq!(verify_chain(&all), Ok(all.len()));
    let url = format!("sqlite://{}", h.config.data_dir.join("basho.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();

    sqlx::query("UPDATE audit SET detail = json_set(detail, '$.owner', 'mallory') WHERE seq = 6")
        .execute(&pool)
        .await
        .unwrap();
    let broken = verify_chain(&entries(&h, &auditor).await).unwrap_err();
    assert_eq!(broken.seq, 6, "{broken}");
    assert!(broken.reason.contains("altered"), "{broken}");

    // Restore it, then delete another row.
    let original = serde_json::to_string(&all[5].detail).unwrap();
    sqlx::query("UPDATE audit SET detail = ? WHERE seq = 6")
        .bind(original)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(verify_chain(&entries(&h, &auditor).await), Ok(all.len()));
    sqlx::query("DELETE FROM audit WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    let broken = verify_chain(&entries(&h, &auditor).await).unwrap_err();
    assert_eq!(broken.seq, 4, "{broken}");
    assert!(broken.reason.contains("missing"), "{broken}");
}

#[tokio::test]
async fn paging_is_checked() {
    let (h, _store, auditor) = harness().await;
    for q in ["limit=0", "limit=1001", "after=x", "since=1"] {
        let got = h
            .call(Method::GET, &format!("/v1/audit?{q}"), &auditor, None)
            .await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    let (s, page) = h
        .call(Method::GET, "/v1/audit?after=0&limit=1", &auditor, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], 1);
    let (_, page) = h
        .call(Method::GET, "/v1/audit?after=1", &auditor, None)
        .await;
    assert_eq!(page["next"], Value::Null);
}

#[tokio::test]
async fn a_revocation_and_the_workspaces_it_ends_are_written() {
    let (h, _store, auditor) = harness().await;
    h.register_demo().await;
    let (s, w) = h.create(h.body(&["JGAD000101"])).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let id = w["id"].as_str().unwrap();
    let body = json!({"subject": "r-1", "reason": "consent-withdrawn"});
    let (s, answer) = h
        .call(Method::POST, "/v1/revocations", PLATFORM, Some(body))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    let all = entries(&h, &auditor).await;
    assert_eq!(verify_chain(&all), Ok(all.len()));
    let r = find(&all, "revocation");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].actor, "platform");
    assert_eq!(r[0].detail["affected"], json!([id]));
    assert_eq!(r[0].detail["revocation"]["subject"], "r-1");
    let ended = find(&all, "workspace_state");
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].target.as_str(), &ended[0].detail["to"]),
        (id, &json!("revoked"))
    );
}

#[tokio::test]
async fn concurrent_requests_keep_the_chain_linear() {
    let (h, _store, auditor) = harness().await;
    let calls = (0..50).map(|i| {
        let h = &h;
        async move {
            let got = h
                .call(Method::GET, "/v1/workspaces", &format!("bad-{i}"), None)
                .await;
            assert_eq!(got.0, StatusCode::UNAUTHORIZED);
        }
    });
    futures::future::join_all(calls).await;
    let all = entries(&h, &auditor).await;
    assert_eq!(find(&all, "auth_failed").len(), 50);
    assert_eq!(verify_chain(&all), Ok(51));
}

#[tokio::test]
async fn expiry_is_written_as_the_orchestrator() {
    let (h, _store, auditor) = harness().await;
    h.register_demo().await;
    let mut body = h.body(&["JGAD000101"]);
    body["duration_s"] = json!(1);
    let (s, w) = h.create(body).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        basho_orchestrator::expiry::expire_once(&h.orchestrator)
            .await
            .unwrap(),
        1
    );
    let all = entries(&h, &auditor).await;
    let states = find(&all, "workspace_state");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].actor, "orchestrator");
    assert_eq!(states[0].target, w["id"].as_str().unwrap());
    assert_eq!(states[0].detail["to"], "expired");
}
