//! [`Store`] on SQL: workspaces, idempotency keys, the revision counter and sites. A write
//! transaction holds what it read until it commits: SQLite's whole database (`BEGIN
//! IMMEDIATE`), PostgreSQL's rows (`FOR UPDATE`, the revision row) and advisory locks.

use async_trait::async_trait;
use basho_core::protocol::{Capacity, CapacityReport, Registration};
use basho_core::{Ident, State};
use chrono::{DateTime, Utc};
use sqlx::{Row as _, Transaction};

use super::Db;
use super::rows::{Row, ident, parse, record, state};
use crate::store::queue::QueueEntry;
use crate::store::sql::{COLUMNS, Dialect, News, SqlStore, Turn, json, marks};
use crate::store::{
    Created, IdempotencyKey, NewTask, SiteRecord, StateCount, Store, StoreError, Transition,
    WorkspaceFilter, WorkspaceRecord, from_millis, to_millis,
};

/// Takes the next revision. The revision row stays locked until `tx` ends, so revisions become
/// visible in the order they were taken.
pub(super) async fn next_revision(tx: &mut Transaction<'static, Db>) -> Result<i64, StoreError> {
    let rev: i64 = sqlx::query_scalar("UPDATE revision SET value = value + 1 RETURNING value")
        .fetch_one(&mut **tx)
        .await?;
    Ok(rev)
}

pub(super) async fn fetch_one_ws(
    tx: &mut Transaction<'static, Db>,
    id: &str,
    lock: bool,
) -> Result<Option<WorkspaceRecord>, StoreError> {
    let lock = if lock { Db::FOR_UPDATE } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1{lock}");
    let row = sqlx::query(Db::sql(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(record).transpose()
}

/// What `w`'s site's live workspaces hold, when `w` does not fit beside them in the capacity the
/// site registered (none registered: nothing fits); `None` when it fits.
pub(super) async fn overbooked(
    tx: &mut Transaction<'static, Db>,
    w: &basho_core::Workspace,
) -> Result<Option<StateCount>, StoreError> {
    // Built once: every create at every site runs it.
    static HELD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let live = State::ALL
            .iter()
            .filter(|s| s.holds_compute())
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sum = |member| Db::sum_json_int("resources", member);
        // One statement: the site's registered capacity beside what its live workspaces hold.
        format!(
            "SELECT (SELECT capacity FROM sites WHERE name = $1) AS capacity, \
             COUNT(*) AS n, {} AS cpus, {} AS mem, {} AS gpus FROM workspaces \
             WHERE site = $1 AND state IN ({live})",
            sum("cpus"),
            sum("memory_mib"),
            sum("gpus")
        )
    });
    let row = sqlx::query(Db::sql(HELD.as_str()))
        .bind(w.site.as_str())
        .fetch_one(&mut **tx)
        .await?;
    let held = state_count(&row)?;
    let capacity: Capacity = parse::<Option<Capacity>>(&row, "capacity")?.unwrap_or_default();
    let r = &w.resources;
    let fits = held.cpus + u64::from(r.cpus) <= u64::from(capacity.cpus)
        && held.memory_mib + r.memory_mib <= capacity.memory_mib
        && held.gpus + u64::from(r.gpus) <= u64::from(capacity.gpus);
    Ok((!fits).then_some(held))
}

/// The `n`, `cpus`, `mem` and `gpus` columns of `row`.
fn state_count(row: &Row) -> Result<StateCount, StoreError> {
    let int = |col: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
    };
    Ok(StateCount {
        count: int("n")?,
        cpus: int("cpus")?,
        memory_mib: int("mem")?,
        gpus: int("gpus")?,
    })
}

