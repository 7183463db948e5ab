//! Row mapping for the PostgreSQL store (the same columns as SQLite): the column list, JSON columns and decoding a workspace row.

use basho_core::{Ident, State, Workspace};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::store::{StoreError, WorkspaceRecord, from_millis};

pub(super) const COLUMNS: &str = "id, project, owner, template, site, state, message, datasets, resources, \
     visas, visa_refs, image, command, created_at, updated_at, expires_at, revision";

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values serialize")
}

pub(super) fn parse<T: DeserializeOwned>(row: &PgRow, col: &'static str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        message: e.to_string(),
    })
}

pub(super) fn ident(row: &PgRow, col: &'static str) -> Result<Ident, StoreError> {
    let text: String = row.try_get(col)?;
    Ident::parse(&text).map_err(|e| StoreError::Corrupt {
        what: col,
        message: e.to_string(),
    })
}

pub(super) fn state(row: &PgRow) -> Result<State, StoreError> {
    let text: String = row.try_get("state")?;
    State::parse(&text).ok_or_else(|| StoreError::Corrupt {
        what: "state",
        message: format!("unknown state {text:?}"),
    })
}

pub(super) fn record(row: &PgRow) -> Result<WorkspaceRecord, StoreError> {
    let ms = |col: &'static str| -> Result<DateTime<Utc>, StoreError> {
        Ok(from_millis(row.try_get::<i64, _>(col)?))
    };
    Ok(WorkspaceRecord {
        workspace: Workspace {
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
        },
        visas: parse(row, "visas")?,
        visa_refs: parse(row, "visa_refs")?,
        image: row.try_get("image")?,
        command: parse(row, "command")?,
        revision: row.try_get("revision")?,
    })
}
