//! `/v1/workspaces`: create, list, show and delete, the HTTP side of [`crate::workspaces`].

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use basho_core::{CreateWorkspace, ErrorBody, Ident, State as WsState, Workspace};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Platform, Reader};
use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::store::{IdempotencyKey, StoreError, WorkspaceFilter};
use crate::workspaces::CreateError;

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Admission(e) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                ApiError::new(status, e.code(), e.to_string())
            }
            CreateError::Revoked(e) => e.into(),
            CreateError::QuotaExceeded(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", m)
            }
            CreateError::Image { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "image_not_allowed",
                e.to_string(),
            ),
            CreateError::Busy => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_capacity", e.to_string())
            }
            CreateError::Store(e) => e.into(),
        }
    }
}

/// The request's `Idempotency-Key`, if it sent one.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    req: &impl serde::Serialize,
) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII \
                 characters; a UUID is a good key"
            ))
        })?;
    Ok(Some(crate::workspaces::idempotency_key(key, req)))
}

/// Create a workspace.
///
/// Everything is checked before anything is written. With an `Idempotency-Key`, the first
/// request answers 201 and a retry with the same body answers 200 with the same workspace; the
/// same key with another body answers 422 `idempotency_key_reused`.
#[utoipa::path(
    post, path = "/v1/workspaces", operation_id = "createWorkspace", tag = "workspaces",
    request_body = CreateWorkspace,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: one workspace per key")),
    responses(
        (status = 201, description = "Created", body = Workspace),
        (status = 200, description = "Replay of an earlier request with the same key", body = Workspace),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "A visa refused or revoked, a project revoked, or a dataset not granted", body = ErrorBody),
        (status = 409, description = "No site holds the datasets or has the capacity", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    Platform(who): Platform,
    State(o): State<Orchestrator>,
    headers: HeaderMap,
    req: Result<ApiJson<CreateWorkspace>, ApiError>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let started = Instant::now();
    let actor = who.actor();
    let req = match req {
        Ok(ApiJson(req)) => req,
        Err(e) => {
            // Only the code: a parser's message may quote the body, visas included.
            let detail = json!({"status": e.status.as_u16(), "code": e.body.error.code});
            o.audit(&actor, "workspace_refused", "", detail).await;
            return Err(e);
        }
    };
    let answer = match idempotency_key(&headers, &req) {
        Ok(key) => crate::workspaces::create(&o, &actor, &req, key.as_ref())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match answer {
        Ok(c) if c.replayed => Ok((StatusCode::OK, Json(c.workspace))),
        Ok(c) => {
            let seconds = started.elapsed().as_secs_f64();
            o.inner().metrics.create_duration.observe(seconds);
            Ok((StatusCode::CREATED, Json(c.workspace)))
        }
        Err(e) => {
            let detail = json!({
                "status": e.status.as_u16(), "code": e.body.error.code,
                "message": e.body.error.message,
                "project": req.project.as_str(), "template": req.template.as_str(),
            });
            o.audit(&actor, "workspace_refused", "", detail).await;
            Err(e)
        }
    }
}

/// Filters of `GET /v1/workspaces`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this project.
    #[param(value_type = Option<Ident>)]
    pub project: Option<String>,
    /// Only this state.
    #[param(value_type = Option<WsState>)]
    pub state: Option<String>,
    /// Only this site.
    #[param(value_type = Option<Ident>)]
    pub site: Option<String>,
}

fn ident_param(name: &str, v: Option<String>) -> ApiResult<Option<Ident>> {
    v.map(|s| {
        Ident::parse(&s).map_err(|e| ApiError::invalid(format!("query parameter {name}: {e}")))
    })
    .transpose()
}

/// List workspaces, oldest first.
#[utoipa::path(
    get, path = "/v1/workspaces", operation_id = "listWorkspaces", tag = "workspaces",
    params(ListQuery),
    responses(
        (status = 200, description = "Workspaces (a researcher's own only)", body = Vec<Workspace>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or researcher token", body = ErrorBody),
        (status = 422, description = "Bad filter", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    reader: Reader,
    State(o): State<Orchestrator>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Workspace>>> {
    let state = q
        .state
        .map(|s| {
            WsState::parse(&s).ok_or_else(|| {
                let all: Vec<&str> = WsState::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid(format!(
                    "query parameter state is {s:?}; use one of {}",
                    all.join(", ")
                ))
            })
        })
        .transpose()?;
    let filter = WorkspaceFilter {
        project: ident_param("project", q.project)?,
        site: ident_param("site", q.site)?,
        states: state.into_iter().collect(),
        expires_by: None,
    };
    let list = o.inner().store.list_workspaces(&filter).await?;
    Ok(Json(
        list.into_iter()
            .map(|r| {
                let mut w = r.workspace;
                if w.state == WsState::Queued {
                    w.queue = o.inner().queue.info(&w.id);
                }
                w
            })
            .filter(|w| reader.may_read(&w.owner))
            .collect(),
    ))
}

fn path_id(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::invalid(format!("bad workspace id in the path: {}", e.body_text())))
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no workspace {id}; list workspaces with GET /v1/workspaces"
    ))
}

/// Show one workspace.
#[utoipa::path(
    get, path = "/v1/workspaces/{id}", operation_id = "getWorkspace", tag = "workspaces",
    params(("id" = String, Path, description = "Workspace id (`ws-...`)", max_length = 64)),
    responses(
        (status = 200, description = "The workspace", body = Workspace),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or researcher token", body = ErrorBody),
        (status = 404, description = "No such workspace (or another researcher's)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    reader: Reader,
    State(o): State<Orchestrator>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Workspace>> {
    let id = path_id(id)?;
    let rec = o.inner().store.workspace(&id).await?;
    match rec {
        Some(r) if reader.may_read(&r.workspace.owner) => {
            let mut w = r.workspace;
            if w.state == basho_core::State::Running
                && let Some(c) = o.inner().store.consent(&w.site).await?
            {
                w.releases = c.report.workspaces.get(&w.id).cloned().unwrap_or_default();
                w.withdrawn_copies = c.report.copies.get(&w.id).cloned().unwrap_or_default();
            }
            if w.state == basho_core::State::Queued {
                w.queue = o.inner().queue.info(&w.id);
            }
            Ok(Json(w))
        }
        Some(r) => {
            // Another researcher's workspace answers like a missing one, so ids cannot be
            // probed; the attempt is recorded for the auditors.
            o.audit(
                &reader.0.actor(),
                "workspace_read_refused",
                &id,
                serde_json::json!({"status": 404, "code": "not_found", "owner": r.workspace.owner}),
            )
            .await;
            Err(missing(&id))
        }
        None => Err(missing(&id)),
    }
}

/// Stop and remove a workspace.
///
/// A live workspace moves to `stopping`; its agent stops it and reports `stopped`. Deleting a
/// workspace that is already stopping or ended changes nothing and answers the same way.
#[utoipa::path(
    delete, path = "/v1/workspaces/{id}", operation_id = "deleteWorkspace", tag = "workspaces",
    params(("id" = String, Path, description = "Workspace id (`ws-...`)", max_length = 64)),
    responses(
        (status = 202, description = "Stopping (or already ended)", body = Workspace),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform or admin token", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    Platform(who): Platform,
    State(o): State<Orchestrator>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let id = path_id(id)?;
    let w = crate::workspaces::delete(&o, &who.actor(), &id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => missing(&id),
            other => other.into(),
        })?;
    Ok((StatusCode::ACCEPTED, Json(w)))
}
