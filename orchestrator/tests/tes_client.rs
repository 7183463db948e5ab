//! py-tes, an independent GA4GH TES 1.1 client (`scripts/py-tes` installs it), against the
//! orchestrator over real HTTP: 300 tasks created, read in every view, listed in pages, one
//! canceled (`tests/tes/pytes_client.py`), each answer parsed into py-tes's models of the
//! specification's schemas, and each read raw and validated against pydantic-tes's models of
//! the specification's OpenAPI document, unknown fields forbidden.

mod common;

use std::process::Command;

use axum::http::Method;
use common::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_tes_creates_reads_lists_and_cancels() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("../scripts/py-tes"))
        .output()
        .expect("scripts/py-tes runs");
    assert!(
        out.status.success(),
        "scripts/py-tes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let h = Harness::new().await;
    h.register("tohoku", &["JGAD000101"], 1024, 1024 * 1024)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(h.orchestrator.clone().serve(listener, stop.clone()));

    let visa = h.visa("r-1", "JGAD000101");
    // One task that ran and ended, its outputs taken by its site: the answers' schemas are
    // checked on it too.
    let body = serde_json::json!({
        "name": "pytes-ended",
        "outputs": [{"url": "s3://elsewhere/n.txt", "path": "/results/n.txt"}],
        "executors": [{"image": "basho/demo", "command": ["true"]}],
        "tags": {"basho_project": "P-0001", "basho_visas": visa},
    });
    let (s, made) = h
        .call(Method::POST, "/ga4gh/tes/v1/tasks", PLATFORM, Some(body))
        .await;
    assert!(s.is_success(), "{made}");
    let ended = made["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&ended, "running", None)]).await;
    let stopped = ("stopped", "exited with code 0");
    h.end_task("tohoku", &ended, stopped, &["n.txt"], &[]).await;
    let script = root.join("tests/tes/pytes_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .args([base.as_str(), PLATFORM, visa.as_str(), ended.as_str()])
        .output()
        .await
        .expect("python runs");
    stop.cancel();
    let _ = server.await;
    assert!(
        run.status.success(),
        "py-tes failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["created"], 300);
    assert_eq!(summary["listed"], 301);
    assert_eq!(summary["pages"], 5);
    // Every answer read raw held to pydantic-tes's schemas: service-info, a create, three tasks
    // in three views, each view's three pages of 128.
    assert_eq!(
        summary["validated"],
        serde_json::json!({"TesServiceInfo": 1, "TesTask": 10, "TesListTasksResponse": 9})
    );
    assert_eq!(summary["canceled"], "CANCELING");
    assert_eq!(
        summary["views"]["MINIMAL"],
        serde_json::json!(["id", "state"])
    );
    let basic = summary["views"]["BASIC"].to_string();
    for field in [
        "executors",
        "inputs",
        "outputs",
        "tags",
        "creation_time",
        "logs",
    ] {
        assert!(basic.contains(field), "BASIC lacks {field}: {basic}");
    }
}
