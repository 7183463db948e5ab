//! SQLite-only store tests: a WAL file with several connections, a full disk, an audit row
//! edited by hand. The shared cases are in `store/suite.rs`, run against every store.

use std::sync::Arc;

use basho_core::audit::verify_chain;
use chrono::Utc;
use serde_json::json;
use sqlx::AssertSqlSafe;

use super::*;
use crate::store::suite::concurrent_creates;
use crate::store::{AuditEvent, AuditStore as _, Store as _, WorkspaceFilter};

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

/// A write SQLite ends with `SQLITE_FULL` (here a page limit, as a full disk) rolls the whole
/// transaction back; the connection must not stay marked as inside one, or every later write on
/// it fails.
#[tokio::test]
async fn a_connection_whose_transaction_failed_full_takes_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(None, dir.path()).await.unwrap();
    drop(s);
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("basho.db"))
        .journal_mode(SqliteJournalMode::Wal);
    // One connection, so the second transaction runs on the one the first left behind.
    let pool = file_pool_options()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "PRAGMA max_page_count = {}",
        pages + 2
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let full = sqlx::query("INSERT INTO filler VALUES (zeroblob(1000000))")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(full.to_string().contains("full"), "{full}");
    }
    sqlx::query("PRAGMA max_page_count = 1000000")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO filler VALUES (x'00')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A detail edited into invalid JSON is read back as text, so verification names the row.
#[tokio::test]
async fn an_edited_audit_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(None, dir.path()).await.unwrap();
    for i in 0..4 {
        let ev = AuditEvent::new("admin:tok-1", "token_create", "t", json!({"i": i}));
        store.append_audit(Utc::now(), &[ev]).await.unwrap();
    }
    sqlx::query("UPDATE audit SET detail = 'not json' WHERE seq = 2")
        .execute(&store.pool)
        .await
        .unwrap();
    let all = store.audit_page(0, 100).await.unwrap();
    assert_eq!(verify_chain(&all).unwrap_err().seq, 2);
}
