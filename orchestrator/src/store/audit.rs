//! Storage of the hash-chained audit log (see `basho_core::audit`).

use async_trait::async_trait;
use basho_core::audit::AuditEntry;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;

/// One event to append; the store gives it its seq, time and hash.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who (see [`AuditEntry::actor`]).
    pub actor: String,
    /// What, snake_case.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details, never a secret.
    pub detail: Value,
    /// Written only if no entry with this action and target exists yet: a step that a retry may
    /// record again (a replayed create whose first attempt died before its entry) stays once.
    pub once: bool,
}

/// The audit log: append-only, one writer at a time so the chain stays linear.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `events`, in order, after the current last entry in one transaction, computing
    /// their seqs and hashes under the write lock; answers the entries written. An event marked
    /// [`once`](AuditEvent::once) whose action and target are already logged (or earlier in
    /// `events`) is left out.
    async fn append_audit(
        &self,
        at: DateTime<Utc>,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Up to `limit` entries with a seq above `after`, oldest first.
    async fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

impl AuditEvent {
    /// An event.
    pub fn new(actor: &str, action: &str, target: &str, detail: Value) -> Self {
        Self {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
            once: false,
        }
    }

    /// `events` without the [`once`](AuditEvent::once) ones repeating an earlier one of the batch.
    pub(crate) fn unrepeated(events: &[AuditEvent]) -> impl Iterator<Item = &AuditEvent> {
        let mut seen = std::collections::BTreeSet::new();
        events
            .iter()
            .filter(move |ev| !ev.once || seen.insert((ev.action.as_str(), ev.target.as_str())))
    }

    /// The event, written only if its action and target are not in the log yet.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }
}
