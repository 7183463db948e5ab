//! The PostgreSQL store, for platforms that run more than one orchestrator replica on one
//! database. Same tables and semantics as the SQLite store; what SQLite gets from its single
//! writer (`BEGIN IMMEDIATE`) comes here from row locks (`FOR UPDATE`, the revision row) and
//! advisory transaction locks (audit chain, idempotency keys, a site's usage acks). Every change
//! that moves a site's revision, and every revocation, is announced with `NOTIFY` so other
//! replicas wake their long-polls (see `crate::replicas`).

use std::time::Duration;

use async_trait::async_trait;
use basho_core::protocol::Registration;
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use self::rows::{COLUMNS, ident, json, parse, record, state};
use super::{
    Created, IdempotencyKey, SiteRecord, StateCount, Store, StoreError, Transition,
    WorkspaceFilter, WorkspaceRecord, from_millis,
};

mod audit;
mod revocations;
mod rows;
pub mod testdb;
mod tokens;
mod tunnels;
mod usage;

/// `NOTIFY` channel carrying `<site> <revision>` when a site's desired state changes.
pub const REVISION_CHANNEL: &str = "basho_revision";
/// `NOTIFY` channel carrying the revision a new revocation took.
pub const REVOCATION_CHANNEL: &str = "basho_revocation";
/// `NOTIFY` channel carrying the name of a site that registered.
pub const SITE_CHANNEL: &str = "basho_site";

/// Advisory lock keys (one namespace, `pg_advisory_xact_lock(NAMESPACE, key)`).
const LOCK_NAMESPACE: i32 = 0x6261_7368; // "bash"
const LOCK_AUDIT: i32 = 1;

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
}

/// Whether `database` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl PostgresStore {
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
        Ok(Self { pool, options })
    }

    /// The connection options, for the dedicated connections of leader election and `LISTEN`.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
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

async fn next_revision(tx: &mut Transaction<'static, Postgres>) -> Result<i64, StoreError> {
    let rev: i64 = sqlx::query_scalar("UPDATE revision SET value = value + 1 RETURNING value")
        .fetch_one(&mut **tx)
        .await?;
    Ok(rev)
}

/// Announces a site's new revision to every replica when the transaction commits.
async fn notify_revision(
    tx: &mut Transaction<'static, Postgres>,
    site: &str,
    revision: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVISION_CHANNEL)
        .bind(format!("{site} {revision}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn fetch_one_ws(
    tx: &mut Transaction<'static, Postgres>,
    id: &str,
    lock: bool,
) -> Result<Option<WorkspaceRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workspaces WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(record).transpose()
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(
        &self,
        rec: &WorkspaceRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key {
            // Requests carrying one key, on any replica, take turns: the second sees the first's
            // committed workspace instead of racing it to the primary key.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("idempotency:{}", key.key))
                .execute(&mut *tx)
                .await?;
            let seen: Option<(String, String)> = sqlx::query_as(
                "SELECT request_hash, workspace_id FROM idempotency_keys WHERE key = $1",
            )
            .bind(&key.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((hash, id)) = seen {
                if hash != key.request_hash {
                    return Err(StoreError::IdempotencyKeyReused { workspace: id });
                }
                let first = fetch_one_ws(&mut tx, &id, false)
                    .await?
                    .ok_or(StoreError::NotFound(id))?;
                return Ok(Created::Replayed(first));
            }
        }
        let revision = next_revision(&mut tx).await?;
        let w = &rec.workspace;
        let sql = format!(
            "INSERT INTO workspaces ({COLUMNS}) VALUES \
             ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
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
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(&w.id)
            .bind(w.created_at.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        notify_revision(&mut tx, w.site.as_str(), revision).await?;
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
             JOIN workspaces w ON w.id = k.workspace_id WHERE k.key = $1",
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
        let sql = format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1");
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
        let mut sql = format!("SELECT {COLUMNS} FROM workspaces WHERE TRUE");
        let mut n = 0;
        let mut mark = || {
            n += 1;
            format!("${n}")
        };
        if f.project.is_some() {
            sql.push_str(&format!(" AND project = {}", mark()));
        }
        if f.site.is_some() {
            sql.push_str(&format!(" AND site = {}", mark()));
        }
        if !f.states.is_empty() {
            sql.push_str(&format!(" AND state = ANY({})", mark()));
        }
        if f.expires_by.is_some() {
            sql.push_str(&format!(" AND expires_at <= {}", mark()));
        }
        sql.push_str(" ORDER BY created_at, id");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(p) = &f.project {
            q = q.bind(p.as_str());
        }
        if let Some(s) = &f.site {
            q = q.bind(s.as_str());
        }
        if !f.states.is_empty() {
            let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
            q = q.bind(states);
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
        let mut tx = self.pool.begin().await?;
        // The row lock makes a transition raced by two replicas (an expiry pass on a leader that
        // is stepping down and one on the new leader) apply once: the second sees the new state.
        let Some(mut rec) = fetch_one_ws(&mut tx, id, true).await? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let from = rec.workspace.state;
        if from == to {
            return Ok(Transition::Unchanged(rec));
        }
        if !from.can_transition_to(to) {
            return Ok(Transition::Refused(rec));
        }
        let moves = from.changes_desired(to);
        let revision = if moves {
            next_revision(&mut tx).await?
        } else {
            rec.revision
        };
        let now = super::to_millis(now);
        sqlx::query(
            "UPDATE workspaces SET state = $1, message = $2, updated_at = $3, revision = $4 \
             WHERE id = $5",
        )
        .bind(to.as_str())
        .bind(message)
        .bind(now.timestamp_millis())
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if moves {
            notify_revision(&mut tx, rec.workspace.site.as_str(), revision).await?;
        }
        tx.commit().await?;
        rec.workspace.state = to;
        rec.workspace.message = message.map(str::to_owned);
        rec.workspace.updated_at = now;
        rec.revision = revision;
        Ok(Transition::Changed { from, record: rec })
    }

    async fn desired(&self, site: &Ident) -> Result<(i64, Vec<WorkspaceRecord>), StoreError> {
        // One snapshot for both reads, as SQLite's read transaction gives.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // A revocation is news for every site: its revision counts too.
        let revision: i64 = sqlx::query_scalar(
            "SELECT GREATEST((SELECT COALESCE(MAX(revision), 0) FROM workspaces WHERE site = $1), \
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
        let sql = format!(
            "SELECT {COLUMNS} FROM workspaces WHERE site = $1 AND state = ANY($2) \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(site.as_str())
            .bind(wanted)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let list = rows.iter().map(record).collect::<Result<_, _>>()?;
        Ok((revision, list))
    }

    async fn counts(&self) -> Result<Vec<(Ident, State, StateCount)>, StoreError> {
        let rows = sqlx::query(
            "SELECT site, state, COUNT(*) AS n, \
               COALESCE(SUM((resources::jsonb ->> 'cpus')::bigint), 0)::bigint AS cpus, \
               COALESCE(SUM((resources::jsonb ->> 'memory_mib')::bigint), 0)::bigint AS mem, \
               COALESCE(SUM((resources::jsonb ->> 'gpus')::bigint), 0)::bigint AS gpus \
             FROM workspaces GROUP BY site, state ORDER BY site, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let int = |row: &PgRow, col: &str| -> Result<u64, StoreError> {
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sites (name, backend, version, datasets, capacity, images, \
               registered_at, last_contact, start_timeout_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
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
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SITE_CHANNEL)
            .bind(reg.site.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_site(&self, site: &Ident, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sites SET last_contact = GREATEST(last_contact, $1) WHERE name = $2")
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
