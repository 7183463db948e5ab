//! [`UsageStore`] on SQL: a site's ingestions take turns (SQLite's write lock, PostgreSQL's
//! advisory lock), so two replicas answering one agent compute one gap-free acknowledgement.

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::usage::UsageRecord;
use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Db;
use super::rows::{Row, ident};
use crate::store::sql::{Dialect, SqlStore, Turn};
use crate::store::usage::{Ingested, Quota, StoredUsage, UsageStore, contiguous_through, finite};
use crate::store::{StoreError, from_millis};

const USAGE_COLUMNS: &str = "site, seq, workspace, project, from_ms, to_ms, \
     allocated_core_seconds, used_cpu_seconds, allocated_memory_gib_seconds, \
     used_memory_gib_seconds, peak_memory_bytes, gpu_seconds";

fn stored(row: &Row) -> Result<StoredUsage, StoreError> {
    let seq: i64 = row.try_get("seq")?;
    let peak: i64 = row.try_get("peak_memory_bytes")?;
    Ok(StoredUsage {
        site: ident(row, "site")?,
        record: UsageRecord {
            seq: seq as u64,
            workspace: row.try_get("workspace")?,
            project: ident(row, "project")?,
            from: from_millis(row.try_get("from_ms")?),
            to: from_millis(row.try_get("to_ms")?),
            allocated_core_seconds: row.try_get("allocated_core_seconds")?,
            used_cpu_seconds: row.try_get("used_cpu_seconds")?,
            allocated_memory_gib_seconds: row.try_get("allocated_memory_gib_seconds")?,
            used_memory_gib_seconds: row.try_get("used_memory_gib_seconds")?,
            peak_memory_bytes: peak.max(0) as u64,
            gpu_seconds: row.try_get("gpu_seconds")?,
        },
    })
}

fn quota(row: &Row) -> Result<Quota, StoreError> {
    Ok(Quota {
        core_hours: row.try_get("core_hours")?,
        gpu_hours: row.try_get("gpu_hours")?,
    })
}

#[async_trait]
impl UsageStore for SqlStore<Db> {
    async fn ingest_usage(
        &self,
        site: &Ident,
        records: &[UsageRecord],
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        Db::take_turn(&mut tx, Turn::Usage(site.as_str())).await?;
        let mut out = Ingested::default();
        for r in records {
            let Ok(seq) = i64::try_from(r.seq) else {
                continue;
            };
            if seq <= 0 {
                continue;
            }
            // The project and site the orchestrator holds for the workspace decide where the
            // record counts; an agent cannot bill another site's or project's workspace.
            let owner = sqlx::query(Db::sql(
                "SELECT project, site FROM workspaces WHERE id = $1",
            ))
            .bind(&r.workspace)
            .fetch_optional(&mut *tx)
            .await?;
            let (project, counted) = match owner {
                Some(row) => {
                    let ws_site: Option<String> = row.try_get("site")?;
                    let project: String = row.try_get("project")?;
                    (project, ws_site.as_deref() == Some(site.as_str()))
                }
                None => (r.project.to_string(), false),
            };
            let inserted = sqlx::query(Db::sql(
                "INSERT INTO usage (site, seq, workspace, project, from_ms, to_ms, \
                 allocated_core_seconds, used_cpu_seconds, allocated_memory_gib_seconds, \
                 used_memory_gib_seconds, peak_memory_bytes, gpu_seconds, counted, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (site, seq) DO NOTHING",
            ))
            .bind(site.as_str())
            .bind(seq)
            .bind(&r.workspace)
            .bind(&project)
            .bind(r.from.timestamp_millis())
            .bind(r.to.timestamp_millis())
            .bind(finite(r.allocated_core_seconds))
            .bind(finite(r.used_cpu_seconds))
            .bind(finite(r.allocated_memory_gib_seconds))
            .bind(finite(r.used_memory_gib_seconds))
            .bind(i64::try_from(r.peak_memory_bytes).unwrap_or(i64::MAX))
            .bind(finite(r.gpu_seconds))
            .bind(counted)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                continue;
            }
            out.stored(r, &project, counted)?;
        }
        let acked: i64 = sqlx::query_scalar(Db::sql(
            "SELECT acked_through FROM usage_acks WHERE site = $1",
        ))
        .bind(site.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
        let later: Vec<i64> = sqlx::query_scalar(Db::sql(
            "SELECT seq FROM usage WHERE site = $1 AND seq > $2 ORDER BY seq",
        ))
        .bind(site.as_str())
        .bind(acked)
        .fetch_all(&mut *tx)
        .await?;
        let through = contiguous_through(acked, &later);
        if through != acked {
            sqlx::query(Db::sql(
                "INSERT INTO usage_acks (site, acked_through) VALUES ($1, $2) \
                 ON CONFLICT (site) DO UPDATE SET acked_through = excluded.acked_through",
            ))
            .bind(site.as_str())
            .bind(through)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        out.acked_through = through as u64;
        Ok(out)
    }

    async fn usage_of(
        &self,
        project: &Ident,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredUsage>, StoreError> {
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM usage WHERE project = $1 AND counted \
             AND to_ms >= $2 AND to_ms < $3 ORDER BY site, seq"
        );
        let rows = sqlx::query(Db::sql(sql))
            .bind(project.as_str())
            .bind(from.timestamp_millis())
            .bind(to.timestamp_millis())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored).collect()
    }

    async fn usage_totals(&self, project: &Ident) -> Result<(f64, f64), StoreError> {
        let row = sqlx::query(Db::sql(
            "SELECT COALESCE(SUM(allocated_core_seconds), 0.0) AS cores, \
             COALESCE(SUM(gpu_seconds), 0.0) AS gpus FROM usage \
             WHERE project = $1 AND counted",
        ))
        .bind(project.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("cores")?, row.try_get("gpus")?))
    }

    async fn set_quota(
        &self,
        project: &Ident,
        quota: Quota,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(Db::sql(
            "INSERT INTO quotas (project, core_hours, gpu_hours, updated_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project) DO UPDATE SET core_hours = excluded.core_hours, \
             gpu_hours = excluded.gpu_hours, updated_ms = excluded.updated_ms",
        ))
        .bind(project.as_str())
        .bind(quota.core_hours)
        .bind(quota.gpu_hours)
        .bind(now.timestamp_millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn quota(&self, project: &Ident) -> Result<Option<Quota>, StoreError> {
        let row = sqlx::query(Db::sql(
            "SELECT core_hours, gpu_hours FROM quotas WHERE project = $1",
        ))
        .bind(project.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(quota).transpose()
    }

    async fn quotas(&self) -> Result<Vec<(Ident, Quota)>, StoreError> {
        let rows =
            sqlx::query("SELECT project, core_hours, gpu_hours FROM quotas ORDER BY project")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((ident(r, "project")?, quota(r)?)))
            .collect()
    }
}
