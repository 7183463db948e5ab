//! [`AuditStore`] on SQL: an append reads the last hash only once it is the one writer of the
//! chain (SQLite's write lock, PostgreSQL's advisory lock), so appends from every connection and
//! replica form one linear chain.

use async_trait::async_trait;
use basho_core::audit::{AuditEntry, next_entry};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row as _;

use super::Db;
use super::rows::Row;
use crate::store::sql::{Dialect, SqlStore, Turn};
use crate::store::{AuditEvent, AuditStore, StoreError, from_millis};

fn entry(row: &Row) -> Result<AuditEntry, StoreError> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: from_millis(row.try_get("at")?),
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        // A detail edited into invalid JSON is still shown (as text), so verification names the
        // row instead of the read failing.
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl AuditStore for SqlStore<Db> {
    async fn append_audit(
        &self,
        at: DateTime<Utc>,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        Db::take_turn(&mut tx, Turn::Audit).await?;
        let mut last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let mut written = Vec::with_capacity(events.len());
        for ev in AuditEvent::unrepeated(events) {
            let logged = sqlx::query_scalar::<_, i32>(Db::sql(
                "SELECT 1 FROM audit WHERE target = $1 AND action = $2 LIMIT 1",
            ));
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
            sqlx::query(Db::sql(
                "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
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
        let rows = sqlx::query(Db::sql(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry).collect()
    }
}
