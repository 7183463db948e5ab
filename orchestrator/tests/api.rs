//! API tests: the real router on in-memory SQLite, visas from an issuer each test generates.

mod common;

use axum::http::{Method, StatusCode};
use basho_core::visa::mint::{Issuer, Visa};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

#[tokio::test]
async fn create_happy_path() {
    let h = Harness::new().await;
    h.register_demo().await;
    let visas = vec![
        h.visa("researcher-7", "JGAD000101"),
        h.issuer
            .sign(&Visa::new("researcher-7", "JGAD000102").alg(Algorithm::RS256)),
    ];
    let (status, w) = h
        .create(json!({
            "project": "P-0001", "template": "shell", "visas": visas,
            "resources": {"cpus": 2, "memory_mib": 1024, "gpus": 0}, "duration_s": 600,
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert!(w["id"].as_str().unwrap().starts_with("ws-"));
    assert_eq!(w["project"], "P-0001");
    assert_eq!(w["owner"], "researcher-7");
    assert_eq!(w["template"], "shell");
    assert_eq!(w["site"], "tohoku");
    assert_eq!(w["state"], "placed");
    // Datasets default to what the visas grant.
    assert_eq!(w["datasets"], json!(["JGAD000101", "JGAD000102"]));
    assert_eq!(
        w["resources"],
        json!({"cpus": 2, "memory_mib": 1024, "gpus": 0})
    );
    let created: chrono::DateTime<chrono::Utc> = w["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = w["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_seconds(), 600);

    let (status, shown) = h
        .get(&format!("/v1/workspaces/{}", w["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, w);
    let tohoku = h.site("tohoku").await;
    assert_eq!(tohoku["allocated"]["cpus"], 2);
    assert_eq!(tohoku["workspaces"], 1);
}

#[tokio::test]
async fn expiry_is_capped_by_the_earliest_visa() {
    let h = Harness::new().await;
    h.register_demo().await;
    let visa = h
        .issuer
        .sign(&Visa::new("r-1", "JGAD000201").expires_in(120));
    let (status, w) = h
        .create(json!({"project": "P-1", "template": "shell", "visas": [visa]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(w["site"], "ncbn");
    let created: chrono::DateTime<chrono::Utc> = w["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = w["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = (expires - created).num_seconds();
    assert!((100..=121).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn idempotent_create() {
    let h = Harness::new().await;
    h.register_demo().await;
    let body = h.body(&["JGAD000101"]);
    let send = |b: Value, key: &'static str| {
        let h = &h;
        async move {
            h.raw(
                Method::POST,
                "/v1/workspaces",
                Some(PLATFORM),
                &[("idempotency-key", key)],
                b.to_string().into_bytes(),
            )
            .await
        }
    };
    let (s1, first) = send(body.clone(), "key-1").await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    let (s2, again) = send(body.clone(), "key-1").await;
    assert_eq!(s2, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    // Same key, different body.
    let mut other = body.clone();
    other["project"] = json!("P-0002");
    let got = send(other, "key-1").await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    // A bad key is refused before anything happens.
    let got = send(body.clone(), "").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(h.workspaces().await.len(), 1);
    let tohoku = h.site("tohoku").await;
    assert_eq!(tohoku["workspaces"], 1, "a replay reserves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_key() {
    let h = std::sync::Arc::new(Harness::new().await);
    h.register_demo().await;
    let body = h.body(&["JGAD000101"]).to_string();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let h = h.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            h.raw(
                Method::POST,
                "/v1/workspaces",
                Some(PLATFORM),
                &[("idempotency-key", "concurrent-key")],
                body.into_bytes(),
            )
            .await
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, w) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}: {w}"),
        }
        ids.insert(w["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(h.workspaces().await.len(), 1);
    let tohoku = h.site("tohoku").await;
    assert_eq!(tohoku["workspaces"], 1);
    assert_eq!(tohoku["allocated"]["cpus"], 1);
}

/// Sends `body`, expects `status` and `code`, and checks nothing was stored.
#[tokio::test]
async fn auth_and_routes() {
    let h = Harness::new().await;
    h.register_demo().await;
    let body = h.body(&["JGAD000101"]).to_string().into_bytes();
    let got = h
        .raw(Method::POST, "/v1/workspaces", None, &[], body.clone())
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthenticated");
    let got = h
        .raw(
            Method::POST,
            "/v1/workspaces",
            Some("wrong"),
            &[],
            body.clone(),
        )
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthenticated");
    let got = h
        .raw(
            Method::POST,
            "/v1/workspaces",
            Some(&agent_token("tohoku")),
            &[],
            body,
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = h
        .call(Method::GET, "/v1/sites", &agent_token("bbj"), None)
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = h
        .call(
            Method::POST,
            "/v1/agent/register",
            PLATFORM,
            Some(registration("tohoku", &["JGAD000101"], 1, 1024)),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert!(h.workspaces().await.is_empty());

    assert_error(
        &h.get("/v2/nothing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.get("/v1/workspaces/ws-nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let got = h.call(Method::PUT, "/v1/sites", PLATFORM, None).await;
    assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (status, health) = h.raw(Method::GET, "/healthz", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health, json!({"status": "ok"}));
}

#[tokio::test]
async fn list_filters() {
    let h = Harness::new().await;
    h.register_demo().await;
    assert_eq!(
        h.create(h.body(&["JGAD000101"])).await.0,
        StatusCode::CREATED
    );
    let mut b = h.body(&["JGAD000201"]);
    b["project"] = json!("P-0002");
    assert_eq!(h.create(b).await.0, StatusCode::CREATED);
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(count(h.get("/v1/workspaces?project=P-0002").await.1), 1);
    assert_eq!(count(h.get("/v1/workspaces?site=tohoku").await.1), 1);
    assert_eq!(count(h.get("/v1/workspaces?state=placed").await.1), 2);
    assert_eq!(count(h.get("/v1/workspaces?state=running").await.1), 0);
    let got = h.get("/v1/workspaces?state=sleeping").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running")
    );
    assert_error(
        &h.get("/v1/workspaces?project=../x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_error(
        &h.get("/v1/workspaces?owner=x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn openapi_matches_the_checked_in_document() {
    let h = Harness::new().await;
    let (status, served) = h.raw(Method::GET, "/openapi.json", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let text = basho_orchestrator::api::meta::openapi_json();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), served);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("BASHO_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == text,
        "docs/openapi.json differs from the served document; if the API change is intended, \
         rerun with BASHO_UPDATE_OPENAPI=1 to rewrite it and commit the result"
    );
    for p in [
        "/v1/workspaces",
        "/v1/workspaces/{id}",
        "/v1/sites",
        "/v1/agent/register",
        "/v1/agent/desired",
        "/v1/agent/observations",
        "/healthz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            served["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
    assert!(served["components"]["schemas"].get("ErrorBody").is_some());
}

#[tokio::test]
async fn metrics_exposition() {
    let h = Harness::new().await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let (status, text) = h
        .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    // They name projects, sites and quotas: only the readers of usage scrape them.
    let (status, _) = h.raw(Method::GET, "/metrics", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let text = text.as_str().unwrap();
    for name in [
        "basho_api_requests_total{",
        "route=\"/v1/workspaces\"",
        "basho_api_request_duration_seconds_bucket",
        "basho_workspaces_created_total 1",
        "basho_placements_total{site=\"tohoku\"} 1",
        "basho_workspace_create_seconds_count 1",
        "basho_workspaces{site=\"tohoku\",state=\"placed\"} 1",
        "basho_agent_last_contact_age_seconds{site=\"ncbn\"}",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        !text.contains(w["id"].as_str().unwrap()),
        "workspace ids are no label"
    );
    assert!(!text.contains(PLATFORM));
    // Unmatched routes are counted under one label.
    h.get("/v1/nothing/ws-123").await;
    let (_, text) = h
        .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
        .await;
    assert!(text.as_str().unwrap().contains("route=\"unmatched\""));
    assert!(!text.as_str().unwrap().contains("ws-123"));
}

#[tokio::test]
async fn config_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let mut c = config(dir.path(), &issuer);
    c.templates_dir = dir.path().join("no-templates");
    c.trusted_issuers[0].jwks_file = dir.path().join("missing.jwks.json");
    c.platform_tokens.clear();
    let err = basho_orchestrator::Orchestrator::open(c).await.unwrap_err();
    let basho_orchestrator::Error::Config(e) = &err else {
        panic!("expected a config error, got {err}")
    };
    assert_eq!(e.problems.len(), 3, "{err}");
}

#[tokio::test]
async fn templates_are_listed_for_the_platform() {
    let h = Harness::new().await;
    let (status, list) = h.get("/v1/templates").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"shell"), "{list}");
    let shell = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shell")
        .unwrap();
    assert!(shell["resources"]["cpus"].as_u64().unwrap() >= 1, "{shell}");
    assert!(shell["max_duration_s"].as_u64().unwrap() > 0, "{shell}");
    let got = h.raw(Method::GET, "/v1/templates", None, &[], vec![]).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthenticated");
}
