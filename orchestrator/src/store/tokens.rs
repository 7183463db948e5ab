//! Storage of API tokens created with `basho-orchestrator token create`: only their SHA-256 is
//! kept, beside the role they carry.

use async_trait::async_trait;
use basho_core::Ident;
use chrono::{DateTime, Utc};

use super::StoreError;

pub use basho_core::Role;

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
    /// When it stops opening anything (whole milliseconds); `None` only for tokens made before
    /// tokens expired.
    pub expires_at: Option<DateTime<Utc>>,
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
