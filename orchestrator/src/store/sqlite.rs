//! The SQLite store: one file `<data_dir>/basho.db` in WAL mode, or `sqlite::memory:` for tests,
//! behind one replica. Writes run on a pool of one connection, so writers wait their turn in the
//! process; those that must be atomic also take SQLite's write lock up front (`BEGIN IMMEDIATE`).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use basho_core::Ident;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite, Transaction};

use super::sql::{Dialect, News, SqlStore, Turn};
use super::{StoreError, TunnelHolder};

/// The SQLite implementation of [`Store`](super::Store).
pub type SqliteStore = SqlStore<Sqlite>;

/// The tunnel holders: with one replica they need not outlive the process.
type Holders = Arc<Mutex<HashMap<Ident, TunnelHolder>>>;

/// Pool options for a database file. A connection whose transaction SQLite rolled back on its
/// own (a full disk, an I/O error: `SQLITE_FULL` and the like end the whole transaction) fails
/// sqlx's `ROLLBACK` on release and keeps counting itself inside a transaction, so every later
/// `BEGIN IMMEDIATE` on it would fail. Such a connection is closed on release instead of going
/// back to the pool: the next request gets a fresh one and the store recovers once the disk does.
fn file_pool_options() -> SqlitePoolOptions {
    use sqlx::Connection;
    SqlitePoolOptions::new().after_release(|conn, _| {
        Box::pin(async move {
            // Only a dropped transaction leaves one counted: its rollback is queued, and runs
            // before the ping answers. Every other release costs nothing.
            if !conn.is_in_transaction() {
                return Ok(true);
            }
            conn.ping().await?;
            Ok(!conn.is_in_transaction())
        })
    })
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database named by `database`, or `<data_dir>/basho.db`
    /// when `database` is `None`, and applies the migrations.
    pub async fn open(database: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        let memory = database.is_some_and(|d| d.contains(":memory:") || d.contains("mode=memory"));
        let options = match database {
            Some(url) => SqliteConnectOptions::from_str(url)?,
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                })?;
                SqliteConnectOptions::new().filename(data_dir.join("basho.db"))
            }
        };
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if memory {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            return Self::migrated(pool.clone(), pool).await;
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = file_pool_options()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let writer = file_pool_options()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Self::migrated(pool, writer).await
    }

    async fn migrated(pool: Pool<Sqlite>, writer: Pool<Sqlite>) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&writer).await?;
        Ok(Self {
            pool,
            writer,
            extra: Holders::default(),
        })
    }

    /// An empty in-memory store (tests).
    pub async fn memory() -> Result<Self, StoreError> {
        Self::open(Some("sqlite::memory:"), Path::new(".")).await
    }
}

#[async_trait]
impl Dialect for Sqlite {
    type Extra = Holders;

    const MARK: char = '?';
    const GREATEST: &'static str = "MAX";
    const STRPOS: &'static str = "instr";
    const FOR_UPDATE: &'static str = "";

    fn sum_json_int(column: &str, member: &str) -> String {
        format!("COALESCE(SUM(json_extract({column}, '$.{member}')), 0)")
    }

    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn begin_snapshot(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    async fn take_turn(
        _tx: &mut Transaction<'static, Self>,
        _turn: Turn<'_>,
    ) -> Result<(), sqlx::Error> {
        // `BEGIN IMMEDIATE` made this the only writer already.
        Ok(())
    }

    async fn announce(
        _tx: &mut Transaction<'static, Self>,
        _news: News<'_>,
    ) -> Result<(), sqlx::Error> {
        // One replica: nobody else to tell.
        Ok(())
    }
}

#[cfg(test)]
mod tests;
mod tunnels;
