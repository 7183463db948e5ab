//! [`TokenStore`] on SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Db;
use super::rows::Row;
use crate::store::sql::{Dialect, SqlStore};
use crate::store::{Role, StoreError, TokenRecord, TokenStore, from_millis};

const COLUMNS: &str = "id, role, subject, site, name, created_at, revoked_at, expires_at";

fn token(row: &Row) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get("role")?;
    let site: Option<String> = row.try_get("site")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt {
            what: "tokens.role",
            message: format!("unknown role {role:?}"),
        })?,
        subject: row.try_get("subject")?,
        site: site
            .map(|s| basho_core::Ident::parse(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                what: "tokens.site",
                message: e.to_string(),
            })?,
        name: row.try_get("name")?,
        created_at: from_millis(row.try_get("created_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_millis),
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_millis),
    })
}

#[async_trait]
impl TokenStore for SqlStore<Db> {
    async fn insert_token(&self, t: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        sqlx::query(Db::sql(
            "INSERT INTO tokens (id, hash, role, subject, site, name, created_at, revoked_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(&t.id)
        .bind(hash)
        .bind(t.role.as_str())
        .bind(&t.subject)
        .bind(t.site.as_ref().map(|s| s.as_str()))
        .bind(&t.name)
        .bind(t.created_at.timestamp_millis())
        .bind(t.revoked_at.map(|r| r.timestamp_millis()))
        .bind(t.expires_at.map(|r| r.timestamp_millis()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE hash = $1");
        let row = sqlx::query(Db::sql(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at, id");
        let rows = sqlx::query(Db::sql(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(token).collect()
    }

    async fn revoke_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(Db::sql(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
        ))
        .bind(now.timestamp_millis())
        .bind(id)
        .execute(&self.writer)
        .await?;
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id = $1");
        let row = sqlx::query(Db::sql(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token).transpose()
    }
}
