//! Consent evidence through the real router: a site reports its releases, withdrawals and which
//! release each workspace mounts; the audit chain records what changed, once; the platform and
//! auditors see releases and whether anyone still reads withdrawn data; the owner sees it on
//! the workspace.

mod common;

use axum::http::{Method, StatusCode};
use basho_orchestrator::store::{Role, SqliteStore};
use common::*;
use serde_json::{Value, json};

fn release(n: u32, rows: u64) -> Value {
    let mut r = json!({"release": n, "digest": format!("{n:064}"), "files": 2, "rows": rows,
        "participants": rows, "removed": u64::from(n > 1)});
    if n > 1 {
        r["parent"] = json!(n - 1);
        r["withdrawal"] = json!("wd-0001");
        r["made_at"] = json!("2026-12-07T10:00:00Z");
    }
    r
}

/// `tohoku`'s report: JGAD000101 at `current` (releases 1..=current), `ws` on `on`.
fn report(current: u32, ws: &str, on: u32) -> Value {
    let releases: Vec<Value> = (1..=current)
        .map(|n| release(n, 11 - u64::from(n)))
        .collect();
    let withdrawals: Vec<Value> = (current > 1)
        .then(|| {
            json!({"id": "wd-0001", "dataset": "JGAD000101", "at": "2026-12-07T10:00:00Z",
                "participants": 2, "participants_sha256": "ab".repeat(32), "unknown": 1,
                "previous": 1, "release": 2})
        })
        .into_iter()
        .collect();
    json!({"site": "tohoku",
        "datasets": [{"dataset": "JGAD000101", "current": current, "releases": releases}],
        "withdrawals": withdrawals,
        "workspaces": {ws: {"JGAD000101": on}}})
}

async fn send(h: &Harness, site: &str, body: Value) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        "/v1/agent/consent",
        &agent_token(site),
        Some(body),
    )
    .await
}

/// The consent entries of the audit chain, read with `token`.
async fn actions(h: &Harness, token: &str) -> Vec<(String, String)> {
    let (_, page) = h.call(Method::GET, "/v1/audit", token, None).await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let a = e["action"].as_str().unwrap();
            a.starts_with("dataset_")
                || a.starts_with("consent_")
                || a.starts_with("withdrawn_")
                || a == "workspace_moved"
        })
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_withdrawal_is_evidenced_from_the_sites_report_to_the_audit_chain() {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let ws = w["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&ws, "running", None)]).await;
    let auditor = token(&store, Role::Auditor, None).await;
    let researcher = token(&store, Role::Researcher, Some("r-1")).await;
    let releases = "/v1/sites/tohoku/datasets/JGAD000101/releases";

    // Nothing reported yet.
    assert_error(
        &h.call(Method::GET, releases, PLATFORM, None).await,
        StatusCode::CONFLICT,
        "no_consent_report",
    );

    let got = send(&h, "tohoku", report(1, &ws, 1)).await;
    assert_eq!(got, (StatusCode::OK, json!({"audited": 1})));
    let (status, list) = h.call(Method::GET, releases, &auditor, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["current"], 1);
    assert_eq!(list["releases"][0]["workspaces"], 1);
    assert_eq!(list["releases"][0]["rows"], 10);

    // The withdrawal: release 2, the workspace still on 1.
    let got = send(&h, "tohoku", report(2, &ws, 1)).await;
    assert_eq!(got, (StatusCode::OK, json!({"audited": 2})));
    let (_, list) = h.call(Method::GET, releases, PLATFORM, None).await;
    assert_eq!(list["current"], 2);
    let uses: Vec<&Value> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["workspaces"])
        .collect();
    assert_eq!(uses, [&json!(1), &json!(0)]);
    assert_eq!(list["releases"][1]["withdrawal"], "wd-0001");
    let (status, wd) = h
        .call(Method::GET, "/v1/withdrawals/wd-0001", &auditor, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{wd}");
    assert_eq!(wd["still_reading"], true);
    assert_eq!(wd["workspaces"], json!([{"workspace": ws, "release": 1}]));
    assert_eq!(wd["participants"], 2);
    assert_eq!(wd["release"], 2);

    // Moved, with a copy found in /work: nobody reads release 1 any more.
    let mut moved = report(2, &ws, 2);
    moved["copies"] = json!({ws.clone(): ["/work/cohort.csv"]});
    let got = send(&h, "tohoku", moved.clone()).await;
    assert_eq!(got, (StatusCode::OK, json!({"audited": 2})));
    let (_, wd) = h
        .call(Method::GET, "/v1/withdrawals/wd-0001", PLATFORM, None)
        .await;
    assert_eq!(wd["still_reading"], false);
    assert_eq!(wd["workspaces"], json!([]));
    assert_eq!(wd["copies"], json!([ws]));
    // The owner is told on the workspace itself.
    let (status, seen) = h
        .call(
            Method::GET,
            &format!("/v1/workspaces/{ws}"),
            &researcher,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["releases"], json!({"JGAD000101": 2}));
    assert_eq!(seen["withdrawn_copies"], json!(["/work/cohort.csv"]));

    // Sent again: nothing new in the chain.
    let got = send(&h, "tohoku", moved).await;
    assert_eq!(got, (StatusCode::OK, json!({"audited": 0})));
    assert_eq!(
        actions(&h, &auditor).await,
        [
            ("dataset_release", "tohoku/JGAD000101/1"),
            ("dataset_release", "tohoku/JGAD000101/2"),
            ("consent_withdrawal", "wd-0001"),
            ("workspace_moved", ws.as_str()),
            ("withdrawn_data_copied", ws.as_str()),
        ]
        .map(|(a, t)| (a.to_owned(), t.to_owned()))
    );

    // Only the platform, admins and auditors read releases and withdrawals.
    for path in [releases, "/v1/withdrawals/wd-0001"] {
        assert_error(
            &h.call(Method::GET, path, &researcher, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    assert_error(
        &h.call(Method::GET, "/v1/withdrawals/wd-none", PLATFORM, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for path in [
        "/v1/sites/tohoku/datasets/JGAD000999/releases",
        "/v1/sites/nowhere/datasets/JGAD000101/releases",
    ] {
        assert_error(
            &h.call(Method::GET, path, PLATFORM, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

#[tokio::test]
async fn a_site_reports_only_for_itself_and_its_own_datasets() {
    let h = Harness::new().await;
    h.register_demo().await;
    assert_error(
        &send(&h, "ncbn", report(1, "ws-x", 1)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let mut other = report(1, "ws-x", 1);
    other["datasets"][0]["dataset"] = json!("JGAD000201");
    assert_error(
        &send(&h, "tohoku", other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let mut extra = report(1, "ws-x", 1);
    extra["participant_ids"] = json!(["P0001"]);
    assert_error(
        &send(&h, "tohoku", extra).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}
