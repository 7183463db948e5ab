//! Bearer-token auth and roles (DESIGN.md section 4). Config tokens (`platform_tokens`, each
//! agent's token) are compared as SHA-256 digests in constant time against every configured
//! token; tokens made with `basho-orchestrator token create` are looked up in the store by their
//! SHA-256 and cached in memory for [`CACHE_TTL`], so a revocation made by another process (the
//! `token revoke` command) takes effect within that time, and one made through this process at
//! once. Every refused request is written to the audit log, never with its token.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use basho_core::Ident;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::Orchestrator;
use crate::config::Config;
use crate::store::{Role, TokenRecord};

/// How long a database token's principal is cached.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached database tokens; the cache is cleared when it is full.
const CACHE_MAX: usize = 10_000;

type Hash = [u8; 32];

fn digest(token: &str) -> Hash {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of `token`, lowercase hex: how the store keeps tokens.
pub fn token_hash(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn ct_eq(a: &Hash, b: &Hash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform; with the token id when the token is a stored one.
    Platform(Option<String>),
    /// An administrator's token (by id).
    Admin(String),
    /// An auditor's token (by id).
    Auditor(String),
    /// The agent of this site.
    Agent(Ident),
    /// A researcher: the visa `sub` their workspaces carry as owner.
    Researcher(String),
}

impl Principal {
    /// The actor named in audit entries: `platform`, `admin:<token id>`, `agent:<site>`, ...
    pub fn actor(&self) -> String {
        match self {
            Principal::Platform(None) => "platform".to_owned(),
            Principal::Platform(Some(id)) => format!("platform:{id}"),
            Principal::Admin(id) => format!("admin:{id}"),
            Principal::Auditor(id) => format!("auditor:{id}"),
            Principal::Agent(site) => format!("agent:{site}"),
            Principal::Researcher(sub) => format!("researcher:{sub}"),
        }
    }

    /// The role the token carries.
    pub fn role(&self) -> Role {
        match self {
            Principal::Platform(_) => Role::Platform,
            Principal::Admin(_) => Role::Admin,
            Principal::Auditor(_) => Role::Auditor,
            Principal::Agent(_) => Role::Agent,
            Principal::Researcher(_) => Role::Researcher,
        }
    }

    /// The principal of a stored token, unless it is revoked or incomplete.
    pub fn of_record(t: &TokenRecord) -> Option<Principal> {
        if t.revoked_at.is_some() {
            return None;
        }
        Some(match t.role {
            Role::Platform => Principal::Platform(Some(t.id.clone())),
            Role::Admin => Principal::Admin(t.id.clone()),
            Role::Auditor => Principal::Auditor(t.id.clone()),
            Role::Agent => Principal::Agent(t.site.clone()?),
            Role::Researcher => Principal::Researcher(t.subject.clone()?),
        })
    }
}

/// The configured tokens, as digests, and a cache of stored tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    platform: Vec<Hash>,
    agents: Vec<(Hash, Ident)>,
    cache: RwLock<HashMap<Hash, (Principal, String, Instant)>>,
}

impl Tokens {
    /// Digests every token of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            platform: config.platform_tokens.iter().map(|t| digest(t)).collect(),
            agents: config
                .agents
                .iter()
                .map(|a| (digest(&a.token), a.site.clone()))
                .collect(),
            cache: RwLock::default(),
        }
    }

    /// The principal a configured `token` belongs to, if any. Looks at every token before
    /// answering.
    pub fn identify_config(&self, token: &str) -> Option<Principal> {
        let d = digest(token);
        let mut found = None;
        for p in &self.platform {
            if ct_eq(p, &d) {
                found = Some(Principal::Platform(None));
            }
        }
        for (a, site) in &self.agents {
            if ct_eq(a, &d) {
                found = Some(Principal::Agent(site.clone()));
            }
        }
        found
    }

    /// The principal `token` belongs to: a configured one, or a stored, unrevoked one.
    pub async fn identify(
        &self,
        o: &Orchestrator,
        token: &str,
    ) -> Result<Option<Principal>, ApiError> {
        if let Some(p) = self.identify_config(token) {
            return Ok(Some(p));
        }
        let d = digest(token);
        if let Some((p, _, at)) = self.cache.read().expect("token cache lock").get(&d)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(p.clone()));
        }
        let hash = token_hash(token);
        let found = o.inner().store.token_by_hash(&hash).await?;
        let p = found.as_ref().and_then(Principal::of_record);
        let mut cache = self.cache.write().expect("token cache lock");
        match (&p, found) {
            (Some(p), Some(rec)) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(d, (p.clone(), rec.id, Instant::now()));
            }
            _ => {
                cache.remove(&d);
            }
        }
        Ok(p)
    }

    /// Forgets the cached principal of the stored token `id` (after it was revoked).
    pub fn forget(&self, id: &str) {
        self.cache
            .write()
            .expect("token cache lock")
            .retain(|_, (_, cached, _)| cached != id);
    }
}

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
        Some(t) => o.inner().auth.identify(o, t).await?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentAuth;

    #[test]
    fn identifies_each_configured_principal() {
        let mut c = Config::for_tests("/t", "platform-secret");
        c.agents.push(AgentAuth {
            site: Ident::parse("tohoku").unwrap(),
            token: "tohoku-secret".into(),
        });
        let t = Tokens::new(&c);
        assert_eq!(
            t.identify_config("platform-secret"),
            Some(Principal::Platform(None))
        );
        assert_eq!(
            t.identify_config("tohoku-secret"),
            Some(Principal::Agent(Ident::parse("tohoku").unwrap()))
        );
        assert_eq!(t.identify_config("platform-secre"), None);
        assert_eq!(t.identify_config(""), None);
    }

    #[test]
    fn revoked_and_incomplete_records_open_nothing() {
        let rec = TokenRecord {
            id: "tok-00000001".into(),
            role: Role::Researcher,
            subject: Some("alice".into()),
            site: None,
            name: None,
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        assert_eq!(
            Principal::of_record(&rec),
            Some(Principal::Researcher("alice".into()))
        );
        let mut revoked = rec.clone();
        revoked.revoked_at = Some(chrono::Utc::now());
        assert_eq!(Principal::of_record(&revoked), None);
        let mut agent = rec;
        agent.role = Role::Agent;
        assert_eq!(Principal::of_record(&agent), None);
    }
}
