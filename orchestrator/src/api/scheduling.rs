//! `/v1/projects/{id}/scheduling`: the platform sets a project's priority and fair-share weight;
//! platform, admin and auditors read them with the project's place in the queue.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use basho_core::queue::Scheduling;
use basho_core::{ErrorBody, Ident};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use super::auth::{PlatformOnly, UsageReader};
use super::extract::ApiJson;
use super::usage::project_param;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::store::WorkspaceFilter;

/// A project's scheduling and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SchedulingStatus {
    /// The project.
    pub project: Ident,
    /// Its priority, as the platform set it (default 50).
    #[schema(minimum = 0, maximum = 100)]
    pub priority: u32,
    /// Its fair-share weight, as the platform set it (default 1).
    #[schema(minimum = 1, maximum = 10000)]
    pub share: u32,
    /// Its workspaces waiting in the queue.
    pub queued: u64,
    /// Its share of recent use, decayed by `scheduler.half_life_s` (0 to 1).
    pub usage_share: f64,
}

async fn status(o: &Orchestrator, project: &Ident) -> ApiResult<SchedulingStatus> {
    let inner = o.inner();
    let scheduling = inner
        .store
        .schedulings()
        .await?
        .get(project)
        .copied()
        .unwrap_or_default();
    let used = crate::queue::recent_use(o, Utc::now()).await?;
    let total: f64 = used.values().sum();
    let mine = used.get(project).copied().unwrap_or(0.0);
    let filter = WorkspaceFilter {
        project: Some(project.clone()),
        states: vec![basho_core::State::Queued],
        ..WorkspaceFilter::default()
    };
    let queued = inner.store.list_workspaces(&filter).await?.len() as u64;
    Ok(SchedulingStatus {
        project: project.clone(),
        priority: scheduling.priority,
        share: scheduling.share,
        queued,
        usage_share: if total > 0.0 { mine / total } else { 0.0 },
    })
}

/// Set a project's priority and fair-share weight (platform token only).
#[utoipa::path(
    put, path = "/v1/projects/{id}/scheduling", operation_id = "setScheduling", tag = "usage",
    params(("id" = Ident, Path, description = "Project")),
    request_body = Scheduling,
    responses(
        (status = 200, description = "The scheduling and where the project stands", body = SchedulingStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform token", body = ErrorBody),
        (status = 422, description = "A priority or share outside its range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set(
    PlatformOnly(who): PlatformOnly,
    State(o): State<Orchestrator>,
    project: Result<Path<String>, PathRejection>,
    ApiJson(s): ApiJson<Scheduling>,
) -> ApiResult<Json<SchedulingStatus>> {
    let project = project_param(project)?;
    s.validate().map_err(ApiError::invalid)?;
    o.inner()
        .store
        .set_scheduling(&project, s, Utc::now())
        .await?;
    o.audit(&who.actor(), "scheduling_set", project.as_str(), json!(s))
        .await;
    o.inner().queue.wake.poke();
    Ok(Json(status(&o, &project).await?))
}

/// A project's priority, fair-share weight and place in the queue.
#[utoipa::path(
    get, path = "/v1/projects/{id}/scheduling", operation_id = "getScheduling", tag = "usage",
    params(("id" = Ident, Path, description = "Project")),
    responses(
        (status = 200, description = "The scheduling and where the project stands", body = SchedulingStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 422, description = "The project id is not an identifier", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    _: UsageReader,
    State(o): State<Orchestrator>,
    project: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SchedulingStatus>> {
    let project = project_param(project)?;
    Ok(Json(status(&o, &project).await?))
}
