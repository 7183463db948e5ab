//! The usage ledger and quotas through the real router: each (site, seq) stored once, the
//! acknowledgement stops at the first gap, records about other sites' workspaces never count,
//! reports sum what was stored, and quotas refuse creates with the balance in the message.

mod common;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{Value, json};

fn record(seq: u64, workspace: &str, from: DateTime<Utc>, secs: i64, cpus: f64) -> Value {
    json!({
        "seq": seq, "workspace": workspace, "project": "P-1",
        "from": from, "to": from + Duration::seconds(secs),
        "allocated_core_seconds": cpus * secs as f64, "used_cpu_seconds": 1.5,
        "allocated_memory_gib_seconds": 0.5 * secs as f64, "used_memory_gib_seconds": 0.25,
        "peak_memory_bytes": 1000 + seq, "gpu_seconds": 0.0,
    })
}

async fn deliver(h: &Harness, site: &str, records: Vec<Value>) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        "/v1/agent/usage",
        &agent_token(site),
        Some(json!({"site": site, "records": records})),
    )
    .await
}

async fn workspace(h: &Harness, project: &str) -> String {
    let mut body = h.body(&["JGAD000101"]);
    body["project"] = json!(project);
    let (status, w) = h.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    w["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_record_is_stored_once_and_acknowledged_up_to_the_first_gap() {
    let h = Harness::new().await;
    h.register_demo().await;
    let ws = workspace(&h, "P-1").await;
    let t0 = Utc::now() - Duration::minutes(10);
    let r = |seq: u64| record(seq, &ws, t0 + Duration::seconds(10 * seq as i64), 10, 2.0);

    let (status, ack) = deliver(&h, "tohoku", vec![r(1), r(2), r(4)]).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        ack["acked_through"], 2,
        "3 is missing, so 4 is not acknowledged yet"
    );
    // A lost answer: the agent sends everything unacknowledged again, and the gap is filled.
    let (_, ack) = deliver(&h, "tohoku", vec![r(1), r(2), r(3), r(4)]).await;
    assert_eq!(ack["acked_through"], 4);
    let (_, ack) = deliver(&h, "tohoku", vec![r(3), r(4)]).await;
    assert_eq!(ack["acked_through"], 4);
    // A fresh journal asks with nothing and learns where the site's numbering stands.
    let (_, ack) = deliver(&h, "tohoku", vec![]).await;
    assert_eq!(ack["acked_through"], 4);

    let (status, report) = h.get("/v1/projects/P-1/usage").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["totals"]["records"], 4, "{report}");
    assert_eq!(report["totals"]["allocated_core_seconds"], 80.0);
    assert_eq!(report["totals"]["used_cpu_seconds"], 6.0);
    assert_eq!(report["totals"]["peak_memory_bytes"], 1004);
    assert_eq!(report["by_site"][0]["site"], "tohoku");
    assert_eq!(report["by_workspace"][0]["workspace"], ws.as_str());

    // The period selects by the end of each record's interval.
    let from = (t0 + Duration::seconds(25)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (t0 + Duration::seconds(45)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, part) = h
        .get(&format!("/v1/projects/P-1/usage?from={from}&to={to}"))
        .await;
    assert_eq!(part["totals"]["records"], 2, "{part}");
}

#[tokio::test]
async fn a_site_cannot_bill_another_sites_workspace_or_speak_for_another_site() {
    let h = Harness::new().await;
    h.register_demo().await;
    let ws = workspace(&h, "P-1").await; // placed at tohoku
    let t0 = Utc::now() - Duration::minutes(5);
    let (status, ack) = deliver(&h, "ncbn", vec![record(1, &ws, t0, 10, 1.0)]).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        ack["acked_through"], 1,
        "stored, so the agent stops sending it"
    );
    let (_, ack) = deliver(&h, "ncbn", vec![record(2, "ws-nope", t0, 10, 1.0)]).await;
    assert_eq!(ack["acked_through"], 2);
    let (_, report) = h.get("/v1/projects/P-1/usage").await;
    assert_eq!(report["totals"]["records"], 0, "{report}");

    let (status, _) = h
        .call(
            Method::POST,
            "/v1/agent/usage",
            &agent_token("ncbn"),
            Some(json!({"site": "tohoku", "records": []})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/agent/usage",
            PLATFORM,
            Some(json!({"site": "tohoku", "records": []})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only agents deliver usage");
    let mut bad = record(3, &ws, t0, 10, 1.0);
    bad["seq"] = json!(0);
    let (status, _) = deliver(&h, "tohoku", vec![bad]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_quota_refuses_what_would_exceed_it_and_names_the_balance() {
    let h = Harness::new().await;
    h.register_demo().await;
    let (status, q) = h
        .call(
            Method::PUT,
            "/v1/projects/P-Q/quota",
            PLATFORM,
            Some(json!({"core_hours": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["balance"]["quota"]["core_hours"], 1.0);

    // One CPU for 30 minutes fits; a second one does not once the first holds its half hour.
    let mut body = h.body(&["JGAD000101"]);
    body["project"] = json!("P-Q");
    body["resources"] = json!({"cpus": 1, "memory_mib": 128, "gpus": 0});
    body["duration_s"] = json!(1800);
    let (status, w) = h.create(body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let mut bigger = body.clone();
    bigger["duration_s"] = json!(2400);
    bigger["visas"] = json!([h.visa("r-2", "JGAD000101")]);
    let (status, e) = h.create(bigger).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"]["code"], "quota_exceeded");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("0.50 remaining") && msg.contains("needs 0.67"),
        "{msg}"
    );

    // Metered use counts too.
    let id = w["id"].as_str().unwrap();
    let t0 = Utc::now() - Duration::minutes(30);
    let mut r = record(1, id, t0, 1800, 1.0);
    r["project"] = json!("P-Q");
    deliver(&h, "tohoku", vec![r]).await;
    let (_, status_now) = h.get("/v1/projects/P-Q/quota").await;
    assert_eq!(
        status_now["balance"]["used_core_hours"], 0.5,
        "{status_now}"
    );

    let (status, _) = h
        .call(
            Method::PUT,
            "/v1/projects/P-Q/quota",
            PLATFORM,
            Some(json!({"core_hours": -1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
