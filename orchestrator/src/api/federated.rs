//! `/v1/federated-jobs`: one question answered across several sites ([`crate::federated`]).
//! The platform, or a researcher with their own visas, starts a job; its owner, the platform,
//! admins and auditors follow it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use basho_core::ErrorBody;
use basho_core::federated::{CreateFederatedJob, FederatedJob, JobState};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery};
use super::sessions::Caller;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::tokens::Principal;

/// Runs a site step at every site holding the job's datasets, then aggregates the released
/// partials at one site.
///
/// With an `Idempotency-Key`, the first request answers 201 and a retry with the same body
/// answers 200 with the same job (nothing started again); the same key with another body
/// answers 422 `idempotency_key_reused`.
#[utoipa::path(
    post, path = "/v1/federated-jobs", operation_id = "createFederatedJob", tag = "federated",
    request_body = CreateFederatedJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: 1 to 255 visible ASCII characters (a UUID)")),
    responses(
        (status = 201, description = "Checked whole and started at every site", body = FederatedJob),
        (status = 200, description = "Started before by a request with the same key and body", body = FederatedJob),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "A role that may not, visas that do not verify or grant, visas of someone else or of mixed subjects, or over the project's quota", body = ErrorBody),
        (status = 409, description = "A site has no room now", body = ErrorBody),
        (status = 422, description = "A site without the job's datasets, an aggregation step naming datasets, an unknown site or image; nothing started", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateFederatedJob>,
) -> ApiResult<(StatusCode, Json<FederatedJob>)> {
    let owner = match &who {
        Principal::Platform(_) => None,
        Principal::Researcher(sub) => Some(sub.as_str()),
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "federated jobs are started with the platform's token or a researcher's own",
            ));
        }
    };
    let key = super::workspaces::idempotency_key(&headers, &req)?;
    let (job, replayed) =
        crate::federated::create(&o, &who.actor(), owner, req, key.as_ref()).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(job)))
}

/// Which jobs to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    pub state: Option<String>,
}

/// The owner a caller may list jobs of (none: all), refused for roles that follow none.
fn reader(who: &Principal) -> ApiResult<Option<&str>> {
    match who {
        Principal::Researcher(sub) => Ok(Some(sub)),
        Principal::Platform(_) | Principal::Admin(_) | Principal::Auditor(_) => Ok(None),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's role follows no federated jobs",
        )),
    }
}

/// Federated jobs, oldest first: a researcher's own, or every one.
#[utoipa::path(
    get, path = "/v1/federated-jobs", operation_id = "listFederatedJobs", tag = "federated",
    params(ListQuery),
    responses(
        (status = 200, description = "The jobs", body = Vec<FederatedJob>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "A role that follows no jobs", body = ErrorBody),
        (status = 422, description = "An unknown state", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<FederatedJob>>> {
    let owner = reader(&who)?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!(
                        "state {s:?} is not one of {}",
                        JobState::ALL.map(JobState::as_str).join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let rows = o.inner().store.jobs(owner, false).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| r.job)
            .filter(|j| state.is_none_or(|s| j.state == s))
            .collect(),
    ))
}

/// One job: each site's step, the aggregation, and why it waits or failed.
#[utoipa::path(
    get, path = "/v1/federated-jobs/{id}", operation_id = "getFederatedJob", tag = "federated",
    params(("id" = String, Path, description = "Job id (`fj-...`)", max_length = 64)),
    responses(
        (status = 200, description = "The job", body = FederatedJob),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "A role that follows no jobs", body = ErrorBody),
        (status = 404, description = "No such job this token may see", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> ApiResult<Json<FederatedJob>> {
    let owner = reader(&who)?;
    match o.inner().store.job(&id).await? {
        Some(r) if owner.is_none_or(|me| me == r.job.owner) => Ok(Json(r.job)),
        _ => Err(ApiError::not_found(format!(
            "no federated job {id}; list yours with GET /v1/federated-jobs"
        ))),
    }
}

/// Cancels a job not ended: it fails, saying who canceled it, and its running steps and
/// aggregation stop. A job that has ended is answered as it is, as a workspace's delete is.
#[utoipa::path(
    post, path = "/v1/federated-jobs/{id}/cancel", operation_id = "cancelFederatedJob",
    tag = "federated",
    params(("id" = String, Path, description = "Job id (`fj-...`)", max_length = 64)),
    responses(
        (status = 200, description = "The job, failed as canceled (or as it ended, when it had)", body = FederatedJob),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "A role that may not cancel jobs", body = ErrorBody),
        (status = 404, description = "No such job this token may see", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> ApiResult<Json<FederatedJob>> {
    let owner = match &who {
        Principal::Researcher(sub) => Some(sub.as_str()),
        Principal::Platform(_) | Principal::Admin(_) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a job is canceled by its owner, the platform or an admin",
            ));
        }
    };
    let mut row = match o.inner().store.job(&id).await? {
        Some(r) if owner.is_none_or(|me| me == r.job.owner) => r,
        _ => {
            return Err(ApiError::not_found(format!(
                "no federated job {id}; list yours with GET /v1/federated-jobs"
            )));
        }
    };
    if row.job.state.is_terminal() {
        return Ok(Json(row.job));
    }
    let actor = who.actor();
    crate::federated::driver::cancel(&o, &mut row, &actor).await?;
    Ok(Json(row.job))
}