/// Inserts `rec`, and `task` with it when there is one, as [`Store::create_workspace`] says.
pub(super) async fn create(
    store: &SqlStore<Db>,
    rec: &WorkspaceRecord,
    key: Option<&IdempotencyKey>,
    task: Option<&NewTask>,
    queue: Option<&QueueEntry>,
) -> Result<Created, StoreError> {
    let mut tx = Db::begin_write(&store.writer).await?;
    if let Some(key) = key {
        // Requests carrying one key, on any replica, take turns: the second sees the first's
        // committed workspace instead of racing it to the primary key.
        Db::take_turn(&mut tx, Turn::Idempotency(&key.key)).await?;
        let seen: Option<(String, String)> = sqlx::query_as(Db::sql(
            "SELECT request_hash, workspace_id FROM idempotency_keys WHERE key = $1",
        ))
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
    let w = &rec.workspace;
    // A queued workspace holds no compute: it takes its site's turn when it is placed.
    if queue.is_none() {
        Db::take_turn(&mut tx, Turn::Placement(w.site.as_str())).await?;
        if let Some(held) = overbooked(&mut tx, w).await? {
            return Ok(Created::Full(held));
        }
    }
    let revision = next_revision(&mut tx).await?;
    let sql = format!(
        "INSERT INTO workspaces ({COLUMNS}) VALUES ({})",
        marks(1, 18)
    );
    sqlx::query(Db::sql(sql))
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
        .bind(rec.launch.as_ref().map(json))
        .execute(&mut *tx)
        .await?;
    if let Some(key) = key {
        sqlx::query(Db::sql(
            "INSERT INTO idempotency_keys (key, request_hash, workspace_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        ))
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(&w.id)
        .bind(w.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(task) = task {
        super::tasks::insert(&mut tx, rec, task).await?;
    }
    if let Some(entry) = queue {
        super::queue::insert(&mut tx, &w.id, revision, entry).await?;
    }
    let site = w.site.as_str();
    Db::announce(&mut tx, News::Revision { site, revision }).await?;
    basho_core::crash_point!("orchestrator.create.inserted");
    tx.commit().await?;
    let mut stored = rec.clone();
    stored.revision = revision;
    Ok(Created::New(stored))
}

#[async_trait]
impl Store for SqlStore<Db> {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(
        &self,
        rec: &WorkspaceRecord,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        create(self, rec, key, None, None).await
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
        let row = sqlx::query(Db::sql(sql))
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
        let row = sqlx::query(Db::sql(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_workspaces(
        &self,
        f: &WorkspaceFilter,
    ) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM workspaces WHERE TRUE");
        let mut n = 0;
        let mut mark = |count: usize| {
            let list = marks(n + 1, count);
            n += count;
            list
        };
        if f.project.is_some() {
            sql.push_str(&format!(" AND project = {}", mark(1)));
        }
        if f.site.is_some() {
            sql.push_str(&format!(" AND site = {}", mark(1)));
        }
        if !f.states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", mark(f.states.len())));
        }
        if f.expires_by.is_some() {
            sql.push_str(&format!(" AND expires_at <= {}", mark(1)));
        }
        sql.push_str(" ORDER BY created_at, id");
        let mut q = sqlx::query(Db::sql(sql));
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
        let mut tx = Db::begin_write(&self.writer).await?;
        // The lock makes a transition raced by two replicas (an expiry pass on a leader that is
        // stepping down and one on the new leader) apply once: the second sees the new state.
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
        // The agent's own reports of a live workspace leave its site's desired state alone; only
        // entering or leaving it moves the revision and so wakes the site's long-poll.
        let moves = from.changes_desired(to);
        let revision = if moves {
            next_revision(&mut tx).await?
        } else {
            rec.revision
        };
        let now = to_millis(now);
        sqlx::query(Db::sql(
            "UPDATE workspaces SET state = $1, message = $2, updated_at = $3, revision = $4 \
             WHERE id = $5",
        ))
        .bind(to.as_str())
        .bind(message)
        .bind(now.timestamp_millis())
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if moves {
            let site = rec.workspace.site.as_str();
            Db::announce(&mut tx, News::Revision { site, revision }).await?;
        }
        tx.commit().await?;
        rec.workspace.state = to;
        rec.workspace.message = message.map(str::to_owned);
        rec.workspace.updated_at = now;
        rec.revision = revision;
        Ok(Transition::Changed { from, record: rec })
    }

    async fn desired(&self, site: &Ident) -> Result<(i64, Vec<WorkspaceRecord>), StoreError> {
        let mut tx = Db::begin_snapshot(&self.pool).await?;
        // A revocation is news for every site: its revision counts too.
        let sql = format!(
            "SELECT {}((SELECT COALESCE(MAX(revision), 0) FROM workspaces WHERE site = $1), \
             (SELECT COALESCE(MAX(revision), 0) FROM revocations))",
            Db::GREATEST
        );
        let revision: i64 = sqlx::query_scalar(Db::sql(sql))
            .bind(site.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let wanted: Vec<&str> = State::ALL
            .into_iter()
            .filter(|s| s.wants_container() || *s == State::Stopping)
            .map(State::as_str)
            .collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM workspaces WHERE site = $1 AND state IN ({}) \
             ORDER BY created_at, id",
            marks(2, wanted.len())
        );
        let mut q = sqlx::query(Db::sql(sql)).bind(site.as_str());
        for s in wanted {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let list = rows.iter().map(record).collect::<Result<_, _>>()?;
        Ok((revision, list))
    }

    async fn counts(&self) -> Result<Vec<(Ident, State, StateCount)>, StoreError> {
        let sum = |member| Db::sum_json_int("resources", member);
        let sql = format!(
            "SELECT site, state, COUNT(*) AS n, {} AS cpus, {} AS mem, {} AS gpus \
             FROM workspaces GROUP BY site, state ORDER BY site, state",
            sum("cpus"),
            sum("memory_mib"),
            sum("gpus")
        );
        let rows = sqlx::query(Db::sql(sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((ident(row, "site")?, state(row)?, state_count(row)?)))
            .collect()
    }

    async fn upsert_site(&self, reg: &Registration, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = now.timestamp_millis();
        let mut tx = Db::begin_write(&self.writer).await?;
        sqlx::query(Db::sql(
            "INSERT INTO sites (name, backend, version, datasets, capacity, images, \
               registered_at, last_contact, start_timeout_s, session_key, features, ceiling, \
               capacity_note) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (name) DO UPDATE SET backend = excluded.backend, \
               version = excluded.version, datasets = excluded.datasets, \
               capacity = excluded.capacity, images = excluded.images, \
               registered_at = excluded.registered_at, last_contact = excluded.last_contact, \
               start_timeout_s = excluded.start_timeout_s, session_key = excluded.session_key, \
               features = excluded.features, ceiling = excluded.ceiling, \
               capacity_note = excluded.capacity_note",
        ))
        .bind(reg.site.as_str())
        .bind(&reg.backend)
        .bind(&reg.version)
        .bind(json(&reg.datasets))
        .bind(json(&reg.capacity))
        .bind(json(&reg.images))
        .bind(now)
        .bind(now)
        .bind(i64::try_from(reg.start_timeout_s).unwrap_or(i64::MAX))
        .bind(reg.session_key.as_deref())
        .bind(json(&reg.features))
        .bind(reg.ceiling.as_ref().map(json))
        .bind(reg.capacity_note.as_deref())
        .execute(&mut *tx)
        .await?;
        Db::announce(&mut tx, News::Site(reg.site.as_str())).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_site_capacity(
        &self,
        report: &CapacityReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        let sql = format!(
            "UPDATE sites SET capacity = $1, capacity_note = $2, \
               last_contact = {}(last_contact, $3) WHERE name = $4",
            Db::GREATEST
        );
        let done = sqlx::query(Db::sql(sql))
            .bind(json(&report.capacity))
            .bind(report.note.as_deref())
            .bind(now.timestamp_millis())
            .bind(report.site.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Db::announce(&mut tx, News::Site(report.site.as_str())).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn touch_site(&self, site: &Ident, now: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE sites SET last_contact = {}(last_contact, $1) WHERE name = $2",
            Db::GREATEST
        );
        sqlx::query(Db::sql(sql))
            .bind(now.timestamp_millis())
            .bind(site.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, backend, version, datasets, capacity, images, last_contact, \
               start_timeout_s, session_key, features, ceiling, capacity_note \
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
                        ceiling: parse(row, "ceiling")?,
                        capacity_note: row.try_get("capacity_note")?,
                        images: parse(row, "images")?,
                        start_timeout_s: u64::try_from(row.try_get::<i64, _>("start_timeout_s")?)
                            .unwrap_or(0),
                        session_key: row.try_get("session_key")?,
                        features: parse(row, "features")?,
                    },
                    last_contact: from_millis(row.try_get("last_contact")?),
                })
            })
            .collect()
    }
}
