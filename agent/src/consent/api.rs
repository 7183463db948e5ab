//! The site's consent API: the platform's consent service records withdrawals with the site's
//! agent directly, never through the orchestrator (which must hold no participant ID). Off
//! unless the site sets `[consent] api_listen` (a loopback address: the service reaches it
//! through the site's own proxy or tunnel) and `api_token_file` (the bearer token it presents).
//!
//! - `POST /v1/withdrawals?wait_s=N` with `{"dataset", "participants": [...], "reason"}`: recorded
//!   as `basho-agent withdraw` records it; answered 200 with what the agent did once it applied
//!   it (up to `wait_s`, default 30, at most 300), 202 with its id while it is still waiting.
//! - `GET /v1/withdrawals/{id}`: its answer (200), 202 while it waits, 404 when unknown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basho_core::Ident;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::desk::{Answer, Spool};
use crate::catalog::Catalog;

/// Longest a request waits for the agent's answer.
const MAX_WAIT_S: u64 = 300;

#[derive(Clone)]
struct Site {
    spool: Spool,
    catalog: Catalog,
    token: Arc<str>,
}

/// `POST /v1/withdrawals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdraw {
    dataset: String,
    participants: Vec<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wait {
    wait_s: Option<u64>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

/// What the consent service is told: the answer as the site keeps it (the IDs it sent and
/// the site did not hold among them), without the workspaces' file names.
fn answered(a: &Answer) -> Response {
    let body = json!({
        "id": a.id,
        "dataset": a.dataset,
        "previous": a.previous,
        "release": a.made.as_ref().map(|m| m.release),
        "sha256": a.made.as_ref().map(|m| m.digest.clone()),
        "removed": a.made.as_ref().map_or(0, |m| m.removed),
        "participants": a.participants,
        "unknown": a.unknown,
        "error": a.error,
        "workspaces_on_older_release": a.on_older.len(),
        "workspaces_holding_copies": a.hits.len(),
    });
    let status = if a.error.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

fn waiting(id: &str) -> Response {
    let body = json!({"id": id, "state": "recorded",
        "message": "recorded; the agent applies it within seconds: GET /v1/withdrawals/{id}"});
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn withdraw(
    State(site): State<Site>,
    Query(q): Query<Wait>,
    body: Result<Json<Withdraw>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(w) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.body_text(),
            );
        }
    };
    let wait = Duration::from_secs(q.wait_s.unwrap_or(30).min(MAX_WAIT_S));
    let dataset = match Ident::parse(&w.dataset) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.to_string(),
            );
        }
    };
    let (spool, catalog) = (site.spool.clone(), site.catalog.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        spool.record(
            &catalog,
            &dataset,
            &w.participants,
            &w.reason,
            chrono::Utc::now(),
        )
    })
    .await;
    let request = match recorded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.to_string(),
            );
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
    };
    info!(request = %request.id, dataset = %request.dataset,
        participants = request.participants.len(), "withdrawal recorded through the site API");
    let spool = site.spool.clone();
    let id = request.id.clone();
    match tokio::task::spawn_blocking(move || spool.wait(&id, wait, |_| {})).await {
        Ok(Some(a)) => answered(&a),
        _ => waiting(&request.id),
    }
}

async fn show(State(site): State<Site>, Path(id): Path<String>) -> Response {
    if let Some(a) = site.spool.answer(&id) {
        return answered(&a);
    }
    if site.spool.pending().iter().any(|r| r.id == id) {
        return waiting(&id);
    }
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no withdrawal {id} was recorded at this site"),
    )
}

/// Answers 401 without the site's token.
async fn gate(State(site): State<Site>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = presented.is_some_and(|t| {
        basho_core::digest::sha256_hex(t.as_bytes())
            == basho_core::digest::sha256_hex(site.token.as_bytes())
    });
    if !ok {
        warn!("a consent API request without the site's token was refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "present the site's consent API token as a bearer token",
        );
    }
    next.run(req).await
}

/// The routes, for `spool` and `catalog`, open to `token`.
pub fn router(spool: Spool, catalog: Catalog, token: &str) -> Router {
    let site = Site {
        spool,
        catalog,
        token: token.into(),
    };
    Router::new()
        .route("/v1/withdrawals", post(withdraw))
        .route("/v1/withdrawals/{id}", get(show))
        .layer(axum::middleware::from_fn_with_state(site.clone(), gate))
        .with_state(site)
}

/// Serves the consent API on `listener` until `stop`.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    info!(listen = ?listener.local_addr().ok(), "serving the consent API");
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "the consent API stopped; withdrawals are still taken by basho-agent withdraw");
    }
}
