//! Storage of the usage ledger and of project quotas.

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::usage::UsageRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A stored usage record and the site that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUsage {
    /// The sending site.
    pub site: Ident,
    /// The record, with the project the orchestrator holds for its workspace.
    pub record: UsageRecord,
}

/// What one ingestion did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ingested {
    /// Highest seq of the site stored with no gap below it.
    pub acked_through: u64,
    /// Records stored by this call and counted (repeats and foreign workspaces excluded).
    pub new: Vec<UsageRecord>,
    /// Records stored by this call but not counted: their workspace is not the site's.
    pub rejected: usize,
}

impl Ingested {
    /// Records one newly stored record: counted against `project` (the one the orchestrator
    /// holds for its workspace), or rejected when its workspace is not the sending site's.
    pub fn stored(
        &mut self,
        r: &UsageRecord,
        project: &str,
        counted: bool,
    ) -> Result<(), StoreError> {
        if !counted {
            self.rejected += 1;
            return Ok(());
        }
        let mut rec = r.clone();
        rec.project = Ident::parse(project).map_err(|e| StoreError::Corrupt {
            what: "workspaces.project",
            message: e.to_string(),
        })?;
        self.new.push(rec);
        Ok(())
    }
}

/// A figure as stored: finite and not negative, whatever an agent sent.
pub fn finite(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

/// The highest seq with no gap below it: `acked`, advanced through `later` (ascending seqs
/// stored above `acked`) for as long as they follow one another.
pub fn contiguous_through(acked: i64, later: &[i64]) -> i64 {
    let mut through = acked;
    for &seq in later {
        if seq != through + 1 {
            break;
        }
        through = seq;
    }
    through
}

/// A project's budget; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Core-hours (allocated cores × hours).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub core_hours: Option<f64>,
    /// GPU-hours.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub gpu_hours: Option<f64>,
}

/// The ledger.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Stores each record of `site` whose seq is new, attributing it to the workspace's project
    /// when the workspace is the site's, and answers how far the site's records are complete.
    async fn ingest_usage(
        &self,
        site: &Ident,
        records: &[UsageRecord],
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError>;

    /// Counted records of `project` whose interval ends in `[from, to)`, by site and seq.
    async fn usage_of(
        &self,
        project: &Ident,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredUsage>, StoreError>;

    /// Allocated core-seconds and GPU-seconds of `project` over all time.
    async fn usage_totals(&self, project: &Ident) -> Result<(f64, f64), StoreError>;

    /// Sets the project's quota.
    async fn set_quota(
        &self,
        project: &Ident,
        quota: Quota,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The project's quota, if one is set.
    async fn quota(&self, project: &Ident) -> Result<Option<Quota>, StoreError>;

    /// Every quota.
    async fn quotas(&self) -> Result<Vec<(Ident, Quota)>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_stops_at_the_first_gap() {
        assert_eq!(contiguous_through(0, &[]), 0);
        assert_eq!(contiguous_through(0, &[1, 2, 3]), 3);
        assert_eq!(contiguous_through(2, &[3, 5, 6]), 3);
        assert_eq!(contiguous_through(4, &[6]), 4);
        assert_eq!(finite(f64::NAN), 0.0);
        assert_eq!(finite(-1.0), 0.0);
        assert_eq!(finite(2.5), 2.5);
    }
}
