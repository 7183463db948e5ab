//! [`ConsentStore`] on SQL: one row per site, its report as JSON text.

use async_trait::async_trait;
use basho_core::Ident;
use basho_core::consent::ConsentReport;
use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Db;
use super::rows::Row;
use crate::store::consent::{ConsentRow, ConsentStore};
use crate::store::sql::{Dialect, SqlStore, json};
use crate::store::{StoreError, from_millis, to_millis};

fn consent(row: &Row) -> Result<ConsentRow, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(ConsentRow {
        report: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
            what: "site_consent.body",
            message: e.to_string(),
        })?,
        reported_at: from_millis(row.try_get("reported_at")?),
    })
}

#[async_trait]
impl ConsentStore for SqlStore<Db> {
    async fn put_consent(
        &self,
        report: &ConsentReport,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(Db::sql(
            "INSERT INTO site_consent (site, body, reported_at) VALUES ($1, $2, $3) \
             ON CONFLICT (site) DO UPDATE SET body = excluded.body, \
             reported_at = excluded.reported_at",
        ))
        .bind(report.site.as_str())
        .bind(json(report))
        .bind(to_millis(at).timestamp_millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn consent(&self, site: &Ident) -> Result<Option<ConsentRow>, StoreError> {
        sqlx::query(Db::sql(
            "SELECT body, reported_at FROM site_consent WHERE site = $1",
        ))
        .bind(site.as_str())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(consent)
        .transpose()
    }

    async fn consents(&self) -> Result<Vec<ConsentRow>, StoreError> {
        let rows = sqlx::query("SELECT body, reported_at FROM site_consent ORDER BY site")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(consent).collect()
    }
}
