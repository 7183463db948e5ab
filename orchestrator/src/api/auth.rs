//! Bearer-token auth. Platform tokens open `/v1/workspaces*` and `/v1/sites`; each agent token
//! opens `/v1/agent/*` for its own site only. Tokens are compared as SHA-256 digests in constant
//! time, against every configured token, so timing reveals nothing about them.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use basho_core::Ident;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::Orchestrator;
use crate::config::Config;

type Hash = [u8; 32];

fn digest(token: &str) -> Hash {
    Sha256::digest(token.as_bytes()).into()
}

fn ct_eq(a: &Hash, b: &Hash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform.
    Platform,
    /// The agent of this site.
    Agent(Ident),
}

/// The configured tokens, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    platform: Vec<Hash>,
    agents: Vec<(Hash, Ident)>,
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
        }
    }

    /// The principal `token` belongs to, if any. Looks at every token before answering.
    pub fn identify(&self, token: &str) -> Option<Principal> {
        let d = digest(token);
        let mut found = None;
        for p in &self.platform {
            if ct_eq(p, &d) {
                found = Some(Principal::Platform);
            }
        }
        for (a, site) in &self.agents {
            if ct_eq(a, &d) {
                found = Some(Principal::Agent(site.clone()));
            }
        }
        found
    }
}

fn unauthenticated(who: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        format!("missing or unknown bearer token; send `Authorization: Bearer <{who} token>`"),
    )
}

fn principal(parts: &Parts, o: &Orchestrator, who: &str) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthenticated(who))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated(who))?;
    o.inner()
        .auth
        .identify(token)
        .ok_or_else(|| unauthenticated(who))
}

/// A request made with a platform token.
#[derive(Debug, Clone, Copy)]
pub struct Platform;

impl FromRequestParts<Orchestrator> for Platform {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        match principal(parts, o, "platform")? {
            Principal::Platform => Ok(Platform),
            Principal::Agent(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "agent tokens only open /v1/agent/*; use a platform token here",
            )),
        }
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
}

impl FromRequestParts<Orchestrator> for AgentSite {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        match principal(parts, o, "agent")? {
            Principal::Agent(site) => Ok(AgentSite(site)),
            Principal::Platform => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "platform tokens do not open /v1/agent/*; an agent uses its site's token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentAuth;

    #[test]
    fn identifies_each_principal() {
        let mut c = Config::for_tests("/t", "platform-secret");
        c.agents.push(AgentAuth {
            site: Ident::parse("tohoku").unwrap(),
            token: "tohoku-secret".into(),
        });
        let t = Tokens::new(&c);
        assert_eq!(t.identify("platform-secret"), Some(Principal::Platform));
        assert_eq!(
            t.identify("tohoku-secret"),
            Some(Principal::Agent(Ident::parse("tohoku").unwrap()))
        );
        assert_eq!(t.identify("platform-secre"), None);
        assert_eq!(t.identify(""), None);
    }
}
