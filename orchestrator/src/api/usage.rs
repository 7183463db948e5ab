//! Usage: agents deliver their journal (`POST /v1/agent/usage`), the platform reads reports per
//! project (`GET /v1/projects/{id}/usage`) and sets budgets (`PUT /v1/projects/{id}/quota`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use basho_core::usage::{SiteUsage, Totals, UsageAck, UsageBatch, UsageReport, WorkspaceUsage};
use basho_core::{ErrorBody, Ident};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{AgentSite, Platform, UsageReader};
use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::quota::Balance;
use crate::store::Quota;

/// Most records one delivery may carry.
pub const MAX_RECORDS: usize = 5_000;

/// Store an agent's usage records.
///
/// Each `(site, seq)` is stored once: a repeat is acknowledged and not stored again. The answer
/// names the highest `seq` below which the site's records are complete; the agent drops those
/// from its journal. A record about a workspace that is not the site's is kept but never counted.
#[utoipa::path(
    post, path = "/v1/agent/usage", operation_id = "agentUsage", tag = "agent",
    request_body = UsageBatch,
    responses(
        (status = 200, description = "Stored; how far the site's records are complete", body = UsageAck),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 422, description = "Invalid batch", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn ingest(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiJson(batch): ApiJson<UsageBatch>,
) -> ApiResult<Json<UsageAck>> {
    agent
        .check_audited(&o, "/v1/agent/usage", &batch.site)
        .await?;
    if batch.records.len() > MAX_RECORDS {
        return Err(ApiError::invalid(format!(
            "{} records in one delivery; send at most {MAX_RECORDS}",
            batch.records.len()
        )));
    }
    if let Some(r) = batch.records.iter().find(|r| r.seq == 0 || r.to < r.from) {
        return Err(ApiError::invalid(format!(
            "record {} of workspace {} is malformed: seq starts at 1 and `to` is not before `from`",
            r.seq, r.workspace
        )));
    }
    let inner = o.inner();
    let done = inner
        .store
        .ingest_usage(&batch.site, &batch.records, Utc::now())
        .await?;
    for r in &done.new {
        inner.metrics.record_usage(r, batch.site.as_str());
    }
    if done.rejected > 0 {
        tracing::warn!(site = %batch.site, rejected = done.rejected,
            "usage records about workspaces that are not the site's were stored uncounted");
        let detail = json!({"rejected": done.rejected});
        o.audit(
            &format!("agent:{}", batch.site),
            "usage_rejected",
            batch.site.as_str(),
            detail,
        )
        .await;
    }
    Ok(Json(UsageAck {
        acked_through: done.acked_through,
    }))
}

pub(super) fn project_param(p: Result<Path<String>, PathRejection>) -> ApiResult<Ident> {
    let Path(id) =
        p.map_err(|e| ApiError::invalid(format!("bad project in the path: {}", e.body_text())))?;
    Ident::parse(&id).map_err(|e| ApiError::invalid(format!("project {id:?}: {e}")))
}

/// The period of a usage report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (RFC 3339), inclusive; the beginning of time when absent.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), exclusive; now when absent.
    pub to: Option<DateTime<Utc>>,
}

/// A project's usage.
#[utoipa::path(
    get, path = "/v1/projects/{id}/usage", operation_id = "projectUsage", tag = "usage",
    params(("id" = Ident, Path, description = "Project"), UsageQuery),
    responses(
        (status = 200, description = "Totals, by site and by workspace", body = UsageReport),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 422, description = "Bad project or period", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn report(
    _: UsageReader,
    State(o): State<Orchestrator>,
    project: Result<Path<String>, PathRejection>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let project = project_param(project)?;
    let from = q.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let to = q.to.unwrap_or_else(Utc::now);
    if to < from {
        return Err(ApiError::invalid("`to` is before `from`"));
    }
    let rows = o.inner().store.usage_of(&project, from, to).await?;
    let mut totals = Totals::default();
    let mut sites: BTreeMap<String, Totals> = BTreeMap::new();
    let mut workspaces: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for row in &rows {
        totals.add(&row.record);
        sites
            .entry(row.site.to_string())
            .or_default()
            .add(&row.record);
        workspaces
            .entry((row.record.workspace.clone(), row.site.to_string()))
            .or_default()
            .add(&row.record);
    }
    Ok(Json(UsageReport {
        project: project.to_string(),
        from,
        to,
        totals,
        by_site: sites
            .into_iter()
            .map(|(site, totals)| SiteUsage { site, totals })
            .collect(),
        by_workspace: workspaces
            .into_iter()
            .map(|((workspace, site), totals)| WorkspaceUsage {
                workspace,
                site,
                totals,
            })
            .collect(),
    }))
}

/// A project's quota and balance.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuotaStatus {
    /// Project.
    pub project: String,
    /// Budget and balance; null when the project has no quota.
    pub balance: Option<Balance>,
}

async fn status(o: &Orchestrator, project: &Ident) -> ApiResult<QuotaStatus> {
    let balance = crate::quota::balance(o, project, Utc::now())
        .await?
        .map(|(b, _)| b);
    Ok(QuotaStatus {
        project: project.to_string(),
        balance,
    })
}

/// Set a project's quota.
///
/// Budgets are in allocated core-hours and GPU-hours over the project's whole life; a missing
/// field means no limit on that resource. Creates that would exceed a budget are refused (403
/// `quota_exceeded`); live workspaces are warned at 80% and stopped after the grace period at 100%.
#[utoipa::path(
    put, path = "/v1/projects/{id}/quota", operation_id = "setQuota", tag = "usage",
    params(("id" = Ident, Path, description = "Project")),
    request_body = Quota,
    responses(
        (status = 200, description = "The quota and the balance", body = QuotaStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform or admin token", body = ErrorBody),
        (status = 422, description = "Negative or non-finite budget", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_quota(
    Platform(who): Platform,
    State(o): State<Orchestrator>,
    project: Result<Path<String>, PathRejection>,
    ApiJson(quota): ApiJson<Quota>,
) -> ApiResult<Json<QuotaStatus>> {
    let project = project_param(project)?;
    for (what, v) in [
        ("core_hours", quota.core_hours),
        ("gpu_hours", quota.gpu_hours),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(ApiError::invalid(format!(
                "{what} must be a number of hours, 0 or more"
            )));
        }
    }
    o.inner()
        .store
        .set_quota(&project, quota, Utc::now())
        .await?;
    o.audit(&who.actor(), "quota_set", project.as_str(), json!(quota))
        .await;
    Ok(Json(status(&o, &project).await?))
}

/// A project's quota and balance.
#[utoipa::path(
    get, path = "/v1/projects/{id}/quota", operation_id = "getQuota", tag = "usage",
    params(("id" = Ident, Path, description = "Project")),
    responses(
        (status = 200, description = "The quota and the balance", body = QuotaStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 422, description = "The project id is not an identifier", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_quota(
    _: UsageReader,
    State(o): State<Orchestrator>,
    project: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<QuotaStatus>> {
    let project = project_param(project)?;
    Ok(Json(status(&o, &project).await?))
}
