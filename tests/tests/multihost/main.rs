//! Faults across hosts, on the test bed of `basho_tests::cluster`: the orchestrator and each agent
//! in a container of their own, each agent on a private network it shares only with the
//! orchestrator. Each scenario injects a fault with the Docker CLI (SIGKILL, network disconnect,
//! pause, a full disk, a restart), asserts that nothing was lost or duplicated, and prints its
//! figures (`docs/reliability.md` records them).
//!
//! `cargo nextest run -p basho-tests --test multihost --no-capture`
//!
//! - `restarts`: an agent killed while launching, the orchestrator killed under creates, and
//!   the agents' reconnect spread after an orchestrator restart;
//! - `partition`: a site cut off (with an expiry and a revocation inside) and a site frozen;
//! - `disk`: the orchestrator's disk full.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use basho_core::usage::UsageRecord;
use basho_orchestrator::store::UsageStore;
use basho_tests::cluster::{Backend, Cluster, Spec};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Prints one figure of a scenario, in a form easy to find in the test's output.
fn figure(scenario: &str, what: &str, value: impl std::fmt::Display) {
    println!("figure [{scenario}] {what}: {value}");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Every workspace of `project`, by id.
async fn workspaces_of(c: &Cluster, project: &str) -> BTreeMap<String, Value> {
    let (s, v) = c
        .api()
        .call(
            Method::GET,
            &format!("/v1/workspaces?project={project}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap().to_owned(), w.clone()))
        .collect()
}

/// Waits until every workspace in `ids` is in `state`; the time it took.
async fn wait_all(
    c: &Cluster,
    project: &str,
    ids: &BTreeSet<String>,
    state: &str,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let all = workspaces_of(c, project).await;
        let not: Vec<_> = ids
            .iter()
            .filter(|id| all.get(*id).is_none_or(|w| w["state"] != state))
            .collect();
        if not.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{} of {} workspaces not {state} after {limit:?}: {:?}",
            not.len(),
            ids.len(),
            not.iter()
                .take(5)
                .map(|id| all.get(*id).map(|w| w["state"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asks for workspace `body` under idempotency key `key`: the answer, or why none came.
async fn create_keyed(
    c: &Cluster,
    body: &Value,
    key: &str,
) -> Result<(StatusCode, Value), reqwest::Error> {
    c.try_call(
        Method::POST,
        "/v1/workspaces",
        Some(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

/// Every usage record the orchestrator stored for `project`, read from its database file.
async fn usage_records(c: &Cluster, project: &str) -> Vec<UsageRecord> {
    let store = basho_orchestrator::store::SqliteStore::open(None, &c.config.data_dir)
        .await
        .unwrap();
    let project = basho_core::Ident::parse(project).unwrap();
    store
        .usage_of(
            &project,
            DateTime::UNIX_EPOCH,
            Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .collect()
}

mod disk;
mod partition;
mod restarts;
