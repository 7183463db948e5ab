//! Bearer-token auth and roles (docs/design.md section 4) as axum extractors: each route names the
//! roles it takes, and every refused request is written to the audit log, never with its token.
//! Who a token belongs to is [`crate::tokens::Tokens`]' business.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use basho_core::Ident;
use serde_json::json;

use super::ApiError;
use crate::Orchestrator;
use crate::store::Role;
use crate::tokens::Principal;

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "missing, unknown or revoked bearer token; send `Authorization: Bearer <token>`",
    )
}

fn forbidden(needs: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this endpoint needs {needs} token; ask an administrator for one"),
    )
}

async fn refuse(parts: &Parts, o: &Orchestrator, actor: &str, status: u16, why: &str) {
    o.audit(
        actor,
        "auth_failed",
        parts.uri.path(),
        json!({"method": parts.method.as_str(), "status": status, "reason": why}),
    )
    .await;
}

/// The principal of the request's bearer token; 401 (audited) when there is none.
pub async fn principal(parts: &Parts, o: &Orchestrator) -> Result<Principal, ApiError> {
    let token = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let found = match token {
        Some(t) => o.inner().auth.identify(o.inner().store.as_ref(), t).await?,
        None => None,
    };
    match found {
        Some(p) => Ok(p),
        None => {
            let why = if token.is_some() {
                "unknown or revoked token"
            } else {
                "no bearer token"
            };
            refuse(parts, o, "anonymous", 401, why).await;
            Err(unauthenticated())
        }
    }
}

/// Answers `principal` when `allowed` says so, else 403 (audited) naming what is needed.
async fn require(
    parts: &Parts,
    o: &Orchestrator,
    allowed: &[Role],
    needs: &str,
) -> Result<Principal, ApiError> {
    let p = principal(parts, o).await?;
    if allowed.contains(&p.role()) {
        Ok(p)
    } else {
        let why = format!("a {} token; needs {needs}", p.role());
        refuse(parts, o, &p.actor(), 403, &why).await;
        Err(forbidden(needs))
    }
}

/// A request made with a platform or admin token.
#[derive(Debug, Clone)]
pub struct Platform(pub Principal);

impl FromRequestParts<Orchestrator> for Platform {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        require(
            parts,
            o,
            &[Role::Platform, Role::Admin],
            "a platform or admin",
        )
        .await
        .map(Platform)
    }
}

/// A request made with a platform token: what only the platform decides (a project's
/// priority).
#[derive(Debug, Clone)]
pub struct PlatformOnly(pub Principal);

impl FromRequestParts<Orchestrator> for PlatformOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        require(parts, o, &[Role::Platform], "a platform")
            .await
            .map(PlatformOnly)
    }
}

/// A request made with a token that may read workspaces: platform, admin, or a researcher (who
/// sees only their own).
#[derive(Debug, Clone)]
pub struct Reader(pub Principal);

impl Reader {
    /// Whether the reader may see a workspace owned by `owner`.
    pub fn may_read(&self, owner: &str) -> bool {
        match &self.0 {
            Principal::Researcher(sub) => sub == owner,
            _ => true,
        }
    }
}

impl FromRequestParts<Orchestrator> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        let allowed = [Role::Platform, Role::Admin, Role::Researcher];
        require(parts, o, &allowed, "a platform, admin or researcher")
            .await
            .map(Reader)
    }
}

/// A request made with an auditor or admin token.
#[derive(Debug, Clone)]
pub struct AuditReader(pub Principal);

impl FromRequestParts<Orchestrator> for AuditReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        require(
            parts,
            o,
            &[Role::Auditor, Role::Admin],
            "an auditor or admin",
        )
        .await
        .map(AuditReader)
    }
}

/// A request made with a token that may read usage: platform, admin or auditor.
#[derive(Debug, Clone)]
pub struct UsageReader(pub Principal);

impl FromRequestParts<Orchestrator> for UsageReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        let allowed = [Role::Platform, Role::Admin, Role::Auditor];
        require(parts, o, &allowed, "a platform, admin or auditor")
            .await
            .map(UsageReader)
    }
}

/// A request made with an admin token.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<Orchestrator> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        require(parts, o, &[Role::Admin], "an admin")
            .await
            .map(Admin)
    }
}

/// A request made with an agent token: the site it belongs to.
#[derive(Debug, Clone)]
pub struct AgentSite(pub Ident);

impl AgentSite {
    /// Refuses a request that names another site than the token's.
    pub fn check(&self, site: &Ident) -> Result<(), ApiError> {
        if &self.0 == site {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this token belongs to site {}, not {site}; each agent speaks only for its own \
                     site",
                    self.0
                ),
            ))
        }
    }

    /// [`AgentSite::check`], writing a refusal to the audit log.
    pub async fn check_audited(
        &self,
        o: &Orchestrator,
        route: &str,
        site: &Ident,
    ) -> Result<(), ApiError> {
        let r = self.check(site);
        if r.is_err() {
            o.audit(
                &format!("agent:{}", self.0),
                "auth_failed",
                route,
                json!({"status": 403, "reason": format!("agent token of site {} named site {site}", self.0)}),
            )
            .await;
        }
        r
    }
}

impl FromRequestParts<Orchestrator> for AgentSite {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        match require(parts, o, &[Role::Agent], "an agent (of this site)").await? {
            Principal::Agent(site) => Ok(AgentSite(site)),
            _ => Err(forbidden("an agent (of this site)")),
        }
    }
}
