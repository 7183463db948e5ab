//! The client against a stub orchestrator: requests carry the token and the protocol's query, and
//! error answers map to retryable or not.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use basho_core::protocol::{Capacity, DesiredState};
use serde_json::{Value, json};

use super::*;

type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn stub() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/base/v1/agent/register",
            post(
                |State(seen): State<Seen>, h: HeaderMap, Json(r): Json<Value>| async move {
                    let auth = h["authorization"].to_str().unwrap().to_owned();
                    seen.lock().unwrap().push(("register".into(), auth));
                    Json(json!({"site": r["site"], "revision": 7}))
                },
            ),
        )
        .route(
            "/base/v1/agent/desired",
            get(
                |State(seen): State<Seen>, Query(q): Query<Vec<(String, String)>>| async move {
                    let q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    seen.lock().unwrap().push(("desired".into(), q.join("&")));
                    Json(DesiredState {
                        revision: 8,
                        workspaces: vec![],
                        stopping: vec![],
                        revocations: vec![],
                        checkpoint: None,
                    })
                },
            ),
        )
        .route(
            "/base/v1/agent/observations",
            post(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": {"code": "unknown_workspace", "message": "no ws-9"}})),
                )
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/base"), seen)
}

fn registration() -> Registration {
    Registration {
        site: Ident::parse("sim").unwrap(),
        backend: "fake".into(),
        version: "0".into(),
        datasets: vec![],
        capacity: Capacity::default(),
        images: vec![],
        start_timeout_s: basho_core::protocol::DEFAULT_START_TIMEOUT_S,
        session_key: None,
        ceiling: None,
        capacity_note: None,
        features: Vec::new(),
    }
}

#[tokio::test]
async fn speaks_the_protocol() {
    let (url, seen) = stub().await;
    let c = Client::new(&url, "site-token", &TlsPolicy::plain_loopback()).unwrap();
    let r = c.register(&registration()).await.unwrap();
    assert_eq!(
        r,
        Registered {
            site: "sim".into(),
            revision: 7
        }
    );
    let site = Ident::parse("sim").unwrap();
    assert_eq!(c.desired(&site, None, 25).await.unwrap().revision, 8);
    c.desired(&site, Some(8), 25).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("register".into(), "Bearer site-token".into()),
            ("desired".into(), "site=sim&after=-1&wait_s=0".into()),
            ("desired".into(), "site=sim&after=8&wait_s=25".into()),
        ]
    );
    assert!(!format!("{c:?}").contains("site-token"));
}

#[tokio::test]
async fn error_answers_carry_code_and_retryability() {
    let (url, _) = stub().await;
    let c = Client::new(&url, "t", &TlsPolicy::plain_loopback()).unwrap();
    let batch = ObservationBatch {
        site: Ident::parse("sim").unwrap(),
        observations: vec![],
    };
    let err = c.observations(&batch).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Status { status: 404, code, .. } if code == "unknown_workspace"),
        "{err}"
    );
    assert!(!err.is_retryable());

    let gone = Client::new("http://127.0.0.1:1", "t", &TlsPolicy::plain_loopback()).unwrap();
    let err = gone.register(&registration()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    assert!(err.is_retryable());
    assert!(Client::new("ftp://x", "t", &TlsPolicy::plain_loopback()).is_err());
}

#[test]
fn retryability() {
    let status = |s| ClientError::Status {
        status: s,
        code: String::new(),
        message: String::new(),
    };
    for s in [500, 502, 503, 408, 409, 429] {
        assert!(status(s).is_retryable(), "{s}");
    }
    for s in [400, 404, 422] {
        assert!(!status(s).is_retryable(), "{s}");
    }
}

#[test]
fn backoff_grows_with_full_jitter_and_caps() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let delays: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
    assert!(delays[0] <= Duration::from_millis(100));
    assert!(
        delays[30..].iter().any(|d| *d > Duration::from_millis(200)),
        "{delays:?}"
    );
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}
