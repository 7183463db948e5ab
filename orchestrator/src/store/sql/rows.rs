//! Decoding the columns every table shares: identifiers, states, JSON text and a workspace row.

use basho_core::{Ident, State, Workspace};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{Database, Row as _};

use super::Db;
use crate::store::{StoreError, WorkspaceRecord, from_millis};

/// A row of this database.
pub(crate) type Row = <Db as Database>::Row;

/// JSON text column `col`.
pub(crate) fn parse<T: DeserializeOwned>(row: &Row, col: &'static str) -> Result<T, StoreError> {
    // NULL reads as JSON null: an optional column parses to `None`.
    let text: Option<String> = row.try_get(col)?;
    let text = text.unwrap_or_else(|| "null".into());
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        message: e.to_string(),
    })
}

/// Identifier column `col`.
pub(crate) fn ident(row: &Row, col: &'static str) -> Result<Ident, StoreError> {
    let text: String = row.try_get(col)?;
    Ident::parse(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        message: e.to_string(),
    })
}

/// Identifier column `col`, which may be NULL.
pub(crate) fn optional_ident(row: &Row, col: &'static str) -> Result<Option<Ident>, StoreError> {
    let v: Option<String> = row.try_get(col)?;
    match v {
        Some(_) => ident(row, col).map(Some),
        None => Ok(None),
    }
}

/// The `state` column.
pub(crate) fn state(row: &Row) -> Result<State, StoreError> {
    let text: String = row.try_get("state")?;
    State::parse(&text).ok_or_else(|| StoreError::Corrupt {
        what: "state",
        message: format!("unknown state {text:?}"),
    })
}

/// The columns of `workspaces` the API shows, as [`WORKSPACE_COLUMNS`] names them.
pub(crate) fn workspace(row: &Row) -> Result<Workspace, StoreError> {
    let ms = |col: &'static str| -> Result<DateTime<Utc>, StoreError> {
        Ok(from_millis(row.try_get::<i64, _>(col)?))
    };
    Ok(Workspace {
        id: row.try_get("id")?,
        project: ident(row, "project")?,
        owner: row.try_get("owner")?,
        template: ident(row, "template")?,
        site: ident(row, "site")?,
        state: state(row)?,
        message: row.try_get("message")?,
        datasets: parse(row, "datasets")?,
        resources: parse(row, "resources")?,
        created_at: ms("created_at")?,
        expires_at: ms("expires_at")?,
        updated_at: ms("updated_at")?,
        releases: Default::default(),
        withdrawn_copies: Vec::new(),
        queue: None,
    })
}

/// What [`workspace`] reads, of a `workspaces` table named `w`.
pub(crate) const WORKSPACE_COLUMNS: &str = "w.id, w.project, w.owner, w.template, w.site, \
     w.state, w.message, w.datasets, w.resources, w.created_at, w.updated_at, w.expires_at";

/// A row of [`COLUMNS`](crate::store::sql::COLUMNS).
pub(crate) fn record(row: &Row) -> Result<WorkspaceRecord, StoreError> {
    Ok(WorkspaceRecord {
        workspace: workspace(row)?,
        visas: parse(row, "visas")?,
        visa_refs: parse(row, "visa_refs")?,
        image: row.try_get("image")?,
        command: parse(row, "command")?,
        revision: row.try_get("revision")?,
        launch: parse(row, "launch")?,
    })
}
