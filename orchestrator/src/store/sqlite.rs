//! The SQLite store: one file `<data_dir>/basho.db` in WAL mode, or `sqlite::memory:` for tests.
//! Writes that must be atomic take the write lock up front (`BEGIN IMMEDIATE`).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use basho_core::protocol::Registration;
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use self::rows::{COLUMNS, ident, json, parse, record, state};
use super::{
    Created, IdempotencyKey, SiteRecord, StateCount, Store, StoreError, Transition,
    WorkspaceFilter, WorkspaceRecord, from_millis,
};

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The tunnel holders: with one replica they need not outlive the process.
    holders:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Ident, super::TunnelHolder>>>,
}

/// Pool options for a database file. A connection whose transaction SQLite rolled back on its
/// own (a full disk, an I/O error: `SQLITE_FULL` and the like end the whole transaction) fails
/// sqlx's `ROLLBACK` on release and keeps counting itself inside a transaction, so every later
/// `BEGIN IMMEDIATE` on it would fail. Such a connection is closed on release instead of going
/// back to the pool: the next request gets a fresh one and the store recovers once the disk does.
fn file_pool_options() -> SqlitePoolOptions {
    use sqlx::Connection;
    SqlitePoolOptions::new().after_release(|conn, _| {
        Box::pin(async move {
            // The rollback queued by a dropped transaction runs before the ping answers.
            conn.ping().await?;
            Ok(!conn.is_in_transaction())
        })
    })
}

impl SqliteStore {
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
        let pool = if memory {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            file_pool_options()
                .max_connections(4)
                .connect_with(
                    options
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal),
                )
                .await?
        };
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            holders: std::sync::Arc::default(),
        })
    }

    /// An empty in-memory store (tests).
    pub async fn memory() -> Result<Self, StoreError> {
        Self::open(Some("sqlite::memory:"), Path::new(".")).await
    }
}

async fn next_revision(tx: &mut Transaction<'static, Sqlite>) -> Result<i64, StoreError> {
    let rev: i64 = sqlx::query_scalar("UPDATE revision SET value = value + 1 RETURNING value")
        .fetch_one(&mut **tx)
        .await?;
    Ok(rev)
}

