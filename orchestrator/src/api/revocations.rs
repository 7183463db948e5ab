//! `POST /v1/revocations`: record a revocation, end every live workspace it covers, and refuse
//! creates it covers from then on. Agents receive the whole list with every desired state.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use basho_core::revocation::{Holder, Revocation, RevocationRequest, VisaId, first_match, visa_id};
use basho_core::{ErrorBody, State as WsState};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::Platform;
use super::extract::ApiJson;
use super::{ApiError, ApiResult};
use crate::metrics::ReasonLabels;
use crate::store::{NewRevocation, Transition, WorkspaceFilter, WorkspaceRecord};
use crate::{Inner, Orchestrator};

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Workspaces moved to `revoked`; their sites stop them.
    pub affected: Vec<String>,
    /// The revocation as recorded.
    pub revocation: Revocation,
}

/// The visa ids of a stored workspace, from its stored (already verified) visas. A visa whose
/// payload cannot be read counts as issued at time 0, so an older revocation still covers it.
fn visa_ids(rec: &WorkspaceRecord) -> Vec<VisaId> {
    rec.visas
        .iter()
        .enumerate()
        .map(|(i, jwt)| {
            visa_id(jwt).unwrap_or_else(|| VisaId {
                jti: rec
                    .visa_refs
                    .get(i)
                    .map(|r| r.jti.clone())
                    .unwrap_or_default(),
                iat: 0,
            })
        })
        .collect()
}

/// The revocation that covers `rec`, if any.
pub(crate) fn covering<'r>(
    list: &'r [Revocation],
    rec: &WorkspaceRecord,
) -> Option<&'r Revocation> {
    let visas = visa_ids(rec);
    let w = &rec.workspace;
    first_match(
        list,
        Holder {
            project: w.project.as_str(),
            owner: &w.owner,
            datasets: &w.datasets,
            visas: &visas,
        },
    )
}

/// Refuses a create that a revocation covers: 403 `project_revoked` when it names the project
/// alone, `visa_revoked` otherwise.
pub(crate) async fn refuse_revoked(inner: &Inner, rec: &WorkspaceRecord) -> ApiResult<()> {
    let list = inner.revocations();
    let Some(r) = covering(&list, rec) else {
        return Ok(());
    };
    let only_project = r.dataset.is_none() && r.subject.is_none() && r.visa_jti.is_none();
    let (code, what) = if only_project {
        (
            "project_revoked",
            format!("project {} was revoked", rec.workspace.project),
        )
    } else {
        (
            "visa_revoked",
            "a visa of this request was revoked".to_owned(),
        )
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        code,
        format!(
            "{what} (revocation {} of {}, {}: {}); ask the DAC for a new approval",
            r.seq,
            r.at.to_rfc3339(),
            r.reason,
            r.selectors()
        ),
    ))
}

/// Revoke access by dataset, subject, project or visa `jti`.
///
/// Records the revocation, moves every live workspace it covers to `revoked` (its site stops the
/// container) and refuses later creates it covers with 403. A dataset or subject revocation
/// covers visas issued at or before it; a `visa_jti` revocation voids that visa forever; a project
/// revocation ends the project. Every agent keeps the list and applies it itself.
#[utoipa::path(
    post, path = "/v1/revocations", operation_id = "revoke", tag = "revocations",
    request_body = RevocationRequest,
    responses(
        (status = 202, description = "Recorded; the affected workspaces are being stopped", body = Revoked),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not revoke", body = ErrorBody),
        (status = 422, description = "No selector, or an unknown reason", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "revoke", skip_all)]
pub async fn revoke(
    Platform(who): Platform,
    State(o): State<Orchestrator>,
    ApiJson(req): ApiJson<RevocationRequest>,
) -> ApiResult<(StatusCode, Json<Revoked>)> {
    let started = Instant::now();
    let reason = req.validate().map_err(ApiError::invalid)?;
    let inner = o.inner();
    let new = NewRevocation {
        dataset: req.dataset,
        subject: req.subject,
        project: req.project,
        visa_jti: req.visa_jti,
        reason,
    };
    let (revocation, revision) = inner.store.record_revocation(&new, Utc::now()).await?;
    basho_core::crash_point!("orchestrator.revocation.recorded");
    inner.remember_revocation(revocation.clone());
    let timer = &inner.metrics.revocations_pending;
    timer.begin(revocation.seq, started);
    // Every agent hears of it at once: each applies the list to what it runs.
    for (site, _) in inner.sites.last_contacts() {
        inner.sites.publish(&site, revision);
    }
    let live: Vec<WsState> = WsState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect();
    let filter = WorkspaceFilter {
        project: revocation.project.clone(),
        states: live,
        ..WorkspaceFilter::default()
    };
    let candidates = inner.store.list_workspaces(&filter).await?;
    let one = std::slice::from_ref(&revocation);
    let message = format!(
        "revoked ({}, revocation {}: {})",
        revocation.reason,
        revocation.seq,
        revocation.selectors()
    );
    let mut affected = Vec::new();
    for rec in candidates.iter().filter(|r| covering(one, r).is_some()) {
        // Before the change, so the site's confirmation cannot come first.
        timer.expect(revocation.seq, &rec.workspace.id);
        if let Transition::Changed { .. } = o
            .transition_as(
                &who.actor(),
                &rec.workspace.id,
                WsState::Revoked,
                Some(&message),
            )
            .await?
        {
            if matches!(rec.workspace.state, WsState::Pending | WsState::Placed) {
                let note = basho_core::revocation::NOTHING_REPORTED;
                inner.store.note_revoked(&rec.workspace.id, note).await?;
                timer.settled(revocation.seq, &rec.workspace.id);
            }
            affected.push(rec.workspace.id.clone());
        } else {
            timer.settled(revocation.seq, &rec.workspace.id);
        }
    }
    basho_core::crash_point!("orchestrator.revocation.applied");
    inner.metrics.revocation_end(revocation.seq);
    inner
        .metrics
        .revocations
        .get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        })
        .inc();
    inner
        .metrics
        .revocation_duration
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(seq = revocation.seq, reason = %reason, selectors = %revocation.selectors(),
        affected = affected.len(), "revocation recorded");
    let detail = serde_json::json!({"revocation": revocation, "affected": affected});
    o.audit(
        &who.actor(),
        "revocation",
        &format!("revocation-{}", revocation.seq),
        detail,
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Revoked {
            affected,
            revocation,
        }),
    ))
}
