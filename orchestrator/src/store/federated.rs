//! Storage of federated jobs: each job as the API shows it and the spec of its aggregation step,
//! one row per job, rewritten as the job advances.

use async_trait::async_trait;
use basho_core::federated::{AggregationSpec, FederatedJob};
use serde::{Deserialize, Serialize};

use super::{IdempotencyKey, StoreError};

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// The job as the API shows it.
    pub job: FederatedJob,
    /// What its aggregation step runs, once enough partials are released.
    pub aggregation: AggregationSpec,
}

/// What [`FederatedStore::insert_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobInsert {
    /// Kept.
    New,
    /// The key made this job before, from the same request: nothing was written.
    Replayed(Box<JobRow>),
    /// The key made this job before, from another request: nothing was written.
    KeyReused(String),
}

/// Federated jobs.
#[async_trait]
pub trait FederatedStore: Send + Sync + 'static {
    /// Keeps a new job; with a key, once per key (atomically, also against a concurrent
    /// request with the same key).
    async fn insert_job(
        &self,
        row: &JobRow,
        key: Option<&IdempotencyKey>,
    ) -> Result<JobInsert, StoreError>;

    /// The job `key` made, and the hash of the request that made it.
    async fn job_by_key(&self, key: &str) -> Result<Option<(String, JobRow)>, StoreError>;

    /// Keeps `row` under its job's id, replacing what was kept before, unless that had ended
    /// (`completed` or `failed`): an ended job is never written again, so a pass that read it
    /// before it was canceled cannot bring it back.
    async fn put_job(&self, row: &JobRow) -> Result<(), StoreError>;

    /// The job `id`.
    async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError>;

    /// Jobs oldest first: of `owner` only when given, and only those not ended when `active`.
    async fn jobs(&self, owner: Option<&str>, active: bool) -> Result<Vec<JobRow>, StoreError>;
}
