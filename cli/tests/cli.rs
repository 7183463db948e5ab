//! The `basho` binary against a fake orchestrator: an in-test axum server on 127.0.0.1:0 that
//! answers the contract's endpoints and records what it was sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// What the fake was sent and what it answers next.
#[derive(Default)]
struct Fake {
    /// Bodies and `Idempotency-Key`s of the creates received.
    creates: Vec<(Value, Option<String>)>,
    /// `Authorization` headers seen.
    auth: Vec<Option<String>>,
    /// States the next GETs of the workspace report, one per GET; the last one repeats.
    states: VecDeque<&'static str>,
    /// Query strings of list requests.
    list_queries: Vec<Option<String>>,
    /// DELETEs received.
    deletes: Vec<String>,
    /// When set, the create answers this error.
    create_error: Option<(StatusCode, Value)>,
}

type Shared = Arc<Mutex<Fake>>;

const LIST_BODY: &str = "[ {\"id\":\"ws-1\",\"project\":\"P-0001\",\"owner\":\"alice\",\"template\":\"shell\",\"site\":\"tohoku\",\"state\":\"running\",\"datasets\":[\"JGAD000101\"],\"resources\":{\"cpus\":1,\"memory_mib\":256,\"gpus\":0},\"created_at\":\"2026-01-01T00:00:00Z\",\"expires_at\":\"2026-01-01T01:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\"} ]";

fn workspace(id: &str, state: &str) -> Value {
    let mut w = json!({
        "id": id, "project": "P-0001", "owner": "alice", "template": "shell", "site": "tohoku",
        "state": state, "datasets": ["JGAD000101", "JGAD000102"],
        "resources": {"cpus": 1, "memory_mib": 256, "gpus": 0},
        "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-01T01:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"
    });
    if state == "failed" {
        w["message"] = json!("image basho/demo is not on the site's allow-list");
    }
    w
}

fn record_auth(fake: &Shared, headers: &HeaderMap) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    fake.lock().unwrap().auth.push(auth);
}

async fn create(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&fake, &headers);
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut f = fake.lock().unwrap();
    f.creates.push((body, key));
    if let Some((status, body)) = f.create_error.clone() {
        return (status, Json(body)).into_response();
    }
    (StatusCode::CREATED, Json(workspace("ws-1", "pending"))).into_response()
}

async fn list(State(fake): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    record_auth(&fake, &headers);
    fake.lock().unwrap().list_queries.push(q);
    ([("content-type", "application/json")], LIST_BODY).into_response()
}

