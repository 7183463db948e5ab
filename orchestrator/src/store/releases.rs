//! Storage of the results airlock's release requests: each request whole (files, digests,
//! findings, reviews), never the files' bytes, which stay at the site.

use async_trait::async_trait;
use basho_core::release::{ReleaseRequest, ReleaseState};

use super::StoreError;
use crate::releases::Refused;

/// Which release requests to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFilter {
    /// Only this workspace's.
    pub workspace: Option<String>,
    /// Only those whose workspace this researcher owns.
    pub owner: Option<String>,
    /// Only these states (any of them); empty: every state.
    pub states: Vec<ReleaseState>,
}

/// A change to a release request, decided on the request as stored: `Ok` keeps the changed
/// request, `Err` writes nothing and is handed back.
pub type Change<'a> = &'a (dyn Fn(&mut ReleaseRequest) -> Result<(), Refused> + Send + Sync);

/// Release requests kept in the database.
#[async_trait]
pub trait ReleaseStore: Send + Sync + 'static {
    /// Stores a new request.
    async fn insert_release(&self, request: &ReleaseRequest) -> Result<(), StoreError>;

    /// One request.
    async fn release(&self, id: &str) -> Result<Option<ReleaseRequest>, StoreError>;

    /// Requests matching `filter`, oldest first.
    async fn list_releases(
        &self,
        filter: &ReleaseFilter,
    ) -> Result<Vec<ReleaseRequest>, StoreError>;

    /// Applies `change` to the stored request under its row lock, so concurrent reviews each
    /// see the other's. `Ok(None)`: no request has that id.
    async fn change_release(
        &self,
        id: &str,
        change: Change<'_>,
    ) -> Result<Option<Result<ReleaseRequest, Refused>>, StoreError>;
}
