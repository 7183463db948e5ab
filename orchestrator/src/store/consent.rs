//! Storage of each site's consent state as its agent last reported it: releases, withdrawals
//! and which release each running workspace mounts. Counts and digests, never participant IDs.

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::consent::ConsentReport;
use chrono::{DateTime, Utc};

use super::StoreError;

/// A site's report and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRow {
    /// The report.
    pub report: ConsentReport,
    /// When the site sent it.
    pub reported_at: DateTime<Utc>,
}

/// Each site's latest consent report.
#[async_trait]
pub trait ConsentStore: Send + Sync + 'static {
    /// Keeps `report` as its site's latest, replacing the one before.
    async fn put_consent(
        &self,
        report: &ConsentReport,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The latest report of `site`.
    async fn consent(&self, site: &Ident) -> Result<Option<ConsentRow>, StoreError>;

    /// The latest report of every site that sent one, by site.
    async fn consents(&self) -> Result<Vec<ConsentRow>, StoreError>;
}
