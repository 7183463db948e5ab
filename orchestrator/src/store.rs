//! The orchestrator's persistent state behind one trait: workspaces, idempotency keys, sites,
//! the revision counter and which replica holds each site's session tunnel. One SQL store
//! (`store/sql.rs`) implements it on SQLite (`store/sqlite.rs`, the default) and on PostgreSQL
//! (`store/postgres.rs`, for several replicas); the API only sees `Arc<dyn Store>`.

use async_trait::async_trait;
use basho_core::protocol::{CapacityReport, Registration};
use basho_core::{Ident, Resources, State, Workspace};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub mod audit;
pub mod consent;
pub mod federated;
pub mod postgres;
pub mod queue;
pub mod releases;
pub mod revocations;
pub mod sql;
pub mod sqlite;
#[cfg(test)]
mod suite;
pub mod tasks;
pub mod tokens;
pub mod tunnels;
pub mod usage;

pub use audit::{AuditEvent, AuditStore};
pub use consent::{ConsentRow, ConsentStore};
pub use federated::{FederatedStore, JobInsert, JobRow};
pub use postgres::PostgresStore;
pub use queue::{Placed, Placement, QueueEntry, QueueStore, Queued};
pub use releases::{ReleaseFilter, ReleaseStore};
pub use revocations::{NewRevocation, RevocationStore};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
pub use tasks::{Cancel, NewTask, TaskFilter, TaskRow, TaskStore};
pub use tokens::{Role, TokenRecord, TokenStore};
pub use tunnels::{TunnelHolder, TunnelStore};
pub use usage::{Quota, UsageStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema migrations did not apply.
    #[error("database migration failed: {0}; check that the database belongs to this version")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored row does not decode: the database was edited by hand or by another version.
    #[error("stored {what} does not decode: {message}")]
    Corrupt {
        /// Which column or row.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// An idempotency key came back with a different request body.
    #[error("idempotency key was first used for workspace {workspace} with a different request")]
    IdempotencyKeyReused {
        /// The workspace the key created.
        workspace: String,
    },
    /// No workspace has that id.
    #[error("no workspace {0}")]
    NotFound(String),
}

/// Issuer and id of one visa, kept for audit and revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisaRef {
    /// Issuer (`iss`).
    pub iss: String,
    /// Visa id (`jti`).
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The workspace's datasets this visa grants, as placement resolved its grant URL; absent
    /// on workspaces stored before it was kept (the visa then counts for every dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<Vec<Ident>>,
}

/// A workspace with everything the store keeps beside what the API shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// What the API shows.
    pub workspace: Workspace,
    /// The visa JWTs, forwarded to the site's agent so it can verify them itself.
    pub visas: Vec<String>,
    /// Issuer and id of each visa.
    pub visa_refs: Vec<VisaRef>,
    /// Image name from the template at create time.
    pub image: String,
    /// Command from the template at create time.
    pub command: Vec<String>,
    /// A batch workspace's working directory and environment.
    pub launch: Option<basho_core::protocol::Launch>,
    /// The revision of its last change.
    pub revision: i64,
}

/// An idempotency key and the hash of the request that first carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The `Idempotency-Key` header.
    pub key: String,
    /// SHA-256 (hex) of the canonical request.
    pub request_hash: String,
}

/// What [`Store::create_workspace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new workspace was inserted.
    New(WorkspaceRecord),
    /// The idempotency key had already created this workspace with the same request.
    Replayed(WorkspaceRecord),
    /// Nothing was written: the site's live workspaces hold this much, and the new one does not
    /// fit beside them in the capacity the site registered (another replica placed there first,
    /// or the site is not registered).
    Full(StateCount),
}

/// What [`Store::transition`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The state changed from `from`; the record carries the new state and revision.
    Changed {
        /// The state before.
        from: State,
        /// The record after.
        record: WorkspaceRecord,
    },
    /// The workspace already was in that state; nothing was written.
    Unchanged(WorkspaceRecord),
    /// The state machine forbids the move; nothing was written.
    Refused(WorkspaceRecord),
}

/// Which workspaces to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceFilter {
    /// Only this project.
    pub project: Option<Ident>,
    /// Only these states (any of them); empty: every state.
    pub states: Vec<State>,
    /// Only this site.
    pub site: Option<Ident>,
    /// Only workspaces whose `expires_at` is at or before this instant.
    pub expires_by: Option<DateTime<Utc>>,
}

/// A registered site as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    /// What the agent registered last.
    pub registration: Registration,
    /// Last time its agent was heard from.
    pub last_contact: DateTime<Utc>,
}

/// Workspaces of one site in one state, and the compute they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    /// How many.
    pub count: u64,
    /// CPU cores summed.
    pub cpus: u64,
    /// Memory summed, MiB.
    pub memory_mib: u64,
    /// GPUs summed.
    pub gpus: u64,
}

/// The orchestrator's persistent state.
#[async_trait]
pub trait Store:
    AuditStore
    + TokenStore
    + RevocationStore
    + UsageStore
    + TunnelStore
    + ReleaseStore
    + TaskStore
    + ConsentStore
    + FederatedStore
    + QueueStore
    + Send
    + Sync
    + 'static
{
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a workspace (its `revision` is assigned here). With a key, atomically: a key seen
    /// before with the same hash returns the first workspace; with another hash,
    /// [`StoreError::IdempotencyKeyReused`]. Never two workspaces for one key. Creates at one
    /// site take turns, and one that would take the site's live workspaces past its registered
    /// capacity writes nothing and answers [`Created::Full`]: replicas never overbook a site.
    async fn create_workspace(
        &self,
        record: &WorkspaceRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// The request hash and workspace an idempotency key created, if any.
    async fn idempotent_workspace(
        &self,
        key: &str,
    ) -> Result<Option<(String, WorkspaceRecord)>, StoreError>;

    /// One workspace.
    async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRecord>, StoreError>;

    /// Workspaces matching `filter`, oldest first.
    async fn list_workspaces(
        &self,
        filter: &WorkspaceFilter,
    ) -> Result<Vec<WorkspaceRecord>, StoreError>;

    /// Moves a workspace to `to` if the state machine allows it, in one transaction, taking a new
    /// revision. `message` replaces the stored message when the state changes.
    async fn transition(
        &self,
        id: &str,
        to: State,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, StoreError>;

    /// The site's revision and every workspace it should run or is stopping, in one snapshot.
    async fn desired(&self, site: &Ident) -> Result<(i64, Vec<WorkspaceRecord>), StoreError>;

    /// Workspace counts and compute per (site, state).
    async fn counts(&self) -> Result<Vec<(Ident, State, StateCount)>, StoreError>;

    /// Creates or replaces a site's registration and marks it heard from at `now`.
    async fn upsert_site(&self, reg: &Registration, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Sets what basho may use at a registered site now (its agent's live report) and marks it
    /// heard from; false when the site is not registered.
    async fn set_site_capacity(
        &self,
        report: &CapacityReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Marks a site heard from at `now`.
    async fn touch_site(&self, site: &Ident, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every registered site, by name.
    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
}

/// The whole millisecond at or before `t`: what the store keeps, so an answer built before a
/// write equals the one read back after it.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(t.timestamp_millis())
}

/// Milliseconds since the epoch as a UTC timestamp (clamped to the representable range).
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The compute of `r` as a [`StateCount`] of one.
pub fn one(r: &Resources) -> StateCount {
    StateCount {
        count: 1,
        cpus: u64::from(r.cpus),
        memory_mib: r.memory_mib,
        gpus: u64::from(r.gpus),
    }
}
