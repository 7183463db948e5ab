//! SQLite-only store tests: a WAL file with several connections. The shared cases are in
//! `store/suite.rs`, run against every store.

use std::sync::Arc;

use super::*;
use crate::store::suite::concurrent_creates;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_file_with_several_connections() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(None, &dir.path().join("data"))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path().join("data/basho.db").exists());
    concurrent_creates(Arc::new(s)).await;
    // Reopening applies no migration twice and keeps the data.
    let again = SqliteStore::open(None, &dir.path().join("data"))
        .await
        .unwrap();
    assert_eq!(
        again
            .list_workspaces(&WorkspaceFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}
