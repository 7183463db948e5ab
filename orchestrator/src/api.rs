//! The HTTP API: routes, the error type every handler answers with, and the request-metrics
//! layer. One file per resource under `api/`.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use basho_core::ErrorBody;

use crate::Orchestrator;
use crate::store::StoreError;

pub mod agent;
pub mod audit;
pub mod auth;
pub mod consent;
pub mod extract;
pub mod federated;
pub mod meta;
pub mod releases;
pub mod revocations;
pub mod scheduling;
pub mod sessions;
pub mod sites;
pub mod templates;
pub mod tes;
pub mod tokens;
pub mod usage;
pub mod workspaces;

pub use meta::ApiDoc;

/// An error answer: a status and the contract body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, a snake_case `code` and a message that says how to fix it.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!(
                "no workspace {id}; list workspaces with GET /v1/workspaces"
            )),
            StoreError::IdempotencyKeyReused { workspace } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key already created workspace {workspace} from a different \
                     request; use a fresh key for a new request, or resend the original body"
                ),
            ),
            StoreError::Database(e) if store_unavailable(&e) => {
                // The transaction rolled back: nothing of the request was written.
                tracing::warn!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the orchestrator's database is busy, locked or out of space, and nothing of \
                     this request was written; retry shortly (with the same Idempotency-Key for a \
                     create), and tell the operator if it persists",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the orchestrator's store failed; retry, and tell the operator if it persists",
                )
            }
        }
    }
}

/// A database that is busy, locked, full or unreachable: the request may succeed later.
fn store_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let msg = db.message();
            // SQLite: BUSY (5), LOCKED (6), IOERR (10), FULL (13) and their extended codes.
            let sqlite = code
                .parse::<i64>()
                .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13));
            // PostgreSQL: connection exceptions, insufficient resources, operator intervention.
            let postgres =
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
            sqlite || postgres || msg.contains("database is locked") || msg.contains("disk is full")
        }
        _ => false,
    }
}

/// 400 `websocket_required`: a WebSocket route asked of plain HTTP (`what` names the route).
pub fn websocket_required(
    e: &axum::extract::ws::rejection::WebSocketUpgradeRejection,
    what: &str,
) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "websocket_required",
        format!(
            "{what} is a WebSocket ({}); send the Upgrade: websocket headers",
            e.body_text()
        ),
    )
}

/// The result type of every handler.
pub type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see GET /openapi.json for the API",
    )
}

/// The stable code of an error status whose answer the framework wrote (an extractor's
/// rejection: query string, path, WebSocket upgrade, content type, body size).
fn framework_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthenticated",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "body_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        426 => "upgrade_required",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

/// Every error answer in the contract's shape: one the framework wrote as plain text (axum's
/// extractors answer `Failed to deserialize query string: ...` or `Connection header did not
/// include 'upgrade'`) becomes `{"error": {"code", "message"}}` with the same status and the
/// text as its message. Handlers' own errors are JSON already and pass untouched.
async fn error_shape(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!("{status}; see GET /openapi.json for the API")
    } else {
        format!("{text}; see GET /openapi.json for the API")
    };
    let mut shaped = ApiError::new(status, framework_code(status), message).into_response();
    // Keep what the status needs (`Allow`, `Sec-WebSocket-Version`, `WWW-Authenticate`).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            shaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    shaped
}

async fn record_metrics(State(o): State<Orchestrator>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let res = next.run(req).await;
    o.inner().metrics.observe_request(
        &method,
        &route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// TES names its cancel `POST /tasks/{id}:cancel`, a suffix inside a path segment, which the
/// router cannot match: that path is routed as `/tasks/{id}/cancel`.
fn tes_cancel_path(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    let cancel = uri
        .path()
        .strip_prefix("/ga4gh/tes/v1/tasks/")
        .and_then(|rest| rest.strip_suffix(":cancel"))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    if let Some(id) = cancel {
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        if let Ok(to) = format!("/ga4gh/tes/v1/tasks/{id}/cancel{query}").parse() {
            *req.uri_mut() = to;
        }
    }
    req
}

/// Every route, with auth, the body limit, metrics and the contract's error fallbacks.
pub fn router(o: Orchestrator) -> Router {
    let routes = routes(o);
    Router::new().fallback_service(tower::ServiceExt::map_request(routes, tes_cancel_path))
}

fn routes(o: Orchestrator) -> Router {
    let limit = o.inner().config.limits.max_body_bytes;
    Router::new()
        .route(
            "/v1/workspaces",
            post(workspaces::create).get(workspaces::list),
        )
        .route(
            "/v1/workspaces/{id}",
            get(workspaces::show).delete(workspaces::delete),
        )
        .route("/v1/workspaces/{id}/session", get(sessions::open))
        .route("/v1/agent/tunnel", get(agent::tunnel))
        .route(
            "/v1/workspaces/{id}/release-requests",
            post(releases::create),
        )
        .route("/v1/release-requests", get(releases::list))
        .route("/v1/release-requests/{id}", get(releases::get))
        .route("/v1/release-requests/{id}/reviews", post(releases::review))
        .route("/v1/release-requests/{id}/submit", post(releases::submit))
        .route(
            "/v1/release-requests/{id}/withdraw",
            post(releases::withdraw),
        )
        .route(
            "/v1/release-requests/{id}/files/{*name}",
            get(releases::download),
        )
        .route("/ga4gh/tes/v1/service-info", get(tes::service_info))
        .route("/ga4gh/tes/v1/tasks", post(tes::create).get(tes::list))
        .route("/ga4gh/tes/v1/tasks/{id}", get(tes::get))
        .route("/ga4gh/tes/v1/tasks/{id}/cancel", post(tes::cancel))
        .route(
            "/v1/federated-jobs",
            post(federated::create).get(federated::list),
        )
        .route("/v1/federated-jobs/{id}", get(federated::get))
        .route("/v1/federated-jobs/{id}/cancel", post(federated::cancel))
        .route("/v1/sites", get(sites::list))
        .route("/v1/sites/{id}/session-key", get(sites::session_key))
        .route(
            "/v1/sites/{site}/datasets/{id}/releases",
            get(consent::releases),
        )
        .route("/v1/withdrawals/{id}", get(consent::withdrawal))
        .route("/v1/templates", get(templates::list))
        .route("/v1/revocations", post(revocations::revoke))
        .route("/v1/audit", get(audit::list))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/agent/register", post(agent::register))
        .route("/v1/agent/capacity", put(agent::capacity))
        .route("/v1/agent/desired", get(agent::desired))
        .route("/v1/agent/observations", post(agent::observations))
        .route("/v1/agent/consent", post(consent::ingest))
        .route("/v1/agent/usage", post(usage::ingest))
        .route("/v1/projects/{id}/usage", get(usage::report))
        .route(
            "/v1/projects/{id}/quota",
            get(usage::get_quota).put(usage::set_quota),
        )
        .route(
            "/v1/projects/{id}/scheduling",
            get(scheduling::get).put(scheduling::set),
        )
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(error_shape))
        .layer(middleware::from_fn_with_state(o.clone(), record_metrics))
        .with_state(o)
}
