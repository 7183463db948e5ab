//! [`ReleaseStore`] on SQL.

use async_trait::async_trait;
use basho_core::release::ReleaseRequest;

use super::Db;
use super::rows::{Row, parse};
use crate::releases::Refused;
use crate::store::StoreError;
use crate::store::releases::{Change, ReleaseFilter, ReleaseStore};
use crate::store::sql::{Dialect, SqlStore, json};

fn request(row: &Row) -> Result<ReleaseRequest, StoreError> {
    parse(row, "body")
}

async fn write(
    tx: &mut sqlx::Transaction<'static, Db>,
    r: &ReleaseRequest,
) -> Result<(), StoreError> {
    sqlx::query(Db::sql(
        "UPDATE release_requests SET state = $1, body = $2, updated_at = $3 WHERE id = $4",
    ))
    .bind(r.state.as_str())
    .bind(json(r))
    .bind(r.updated_at.timestamp_millis())
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl ReleaseStore for SqlStore<Db> {
    async fn insert_release(&self, r: &ReleaseRequest) -> Result<(), StoreError> {
        sqlx::query(Db::sql(
            "INSERT INTO release_requests (id, workspace_id, project, site, requester, owner, \
             state, body, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        ))
        .bind(&r.id)
        .bind(&r.workspace)
        .bind(r.project.as_str())
        .bind(r.site.as_str())
        .bind(&r.requester)
        .bind(&r.owner)
        .bind(r.state.as_str())
        .bind(json(r))
        .bind(r.created_at.timestamp_millis())
        .bind(r.updated_at.timestamp_millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn release(&self, id: &str) -> Result<Option<ReleaseRequest>, StoreError> {
        let row = sqlx::query(Db::sql("SELECT body FROM release_requests WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(request).transpose()
    }

    async fn list_releases(
        &self,
        filter: &ReleaseFilter,
    ) -> Result<Vec<ReleaseRequest>, StoreError> {
        let mut sql = String::from("SELECT body FROM release_requests WHERE 1 = 1");
        let mut n = 0;
        let mut mark = || {
            n += 1;
            format!("${n}")
        };
        if filter.workspace.is_some() {
            sql += &format!(" AND workspace_id = {}", mark());
        }
        if filter.owner.is_some() {
            sql += &format!(" AND owner = {}", mark());
        }
        if !filter.states.is_empty() {
            let marks: Vec<String> = filter.states.iter().map(|_| mark()).collect();
            sql += &format!(" AND state IN ({})", marks.join(", "));
        }
        sql += " ORDER BY created_at, id";
        let mut q = sqlx::query(Db::sql(sql));
        if let Some(w) = &filter.workspace {
            q = q.bind(w);
        }
        if let Some(o) = &filter.owner {
            q = q.bind(o);
        }
        for s in &filter.states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(request).collect()
    }

    async fn change_release(
        &self,
        id: &str,
        change: Change<'_>,
    ) -> Result<Option<Result<ReleaseRequest, Refused>>, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        let sql = format!(
            "SELECT body FROM release_requests WHERE id = $1{}",
            Db::FOR_UPDATE
        );
        let row = sqlx::query(Db::sql(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut r = request(&row)?;
        if let Err(e) = change(&mut r) {
            return Ok(Some(Err(e)));
        }
        write(&mut tx, &r).await?;
        tx.commit().await?;
        Ok(Some(Ok(r)))
    }
}
