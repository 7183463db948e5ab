//! [`TaskStore`] on SQL. A task's TES state is never stored: it is read from its workspace's
//! state, so lists filter by state through the same mapping the API shows
//! ([`basho_core::tes::task_state`]), turned into a condition here.

use async_trait::async_trait;
use basho_core::State;
use basho_core::tes::{TesState, task_state};
use sqlx::{Row as _, Transaction};

use super::Db;
use super::rows::{Row, WORKSPACE_COLUMNS, parse, workspace};
use crate::store::sql::{Dialect, SqlStore, json};
use crate::store::tasks::{Cancel, NewTask, TaskFilter, TaskRow, TaskStore};
use crate::store::{Created, IdempotencyKey, StoreError, WorkspaceRecord};

/// Writes `task` for the workspace `rec` inside the create's transaction.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Db>,
    rec: &WorkspaceRecord,
    task: &NewTask,
) -> Result<(), StoreError> {
    let w = &rec.workspace;
    let seq: i64 = sqlx::query_scalar(Db::sql(
        "INSERT INTO tes_tasks (id, owner, name, body, warnings, canceled, created_at) \
         VALUES ($1, $2, $3, $4, $5, FALSE, $6) RETURNING seq",
    ))
    .bind(&w.id)
    .bind(&w.owner)
    .bind(task.body.name.as_deref().unwrap_or(""))
    .bind(json(&task.body))
    .bind(json(&task.warnings))
    .bind(w.created_at.timestamp_millis())
    .fetch_one(&mut **tx)
    .await?;
    for (key, value) in task.body.tags.iter().flatten() {
        sqlx::query(Db::sql(
            "INSERT INTO tes_task_tags (seq, key, value) VALUES ($1, $2, $3)",
        ))
        .bind(seq)
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Whether a workspace's message reports a non-zero exit, as the agent words it.
const NONZERO_EXIT: &str = "(w.message IS NOT NULL AND w.message LIKE 'exited with code %' \
     AND w.message <> 'exited with code 0')";

/// The condition on `w.state`, `t.canceled` and `w.message` under which a task reads as
/// `wanted`, built from [`task_state`] over every case, so the two cannot disagree.
fn state_condition(wanted: TesState) -> String {
    let mut any = Vec::new();
    for state in State::ALL {
        let mut cases = Vec::new();
        for canceled in [false, true] {
            for nonzero in [false, true] {
                let message = if nonzero {
                    "exited with code 1"
                } else {
                    "exited with code 0"
                };
                if task_state(state, Some(message), canceled) == wanted {
                    let c = if canceled {
                        "t.canceled"
                    } else {
                        "NOT t.canceled"
                    };
                    let n = if nonzero {
                        NONZERO_EXIT.to_owned()
                    } else {
                        format!("NOT {NONZERO_EXIT}")
                    };
                    cases.push(format!("({c} AND {n})"));
                }
            }
        }
        let named = format!("w.state = '{}'", state.as_str());
        match cases.len() {
            0 => {}
            4 => any.push(named),
            _ => any.push(format!("({named} AND ({}))", cases.join(" OR "))),
        }
    }
    if any.is_empty() {
        "FALSE".into()
    } else {
        format!("({})", any.join(" OR "))
    }
}

fn task_row(row: &Row) -> Result<TaskRow, StoreError> {
    Ok(TaskRow {
        seq: row.try_get("seq")?,
        body: parse(row, "body")?,
        warnings: parse(row, "warnings")?,
        canceled: row.try_get("canceled")?,
        workspace: workspace(row)?,
    })
}

fn select() -> String {
    format!(
        "SELECT t.seq, t.body, t.warnings, t.canceled, {WORKSPACE_COLUMNS} \
         FROM tes_tasks t JOIN workspaces w ON w.id = t.id"
    )
}

/// A value bound to a list's query.
enum Bind {
    Text(String),
    Int(i64),
}

#[async_trait]
impl TaskStore for SqlStore<Db> {
    async fn create_task(
        &self,
        rec: &WorkspaceRecord,
        task: &NewTask,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        super::workspaces::create(self, rec, key, Some(task), None).await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRow>, StoreError> {
        let sql = format!("{} WHERE t.id = $1", select());
        let row = sqlx::query(Db::sql(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_row).transpose()
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRow>, StoreError> {
        let mut binds = Vec::new();
        let mut mark = |b: Bind| {
            binds.push(b);
            format!("${}", binds.len())
        };
        let mut conditions = Vec::new();
        if let Some(owner) = &f.owner {
            conditions.push(format!("t.owner = {}", mark(Bind::Text(owner.clone()))));
        }
        if let Some(prefix) = &f.name_prefix {
            let m = mark(Bind::Text(prefix.clone()));
            conditions.push(format!("substr(t.name, 1, length({m})) = {m}"));
        }
        if let Some(before) = f.before {
            conditions.push(format!("t.seq < {}", mark(Bind::Int(before))));
        }
        for (key, value) in &f.tags {
            let k = mark(Bind::Text(key.clone()));
            let v = value
                .as_ref()
                .map(|v| format!(" AND g.value = {}", mark(Bind::Text(v.clone()))))
                .unwrap_or_default();
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM tes_task_tags g WHERE g.seq = t.seq AND g.key = {k}{v})"
            ));
        }
        if let Some(state) = f.state {
            conditions.push(state_condition(state));
        }
        let limit = mark(Bind::Int(i64::try_from(f.limit).unwrap_or(i64::MAX)));
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!("{}{filter} ORDER BY t.seq DESC LIMIT {limit}", select());
        let mut q = sqlx::query(Db::sql(sql));
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(task_row).collect()
    }

    async fn cancel_task(&self, id: &str) -> Result<Cancel, StoreError> {
        let mut tx = Db::begin_write(&self.writer).await?;
        let sql = format!(
            "SELECT w.state FROM tes_tasks t JOIN workspaces w ON w.id = t.id WHERE t.id = $1{}",
            Db::FOR_UPDATE
        );
        let state: Option<String> = sqlx::query_scalar(Db::sql(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(state) = state else {
            return Ok(Cancel::Missing);
        };
        if State::parse(&state).is_none_or(State::is_terminal) {
            return Ok(Cancel::Ended);
        }
        sqlx::query(Db::sql(
            "UPDATE tes_tasks SET canceled = TRUE WHERE id = $1",
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Cancel::Marked)
    }
}
