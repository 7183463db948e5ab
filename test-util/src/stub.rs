//! A stub orchestrator for the agent's tests: axum on 127.0.0.1:0 serving the routes an agent
//! calls (register, the long-polled desired state, observations, usage, consent) from a world
//! the test sets, and keeping what the agent sent so the test can assert on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::extract::{Query, State as Ax};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basho_core::State;
use basho_core::protocol::{Observation, ObservationBatch, Registration};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Default)]
struct World {
    workspaces: Vec<Value>,
    revocations: Vec<Value>,
    observations: Vec<Observation>,
    registrations: Vec<Registration>,
    capacity_reports: Vec<basho_core::protocol::CapacityReport>,
    consent: Option<basho_core::consent::ConsentReport>,
    polled_sites: Vec<String>,
    refuse_registrations: u32,
    down: bool,
}

/// The stub: cheap to clone, every clone the same world.
#[derive(Clone)]
pub struct StubOrchestrator {
    world: Arc<Mutex<World>>,
    revision: Arc<watch::Sender<i64>>,
    token: Arc<str>,
    url: Arc<str>,
}

#[derive(Deserialize)]
struct DesiredQuery {
    site: Option<String>,
    after: Option<i64>,
    wait_s: Option<u64>,
}

fn refuse(status: StatusCode, code: &str) -> Response {
    let body = json!({"error": {"code": code, "message": code}});
    (status, Json(body)).into_response()
}

fn values<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).expect("serializable"))
        .collect()
}

impl StubOrchestrator {
    /// Serves on a fresh loopback port, accepting only `Bearer {token}`.
    pub async fn start(token: &str) -> StubOrchestrator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, _) = watch::channel(0i64);
        let stub = StubOrchestrator {
            world: Arc::default(),
            revision: Arc::new(tx),
            token: token.into(),
            url: format!("http://{}", listener.local_addr().unwrap()).into(),
        };
        let app = Router::new()
            .route("/v1/agent/register", post(register))
            .route("/v1/agent/desired", get(desired))
            .route("/v1/agent/capacity", axum::routing::put(capacity))
            .route("/v1/agent/observations", post(observations))
            .route("/v1/agent/usage", post(usage))
            .route("/v1/agent/consent", post(consent))
            .layer(axum::middleware::from_fn_with_state(stub.clone(), gate))
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        stub
    }

    /// The base URL the agent dials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Desires `workspaces` (assignments, or any JSON a hostile orchestrator might send).
    pub fn set_desired<T: Serialize>(&self, workspaces: &[T]) {
        self.world.lock().unwrap().workspaces = values(workspaces);
        self.revision.send_modify(|r| *r += 1);
    }

    /// Serves `revocations` as the deny-list.
    pub fn set_revocations<T: Serialize>(&self, revocations: &[T]) {
        self.world.lock().unwrap().revocations = values(revocations);
        self.revision.send_modify(|r| *r += 1);
    }

    /// While `down`, every route answers 503.
    pub fn set_down(&self, down: bool) {
        self.world.lock().unwrap().down = down;
    }

    /// Refuses the next `n` registrations with 503.
    pub fn refuse_registrations(&self, n: u32) {
        self.world.lock().unwrap().refuse_registrations = n;
    }

    /// The registrations accepted so far.
    pub fn registrations(&self) -> Vec<Registration> {
        self.world.lock().unwrap().registrations.clone()
    }

    /// The capacity reports taken so far.
    pub fn capacity_reports(&self) -> Vec<basho_core::protocol::CapacityReport> {
        self.world.lock().unwrap().capacity_reports.clone()
    }

    /// The `site` each desired-state poll named, oldest first.
    pub fn polled_sites(&self) -> Vec<String> {
        self.world.lock().unwrap().polled_sites.clone()
    }

    /// The last observation reported for `ws`.
    pub fn last(&self, ws: &str) -> Option<Observation> {
        let w = self.world.lock().unwrap();
        w.observations
            .iter()
            .rev()
            .find(|o| o.workspace == ws)
            .cloned()
    }

    /// The state last reported for `ws`.
    pub fn last_state(&self, ws: &str) -> Option<State> {
        self.last(ws).map(|o| o.state)
    }

    /// The message last reported for `ws`, empty when none.
    pub fn last_message(&self, ws: &str) -> String {
        self.last(ws).and_then(|o| o.message).unwrap_or_default()
    }

    /// The consent report the agent sent last.
    pub fn consent(&self) -> Option<basho_core::consent::ConsentReport> {
        self.world.lock().unwrap().consent.clone()
    }

    /// Forgets every observation so far.
    pub fn clear_observations(&self) {
        self.world.lock().unwrap().observations.clear();
    }
}

/// Answers 503 while the stub is down and 401 to a request without the token.
async fn gate(Ax(s): Ax<StubOrchestrator>, req: Request, next: Next) -> Response {
    if s.world.lock().unwrap().down {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "down");
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {}", s.token)) {
        return refuse(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    next.run(req).await
}

async fn register(Ax(s): Ax<StubOrchestrator>, Json(r): Json<Registration>) -> Response {
    let site = r.site.clone();
    {
        let mut w = s.world.lock().unwrap();
        if w.refuse_registrations > 0 {
            w.refuse_registrations -= 1;
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
        w.registrations.push(r);
    }
    Json(json!({"site": site, "revision": *s.revision.borrow()})).into_response()
}

async fn capacity(
    Ax(s): Ax<StubOrchestrator>,
    Json(r): Json<basho_core::protocol::CapacityReport>,
) -> StatusCode {
    s.world.lock().unwrap().capacity_reports.push(r);
    StatusCode::NO_CONTENT
}

async fn desired(Ax(s): Ax<StubOrchestrator>, Query(q): Query<DesiredQuery>) -> Response {
    if let Some(site) = q.site {
        s.world.lock().unwrap().polled_sites.push(site);
    }
    let mut rx = s.revision.subscribe();
    if let Some(after) = q.after
        && *rx.borrow_and_update() == after
    {
        let wait = Duration::from_secs(q.wait_s.unwrap_or(0));
        let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r != after)).await;
    }
    let revision = *s.revision.borrow();
    let w = s.world.lock().unwrap();
    Json(
        json!({"revision": revision, "workspaces": w.workspaces, "stopping": [],
        "revocations": w.revocations}),
    )
    .into_response()
}

async fn observations(Ax(s): Ax<StubOrchestrator>, Json(b): Json<ObservationBatch>) -> Response {
    let n = b.observations.len();
    s.world.lock().unwrap().observations.extend(b.observations);
    Json(json!({"applied": n})).into_response()
}

/// Keeps the consent report, as the orchestrator does.
async fn consent(
    Ax(s): Ax<StubOrchestrator>,
    Json(r): Json<basho_core::consent::ConsentReport>,
) -> Response {
    s.world.lock().unwrap().consent = Some(r);
    Json(json!({"audited": 0})).into_response()
}

/// Acknowledges every usage record it is sent.
async fn usage(Json(b): Json<Value>) -> Response {
    let last = b["records"]
        .as_array()
        .and_then(|r| r.iter().filter_map(|r| r["seq"].as_u64()).max())
        .unwrap_or(0);
    Json(json!({"acked_through": last})).into_response()
}
