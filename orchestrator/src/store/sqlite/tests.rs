//! Store tests on in-memory SQLite, plus one on a WAL file with several connections.

use std::sync::Arc;

use basho_core::protocol::{Capacity, DatasetEntry};
use basho_core::{Resources, State::*, Workspace};
use chrono::TimeDelta;

use super::*;
use crate::store::{VisaRef, to_millis};

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

fn rec(ws: &str, site: &str) -> WorkspaceRecord {
    let now = to_millis(Utc::now());
    WorkspaceRecord {
        workspace: Workspace {
            id: ws.to_owned(),
            project: id("P-0001"),
            owner: "researcher-1".into(),
            template: id("shell"),
            site: id(site),
            state: Placed,
            message: None,
            datasets: vec![id("JGAD000101")],
            resources: Resources {
                cpus: 2,
                memory_mib: 512,
                gpus: 0,
            },
            created_at: now,
            expires_at: now + TimeDelta::hours(1),
            updated_at: now,
        },
        visas: vec!["header.payload.sig".into()],
        visa_refs: vec![VisaRef {
            iss: "https://dac.example".into(),
            jti: "j1".into(),
            exp: now.timestamp() + 3600,
        }],
        image: "basho/demo".into(),
        command: vec!["sh".into()],
        revision: 0,
    }
}

fn key(k: &str, hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: k.into(),
        request_hash: hash.into(),
    }
}

fn new(c: Created) -> WorkspaceRecord {
    match c {
        Created::New(r) => r,
        Created::Replayed(_) => panic!("expected a new workspace"),
    }
}

#[tokio::test]
async fn round_trips_a_workspace() {
    let s = SqliteStore::memory().await.unwrap();
    let stored = new(s
        .create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap());
    assert!(stored.revision > 0);
    let back = s.workspace("ws-1").await.unwrap().unwrap();
    assert_eq!(back, stored);
    assert_eq!(s.workspace("ws-2").await.unwrap(), None);
}