async fn fetch_one_ws(
    tx: &mut Transaction<'static, Sqlite>,
    id: &str,
) -> Result<Option<WorkspaceRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM workspaces WHERE id = ?");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(record).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(
        &self,
        rec: &WorkspaceRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(key) = key {
            let seen: Option<(String, String)> = sqlx::query_as(
                "SELECT request_hash, workspace_id FROM idempotency_keys WHERE key = ?",
            )
            .bind(&key.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((hash, id)) = seen {
                if hash != key.request_hash {
                    return Err(StoreError::IdempotencyKeyReused { workspace: id });
                }
                let first = fetch_one_ws(&mut tx, &id)
                    .await?
                    .ok_or(StoreError::NotFound(id))?;
                return Ok(Created::Replayed(first));
            }
        }
        let revision = next_revision(&mut tx).await?;
        let w = &rec.workspace;
        let sql = format!(
            "INSERT INTO workspaces ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&w.id)
            .bind(w.project.as_str())
            .bind(&w.owner)
            .bind(w.template.as_str())
            .bind(w.site.as_str())
            .bind(w.state.as_str())
            .bind(&w.message)
            .bind(json(&w.datasets))
            .bind(json(&w.resources))
            .bind(json(&rec.visas))
            .bind(json(&rec.visa_refs))
            .bind(&rec.image)
            .bind(json(&rec.command))
            .bind(w.created_at.timestamp_millis())
            .bind(w.updated_at.timestamp_millis())
            .bind(w.expires_at.timestamp_millis())
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            sqlx::query(
                "INSERT INTO idempotency_keys (key, request_hash, workspace_id, created_at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(&w.id)
            .bind(w.created_at.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        basho_core::crash_point!("orchestrator.create.inserted");
        tx.commit().await?;
        let mut stored = rec.clone();
        stored.revision = revision;
        Ok(Created::New(stored))
    }

    async fn idempotent_workspace(
        &self,
        key: &str,
    ) -> Result<Option<(String, WorkspaceRecord)>, StoreError> {
        let sql = format!(
            "SELECT k.request_hash, {} FROM idempotency_keys k \
             JOIN workspaces w ON w.id = k.workspace_id WHERE k.key = ?",
            COLUMNS
                .split(", ")
                .map(|c| format!("w.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((row.try_get("request_hash")?, record(&row)?))),
            None => Ok(None),
        }
    }

    async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM workspaces WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_workspaces(
        &self,
        f: &WorkspaceFilter,
    ) -> Result<Vec<WorkspaceRecord>, StoreError> {
        // Only placeholders are spliced in; every value is bound.
        let mut sql = format!("SELECT {COLUMNS} FROM workspaces WHERE 1 = 1");
        if f.project.is_some() {
            sql.push_str(" AND project = ?");
        }
        if f.site.is_some() {
            sql.push_str(" AND site = ?");
        }
        if !f.states.is_empty() {
            let marks = vec!["?"; f.states.len()].join(", ");
            sql.push_str(&format!(" AND state IN ({marks})"));
        }
        if f.expires_by.is_some() {
            sql.push_str(" AND expires_at <= ?");
        }
        sql.push_str(" ORDER BY created_at, id");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(p) = &f.project {
            q = q.bind(p.as_str());
        }
        if let Some(s) = &f.site {
            q = q.bind(s.as_str());
        }
        for s in &f.states {
            q = q.bind(s.as_str());
        }
        if let Some(t) = f.expires_by {
            q = q.bind(t.timestamp_millis());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(record).collect()
    }

    async fn transition(
        &self,
        id: &str,
        to: State,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(mut rec) = fetch_one_ws(&mut tx, id).await? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let from = rec.workspace.state;
        if from == to {
            return Ok(Transition::Unchanged(rec));
        }
        if !from.can_transition_to(to) {
            return Ok(Transition::Refused(rec));
        }
        // The agent's own reports of a live workspace leave its site's desired state alone; only
        // entering or leaving it moves the revision and so wakes the site's long-poll.
        let revision = if from.changes_desired(to) {
            next_revision(&mut tx).await?
        } else {
            rec.revision
        };
        let now = super::to_millis(now);
        sqlx::query(
            "UPDATE workspaces SET state = ?, message = ?, updated_at = ?, revision = ? \
             WHERE id = ?",
        )
        .bind(to.as_str())
        .bind(message)
        .bind(now.timestamp_millis())
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rec.workspace.state = to;
        rec.workspace.message = message.map(str::to_owned);
        rec.workspace.updated_at = now;
        rec.revision = revision;
        Ok(Transition::Changed { from, record: rec })
    }

    async fn desired(&self, site: &Ident) -> Result<(i64, Vec<WorkspaceRecord>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision: i64 =
            // A revocation is news for every site: its revision counts too.
            sqlx::query_scalar(
                "SELECT MAX((SELECT COALESCE(MAX(revision), 0) FROM workspaces WHERE site = ?), \
                 (SELECT COALESCE(MAX(revision), 0) FROM revocations))",
            )
                .bind(site.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let wanted: Vec<&str> = State::ALL
            .into_iter()
            .filter(|s| s.wants_container() || *s == State::Stopping)
            .map(State::as_str)
            .collect();
        let marks = vec!["?"; wanted.len()].join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM workspaces WHERE site = ? AND state IN ({marks}) \
             ORDER BY created_at, id"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(site.as_str());
        for s in wanted {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let list = rows.iter().map(record).collect::<Result<_, _>>()?;
        Ok((revision, list))
    }

    async fn counts(&self) -> Result<Vec<(Ident, State, StateCount)>, StoreError> {
        let rows = sqlx::query(
            "SELECT site, state, COUNT(*) AS n, \
               COALESCE(SUM(json_extract(resources, '$.cpus')), 0) AS cpus, \
               COALESCE(SUM(json_extract(resources, '$.memory_mib')), 0) AS mem, \
               COALESCE(SUM(json_extract(resources, '$.gpus')), 0) AS gpus \
             FROM workspaces GROUP BY site, state ORDER BY site, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let int = |row: &SqliteRow, col: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                Ok((
                    ident(row, "site")?,
                    state(row)?,
                    StateCount {
                        count: int(row, "n")?,
                        cpus: int(row, "cpus")?,
                        memory_mib: int(row, "mem")?,
                        gpus: int(row, "gpus")?,
                    },
                ))
            })
            .collect()
    }

    async fn upsert_site(&self, reg: &Registration, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = now.timestamp_millis();
        sqlx::query(
            "INSERT INTO sites (name, backend, version, datasets, capacity, images, \
               registered_at, last_contact, start_timeout_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET backend = excluded.backend, \
               version = excluded.version, datasets = excluded.datasets, \
               capacity = excluded.capacity, images = excluded.images, \
               registered_at = excluded.registered_at, last_contact = excluded.last_contact, \
               start_timeout_s = excluded.start_timeout_s",
        )
        .bind(reg.site.as_str())
        .bind(&reg.backend)
        .bind(&reg.version)
        .bind(json(&reg.datasets))
        .bind(json(&reg.capacity))
        .bind(json(&reg.images))
        .bind(now)
        .bind(now)
        .bind(i64::try_from(reg.start_timeout_s).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_site(&self, site: &Ident, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sites SET last_contact = MAX(last_contact, ?) WHERE name = ?")
            .bind(now.timestamp_millis())
            .bind(site.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, backend, version, datasets, capacity, images, last_contact, \
               start_timeout_s \
             FROM sites ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SiteRecord {
                    registration: Registration {
                        site: ident(row, "name")?,
                        backend: row.try_get("backend")?,
                        version: row.try_get("version")?,
                        datasets: parse(row, "datasets")?,
                        capacity: parse(row, "capacity")?,
                        images: parse(row, "images")?,
                        start_timeout_s: u64::try_from(row.try_get::<i64, _>("start_timeout_s")?)
                            .unwrap_or(0),
                    },
                    last_contact: from_millis(row.try_get("last_contact")?),
                })
            })
            .collect()
    }
}

mod audit;
mod revocations;
mod rows;
#[cfg(test)]
mod tests;
mod tokens;
mod tunnels;
mod usage;
