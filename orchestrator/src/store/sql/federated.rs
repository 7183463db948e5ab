//! [`FederatedStore`] on SQL: one row per job, its state and owner as columns to filter on, the
//! rest as JSON text.

use async_trait::async_trait;
use basho_core::federated::JobState;
use sqlx::Row as _;

use super::Db;
use super::rows::Row;
use crate::store::federated::{FederatedStore, JobInsert, JobRow};
use crate::store::sql::{Dialect, SqlStore, json};
use crate::store::{IdempotencyKey, StoreError, to_millis};

fn job(row: &Row) -> Result<JobRow, StoreError> {
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        what: "federated_jobs.body",
        message: e.to_string(),
    })
}

#[async_trait]
impl FederatedStore for SqlStore<Db> {
    async fn insert_job(
        &self,
        row: &JobRow,
        key: Option<&IdempotencyKey>,
    ) -> Result<JobInsert, StoreError> {
        let j = &row.job;
        let done = sqlx::query(Db::sql(
            "INSERT INTO federated_jobs \
             (id, owner, state, body, created_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        ))
        .bind(&j.id)
        .bind(&j.owner)
        .bind(j.state.as_str())
        .bind(json(row))
        .bind(to_millis(j.created_at).timestamp_millis())
        .bind(key.map(|k| k.key.as_str()))
        .bind(key.map(|k| k.request_hash.as_str()))
        .execute(&self.writer)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(JobInsert::New);
        }
        let Some(key) = key else {
            return Err(StoreError::Corrupt {
                what: "federated_jobs.id",
                message: format!("job {} exists already", j.id),
            });
        };
        match self.job_by_key(&key.key).await? {
            Some((hash, first)) if hash == key.request_hash => {
                Ok(JobInsert::Replayed(Box::new(first)))
            }
            Some((_, first)) => Ok(JobInsert::KeyReused(first.job.id)),
            None => Err(StoreError::Corrupt {
                what: "federated_jobs.id",
                message: format!("job {} exists already", j.id),
            }),
        }
    }

    async fn job_by_key(&self, key: &str) -> Result<Option<(String, JobRow)>, StoreError> {
        let Some(row) = sqlx::query(Db::sql(
            "SELECT body, request_hash FROM federated_jobs WHERE idempotency_key = $1",
        ))
        .bind(key)
        .fetch_optional(&self.writer)
        .await?
        else {
            return Ok(None);
        };
        let hash: String = row.try_get("request_hash")?;
        Ok(Some((hash, job(&row)?)))
    }

    async fn put_job(&self, row: &JobRow) -> Result<(), StoreError> {
        let j = &row.job;
        sqlx::query(Db::sql(
            "INSERT INTO federated_jobs (id, owner, state, body, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body \
             WHERE federated_jobs.state NOT IN ($6, $7)",
        ))
        .bind(&j.id)
        .bind(&j.owner)
        .bind(j.state.as_str())
        .bind(json(row))
        .bind(to_millis(j.created_at).timestamp_millis())
        .bind(JobState::Completed.as_str())
        .bind(JobState::Failed.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        sqlx::query(Db::sql("SELECT body FROM federated_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn jobs(&self, owner: Option<&str>, active: bool) -> Result<Vec<JobRow>, StoreError> {
        let ended = [JobState::Completed.as_str(), JobState::Failed.as_str()];
        let rows = sqlx::query(Db::sql(
            "SELECT body FROM federated_jobs \
             WHERE ($1 IS NULL OR owner = $1) AND ($2 = 0 OR state NOT IN ($3, $4)) \
             ORDER BY created_at, id",
        ))
        .bind(owner)
        .bind(i64::from(active))
        .bind(ended[0])
        .bind(ended[1])
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job).collect()
    }
}