#[tokio::test]
async fn transitions_follow_the_state_machine() {
    let s = SqliteStore::memory().await.unwrap();
    let first = new(s
        .create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap());
    let now = Utc::now();

    let Transition::Changed { from, record } =
        s.transition("ws-1", Running, None, now).await.unwrap()
    else {
        panic!("placed -> running must apply")
    };
    assert_eq!(from, Placed);
    assert_eq!(record.workspace.state, Running);
    // The agent's own report changes nothing the agent must hear: the revision stays.
    assert_eq!(record.revision, first.revision);

    // Same state: nothing written, revision kept.
    let Transition::Unchanged(same) = s.transition("ws-1", Running, None, now).await.unwrap()
    else {
        panic!("running -> running is a no-op")
    };
    assert_eq!(same.revision, record.revision);

    // Illegal: back to placed.
    assert!(matches!(
        s.transition("ws-1", Placed, None, now).await.unwrap(),
        Transition::Refused(_)
    ));
    assert_eq!(
        s.workspace("ws-1").await.unwrap().unwrap().workspace.state,
        Running
    );

    let Transition::Changed { record, .. } = s
        .transition("ws-1", Failed, Some("exit 1"), now)
        .await
        .unwrap()
    else {
        panic!("running -> failed must apply")
    };
    assert_eq!(record.workspace.message.as_deref(), Some("exit 1"));
    assert!(
        record.revision > first.revision,
        "leaving the desired set moves the revision"
    );
    // Terminal states never move.
    assert!(matches!(
        s.transition("ws-1", Running, None, now).await.unwrap(),
        Transition::Refused(_)
    ));
    assert!(matches!(
        s.transition("nope", Running, None, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.workspace("ws-1").await.unwrap().unwrap(), record);
}

#[tokio::test]
async fn idempotency_keys() {
    let s = SqliteStore::memory().await.unwrap();
    let a = new(s
        .create_workspace(&rec("ws-1", "tohoku"), Some(&key("k1", "h1")))
        .await
        .unwrap());
    // Same key, same hash: the first workspace, no second row.
    let again = s
        .create_workspace(&rec("ws-2", "tohoku"), Some(&key("k1", "h1")))
        .await
        .unwrap();
    assert_eq!(again, Created::Replayed(a.clone()));
    // Same key, other request.
    let err = s
        .create_workspace(&rec("ws-3", "tohoku"), Some(&key("k1", "h2")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyKeyReused { ref workspace } if workspace == "ws-1"),
        "{err}"
    );
    assert_eq!(
        s.list_workspaces(&WorkspaceFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let (hash, found) = s.idempotent_workspace("k1").await.unwrap().unwrap();
    assert_eq!((hash.as_str(), found), ("h1", a));
    assert!(s.idempotent_workspace("k2").await.unwrap().is_none());
}

async fn concurrent_creates(s: Arc<SqliteStore>) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_workspace(&rec(&format!("ws-{i}"), "tohoku"), Some(&key("same", "h")))
                .await
                .unwrap()
        }));
    }
    let mut fresh = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Created::New(r) => {
                fresh += 1;
                ids.insert(r.workspace.id);
            }
            Created::Replayed(r) => {
                ids.insert(r.workspace.id);
            }
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(
        ids.len(),
        1,
        "every request sees the one workspace: {ids:?}"
    );
    let all = s
        .list_workspaces(&WorkspaceFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_key_make_one_workspace() {
    concurrent_creates(Arc::new(SqliteStore::memory().await.unwrap())).await;
}

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

#[tokio::test]
async fn desired_lists_what_wants_a_container() {
    let s = SqliteStore::memory().await.unwrap();
    let now = Utc::now();
    for (ws, site) in [("ws-a", "tohoku"), ("ws-b", "tohoku"), ("ws-c", "ncbn")] {
        s.create_workspace(&rec(ws, site), None).await.unwrap();
    }
    let (rev0, list) = s.desired(&id("tohoku")).await.unwrap();
    assert_eq!(list.len(), 2);
    let Transition::Changed { record, .. } =
        s.transition("ws-b", Stopping, None, now).await.unwrap()
    else {
        panic!()
    };
    let (rev1, list) = s.desired(&id("tohoku")).await.unwrap();
    assert!(rev1 > rev0);
    assert_eq!(rev1, record.revision);
    let listed: Vec<(&str, State)> = list
        .iter()
        .map(|r| (r.workspace.id.as_str(), r.workspace.state))
        .collect();
    assert_eq!(listed, vec![("ws-a", Placed), ("ws-b", Stopping)]);
    s.transition("ws-b", Stopped, None, now).await.unwrap();
    let (rev2, list) = s.desired(&id("tohoku")).await.unwrap();
    assert!(rev2 > rev1);
    assert_eq!(list.len(), 1, "a stopped workspace leaves the desired set");
    // Another site's change leaves this site's revision alone.
    s.transition("ws-c", Running, None, now).await.unwrap();
    assert_eq!(s.desired(&id("tohoku")).await.unwrap().0, rev2);
    assert_eq!(s.desired(&id("nowhere")).await.unwrap(), (0, vec![]));
}

#[tokio::test]
async fn filters_and_counts() {
    let s = SqliteStore::memory().await.unwrap();
    let now = Utc::now();
    for (ws, site) in [("ws-a", "tohoku"), ("ws-b", "tohoku"), ("ws-c", "ncbn")] {
        s.create_workspace(&rec(ws, site), None).await.unwrap();
    }
    s.transition("ws-b", Running, None, now).await.unwrap();
    let f = |site: Option<&str>, states: Vec<State>| WorkspaceFilter {
        site: site.map(id),
        states,
        ..WorkspaceFilter::default()
    };
    assert_eq!(
        s.list_workspaces(&f(Some("tohoku"), vec![]))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.list_workspaces(&f(None, vec![Running]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.list_workspaces(&f(None, vec![Running, Placed]))
            .await
            .unwrap()
            .len(),
        3
    );
    let by_project = WorkspaceFilter {
        project: Some(id("P-9")),
        ..WorkspaceFilter::default()
    };
    assert!(s.list_workspaces(&by_project).await.unwrap().is_empty());
    let due = WorkspaceFilter {
        expires_by: Some(now + TimeDelta::hours(2)),
        ..WorkspaceFilter::default()
    };
    assert_eq!(s.list_workspaces(&due).await.unwrap().len(), 3);
    let not_due = WorkspaceFilter {
        expires_by: Some(now),
        ..WorkspaceFilter::default()
    };
    assert!(s.list_workspaces(&not_due).await.unwrap().is_empty());

    let counts = s.counts().await.unwrap();
    let tohoku_placed = counts
        .iter()
        .find(|(site, st, _)| site.as_str() == "tohoku" && *st == Placed)
        .unwrap();
    assert_eq!(tohoku_placed.2.count, 1);
    assert_eq!(tohoku_placed.2.cpus, 2);
    assert_eq!(tohoku_placed.2.memory_mib, 512);
    assert_eq!(counts.len(), 3);
}

#[tokio::test]
async fn sites_upsert_and_touch() {
    let s = SqliteStore::memory().await.unwrap();
    let t0 = to_millis(Utc::now());
    let mut reg = Registration {
        site: id("tohoku"),
        backend: "fake".into(),
        version: "0.1.0".into(),
        datasets: vec![DatasetEntry {
            id: id("JGAD000101"),
            grant_url: "https://x/JGAD000101".into(),
        }],
        capacity: Capacity {
            cpus: 8,
            memory_mib: 8192,
            gpus: 0,
        },
        images: vec!["basho/demo".into()],
    };
    s.upsert_site(&reg, t0).await.unwrap();
    reg.capacity.cpus = 16;
    s.upsert_site(&reg, t0).await.unwrap();
    let t1 = t0 + TimeDelta::seconds(5);
    s.touch_site(&id("tohoku"), t1).await.unwrap();
    // An older touch never moves last contact back.
    s.touch_site(&id("tohoku"), t0).await.unwrap();
    let sites = s.sites().await.unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].registration, reg);
    assert_eq!(sites[0].last_contact, t1);
}
