//! Site protection end to end on the real Docker engine: a site whose agent offers only what the
//! host leaves idle (`[capacity] only_idle`) within half of it (`max_share = 0.5`), while a
//! container that is not basho's holds nearly all of the host's memory. A workspace waits in the
//! queue with the site's reason, and runs as soon as that container goes; a request larger than
//! the site's share is refused at once.

use std::time::Duration;

use basho_core::protocol::Capacity;
use basho_tests::federation::Federation;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use reqwest::StatusCode;

/// Removes the host's own container when the test ends, also when it fails.
struct HostLoad {
    docker: bollard::Docker,
    name: String,
}

impl Drop for HostLoad {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

async fn site_memory(fed: &Federation) -> u64 {
    let (_, sites) = fed.api.call(reqwest::Method::GET, "/v1/sites", None).await;
    let site = fed.site("tohoku");
    sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == site.as_str())
        .unwrap()["capacity"]["memory_mib"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_host_queues_work_until_its_own_container_goes() {
    let Some(docker) = basho_tests::docker().await else {
        return;
    };
    let info = docker.info().await.unwrap();
    let host_mib = info.mem_total.unwrap() as u64 / (1024 * 1024);
    let cpus = u32::try_from(info.ncpu.unwrap()).unwrap().max(2);
    let Some(fed) = Federation::start_with(|name, cfg| {
        if name == "tohoku" {
            cfg.capacity = basho_agent::capacity::CapacityConfig::fixed(Capacity {
                cpus,
                memory_mib: host_mib,
                gpus: 0,
            });
            cfg.capacity.max_share = 0.5;
            cfg.capacity.only_idle = true;
            cfg.capacity.report_every_s = 1;
        }
    })
    .await
    else {
        return;
    };

    // Larger than the site's share: refused at once, not queued.
    let mut big = fed.create_body("P-0001", "alice", &["JGAD000101"]);
    big["resources"]["memory_mib"] = serde_json::json!(host_mib / 2 + 1024);
    let (status, v) = fed.api.create(&big).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // The host's own container: limited to all but 64 MiB of the host's memory.
    let image = basho_cli::dev::image::ensure_demo_image(&docker)
        .await
        .unwrap();
    let load = HostLoad {
        docker: docker.clone(),
        name: basho_tests::unique("host-load"),
    };
    let body = ContainerCreateBody {
        image: Some(image),
        cmd: Some(vec!["sleep".into(), "600".into()]),
        user: Some("65534:65534".into()),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            memory: Some(i64::try_from((host_mib - 64) * 1024 * 1024).unwrap()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&load.name)
        .build();
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&load.name, None).await.unwrap();
    basho_test_util::wait_until(
        "the site's report of its load",
        Duration::from_secs(30),
        || async { site_memory(&fed).await < 128 },
    )
    .await;

    let (status, w) = fed
        .api
        .create(&fed.create_body("P-0001", "alice", &["JGAD000101"]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(w["state"], "queued", "{w}");
    let why = w["message"].as_str().unwrap();
    assert!(why.contains("the site's own work holds"), "{why}");
    let id = w["id"].as_str().unwrap().to_owned();

    let gone = RemoveContainerOptionsBuilder::default().force(true).build();
    load.docker
        .remove_container(&load.name, Some(gone))
        .await
        .unwrap();
    let running = fed
        .api
        .wait_state(&id, "running", Duration::from_secs(60))
        .await;
    assert_eq!(running["site"], fed.site("tohoku").as_str());
    assert!(site_memory(&fed).await <= host_mib / 2, "within the share");
    fed.shutdown().await;
}
