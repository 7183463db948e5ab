//! [`RevocationStore`] on SQL. A revocation takes the revision row's lock before its seq, so
//! seqs become visible in order: a replica that reads "every seq above the last I saw" misses
//! none.

use async_trait::async_trait;
use basho_core::revocation::{Reason, Revocation};
use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Db;
use super::rows::{Row, optional_ident};
use super::workspaces::next_revision;
use crate::store::revocations::{NewRevocation, RevocationStore};
use crate::store::sql::{Dialect, News, SqlStore};
use crate::store::{StoreError, from_millis, to_millis};

fn revocation(row: &Row) -> Result<Revocation, StoreError> {
    let reason: String = row.try_get("reason")?;
    Ok(Revocation {
        seq: row.try_get("seq")?,
        dataset: optional_ident(row, "dataset")?,
        subject: row.try_get("subject")?,
        project: optional_ident(row, "project")?,
        visa_jti: row.try_get("visa_jti")?,
        reason: Reason::parse(&reason).ok_or(StoreError::Corrupt {
            what: "revocations.reason",
            message: format!("unknown reason {reason:?}"),
        })?,
        at: from_millis(row.try_get("at")?),
    })
}

#[async_trait]
impl RevocationStore for SqlStore<Db> {
    async fn record_revocation(
        &self,
        new: &NewRevocation,
        at: DateTime<Utc>,
    ) -> Result<(Revocation, i64), StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        let revision = next_revision(&mut tx).await?;
        let at = to_millis(at);
        let seq: i64 = sqlx::query_scalar(Db::sql(
            "INSERT INTO revocations (dataset, subject, project, visa_jti, reason, at, revision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        ))
        .bind(new.dataset.as_ref().map(|d| d.as_str()))
        .bind(new.subject.as_deref())
        .bind(new.project.as_ref().map(|p| p.as_str()))
        .bind(new.visa_jti.as_deref())
        .bind(new.reason.as_str())
        .bind(at.timestamp_millis())
        .bind(revision)
        .fetch_one(&mut *tx)
        .await?;
        Db::announce(&mut tx, News::Revocation(revision)).await?;
        tx.commit().await?;
        let r = Revocation {
            seq,
            dataset: new.dataset.clone(),
            subject: new.subject.clone(),
            project: new.project.clone(),
            visa_jti: new.visa_jti.clone(),
            reason: new.reason,
            at,
        };
        Ok((r, revision))
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, dataset, subject, project, visa_jti, reason, at FROM revocations \
             ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revocation).collect()
    }

    async fn note_revoked(&self, id: &str, note: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE workspaces SET message = COALESCE(message || '; ', '') || $1 \
             WHERE id = $2 AND state = 'revoked' AND {}(COALESCE(message, ''), $1) = 0",
            Db::STRPOS
        );
        let done = sqlx::query(Db::sql(sql))
            .bind(note)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
