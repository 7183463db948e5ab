//! Storage of API tokens created with `basho-orchestrator token create`: only their SHA-256 is
//! kept, beside the role they carry.

use async_trait::async_trait;
use basho_core::Ident;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What a token may do (DESIGN.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Create, list, show and delete workspaces; sites; revocations; usage.
    Platform,
    /// Everything the platform may, and the audit log.
    Admin,
    /// Only the audit log.
    Auditor,
    /// The agent of one site: `/v1/agent/*` for that site.
    Agent,
    /// A visa `sub`: reads its own workspaces only.
    Researcher,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Platform,
        Role::Admin,
        Role::Auditor,
        Role::Agent,
        Role::Researcher,
    ];

    /// The name used in the database, on the command line and in audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Agent => "agent",
            Role::Researcher => "researcher",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// `tok-<8 hex>`.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The researcher's visa `sub` (researcher tokens only).
    pub subject: Option<String>,
    /// The agent's site (agent tokens only).
    pub site: Option<Ident>,
    /// A note saying whom it was made for.
    pub name: Option<String>,
    /// When it was created (whole milliseconds).
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Tokens kept in the database.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new token under `hash` (SHA-256 hex of the token).
    async fn insert_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError>;

    /// The token whose hash is `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks a token revoked at `now` (keeping the first revocation time); `None` when no token
    /// has that id.
    async fn revoke_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, StoreError>;
}
