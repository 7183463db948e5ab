//! `basho dev` as a user runs it, as a separate process: a workspace survives `basho dev` being
//! stopped with SIGTERM and started again on the same data dir (re-adopted, not started again).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use basho_core::visa::mint::Issuer;
use basho_tests::api::Api;
use basho_tests::{binary, containers_labelled, wait_for};
use reqwest::StatusCode;
use serde_json::json;

const ISS: &str = "https://dac.dev-restart.test";

struct Dev(Child);

impl Dev {
    fn start(data: &std::path::Path, listen: &str, token: &str, jwks: &std::path::Path) -> Dev {
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let child = Command::new(binary("basho"))
            .args(["dev", "--data-dir"])
            .arg(data)
            .args(["--listen", listen, "--token", token, "--trusted-issuer"])
            .arg(format!("{ISS}={}", jwks.display()))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("basho dev starts");
        Dev(child)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("basho dev did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the API answers and all three dev sites have registered (placement needs them).
async fn healthy(api: &Api) {
    wait_for("basho dev healthy", Duration::from_secs(120), || async {
        let r = reqwest::get(format!("{}/healthz", api.base)).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    wait_for(
        "three dev sites registered",
        Duration::from_secs(60),
        || async {
            let (status, sites) = api.call(reqwest::Method::GET, "/v1/sites", None).await;
            (status.is_success() && sites.as_array()?.len() == 3).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_survives_basho_dev_restart() {
    let Some(docker) = basho_tests::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let issuer = Issuer::generate(ISS);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let project = basho_tests::unique("P-DEV");
    let api = Api::new(format!("http://{listen}"), "dev-restart-token");

    let dev = Dev::start(&data, &listen, "dev-restart-token", &jwks);
    healthy(&api).await;
    let body = json!({"project": project, "template": "shell",
        "visas": [issuer.mint("alice", "JGAD000301")],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 600});
    let (status, ws) = api.create(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(ws["site"], "bbj");
    let id = ws["id"].as_str().unwrap().to_owned();
    api.wait_state(&id, "running", Duration::from_secs(60))
        .await;
    let before = containers_labelled(&docker, basho_core::LABEL_WORKSPACE, &id).await;
    assert_eq!(before.len(), 1);
    let started = |c: bollard::models::ContainerInspectResponse| c.state.and_then(|s| s.started_at);
    let started_before = started(docker.inspect_container(&before[0], None).await.unwrap());

    assert!(
        dev.terminate().success(),
        "basho dev exits cleanly on SIGTERM"
    );
    let still = containers_labelled(&docker, basho_core::LABEL_WORKSPACE, &id).await;
    assert_eq!(
        still, before,
        "the workspace keeps running while basho dev is down"
    );

    let dev = Dev::start(&data, &listen, "dev-restart-token", &jwks);
    healthy(&api).await;
    api.wait_state(&id, "running", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = containers_labelled(&docker, basho_core::LABEL_WORKSPACE, &id).await;
    assert_eq!(
        after, before,
        "re-adopted: the same container, no second one"
    );
    let started_after = started(docker.inspect_container(&after[0], None).await.unwrap());
    assert_eq!(started_after, started_before, "not started again");

    let (status, _) = api.delete(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    api.wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    wait_for("container removed", Duration::from_secs(30), || async {
        containers_labelled(&docker, basho_core::LABEL_WORKSPACE, &id)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(dev.terminate().success());
    basho_tests::remove_labelled(&docker, basho_core::LABEL_PROJECT, &project).await;
}
