//! A restarted orchestrator on the same database file picks up where it stopped: sites, the
//! compute their workspaces hold, revisions and idempotency keys.

mod common;

use axum::http::{Method, StatusCode};
use basho_core::visa::mint::Issuer;
use basho_orchestrator::Orchestrator;
use common::*;
use serde_json::Value;
use tower::ServiceExt as _;

/// `tohoku`'s desired state.
async fn desired(o: &Orchestrator) -> (StatusCode, Value) {
    let token = agent_token("tohoku");
    call(o, Method::GET, "/v1/agent/desired", &token, None).await
}

async fn call(
    o: &Orchestrator,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", "restart-key");
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let res = o.router().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let mut config = config(dir.path(), &issuer);
    config.database = None;
    config.data_dir = dir.path().join("data");

    let body = serde_json::json!({"project": "P-1", "template": "shell",
        "visas": [issuer.mint("r-1", "JGAD000101")]});
    let (first, revision) = {
        let o = Orchestrator::open(config.clone()).await.unwrap();
        let reg = registration("tohoku", &["JGAD000101"], 4, 4096);
        let (status, _) = call(
            &o,
            Method::POST,
            "/v1/agent/register",
            &agent_token("tohoku"),
            Some(&reg),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, w) = call(&o, Method::POST, "/v1/workspaces", PLATFORM, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{w}");
        let (_, d) = desired(&o).await;
        (w, d["revision"].as_i64().unwrap())
    };

    let o = Orchestrator::open(config).await.unwrap();
    let (_, sites) = call(&o, Method::GET, "/v1/sites", PLATFORM, None).await;
    assert_eq!(sites[0]["name"], "tohoku");
    assert_eq!(sites[0]["allocated"]["cpus"], 1);
    assert_eq!(sites[0]["workspaces"], 1);
    let (_, d) = desired(&o).await;
    assert_eq!(d["revision"].as_i64().unwrap(), revision);
    assert_eq!(d["workspaces"][0]["id"], first["id"]);
    let (status, again) = call(&o, Method::POST, "/v1/workspaces", PLATFORM, Some(&body)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the key still answers with the first workspace"
    );
    assert_eq!(again, first);
}
