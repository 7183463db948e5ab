//! [`TunnelStore`] on PostgreSQL: one row per site, shared by every replica.

use async_trait::async_trait;
use basho_core::Ident;
use sqlx::Row;

use super::PostgresStore;
use crate::store::sql::on_postgres::rows::ident;
use crate::store::tunnels::{TunnelHolder, TunnelStore};
use crate::store::{StoreError, from_millis, to_millis};
#[async_trait]
impl TunnelStore for PostgresStore {
    async fn hold_tunnel(&self, h: &TunnelHolder) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tunnel_holders (site, url, replica, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (site) DO UPDATE SET url = EXCLUDED.url, replica = EXCLUDED.replica, \
             since = EXCLUDED.since",
        )
        .bind(h.site.as_str())
        .bind(&h.url)
        .bind(&h.replica)
        .bind(to_millis(h.since).timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tunnel_holder(&self, site: &Ident) -> Result<Option<TunnelHolder>, StoreError> {
        let row =
            sqlx::query("SELECT site, url, replica, since FROM tunnel_holders WHERE site = $1")
                .bind(site.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(TunnelHolder {
                site: ident(&r, "site")?,
                url: r.try_get("url")?,
                replica: r.try_get("replica")?,
                since: from_millis(r.try_get("since")?),
            })
        })
        .transpose()
    }

    async fn release_tunnel(&self, site: &Ident, replica: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tunnel_holders WHERE site = $1 AND replica = $2")
            .bind(site.as_str())
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
