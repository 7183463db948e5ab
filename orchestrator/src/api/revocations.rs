//! `POST /v1/revocations`: the HTTP side of [`crate::revocations`].

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use basho_core::ErrorBody;
use basho_core::revocation::{RevocationRequest, Revoked};

use super::auth::Platform;
use super::extract::ApiJson;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::revocations::Refused;
use crate::store::NewRevocation;

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, e.code, e.to_string())
    }
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
    let new = NewRevocation {
        dataset: req.dataset,
        subject: req.subject,
        project: req.project,
        visa_jti: req.visa_jti,
        reason,
    };
    let revoked = crate::revocations::revoke(&o, &who.actor(), new, started).await?;
    Ok((StatusCode::ACCEPTED, Json(revoked)))
}
