//! Fair share end to end: two projects of weights 3 and 1 queue 100 one-core workspaces each at
//! one eight-core site whose agent runs the fake backend (each workspace exits by itself after
//! two seconds); the real agent meters them into the real ledger and the leader's queue orders
//! by the fair-share factor. While both projects still have work queued, the first holds its
//! weight's share of the placements within the stated tolerance.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_agent::config::{BackendConfig, FakeConfig};
use basho_core::protocol::Capacity;
use basho_tests::federation::Federation;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const EACH: usize = 100;
/// The first project's share of the contended placements: 3 / (3 + 1), within this.
const TOLERANCE: f64 = 0.10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_share_a_site_by_their_weights() {
    let Some(fed) = Federation::start_with(|name, cfg| {
        if name == "tohoku" {
            cfg.backend = BackendConfig::Fake(FakeConfig {
                start_delay_ms: 0,
                failure_rate: 0.0,
                exit_after_ms: Some(2000),
            });
            cfg.capacity = basho_agent::capacity::CapacityConfig::fixed(Capacity {
                cpus: 8,
                memory_mib: 8192,
                gpus: 0,
            });
            cfg.metering.interval_s = 1;
        }
    })
    .await
    else {
        return;
    };
    for (project, share) in [("P-HEAVY", 3), ("P-LIGHT", 1)] {
        let (status, v) = fed
            .api
            .call(
                Method::PUT,
                &format!("/v1/projects/{project}/scheduling"),
                Some(&json!({"priority": 50, "share": share})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    // Arrival alternates, so arrival order alone would give each project half.
    let mut ids: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..2 * EACH {
        let project = if i % 2 == 0 { "P-HEAVY" } else { "P-LIGHT" };
        let (status, w) = fed
            .api
            .create(&fed.create_body(project, "alice", &["JGAD000101"]))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{w}");
        ids.insert(w["id"].as_str().unwrap().to_owned(), project);
    }

    // Every workspace runs and ends by itself; bounded wait with progress.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let all = loop {
        let (status, list) = fed.api.call(Method::GET, "/v1/workspaces", None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let ours: Vec<Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| ids.contains_key(w["id"].as_str().unwrap()))
            .cloned()
            .collect();
        let ended = ours.iter().filter(|w| w["state"] == "stopped").count();
        if ended == ids.len() {
            break ours;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ended} of {} ended after 240 s",
            ids.len()
        );
        eprintln!("fair share: {ended} of {} ended", ids.len());
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    // A workspace's lifetime counts from its placement: its expiry less its duration.
    let mut placed: Vec<(DateTime<Utc>, &str)> = all
        .iter()
        .map(|w| {
            let expires: DateTime<Utc> = w["expires_at"].as_str().unwrap().parse().unwrap();
            let at = expires - chrono::Duration::seconds(600);
            (at, ids[w["id"].as_str().unwrap()])
        })
        .collect();
    placed.sort();
    // Contended: until the first project to run out of queued work had its last placed.
    let last = |p: &str| {
        placed
            .iter()
            .filter(|(_, q)| *q == p)
            .map(|(t, _)| *t)
            .max()
    };
    let until = last("P-HEAVY").unwrap().min(last("P-LIGHT").unwrap());
    let contended: Vec<&str> = placed
        .iter()
        .filter(|(t, _)| *t < until)
        .map(|(_, p)| *p)
        .collect();
    let heavy = contended.iter().filter(|p| **p == "P-HEAVY").count();
    let share = heavy as f64 / contended.len() as f64;
    eprintln!(
        "fair share: P-HEAVY {heavy} of {} contended placements ({:.1} %)",
        contended.len(),
        share * 100.0
    );
    assert!(
        contended.len() >= 40,
        "too few contended placements: {}",
        contended.len()
    );
    assert!(
        (share - 0.75).abs() <= TOLERANCE,
        "P-HEAVY held {:.1} % of the contended placements, not 75 % ± {:.0} %",
        share * 100.0,
        TOLERANCE * 100.0
    );
    fed.shutdown().await;
}
