//! Storage of GA4GH TES tasks: each task is a batch workspace, inserted with it in one
//! transaction, plus the task document as accepted, its tags for filtering, and whether its
//! caller canceled it (which tells `CANCELED` from `COMPLETE` once the workspace stopped).

use async_trait::async_trait;
use basho_core::Workspace;
use basho_core::tes::{TesState, TesTask};

use super::{Created, IdempotencyKey, StoreError, WorkspaceRecord};

/// A task to insert with its workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The task as accepted: no visas, no read-only fields.
    pub body: TesTask,
    /// What was said of it as it was accepted.
    pub warnings: Vec<String>,
}

/// A stored task and its workspace as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// Its place in the newest-first order pages follow.
    pub seq: i64,
    /// The task as accepted.
    pub body: TesTask,
    /// What was said of it as it was accepted.
    pub warnings: Vec<String>,
    /// Whether its caller canceled it.
    pub canceled: bool,
    /// Its workspace.
    pub workspace: Workspace,
}

/// Which tasks to list, newest first. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only those of this researcher (the workspaces' owner).
    pub owner: Option<String>,
    /// Only those whose name starts so.
    pub name_prefix: Option<String>,
    /// Only those in this state.
    pub state: Option<TesState>,
    /// Only those with each of these tags (with this value, where one is given).
    pub tags: Vec<(String, Option<String>)>,
    /// Only those older than this `seq` (the page token's).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u64,
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Marked canceled (now or before); its workspace is to be stopped.
    Marked,
    /// Its workspace had already ended: nothing changed.
    Ended,
    /// No such task.
    Missing,
}

/// TES tasks kept in the database.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Inserts `record` as [`Store::create_workspace`](super::Store::create_workspace) does, and
    /// the task with it, atomically.
    async fn create_task(
        &self,
        record: &WorkspaceRecord,
        task: &NewTask,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// One task.
    async fn task(&self, id: &str) -> Result<Option<TaskRow>, StoreError>;

    /// Tasks matching `filter`, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>, StoreError>;

    /// Marks a task canceled, unless its workspace has ended.
    async fn cancel_task(&self, id: &str) -> Result<Cancel, StoreError>;
}
