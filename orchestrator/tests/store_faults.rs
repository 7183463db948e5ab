//! A database that cannot take writes: the API answers 503 `store_unavailable`, writes nothing,
//! and works again as soon as the database does.

mod common;

use std::str::FromStr;

use axum::http::StatusCode;
use common::*;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

#[tokio::test]
async fn a_locked_database_answers_503_and_recovers() {
    if std::env::var("BASHO_TEST_STORE").as_deref() == Ok("postgres") {
        eprintln!("SQLite locking only; the PostgreSQL store has its own connection-loss tests");
        return;
    }
    // The SQLite file of a real deployment, not the in-memory test store.
    let h = Harness::with(|c| c.database = None).await;
    h.register_demo().await;
    let db = h.config.data_dir.join("basho.db");
    let mut other = SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display())).unwrap(),
    )
    .await
    .unwrap();
    // Another process holds the write lock for longer than the orchestrator waits for it.
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, e) = h.create(h.body(&["JGAD000101"])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "store_unavailable");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    drop(other);

    assert!(h.workspaces().await.is_empty(), "nothing half-written");
    let (status, w) = h.create(h.body(&["JGAD000101"])).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(h.workspaces().await.len(), 1);
}
