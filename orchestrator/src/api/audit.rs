//! `GET /v1/audit`: the hash-chained audit log, a page at a time (auditor and admin tokens).

use axum::Json;
use axum::extract::State;
use basho_core::ErrorBody;
use basho_core::audit::AuditEntry;
use serde::{Deserialize, Serialize};

use super::auth::AuditReader;
use super::extract::ApiQuery;
use super::{ApiError, ApiResult};
use crate::Orchestrator;

/// Most entries one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Paging of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries after this seq (default 0: from the start).
    pub after: Option<i64>,
    /// Most entries to answer, 1 to 1000 (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The `after` of the next page, or null when this page reached the end.
    pub next: Option<i64>,
}

/// The audit log.
///
/// Entries are chained: each holds the hash of the one before, so `basho audit verify` can name
/// the first row that was altered or deleted.
#[utoipa::path(
    get, path = "/v1/audit", operation_id = "listAudit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 401, description = "No, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "Not an auditor or admin token", body = ErrorBody),
        (status = 422, description = "Bad paging", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    _: AuditReader,
    State(o): State<Orchestrator>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "query parameter limit is {limit}; use 1 to {MAX_PAGE}"
        )));
    }
    let after = q.after.unwrap_or(0).max(0);
    let entries = o.inner().store.audit_page(after, limit).await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}
