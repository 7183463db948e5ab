//! Storage of the hash-chained audit log (see `basho_core::audit`).

use async_trait::async_trait;
use basho_core::audit::AuditEntry;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;

/// The audit log: append-only, one writer at a time so the chain stays linear.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends an entry after the current last one, computing its seq and hash under the write
    /// lock, and returns it.
    async fn append_audit(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<AuditEntry, StoreError>;

    /// Up to `limit` entries with a seq above `after`, oldest first.
    async fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}