async fn show(State(fake): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    record_auth(&fake, &headers);
    if id != "ws-1" {
        let body = json!({"error": {"code": "not_found", "message": format!("no workspace {id}")}});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    let mut f = fake.lock().unwrap();
    let state = if f.states.len() > 1 {
        f.states.pop_front().unwrap()
    } else {
        f.states.front().copied().unwrap_or("running")
    };
    Json(workspace(&id, state)).into_response()
}

async fn delete(State(fake): State<Shared>, Path(id): Path<String>) -> Response {
    fake.lock().unwrap().deletes.push(id.clone());
    (StatusCode::ACCEPTED, Json(workspace(&id, "stopping"))).into_response()
}

async fn sites() -> Response {
    Json(json!([{
        "name": "tohoku", "backend": "docker", "version": "0.1.0",
        "datasets": [{"id": "JGAD000101", "grant_url": "https://x/JGAD000101"}],
        "capacity": {"cpus": 8, "memory_mib": 8192, "gpus": 0},
        "allocated": {"cpus": 1, "memory_mib": 256, "gpus": 0},
        "workspaces": 1, "last_contact": "2026-01-01T00:00:00Z",
        "start_timeout_s": 120
    }]))
    .into_response()
}

async fn start(fake: Fake) -> (SocketAddr, Shared) {
    let shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .route("/v1/workspaces", get(list).post(create))
        .route("/v1/workspaces/{id}", get(show).delete(delete))
        .route("/v1/sites", get(sites))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

async fn basho(addr: SocketAddr, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_basho"))
        .args(args)
        .env_remove("BASHO_TOKEN")
        .env("BASHO_ADDR", format!("http://{addr}"))
        .env("BASHO_LOG", "off")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CREATE: [&str; 9] = [
    "workspace",
    "create",
    "--project",
    "P-0001",
    "--template",
    "shell",
    "--visa",
    "v.1.jwt",
    "--visa=v.2.jwt",
];

#[tokio::test]
async fn create_sends_the_body_token_and_a_fresh_idempotency_key() {
    let (addr, fake) = start(Fake::default()).await;
    let mut args = CREATE.to_vec();
    args.extend([
        "--dataset",
        "JGAD000101",
        "--duration",
        "2h",
        "--token",
        "tok-1",
    ]);
    let out = basho(addr, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("id:        ws-1\n"),
        "{}",
        text(&out.stdout)
    );

    let out2 = basho(addr, &args).await;
    assert!(out2.status.success());
    let f = fake.lock().unwrap();
    let (body, key) = &f.creates[0];
    assert_eq!(
        body,
        &json!({"project": "P-0001", "template": "shell", "visas": ["v.1.jwt", "v.2.jwt"],
                "datasets": ["JGAD000101"], "resources": null, "duration_s": 7200, "site": null})
    );
    let key = key.as_deref().expect("an Idempotency-Key header");
    assert!(uuid::Uuid::parse_str(key).is_ok(), "{key}");
    assert_ne!(
        f.creates[1].1.as_deref(),
        Some(key),
        "each invocation has its own key"
    );
    assert_eq!(f.auth[0].as_deref(), Some("Bearer tok-1"));
}

#[tokio::test]
async fn create_passes_a_given_idempotency_key() {
    let (addr, fake) = start(Fake::default()).await;
    let mut args = CREATE.to_vec();
    args.extend(["--idempotency-key", "platform-req-42"]);
    let out = basho(addr, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fake.lock().unwrap().creates[0].1.as_deref(),
        Some("platform-req-42")
    );
}

#[tokio::test]
async fn create_wait_polls_until_running() {
    let fake = Fake {
        states: ["pending", "placed", "starting", "running"].into(),
        ..Fake::default()
    };
    let (addr, shared) = start(fake).await;
    let mut args = CREATE.to_vec();
    args.extend(["--wait", "--timeout", "30s"]);
    let out = basho(addr, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shared.lock().unwrap().states.len() == 1,
        "every state was polled"
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("state:     running\n"), "{stdout}");
    // stderr is not a terminal here: one plain line per state change, no spinner.
    let stderr = text(&out.stderr);
    for s in ["placed", "starting", "running"] {
        assert!(
            stderr.contains(&format!("ws-1: {s} at tohoku\n")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains('\r'), "{stderr:?}");
}

#[tokio::test]
async fn create_wait_fails_with_the_workspace_message() {
    let fake = Fake {
        states: ["starting", "failed"].into(),
        ..Fake::default()
    };
    let (addr, _) = start(fake).await;
    let mut args = CREATE.to_vec();
    args.push("--wait");
    let out = basho(addr, &args).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: workspace ws-1 is failed: image basho/demo is not on the site's allow-list"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn create_wait_gives_up_at_the_timeout() {
    let fake = Fake {
        states: ["starting"].into(),
        ..Fake::default()
    };
    let (addr, _) = start(fake).await;
    let mut args = CREATE.to_vec();
    args.extend(["--wait", "--timeout", "1"]);
    let out = basho(addr, &args).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("gave up after"), "{stderr}");
    assert!(stderr.contains("still starting"), "{stderr}");
}

#[tokio::test]
async fn api_errors_print_their_code_and_exit_1() {
    let fake = Fake {
        create_error: Some((
            StatusCode::FORBIDDEN,
            json!({"error": {"code": "visa_expired", "message": "visa 0 expired; ask for a fresh one"}}),
        )),
        ..Fake::default()
    };
    let (addr, shared) = start(fake).await;
    let out = basho(addr, &CREATE).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: visa_expired: visa 0 expired; ask for a fresh one\n"
    );
    assert_eq!(
        shared.lock().unwrap().creates.len(),
        1,
        "4xx is not retried"
    );

    let out = basho(addr, &["workspace", "show", "ws-nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: not_found: no workspace ws-nope\n"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_key() {
    let fake = Fake {
        create_error: Some((
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"code": "store_unavailable", "message": "try again"}}),
        )),
        ..Fake::default()
    };
    let (addr, shared) = start(fake).await;
    let out = basho(addr, &CREATE).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("store_unavailable: try again"));
    let f = shared.lock().unwrap();
    assert_eq!(f.creates.len(), 3);
    assert!(f.creates.iter().all(|(_, k)| k == &f.creates[0].1));
}

#[tokio::test]
async fn output_json_passes_the_answer_through() {
    let (addr, fake) = start(Fake::default()).await;
    let out = basho(
        addr,
        &[
            "workspace",
            "list",
            "--project",
            "P-0001",
            "--state",
            "running",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{LIST_BODY}\n"));
    assert_eq!(
        fake.lock().unwrap().list_queries[0].as_deref(),
        Some("project=P-0001&state=running")
    );
}

#[tokio::test]
async fn list_and_sites_print_aligned_tables() {
    let (addr, _) = start(Fake::default()).await;
    let out = basho(addr, &["workspace", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("ID    PROJECT  OWNER  SITE    STATE    DATASETS    EXPIRES"));
    assert!(
        lines[1]
            .starts_with("ws-1  P-0001   alice  tohoku  running  JGAD000101  2026-01-01 01:00:00Z")
    );

    let out = basho(addr, &["site", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("SITE    BACKEND  DATASETS    CPUS  MEMORY_MIB"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tohoku  docker   JGAD000101  1/8   256/8192"),
        "{stdout}"
    );
    assert!(stdout.contains("START_TIMEOUT"), "{stdout}");
    assert!(stdout.contains("  120s  "), "{stdout}");
}

#[tokio::test]
async fn delete_wait_polls_until_stopped() {
    let fake = Fake {
        states: ["stopping", "stopped"].into(),
        ..Fake::default()
    };
    let (addr, shared) = start(fake).await;
    let out = basho(
        addr,
        &["workspace", "delete", "ws-1", "--wait", "--output", "json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["state"], "stopped");
    assert_eq!(shared.lock().unwrap().deletes, ["ws-1"]);
}

#[tokio::test]
async fn an_unreachable_orchestrator_says_how_to_find_one() {
    // Bind and drop to get a port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = basho(addr, &["workspace", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot reach the orchestrator"),
        "{stderr}"
    );
    assert!(
        stderr.contains("BASHO_ADDR") && stderr.contains("basho dev"),
        "{stderr}"
    );
}

#[tokio::test]
async fn create_without_visas_is_a_usage_error() {
    let (addr, fake) = start(Fake::default()).await;
    let out = basho(
        addr,
        &[
            "workspace",
            "create",
            "--project",
            "P",
            "--template",
            "shell",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no visa given"));
    assert!(fake.lock().unwrap().creates.is_empty());
}
