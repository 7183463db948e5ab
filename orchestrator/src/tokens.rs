//! API tokens: who a bearer token belongs to ([`Tokens`]), and creating, listing and revoking
//! stored ones (`basho-orchestrator token ...`, `basho dev token`). A token is 32 random bytes in
//! hex, shown once; the store keeps its SHA-256. Config tokens (`platform_tokens`, each agent's
//! token) are compared as SHA-256 digests in constant time against every configured token; stored
//! tokens are looked up by their SHA-256 and cached in memory for [`CACHE_TTL`], so a revocation
//! made by another process (the `token revoke` command) takes effect within that time, and one
//! made through this process at once.

use basho_core::digest::hex;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use basho_core::Ident;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Config;

use crate::store::{AuditEvent, Role, Store, StoreError, TokenRecord, to_millis};

/// Why a token could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The role needs a subject or a site that was not given, or got one it does not take.
    #[error("{0}")]
    Usage(String),
    /// No token has that id.
    #[error("no token {0}; list tokens with `basho-orchestrator token list`")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new token may do and whom it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Its role.
    pub role: Role,
    /// The researcher's visa `sub` (researcher tokens only, required for them).
    pub subject: Option<String>,
    /// The agent's site (agent tokens only, required for them).
    pub site: Option<Ident>,
    /// A note saying whom it is for.
    pub name: Option<String>,
    /// How long it opens anything; [`default_ttl`] of its role when `None`.
    pub ttl: Option<Duration>,
}

/// Shortest lifetime a token may be given.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime a token may be given: three years.
pub const MAX_TTL: Duration = Duration::from_secs(3 * 365 * 24 * 3600);

/// How long a token of `role` lives unless told: 90 days for machines (the platform, agents),
/// 12 hours for people (admins, auditors, researchers).
pub fn default_ttl(role: Role) -> Duration {
    match role {
        Role::Platform | Role::Agent => Duration::from_secs(90 * 24 * 3600),
        Role::Admin | Role::Auditor | Role::Researcher | Role::OutputChecker => {
            Duration::from_secs(12 * 3600)
        }
    }
}

/// Makes and stores a token; answers its record and the token itself (not kept anywhere).
/// `actor` is who made it, for the audit log.
pub async fn create(
    store: &dyn Store,
    new: NewToken,
    actor: &str,
) -> Result<(TokenRecord, String), TokenError> {
    match (new.role, &new.subject, &new.site) {
        (Role::Researcher, None, _) => {
            return Err(TokenError::Usage(
                "a researcher token needs --subject, the visa `sub` of the researcher".into(),
            ));
        }
        (Role::Agent, _, None) => {
            return Err(TokenError::Usage(
                "an agent token needs --site, the site the agent speaks for".into(),
            ));
        }
        (Role::OutputChecker, None, _) => {
            return Err(TokenError::Usage(
                "an output_checker token needs --subject, the checker's own name: it stands \
                 beside every decision in the audit log, and two approvals need two names"
                    .into(),
            ));
        }
        (Role::Researcher | Role::OutputChecker, _, Some(_)) | (Role::Agent, Some(_), _) => {
            return Err(TokenError::Usage(
                "--subject is for researcher and output_checker tokens and --site for agent \
                 tokens only"
                    .into(),
            ));
        }
        (Role::Platform | Role::Admin | Role::Auditor, s, t) if s.is_some() || t.is_some() => {
            return Err(TokenError::Usage(format!(
                "a {} token takes neither --subject nor --site",
                new.role
            )));
        }
        _ => {}
    }
    if new.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(TokenError::Usage("--subject is empty".into()));
    }
    let ttl = new.ttl.unwrap_or_else(|| default_ttl(new.role));
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(TokenError::Usage(format!(
            "a token lives from {} s to {} s (three years); {} s was asked",
            MIN_TTL.as_secs(),
            MAX_TTL.as_secs(),
            ttl.as_secs()
        )));
    }
    let secret = hex(&rand::random::<[u8; 32]>());
    let created_at = to_millis(Utc::now());
    let rec = TokenRecord {
        id: format!("tok-{}", hex(&rand::random::<[u8; 4]>())),
        role: new.role,
        subject: new.subject,
        site: new.site,
        name: new.name,
        created_at,
        revoked_at: None,
        expires_at: chrono::TimeDelta::from_std(ttl)
            .ok()
            .map(|d| created_at + d),
    };
    store.insert_token(&rec, &token_hash(&secret)).await?;
    let detail = json!({"role": rec.role.as_str(), "subject": rec.subject,
        "site": rec.site.as_ref().map(|s| s.as_str()), "name": rec.name,
        "expires_at": rec.expires_at});
    let ev = AuditEvent::new(actor, "token_create", &rec.id, detail);
    store.append_audit(Utc::now(), &[ev]).await?;
    Ok((rec, secret))
}

/// Revokes the token `id`; answers its record.
pub async fn revoke(store: &dyn Store, id: &str, actor: &str) -> Result<TokenRecord, TokenError> {
    let rec = store
        .revoke_token(id, Utc::now())
        .await?
        .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
    let ev = AuditEvent::new(
        actor,
        "token_revoke",
        id,
        json!({"role": rec.role.as_str()}),
    );
    store.append_audit(Utc::now(), &[ev]).await?;
    Ok(rec)
}

