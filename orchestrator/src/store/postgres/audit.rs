//! [`AuditStore`] on PostgreSQL: an append holds an advisory transaction lock before it reads
//! the last hash, so appends from every replica form one linear chain.

use async_trait::async_trait;
use basho_core::audit::{AuditEntry, next_entry};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{LOCK_AUDIT, LOCK_NAMESPACE, PostgresStore};
use crate::store::{AuditEvent, AuditStore, StoreError, from_millis};

fn entry(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: from_millis(row.try_get("at")?),
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        // As on SQLite: an edited detail is shown as text so verification names the row.
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(
        &self,
        at: DateTime<Utc>,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_NAMESPACE)
            .bind(LOCK_AUDIT)
            .execute(&mut *tx)
            .await?;
        let mut last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let mut written = Vec::with_capacity(events.len());
        for ev in AuditEvent::unrepeated(events) {
            let logged = sqlx::query_scalar::<_, i32>(
                "SELECT 1 FROM audit WHERE target = $1 AND action = $2 LIMIT 1",
            );
            if ev.once
                && logged
                    .bind(&ev.target)
                    .bind(&ev.action)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some()
            {
                continue;
            }
            let e = next_entry(
                last.as_ref().map(|(s, h)| (*s, h.as_str())),
                at,
                &ev.actor,
                &ev.action,
                &ev.target,
                ev.detail.clone(),
            );
            sqlx::query(
                "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            )
            .bind(e.seq)
            .bind(e.at.timestamp_millis())
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(e.detail.to_string())
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .execute(&mut *tx)
            .await?;
            last = Some((e.seq, e.hash.clone()));
            written.push(e);
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry).collect()
    }
}
