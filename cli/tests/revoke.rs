//! `basho revoke` against a stub orchestrator: the request it sends, what it prints, `--wait`,
//! and refusals before any request.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    /// Whether the site has confirmed (the message the orchestrator shows).
    confirmed: bool,
    bodies: Vec<Value>,
    auth: Vec<String>,
    polls: usize,
}

type Shared = Arc<Mutex<Seen>>;

async fn revoke(
    State(s): State<Shared>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut seen = s.lock().unwrap();
    seen.bodies.push(body.clone());
    seen.auth.push(
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "affected": ["ws-1", "ws-2"],
            "revocation": {"seq": 7, "visa_jti": body["visa_jti"], "reason": body["reason"],
                "at": "2026-11-24T09:00:00Z"},
        })),
    )
}

async fn workspace(State(s): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    let message = {
        let mut seen = s.lock().unwrap();
        seen.polls += 1;
        if seen.confirmed {
            format!(
                "revoked (dac-revoked); {}",
                basho_core::revocation::SITE_CONFIRMED
            )
        } else {
            "revoked (dac-revoked)".to_owned()
        }
    };
    Json(json!({
        "message": message,
        "id": id, "project": "P-1", "owner": "alice", "template": "shell", "site": "tohoku",
        "state": "revoked", "datasets": ["JGAD000101"],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0},
        "created_at": "2026-11-24T08:00:00Z", "expires_at": "2026-11-24T10:00:00Z",
        "updated_at": "2026-11-24T09:00:00Z",
    }))
}

async fn start() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/v1/revocations", post(revoke))
        .route("/v1/workspaces/{id}", get(workspace))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

async fn basho(addr: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_basho"))
        .args(args)
        .env("BASHO_TOKEN", "platform-token")
        .env("BASHO_ADDR", addr)
        .env("BASHO_LOG", "off")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn revoke_sends_the_selectors_and_prints_the_workspaces_it_ended() {
    let (addr, shared) = start().await;
    shared.lock().unwrap().confirmed = true;
    let out = basho(
        &addr,
        &[
            "revoke",
            "--visa-jti",
            "v-9",
            "--reason",
            "dac-revoked",
            "--wait",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("revocation 7 (dac-revoked, visa_jti=v-9)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ws-1") && stdout.contains("ws-2"),
        "{stdout}"
    );
    let seen = shared.lock().unwrap();
    assert_eq!(
        seen.bodies,
        vec![json!({"visa_jti": "v-9", "reason": "dac-revoked"})]
    );
    assert_eq!(seen.auth, vec!["Bearer platform-token".to_owned()]);
    assert_eq!(seen.polls, 2, "--wait looks at every affected workspace");
}

#[tokio::test]
async fn revoke_without_a_selector_or_with_an_unknown_reason_sends_nothing() {
    let (addr, shared) = start().await;
    let out = basho(&addr, &["revoke", "--reason", "other"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one"));
    let out = basho(&addr, &["revoke", "--project", "P-1", "--reason", "tired"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(shared.lock().unwrap().bodies.is_empty());
}

#[tokio::test]
async fn wait_gives_up_when_the_site_never_confirms() {
    let (addr, _shared) = start().await;
    let out = basho(
        &addr,
        &[
            "revoke",
            "--project",
            "P-1",
            "--reason",
            "project-ended",
            "--wait",
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not stopped at its site"), "{stderr}");
}
