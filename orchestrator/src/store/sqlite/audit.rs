//! [`AuditStore`] on SQLite: appends take the write lock (`BEGIN IMMEDIATE`) before reading the
//! last hash, so concurrent appends form one linear chain.

use async_trait::async_trait;
use basho_core::audit::{AuditEntry, next_entry};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::store::{AuditEvent, AuditStore, StoreError, from_millis};

fn entry(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
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
impl AuditStore for SqliteStore {
    async fn append_audit(
        &self,
        at: DateTime<Utc>,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let mut written = Vec::with_capacity(events.len());
        for ev in AuditEvent::unrepeated(events) {
            let logged = sqlx::query_scalar::<_, i32>(
                "SELECT 1 FROM audit WHERE target = ? AND action = ? LIMIT 1",
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
                 VALUES (?,?,?,?,?,?,?,?)",
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
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry).collect()
    }
}

#[cfg(test)]
mod tests {
    use basho_core::audit::verify_chain;
    use serde_json::json;

    use super::*;

    async fn file_store(dir: &std::path::Path) -> SqliteStore {
        SqliteStore::open(None, dir).await.unwrap()
    }

    #[tokio::test]
    async fn an_edited_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(dir.path()).await;
        for i in 0..4 {
            let ev = AuditEvent::new("admin:tok-1", "token_create", "t", json!({"i": i}));
            store.append_audit(Utc::now(), &[ev]).await.unwrap();
        }
        sqlx::query("UPDATE audit SET detail = 'not json' WHERE seq = 2")
            .execute(&store.pool)
            .await
            .unwrap();
        let all = store.audit_page(0, 100).await.unwrap();
        assert_eq!(verify_chain(&all).unwrap_err().seq, 2);
    }
}
