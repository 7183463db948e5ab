//! Creating, listing and revoking stored API tokens (`basho-orchestrator token ...`, and
//! `basho dev token`). A token is 32 random bytes in hex, shown once; the store keeps its SHA-256.

use basho_core::Ident;
use chrono::Utc;
use serde_json::json;

use crate::api::auth::token_hash;
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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        (Role::Researcher, _, Some(_)) | (Role::Agent, Some(_), _) => {
            return Err(TokenError::Usage(
                "--subject is for researcher tokens and --site for agent tokens only".into(),
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
    let secret = hex(&rand::random::<[u8; 32]>());
    let rec = TokenRecord {
        id: format!("tok-{}", hex(&rand::random::<[u8; 4]>())),
        role: new.role,
        subject: new.subject,
        site: new.site,
        name: new.name,
        created_at: to_millis(Utc::now()),
        revoked_at: None,
    };
    store.insert_token(&rec, &token_hash(&secret)).await?;
    let detail = json!({"role": rec.role.as_str(), "subject": rec.subject,
        "site": rec.site.as_ref().map(|s| s.as_str()), "name": rec.name});
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

/// One line of `token list`: id, role, subject or site, created, revoked (never the hash).
pub fn list_line(t: &TokenRecord) -> String {
    let whom = t
        .subject
        .clone()
        .or_else(|| t.site.as_ref().map(ToString::to_string))
        .unwrap_or_else(|| "-".into());
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        t.id,
        t.role,
        whom,
        t.created_at.to_rfc3339(),
        t.revoked_at.map_or_else(|| "-".into(), |r| r.to_rfc3339()),
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