/// One line of `token list`: id, role, subject or site, created, expires, revoked, name (never
/// the hash).
pub fn list_line(t: &TokenRecord) -> String {
    let whom = t
        .subject
        .clone()
        .or_else(|| t.site.as_ref().map(ToString::to_string))
        .unwrap_or_else(|| "-".into());
    let when = |d: Option<DateTime<Utc>>| d.map_or_else(|| "-".into(), |d| d.to_rfc3339());
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        t.id,
        t.role,
        whom,
        t.created_at.to_rfc3339(),
        when(t.expires_at),
        when(t.revoked_at),
        t.name.as_deref().unwrap_or("-"),
    )
}

/// Opens the store the config file at `path` names, for the `token` commands (which run beside
/// a serving orchestrator, on the same SQLite file or PostgreSQL database).
pub async fn open_store(path: &std::path::Path) -> Result<Box<dyn Store>, crate::Error> {
    let (config, problems) = crate::config::read_config(path)?;
    if !problems.is_empty() {
        return Err(crate::ConfigError { problems }.into());
    }
    Ok(match config.database.as_deref() {
        Some(url) if crate::store::postgres::is_postgres_url(url) => {
            Box::new(crate::store::PostgresStore::open_with(url, 2).await?)
        }
        database => Box::new(crate::store::SqliteStore::open(database, &config.data_dir).await?),
    })
}

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
    hex(&digest(token))
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
    /// An output checker, by their own name (the token's subject).
    OutputChecker(String),
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
            Principal::OutputChecker(sub) => format!("output_checker:{sub}"),
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
            Principal::OutputChecker(_) => Role::OutputChecker,
        }
    }

    /// The principal of a stored token at `now`, unless it is revoked, expired or incomplete.
    pub fn of_record(t: &TokenRecord, now: DateTime<Utc>) -> Option<Principal> {
        if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        Some(match t.role {
            Role::Platform => Principal::Platform(Some(t.id.clone())),
            Role::Admin => Principal::Admin(t.id.clone()),
            Role::Auditor => Principal::Auditor(t.id.clone()),
            Role::Agent => Principal::Agent(t.site.clone()?),
            Role::Researcher => Principal::Researcher(t.subject.clone()?),
            Role::OutputChecker => Principal::OutputChecker(t.subject.clone()?),
        })
    }
}

/// A stored token's principal as cached: its token id, when it expires, when it was read.
type Cached = (Principal, String, Option<DateTime<Utc>>, Instant);

/// The configured tokens, as digests, and a cache of stored tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    platform: Vec<Hash>,
    agents: Vec<(Hash, Ident)>,
    cache: RwLock<HashMap<Hash, Cached>>,
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
        store: &dyn Store,
        token: &str,
    ) -> Result<Option<Principal>, StoreError> {
        if let Some(p) = self.identify_config(token) {
            return Ok(Some(p));
        }
        let d = digest(token);
        let now = Utc::now();
        if let Some((p, _, expires, at)) = self.cache.read().expect("token cache lock").get(&d)
            && at.elapsed() < CACHE_TTL
            && expires.is_none_or(|e| e > now)
        {
            return Ok(Some(p.clone()));
        }
        let hash = token_hash(token);
        let found = store.token_by_hash(&hash).await?;
        let p = found.as_ref().and_then(|t| Principal::of_record(t, now));
        let mut cache = self.cache.write().expect("token cache lock");
        match (&p, found) {
            (Some(p), Some(rec)) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(d, (p.clone(), rec.id, rec.expires_at, Instant::now()));
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
            .retain(|_, (_, cached, _, _)| cached != id);
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
        let now = chrono::Utc::now();
        let rec = TokenRecord {
            id: "tok-00000001".into(),
            role: Role::Researcher,
            subject: Some("alice".into()),
            site: None,
            name: None,
            created_at: now,
            revoked_at: None,
            expires_at: Some(now + chrono::TimeDelta::hours(12)),
        };
        assert_eq!(
            Principal::of_record(&rec, now),
            Some(Principal::Researcher("alice".into()))
        );
        let mut revoked = rec.clone();
        revoked.revoked_at = Some(now);
        assert_eq!(Principal::of_record(&revoked, now), None);
        // At and after its expiry it opens nothing.
        let later = now + chrono::TimeDelta::hours(12);
        assert_eq!(Principal::of_record(&rec, later), None);
        let mut agent = rec;
        agent.role = Role::Agent;
        assert_eq!(Principal::of_record(&agent, now), None);
    }

    #[test]
    fn machines_live_90_days_and_people_12_hours() {
        for role in [Role::Platform, Role::Agent] {
            assert_eq!(
                default_ttl(role),
                Duration::from_secs(90 * 86_400),
                "{role}"
            );
        }
        for role in [Role::Admin, Role::Auditor, Role::Researcher] {
            assert_eq!(default_ttl(role), Duration::from_secs(12 * 3600), "{role}");
        }
    }
}
