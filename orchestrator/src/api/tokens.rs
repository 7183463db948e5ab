//! `/v1/tokens`: administrators create, list and revoke stored tokens over the API, as
//! `basho-orchestrator token` does on the orchestrator's host.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use basho_core::{ErrorBody, Ident};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::extract::ApiJson;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::store::{Role, TokenRecord};
use crate::tokens::{self, NewToken, TokenError};

/// A stored token as the API shows it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// `tok-<8 hex>`.
    pub id: String,
    /// `platform`, `admin`, `auditor`, `agent` or `researcher`.
    pub role: String,
    /// The researcher's visa `sub`.
    pub subject: Option<String>,
    /// The agent's site.
    pub site: Option<String>,
    /// Whom it is for.
    pub name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it stops opening anything (absent only on tokens made before tokens expired).
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            role: t.role.as_str().to_owned(),
            subject: t.subject,
            site: t.site.map(|s| s.to_string()),
            name: t.name,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
            expires_at: t.expires_at,
        }
    }
}

/// What `POST /v1/tokens` takes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `platform`, `admin`, `auditor`, `agent` or `researcher`.
    pub role: String,
    /// The researcher's visa `sub` (researcher tokens only).
    pub subject: Option<String>,
    /// The agent's site (agent tokens only).
    pub site: Option<Ident>,
    /// Whom it is for.
    pub name: Option<String>,
    /// Its lifetime in seconds, 60 to three years; 90 days for platform and agent tokens and
    /// 12 hours for people's (admin, auditor, researcher) when absent.
    #[schema(minimum = 60, maximum = 94_608_000)]
    pub ttl_s: Option<u64>,
}

/// A new token: shown only in this answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The bearer token; only its SHA-256 is kept.
    pub token: String,
    /// What was stored.
    #[serde(flatten)]
    pub info: TokenInfo,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Usage(m) => ApiError::invalid(m),
        TokenError::NotFound(id) => {
            ApiError::not_found(format!("no token {id}; list tokens with GET /v1/tokens"))
        }
        TokenError::Store(e) => e.into(),
    }
}

/// Create a token (admin).
#[utoipa::path(
    post, path = "/v1/tokens", operation_id = "createToken", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; the token is shown only now", body = CreatedToken),
        (status = 401, description = "No, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 422, description = "Unknown role, or a subject or site missing or misplaced", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    Admin(who): Admin,
    State(o): State<Orchestrator>,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "role {:?} is unknown; use platform, admin, auditor, agent or researcher",
            req.role
        ))
    })?;
    let new = NewToken {
        role,
        subject: req.subject,
        site: req.site,
        name: req.name,
        ttl: req.ttl_s.map(std::time::Duration::from_secs),
    };
    let (rec, token) = tokens::create(o.inner().store.as_ref(), new, &who.actor())
        .await
        .map_err(token_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: rec.into(),
        }),
    ))
}

/// List tokens (admin).
#[utoipa::path(
    get, path = "/v1/tokens", operation_id = "listTokens", tag = "tokens",
    responses(
        (status = 200, description = "Every stored token, oldest first", body = Vec<TokenInfo>),
        (status = 401, description = "No, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(_: Admin, State(o): State<Orchestrator>) -> ApiResult<Json<Vec<TokenInfo>>> {
    let all = o.inner().store.tokens().await?;
    Ok(Json(all.into_iter().map(TokenInfo::from).collect()))
}

/// Revoke a token (admin); it stops working at once.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", operation_id = "revokeToken", tag = "tokens",
    params(("id" = String, Path, description = "Token id (`tok-...`)")),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = TokenInfo),
        (status = 401, description = "No, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    Admin(who): Admin,
    State(o): State<Orchestrator>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TokenInfo>> {
    let Path(id) =
        id.map_err(|e| ApiError::invalid(format!("bad token id in the path: {}", e.body_text())))?;
    let rec = tokens::revoke(o.inner().store.as_ref(), &id, &who.actor())
        .await
        .map_err(token_error)?;
    o.inner().auth.forget(&rec.id);
    Ok(Json(rec.into()))
}
