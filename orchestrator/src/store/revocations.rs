//! Storage of revocations: append-only, read whole (they are few) by the create check and by
//! every desired-state answer.

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::revocation::{Reason, Revocation};
use chrono::{DateTime, Utc};

use super::StoreError;

/// The selectors and reason of a revocation about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevocation {
    /// Dataset selector.
    pub dataset: Option<Ident>,
    /// Subject selector.
    pub subject: Option<String>,
    /// Project selector.
    pub project: Option<Ident>,
    /// Visa selector.
    pub visa_jti: Option<String>,
    /// Why.
    pub reason: Reason,
}

/// The deny-list.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records a revocation at `at` in one transaction, taking the next sequence number and the
    /// next revision (returned beside it: publishing it wakes every site).
    async fn record_revocation(
        &self,
        new: &NewRevocation,
        at: DateTime<Utc>,
    ) -> Result<(Revocation, i64), StoreError>;

    /// Every revocation, oldest first.
    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError>;

    /// Appends `note` to the message of workspace `id` if it is `revoked` and the message does
    /// not carry it yet; true when it was appended. The state and revision do not change.
    async fn note_revoked(&self, id: &str, note: &str) -> Result<bool, StoreError>;
}
