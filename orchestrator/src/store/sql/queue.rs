//! [`QueueStore`] on SQL: `workspace_queue` beside the queued workspaces' records, placement in
//! the site's turn as a create, the platform's scheduling per project, and the ledger summed
//! per bucket for fair share.

use std::collections::BTreeMap;

use async_trait::async_trait;
use basho_core::queue::Scheduling;
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use sqlx::{Row as _, Transaction};

use super::Db;
use super::rows::{WORKSPACE_COLUMNS, ident, parse, workspace};
use super::workspaces::{fetch_one_ws, next_revision, overbooked};
use crate::store::queue::{Placed, Placement, QueueEntry, QueueStore, Queued, UsageBuckets};
use crate::store::sql::{Dialect, News, SqlStore, Turn, json};
use crate::store::{Created, IdempotencyKey, StoreError, WorkspaceRecord, to_millis};

/// Writes `entry` for workspace `id`, whose create took revision `seq`.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Db>,
    id: &str,
    seq: i64,
    entry: &QueueEntry,
) -> Result<(), StoreError> {
    sqlx::query(Db::sql(
        "INSERT INTO workspace_queue (workspace, seq, pinned, grants, duration_ms, visa_exp_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    ))
    .bind(id)
    .bind(seq)
    .bind(entry.pinned.as_ref().map(Ident::as_str))
    .bind(json(&entry.grants))
    .bind(entry.duration_ms)
    .bind(entry.visa_exp_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl QueueStore for SqlStore<Db> {
    async fn enqueue_workspace(
        &self,
        rec: &WorkspaceRecord,
        entry: &QueueEntry,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        super::workspaces::create(self, rec, key, None, Some(entry)).await
    }

    async fn queued_after(&self, seq: i64) -> Result<Vec<Queued>, StoreError> {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS}, w.visa_refs, q.seq, q.pinned, q.grants, q.duration_ms, \
             q.visa_exp_ms FROM workspace_queue q JOIN workspaces w ON w.id = q.workspace \
             WHERE w.state = $1 AND q.seq > $2 ORDER BY q.seq"
        );
        let rows = sqlx::query(Db::sql(sql))
            .bind(State::Queued.as_str())
            .bind(seq)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let pinned: Option<String> = row.try_get("pinned")?;
                let entry = QueueEntry {
                    seq: row.try_get("seq")?,
                    pinned: match pinned {
                        Some(_) => Some(ident(row, "pinned")?),
                        None => None,
                    },
                    grants: parse(row, "grants")?,
                    duration_ms: row.try_get("duration_ms")?,
                    visa_exp_ms: row.try_get("visa_exp_ms")?,
                };
                Ok(Queued {
                    workspace: workspace(row)?,
                    visa_refs: parse(row, "visa_refs")?,
                    entry,
                })
            })
            .collect()
    }

    async fn place_queued(
        &self,
        id: &str,
        placement: &Placement,
        now: DateTime<Utc>,
    ) -> Result<Placed, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        let Some(mut rec) = fetch_one_ws(&mut tx, id, true).await? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        if rec.workspace.state != State::Queued {
            return Ok(Placed::Gone(rec));
        }
        let site = placement.site.as_str();
        Db::take_turn(&mut tx, Turn::Placement(site)).await?;
        rec.workspace.site = placement.site.clone();
        if let Some(held) = overbooked(&mut tx, &rec.workspace).await? {
            return Ok(Placed::Full(held));
        }
        let revision = next_revision(&mut tx).await?;
        let now = to_millis(now);
        let expires_at = to_millis(placement.expires_at);
        sqlx::query(Db::sql(
            "UPDATE workspaces SET site = $1, state = $2, message = NULL, updated_at = $3, \
             expires_at = $4, visa_refs = $5, revision = $6 WHERE id = $7",
        ))
        .bind(site)
        .bind(State::Placed.as_str())
        .bind(now.timestamp_millis())
        .bind(expires_at.timestamp_millis())
        .bind(json(&placement.visa_refs))
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(Db::sql("DELETE FROM workspace_queue WHERE workspace = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Db::announce(&mut tx, News::Revision { site, revision }).await?;
        tx.commit().await?;
        let w = &mut rec.workspace;
        w.state = State::Placed;
        w.message = None;
        w.updated_at = now;
        w.expires_at = expires_at;
        rec.visa_refs.clone_from(&placement.visa_refs);
        rec.revision = revision;
        Ok(Placed::Placed(rec))
    }

    async fn set_scheduling(
        &self,
        project: &Ident,
        s: Scheduling,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(Db::sql(
            "INSERT INTO project_scheduling (project, priority, share, updated_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project) DO UPDATE SET priority = excluded.priority, \
             share = excluded.share, updated_ms = excluded.updated_ms",
        ))
        .bind(project.as_str())
        .bind(i64::from(s.priority))
        .bind(i64::from(s.share))
        .bind(now.timestamp_millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn schedulings(&self) -> Result<BTreeMap<Ident, Scheduling>, StoreError> {
        let rows = sqlx::query("SELECT project, priority, share FROM project_scheduling")
            .fetch_all(&self.pool)
            .await?;
        let int = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        rows.iter()
            .map(|r| {
                let s = Scheduling {
                    priority: int(r.try_get("priority")?),
                    share: int(r.try_get("share")?),
                };
                Ok((ident(r, "project")?, s))
            })
            .collect()
    }

    async fn usage_buckets(
        &self,
        since: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<UsageBuckets, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let rows = sqlx::query(Db::sql(
            "SELECT project, (to_ms / $2) AS bucket, \
             SUM(allocated_core_seconds) AS cores, SUM(gpu_seconds) AS gpus \
             FROM usage WHERE counted AND to_ms >= $1 GROUP BY project, bucket",
        ))
        .bind(since.timestamp_millis())
        .bind(bucket_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let bucket: i64 = r.try_get("bucket")?;
                Ok((
                    ident(r, "project")?,
                    bucket.saturating_mul(bucket_ms),
                    r.try_get::<f64, _>("cores")?,
                    r.try_get::<f64, _>("gpus")?,
                ))
            })
            .collect()
    }
}
