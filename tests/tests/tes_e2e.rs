//! GA4GH TES tasks on the real Docker engine, through the in-process federation: a task reading
//! a dataset file runs where the dataset is, in its working directory with its environment, and
//! ends COMPLETE; one whose executor exits 3 ends EXECUTOR_ERROR with that exit code; one reads
//! its stdin from a dataset file and writes its stdout and stderr to files; a running one is
//! canceled and its container goes.

use std::time::Duration;

use basho_tests::federation::Federation;
use reqwest::Method;
use serde_json::{Value, json};

const TASKS: &str = "/ga4gh/tes/v1/tasks";

fn task(fed: &Federation, name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "inputs": [{"url": "basho://datasets/JGAD000201/records.csv",
                    "path": "/data/JGAD000201/records.csv"}],
        "executors": [{"image": "basho/demo", "command": ["sh", "-c", script],
                       "workdir": "/tmp", "env": {"GREETING": "hello"}}],
        "tags": {"basho_project": "P-TES", "basho_visas": fed.issuer.mint("alice", "JGAD000201")},
    })
}

async fn submit(fed: &Federation, body: &Value) -> String {
    let (s, v) = fed.api.call(Method::POST, TASKS, Some(body)).await;
    assert!(s.is_success(), "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The task once its state is one of `states`.
async fn wait_for(fed: &Federation, id: &str, states: &[&str]) -> Value {
    basho_tests::wait_for("the task's state", Duration::from_secs(60), || async {
        let (_, t) = fed
            .api
            .call(Method::GET, &format!("{TASKS}/{id}?view=FULL"), None)
            .await;
        states
            .contains(&t["state"].as_str().unwrap_or(""))
            .then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tes_tasks_run_to_their_end_on_docker() {
    let Some(fed) = Federation::start().await else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let check = r#"test "$(pwd)" = /tmp && test "$GREETING" = hello \
        && test "$(wc -l < /data/JGAD000201/records.csv)" = 6 && test "$BASHO_DATASETS" = JGAD000201"#;
    let ok = submit(&fed, &task(&fed, "count", check)).await;
    let failing = submit(&fed, &task(&fed, "fails", "exit 3")).await;
    let long = submit(&fed, &task(&fed, "long", "sleep 600")).await;
    // stdin from the dataset, stdout and stderr to files: `cat` runs as its argv, the redirections
    // by a wrapper in the image's shell.
    let mut piped = task(&fed, "piped", "");
    piped["executors"][0] = json!({"image": "basho/demo", "command": ["cat", "-", "/nonexistent"],
        "stdin": "/data/JGAD000201/records.csv", "stdout": "/results/copy.csv",
        "stderr": "/results/err.txt"});
    let piped = submit(&fed, &piped).await;

    let t = wait_for(&fed, &ok, &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"]).await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    assert_eq!(t["logs"][0]["metadata"]["site"], fed.site("ncbn"), "{t}");
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 0);
    let t = wait_for(
        &fed,
        &failing,
        &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"],
    )
    .await;
    assert_eq!(t["state"], "EXECUTOR_ERROR", "{t}");
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 3);

    // `cat` copied stdin and failed on the missing file: exit 1, both files written.
    let t = wait_for(
        &fed,
        &piped,
        &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"],
    )
    .await;
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 1, "{t}");
    let results = fed.site_config("ncbn").paths.results_root.join(&piped);
    let copy = std::fs::read_to_string(results.join("copy.csv")).unwrap();
    assert_eq!(copy.lines().count(), 6, "{copy}");
    assert!(copy.starts_with("record_id,"), "{copy}");
    let err = std::fs::read_to_string(results.join("err.txt")).unwrap();
    assert!(err.contains("/nonexistent"), "{err}");

    wait_for(&fed, &long, &["RUNNING"]).await;
    assert_eq!(fed.containers(&long).await.len(), 1);
    let (s, v) = fed
        .api
        .call(Method::POST, &format!("{TASKS}/{long}:cancel"), None)
        .await;
    assert!(s.is_success(), "{v}");
    let t = wait_for(&fed, &long, &["CANCELED"]).await;
    assert_eq!(t["state"], "CANCELED");
    assert!(fed.containers(&long).await.is_empty());
    fed.shutdown().await;
}
