//! Roles: what each kind of token opens and what it is refused, stored tokens and their
//! revocation.

mod common;

use axum::http::{Method, StatusCode};
use basho_orchestrator::store::{Role, SqliteStore};
use basho_orchestrator::tokens::{self, NewToken};
use common::*;
use serde_json::{Value, json};

/// An orchestrator on a database file, and a second handle on that file to mint tokens with.
async fn harness() -> (Harness, SqliteStore) {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    (h, store)
}

async fn mint(
    store: &SqliteStore,
    role: Role,
    subject: Option<&str>,
    site: Option<&str>,
) -> (String, String) {
    let new = NewToken {
        role,
        subject: subject.map(str::to_owned),
        site: site.map(|s| s.parse().unwrap()),
        name: Some("test".into()),
        ttl: None,
    };
    let (rec, secret) = tokens::create(store, new, "operator").await.unwrap();
    (rec.id, secret)
}

async fn status(
    h: &Harness,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> StatusCode {
    h.call(method, path, token, body).await.0
}

#[tokio::test]
async fn each_role_opens_its_endpoints_and_nothing_else() {
    let (h, store) = harness().await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let ws = format!("/v1/workspaces/{}", w["id"].as_str().unwrap());
    let (_, admin) = mint(&store, Role::Admin, None, None).await;
    let (_, auditor) = mint(&store, Role::Auditor, None, None).await;
    let (_, platform) = mint(&store, Role::Platform, None, None).await;
    let (_, researcher) = mint(&store, Role::Researcher, Some("r-1"), None).await;
    let (_, agent) = mint(&store, Role::Agent, None, Some("tohoku")).await;

    for t in [PLATFORM, platform.as_str(), admin.as_str()] {
        assert_eq!(
            status(&h, Method::GET, "/v1/workspaces", t, None).await,
            StatusCode::OK
        );
        assert_eq!(status(&h, Method::GET, &ws, t, None).await, StatusCode::OK);
        assert_eq!(
            status(&h, Method::GET, "/v1/sites", t, None).await,
            StatusCode::OK
        );
    }
    for t in [auditor.as_str(), admin.as_str()] {
        assert_eq!(
            status(&h, Method::GET, "/v1/audit", t, None).await,
            StatusCode::OK
        );
    }
    for t in [
        PLATFORM,
        platform.as_str(),
        researcher.as_str(),
        agent.as_str(),
    ] {
        let got = h.call(Method::GET, "/v1/audit", t, None).await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("auditor or admin")
        );
    }
    for t in [auditor.as_str(), researcher.as_str(), agent.as_str()] {
        let got = h.create(h.body(&["JGAD000101"])).await;
        assert_eq!(got.0, StatusCode::CREATED, "the platform still creates");
        let got = h
            .call(
                Method::POST,
                "/v1/workspaces",
                t,
                Some(h.body(&["JGAD000101"])),
            )
            .await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
        assert_error(
            &h.call(Method::DELETE, &ws, t, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_error(
            &h.call(Method::GET, "/v1/sites", t, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    assert_error(
        &h.call(Method::GET, &ws, &auditor, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    for t in [
        PLATFORM,
        admin.as_str(),
        auditor.as_str(),
        researcher.as_str(),
    ] {
        let got = h
            .call(Method::GET, "/v1/agent/desired?site=tohoku", t, None)
            .await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    }
    // A stored agent token works for its own site only.
    let own = h
        .call(Method::GET, "/v1/agent/desired?site=tohoku", &agent, None)
        .await;
    assert_eq!(own.0, StatusCode::OK, "{}", own.1);
    let other = h
        .call(Method::GET, "/v1/agent/desired?site=ncbn", &agent, None)
        .await;
    assert_error(&other, StatusCode::FORBIDDEN, "forbidden");
    let other = h
        .call(
            Method::GET,
            "/v1/agent/desired?site=ncbn",
            &agent_token("tohoku"),
            None,
        )
        .await;
    assert_error(&other, StatusCode::FORBIDDEN, "forbidden");
    // Admins create and delete like the platform.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/workspaces",
            &admin,
            Some(h.body(&["JGAD000101"])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        status(&h, Method::DELETE, &ws, &admin, None).await,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn a_researcher_sees_only_their_own_workspaces() {
    let (h, store) = harness().await;
    h.register_demo().await;
    let (_, mine) = h.create(h.body(&["JGAD000101"])).await;
    let other_body = json!({"project": "P-0002", "template": "shell",
        "visas": [h.visa("r-2", "JGAD000201")]});
    let (s, theirs) = h.create(other_body).await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let (_, alice) = mint(&store, Role::Researcher, Some("r-1"), None).await;

    let (s, shown) = h
        .call(
            Method::GET,
            &format!("/v1/workspaces/{}", mine["id"].as_str().unwrap()),
            &alice,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["owner"], "r-1");
    let got = h
        .call(
            Method::GET,
            &format!("/v1/workspaces/{}", theirs["id"].as_str().unwrap()),
            &alice,
            None,
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let missing = h
        .call(Method::GET, "/v1/workspaces/ws-nonexistent", &alice, None)
        .await;
    assert_eq!(
        got.1,
        json!({"error": {"code": "not_found", "message": missing.1["error"]["message"].as_str().unwrap().replace("ws-nonexistent", theirs["id"].as_str().unwrap())}}),
        "another's workspace answers exactly like a missing one"
    );
    let (s, list) = h.call(Method::GET, "/v1/workspaces", &alice, None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine["id"].as_str().unwrap()]);
    assert_eq!(h.workspaces().await.len(), 2, "the platform sees both");
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated_and_tokens_expire_by_role() {
    use basho_orchestrator::store::{TokenRecord, TokenStore as _};
    let (h, store) = harness().await;
    // Made a day ago with a twelve-hour life.
    let made = chrono::Utc::now() - chrono::TimeDelta::days(1);
    let secret = "expired-admin-token-0123456789abcdef";
    let rec = TokenRecord {
        id: "tok-0000dead".into(),
        role: Role::Admin,
        subject: None,
        site: None,
        name: None,
        created_at: made,
        revoked_at: None,
        expires_at: Some(made + chrono::TimeDelta::hours(12)),
    };
    store
        .insert_token(&rec, &tokens::token_hash(secret))
        .await
        .unwrap();
    assert_error(
        &h.call(Method::GET, "/v1/audit", secret, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    // A new admin token lives 12 hours, a new agent token 90 days; both open their endpoints.
    let (_, admin) = mint(&store, Role::Admin, None, None).await;
    let (_, listed) = h.call(Method::GET, "/v1/tokens", &admin, None).await;
    let life = |role: &str| {
        let t = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["role"] == role && t["id"] != "tok-0000dead")
            .unwrap_or_else(|| panic!("no {role} token in {listed}"));
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(t[k].as_str().unwrap()).unwrap();
        (at("expires_at") - at("created_at")).num_seconds()
    };
    assert_eq!(life("admin"), 12 * 3600);
    // Over the API, with a lifetime of its own; one out of range is refused.
    let (s, made) = h
        .call(
            Method::POST,
            "/v1/tokens",
            &admin,
            Some(json!({"role": "agent", "site": "tohoku", "ttl_s": 3600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(made[k].as_str().unwrap()).unwrap();
    assert_eq!((at("expires_at") - at("created_at")).num_seconds(), 3600);
    let refused = h
        .call(
            Method::POST,
            "/v1/tokens",
            &admin,
            Some(json!({"role": "admin", "ttl_s": 5})),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn unknown_missing_and_revoked_tokens_are_unauthenticated() {
    let (h, store) = harness().await;
    let (id, admin) = mint(&store, Role::Admin, None, None).await;
    assert_eq!(
        status(&h, Method::GET, "/v1/audit", &admin, None).await,
        StatusCode::OK
    );
    let revoked = tokens::revoke(&store, &id, "operator").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    // Revoked by another process: effective once the cache entry lapses.
    tokio::time::sleep(
        basho_orchestrator::tokens::CACHE_TTL + std::time::Duration::from_millis(200),
    )
    .await;
    assert_error(
        &h.call(Method::GET, "/v1/audit", &admin, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        &h.call(Method::GET, "/v1/workspaces", "no-such-token", None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let anon = h
        .raw(Method::GET, "/v1/workspaces", None, &[], Vec::new())
        .await;
    assert_error(&anon, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        tokens::revoke(&store, "tok-00000000", "operator")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_listed_without_secrets() {
    let (_h, store) = harness().await;
    let (id, secret) = mint(&store, Role::Researcher, Some("alice"), None).await;
    assert_eq!(secret.len(), 64);
    assert!(id.starts_with("tok-") && id.len() == 12, "{id}");
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, hash FROM tokens")
        .fetch_all(
            &sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                _h.config.data_dir.join("basho.db").display()
            ))
            .await
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].1, secret);
    assert_eq!(rows[0].1, basho_orchestrator::tokens::token_hash(&secret));
    use basho_orchestrator::store::TokenStore as _;
    let listed = store.tokens().await.unwrap();
    let line = tokens::list_line(&listed[0]);
    assert!(
        line.contains(&id) && line.contains("researcher") && line.contains("alice"),
        "{line}"
    );
    assert!(!line.contains(&secret) && !line.contains(&rows[0].1));
    // A role missing what it needs is refused.
    for bad in [
        NewToken {
            role: Role::Researcher,
            subject: None,
            site: None,
            name: None,
            ttl: None,
        },
        NewToken {
            role: Role::Agent,
            subject: None,
            site: None,
            name: None,
            ttl: None,
        },
        NewToken {
            role: Role::Admin,
            subject: Some("x".into()),
            site: None,
            name: None,
            ttl: None,
        },
    ] {
        assert!(matches!(
            tokens::create(&store, bad, "operator").await,
            Err(tokens::TokenError::Usage(_))
        ));
    }
}

#[tokio::test]
async fn admins_manage_tokens_over_the_api() {
    let (h, store) = harness().await;
    let (admin_id, admin) = mint(&store, Role::Admin, None, None).await;
    let (_, auditor) = mint(&store, Role::Auditor, None, None).await;
    let body = json!({"role": "researcher", "subject": "alice", "name": "Alice"});
    for t in [PLATFORM, auditor.as_str()] {
        let got = h
            .call(Method::POST, "/v1/tokens", t, Some(body.clone()))
            .await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
        assert_error(
            &h.call(Method::GET, "/v1/tokens", t, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let (s, made) = h.call(Method::POST, "/v1/tokens", &admin, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (made["role"].as_str(), made["subject"].as_str()),
        (Some("researcher"), Some("alice"))
    );
    assert_eq!(
        status(&h, Method::GET, "/v1/workspaces", &secret, None).await,
        StatusCode::OK
    );

    let (s, list) = h.call(Method::GET, "/v1/tokens", &admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let text = list.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&basho_orchestrator::tokens::token_hash(&secret))
    );

    for bad in [
        json!({"role": "root"}),
        json!({"role": "researcher"}),
        json!({"role": "agent", "site": "tohoku", "subject": "x"}),
    ] {
        let got = h.call(Method::POST, "/v1/tokens", &admin, Some(bad)).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    // Revoked through this process: refused at once, cache or not.
    let (s, revoked) = h
        .call(Method::DELETE, &format!("/v1/tokens/{id}"), &admin, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_error(
        &h.call(Method::GET, "/v1/workspaces", &secret, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let got = h
        .call(Method::DELETE, "/v1/tokens/tok-00000000", &admin, None)
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");

    let (_, page) = h.call(Method::GET, "/v1/audit", &admin, None).await;
    let by_admin: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == format!("admin:{admin_id}") && e["target"] == id.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(by_admin, vec!["token_create", "token_revoke"]);
}

#[tokio::test]
async fn the_frameworks_own_rejections_come_in_the_error_shape() {
    let (h, store) = harness().await;
    let (_, researcher) = mint(&store, Role::Researcher, Some("r-1"), None).await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let id = w["id"].as_str().unwrap();
    h.observe("tohoku", &[(id, "running", None)]).await;
    let session = format!("/v1/workspaces/{id}/session");
    // A query string without its required field (axum's own rejection), and a session asked
    // of plain HTTP by its owner.
    let spec =
        format!("{session}?spec=%7B%22kind%22%3A%22exec%22%2C%22argv%22%3A%5B%22sh%22%5D%7D");
    for (path, status, code, says) in [
        (&session, StatusCode::BAD_REQUEST, "bad_request", "spec"),
        (
            &spec,
            StatusCode::BAD_REQUEST,
            "websocket_required",
            "websocket",
        ),
    ] {
        let got = h
            .raw(Method::GET, path, Some(&researcher), &[], vec![])
            .await;
        assert_error(&got, status, code);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.to_lowercase().contains(says), "{path}: {message}");
    }
}
