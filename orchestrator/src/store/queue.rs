//! Storage of the queue: what a queued workspace needs to be placed later, beside its record,
//! and the scheduling the platform sets per project.

use std::collections::BTreeMap;

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::queue::Scheduling;
use chrono::{DateTime, Utc};

use super::{Created, IdempotencyKey, StateCount, StoreError, VisaRef, WorkspaceRecord};

/// What placing a queued workspace later needs that its record does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Its place in arrival order: the revision its create took (set by the store).
    pub seq: i64,
    /// The site the request pinned, if it did.
    pub pinned: Option<Ident>,
    /// Each visa's value (grant URL), in the order of the record's `visa_refs`.
    pub grants: Vec<String>,
    /// Its lifetime once placed, in milliseconds.
    pub duration_ms: i64,
    /// The earliest visa expiry, Unix milliseconds.
    pub visa_exp_ms: i64,
}

/// A queued workspace, as placing it needs it (not its visas' JWTs, which it does not read).
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The workspace, state `queued`.
    pub workspace: basho_core::Workspace,
    /// Its visas' references.
    pub visa_refs: Vec<VisaRef>,
    /// What placing it needs.
    pub entry: QueueEntry,
}

/// Where and until when a queued workspace is placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The site.
    pub site: Ident,
    /// Its expiry, counted from now.
    pub expires_at: DateTime<Utc>,
    /// Its visas' references, with the datasets each grants at that site.
    pub visa_refs: Vec<VisaRef>,
}

/// What [`QueueStore::place_queued`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// It is `placed`, with a new revision.
    Placed(WorkspaceRecord),
    /// Nothing was written: the site's live workspaces hold this much and it does not fit.
    Full(StateCount),
    /// Nothing was written: it is no longer queued (deleted, expired or placed elsewhere).
    Gone(WorkspaceRecord),
}

/// Decayed use as the ledger holds it: per project, core-seconds and GPU-seconds per bucket of
/// time, each bucket named by its start (Unix milliseconds).
pub type UsageBuckets = Vec<(Ident, i64, f64, f64)>;

/// The queue.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Inserts `record` (state `queued`) and its entry in one transaction, as
    /// [`Store::create_workspace`](super::Store::create_workspace) does but with no capacity
    /// check: a queued workspace holds no compute.
    async fn enqueue_workspace(
        &self,
        record: &WorkspaceRecord,
        entry: &QueueEntry,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// Every workspace still queued, in arrival order, in one read.
    async fn queued(&self) -> Result<Vec<Queued>, StoreError> {
        self.queued_after(-1).await
    }

    /// Every workspace still queued whose queue entry came after `seq`, in arrival order.
    async fn queued_after(&self, seq: i64) -> Result<Vec<Queued>, StoreError>;

    /// Places queued workspace `id` at `placement.site` if it is still queued and fits beside
    /// the site's live workspaces, in one transaction taking the site's turn (as a create).
    async fn place_queued(
        &self,
        id: &str,
        placement: &Placement,
        now: DateTime<Utc>,
    ) -> Result<Placed, StoreError>;

    /// Sets a project's scheduling.
    async fn set_scheduling(
        &self,
        project: &Ident,
        scheduling: Scheduling,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Every project's scheduling the platform set.
    async fn schedulings(&self) -> Result<BTreeMap<Ident, Scheduling>, StoreError>;

    /// The ledger's counted use ending at or after `since`, summed per project and bucket of
    /// `bucket_ms`.
    async fn usage_buckets(
        &self,
        since: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<UsageBuckets, StoreError>;
}
