//! GA4GH TES tasks on the real Docker engine, through the in-process federation: a task reading
//! a dataset file runs where the dataset is, in its working directory with its environment, and
//! ends COMPLETE; one whose executor exits 3 ends EXECUTOR_ERROR with that exit code; one reads
//! its stdin from a dataset file and writes its stdout and stderr to files; a running one is
//! canceled and its container goes; one runs four executors in order after writing an inline input,
//! and its outputs become its release request as it ends; one reading no dataset runs without a
//! visa, created with its researcher's own token.

use std::time::Duration;

use basho_orchestrator::store::Role;
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

/// The release request a task's outputs become.
fn release_of(task: &str) -> String {
    format!("rr-{}", task.strip_prefix("ws-").unwrap())
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
    // Executors in order in one container, an inline input written first, an ignored error,
    // and outputs that become the task's release request as it ends.
    let mut pipeline = task(&fed, "pipeline", "");
    pipeline["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "/work/in/note.txt", "content": "note $(not run)\n"}));
    pipeline["executors"] = json!([
        {"image": "basho/demo", "command": ["cut", "-d,", "-f1", "/data/JGAD000201/records.csv"],
         "stdout": "/work/ids.txt"},
        {"image": "basho/demo", "command": ["sh", "-c", "test \"$N\" = 5 && wc -l < ids.txt"],
         "workdir": "/work", "env": {"N": "5"}, "stdout": "/results/count.txt"},
        {"image": "basho/demo", "command": ["false"], "ignore_error": true},
        {"image": "basho/demo", "command": ["cp", "/work/in/note.txt", "/results/note.txt"]},
    ]);
    pipeline["outputs"] = json!([
        {"path": "/results/count.txt", "url": "s3://ignored/count.txt"},
        {"path": "/results/note.txt", "url": "s3://ignored/note.txt"},
        {"path": "/results/absent.txt", "url": "s3://ignored/absent.txt"},
    ]);
    let pipeline = submit(&fed, &pipeline).await;
    // A task that reads no dataset needs no visa: its researcher creates it with their own
    // token, and it runs where there is room, mounting nothing.
    let alice = basho_tests::api::Api::new(
        fed.api.base.clone(),
        basho_tests::sessions::token(&fed, Role::Researcher, Some("alice")).await,
    );
    let unlicensed = json!({
        "name": "no-data",
        "inputs": [{"path": "/work/run.sh", "content": "ls /data | wc -l > /results/seen.txt\n"}],
        "outputs": [{"path": "/results/seen.txt", "url": "s3://ignored/seen.txt"}],
        "executors": [{"image": "basho/demo", "command": ["sh", "/work/run.sh"]}],
        "tags": {"basho_project": "P-TES"},
    });
    let (s, v) = alice.call(Method::POST, TASKS, Some(&unlicensed)).await;
    assert!(s.is_success(), "{v}");
    let unlicensed = v["id"].as_str().unwrap().to_owned();

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

    // The piped task's stdout and stderr files are outputs too: its release request holds them.
    let (_, r) = fed
        .api
        .call(
            Method::GET,
            &format!("/v1/release-requests/{}", release_of(&piped)),
            None,
        )
        .await;
    let names: Vec<&str> = r["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["copy.csv", "err.txt"], "{r}");

    let t = wait_for(
        &fed,
        &pipeline,
        &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"],
    )
    .await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    let results = fed.site_config("ncbn").paths.results_root.join(&pipeline);
    assert_eq!(
        std::fs::read_to_string(results.join("count.txt"))
            .unwrap()
            .trim(),
        "6"
    );
    assert_eq!(
        std::fs::read_to_string(results.join("note.txt")).unwrap(),
        "note $(not run)\n"
    );
    let rr = release_of(&pipeline);
    let logs = &t["logs"][0];
    let urls: Vec<&str> = logs["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            format!("/v1/release-requests/{rr}/files/count.txt"),
            format!("/v1/release-requests/{rr}/files/note.txt")
        ],
        "{t}"
    );
    assert_eq!(
        t["outputs"][0]["url"], urls[0],
        "the output's url is its release file"
    );
    assert_eq!(t["outputs"][2]["url"], "s3://ignored/absent.txt");
    let system = logs["system_logs"].to_string();
    assert!(
        system.contains("absent.txt") && system.contains(&rr),
        "{system}"
    );
    let (s, r) = fed
        .api
        .call(Method::GET, &format!("/v1/release-requests/{rr}"), None)
        .await;
    assert!(s.is_success(), "{r}");
    assert_eq!(r["workspace"], pipeline.as_str());
    assert_eq!(r["requester"], "alice", "{r}");
    for f in r["files"].as_array().unwrap() {
        let bytes = std::fs::read(results.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"], basho_core::digest::sha256_hex(&bytes), "{r}");
    }
    // Downloading waits for two approvals.
    let (s, _) = fed.api.call(Method::GET, urls[0], None).await;
    assert_eq!(s.as_u16(), 409);

    let t = wait_for(
        &fed,
        &unlicensed,
        &["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"],
    )
    .await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    let (_, w) = fed
        .api
        .call(Method::GET, &format!("/v1/workspaces/{unlicensed}"), None)
        .await;
    assert_eq!(
        (&w["owner"], &w["datasets"]),
        (&json!("alice"), &json!([])),
        "{w}"
    );
    let site = ["tohoku", "ncbn", "bbj"]
        .into_iter()
        .find(|s| fed.site(s) == w["site"].as_str().unwrap())
        .unwrap();
    let seen = fed.site_config(site).paths.results_root.join(&unlicensed);
    let seen = std::fs::read_to_string(seen.join("seen.txt")).unwrap();
    assert_eq!(seen.trim(), "0", "no dataset is mounted");
    let (s, r) = alice
        .call(
            Method::GET,
            &format!("/v1/release-requests/{}", release_of(&unlicensed)),
            None,
        )
        .await;
    assert!(s.is_success(), "{r}");
    assert_eq!(r["files"][0]["name"], "seen.txt");

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
