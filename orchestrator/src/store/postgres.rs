//! The PostgreSQL store, for platforms that run more than one orchestrator replica on one
//! database. Same tables and semantics as the SQLite store; what SQLite gets from its single
//! writer (`BEGIN IMMEDIATE`) comes here from row locks (`FOR UPDATE`, the revision row) and
//! advisory transaction locks (audit chain, idempotency keys, a site's usage acks). Every change
//! that moves a site's revision, and every revocation, is announced with `NOTIFY` so other
//! replicas wake their long-polls (see `crate::replicas`).

use std::time::Duration;

use async_trait::async_trait;
use basho_core::Ident;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Pool, Postgres, Row as _, Transaction};

use super::StoreError;
use super::sql::on_postgres::rows::ident;
use super::sql::{Dialect, News, SqlStore, Turn};

pub mod testdb;
mod tunnels;

/// The PostgreSQL implementation of [`Store`](super::Store).
pub type PostgresStore = SqlStore<Postgres>;

/// `NOTIFY` channel carrying `<site> <revision>` when a site's desired state changes.
pub const REVISION_CHANNEL: &str = "basho_revision";
/// `NOTIFY` channel carrying the revision a new revocation took.
pub const REVOCATION_CHANNEL: &str = "basho_revocation";
/// `NOTIFY` channel carrying the name of a site that registered.
pub const SITE_CHANNEL: &str = "basho_site";

/// Advisory lock keys (one namespace, `pg_advisory_xact_lock(NAMESPACE, key)`).
const LOCK_NAMESPACE: i32 = 0x6261_7368; // "bash"
const LOCK_AUDIT: i32 = 1;

/// Whether `database` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and applies
    /// the migrations. Replicas starting together apply them once (sqlx takes a lock).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, 10).await
    }

    /// [`PostgresStore::open`] with at most `connections` pooled connections.
    pub async fn open_with(url: &str, connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("basho-orchestrator");
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations-postgres").run(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            pool,
            extra: options,
        })
    }

    /// The connection options, for the dedicated connections of leader election and `LISTEN`.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.extra
    }

    /// The pool (replica coordination and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every site's revision: the highest of its workspaces' and of the revocations'.
    pub async fn site_revisions(&self) -> Result<Vec<(Ident, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.name, GREATEST( \
               (SELECT COALESCE(MAX(revision), 0) FROM workspaces w WHERE w.site = s.name), \
               (SELECT COALESCE(MAX(revision), 0) FROM revocations)) AS revision \
             FROM sites s ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((ident(r, "name")?, r.try_get("revision")?)))
            .collect()
    }
}

#[async_trait]
impl Dialect for Postgres {
    type Extra = PgConnectOptions;

    const MARK: char = '$';
    const GREATEST: &'static str = "GREATEST";
    const STRPOS: &'static str = "strpos";
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    fn sum_json_int(column: &str, member: &str) -> String {
        format!("COALESCE(SUM(({column}::jsonb ->> '{member}')::bigint), 0)::bigint")
    }

    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    async fn begin_snapshot(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
    }

    async fn take_turn(
        tx: &mut Transaction<'static, Self>,
        turn: Turn<'_>,
    ) -> Result<(), sqlx::Error> {
        let keyed = |key: String| {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key)
        };
        let q = match turn {
            Turn::Audit => sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK_NAMESPACE)
                .bind(LOCK_AUDIT),
            Turn::Idempotency(key) => keyed(format!("idempotency:{key}")),
            Turn::Usage(site) => keyed(format!("usage:{site}")),
            Turn::Placement(site) => keyed(format!("placement:{site}")),
        };
        q.execute(&mut **tx).await?;
        Ok(())
    }

    async fn announce(
        tx: &mut Transaction<'static, Self>,
        news: News<'_>,
    ) -> Result<(), sqlx::Error> {
        let (channel, payload) = match news {
            News::Revision { site, revision } => (REVISION_CHANNEL, format!("{site} {revision}")),
            News::Revocation(revision) => (REVOCATION_CHANNEL, revision.to_string()),
            News::Site(site) => (SITE_CHANNEL, site.to_owned()),
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
