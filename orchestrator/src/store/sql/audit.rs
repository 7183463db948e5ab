//! [`AuditStore`] on SQL: an append reads the last hash only once it is the one writer of the
//! chain (SQLite's write lock, PostgreSQL's advisory lock), so appends from every connection and
//! replica form one linear chain.

use std::collections::BTreeSet;

use async_trait::async_trait;
use basho_core::audit::{AuditEntry, next_entry};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row as _;

use super::Db;
use super::rows::Row;
use crate::store::sql::{Dialect, SqlStore, Turn, marks};
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

/// Most entries one `INSERT` carries (eight bound values each, well under either database's
/// limit on bound values).
const INSERT_ROWS: usize = 256;

/// Which of the [`once`](AuditEvent::once) events' target and action pairs the log already
/// holds, in one query.
async fn logged_once(
    tx: &mut sqlx::Transaction<'static, Db>,
    events: &[AuditEvent],
) -> Result<BTreeSet<(String, String)>, StoreError> {
    let targets: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.once)
        .map(|e| e.target.as_str())
        .collect();
    let mut logged = BTreeSet::new();
    let targets: Vec<&str> = targets.into_iter().collect();
    for chunk in targets.chunks(INSERT_ROWS) {
        let sql = format!(
            "SELECT DISTINCT target, action FROM audit WHERE target IN ({})",
            marks(1, chunk.len())
        );
        let mut query = sqlx::query_as::<_, (String, String)>(Db::sql(sql));
        for t in chunk {
            query = query.bind(*t);
        }
        logged.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(logged)
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
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let logged = logged_once(&mut tx, events).await?;
        let mut written: Vec<AuditEntry> = Vec::with_capacity(events.len());
        for ev in AuditEvent::unrepeated(events) {
            if ev.once && logged.contains(&(ev.target.clone(), ev.action.clone())) {
                continue;
            }
            let prev = written
                .last()
                .map(|e| (e.seq, e.hash.as_str()))
                .or(last.as_ref().map(|(s, h)| (*s, h.as_str())));
            written.push(next_entry(
                prev,
                at,
                &ev.actor,
                &ev.action,
                &ev.target,
                ev.detail.clone(),
            ));
        }
        // One statement for the batch: the writer's turn is one round trip, not one an entry.
        for chunk in written.chunks(INSERT_ROWS) {
            let rows = (0..chunk.len())
                .map(|i| format!("({})", marks(i * 8 + 1, 8)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash) \
                 VALUES {rows}"
            );
            let mut insert = sqlx::query(Db::sql(sql));
            for e in chunk {
                insert = insert
                    .bind(e.seq)
                    .bind(e.at.timestamp_millis())
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.target)
                    .bind(e.detail.to_string())
                    .bind(&e.prev_hash)
                    .bind(&e.hash);
            }
            insert.execute(&mut *tx).await?;
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
