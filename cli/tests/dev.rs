//! `basho dev` in-process on the local Docker engine: it starts, its three agents register, it
//! stops on cancellation, and a restart on the same data dir reuses everything it made.

use std::time::{Duration, Instant};

use basho_cli::client::Client;
use basho_cli::dev::{DevOptions, run_dev};
use basho_core::protocol::Site;
use tokio_util::sync::CancellationToken;

/// Why Docker cannot be used here, or `None` when it can.
async fn docker_missing() -> Option<String> {
    let docker = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    match docker.ping().await {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

async fn sites(client: &Client) -> Vec<Site> {
    let answer = client.list_sites().await.unwrap();
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test]
async fn docker_dev_runs_three_agents_and_restarts_with_the_same_data_dir() {
    if let Some(why) = docker_missing().await {
        eprintln!("skipped: no Docker engine answers here ({why})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = DevOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DevOptions::new(tmp.path().join("data"))
    };

    let shutdown = CancellationToken::new();
    let dev = run_dev(opts.clone(), shutdown.clone()).await.unwrap();
    assert_eq!(dev.sites, ["tohoku", "ncbn", "bbj"]);
    assert!(dev.image_id.starts_with("sha256:"), "{}", dev.image_id);
    assert!(dev.banner().contains(&dev.platform_token));
    let client = Client::new(&dev.api_url, Some(dev.platform_token.clone())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut names: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        names = sites(&client)
            .await
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        if names.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    names.sort();
    assert_eq!(names, ["bbj", "ncbn", "tohoku"], "every agent registered");
    let csv = dev.data_dir.join("datasets/JGAD000201/records.csv");
    let first_csv = std::fs::read(&csv).unwrap();
    assert_eq!(first_csv.iter().filter(|b| **b == b'\n').count(), 9_831);
    let token = dev.platform_token.clone();
    shutdown.cancel();
    dev.wait().await.unwrap();
    assert!(
        client.list_sites().await.is_err(),
        "the API is down once wait returns"
    );

    let modified = std::fs::metadata(&csv).unwrap().modified().unwrap();
    let shutdown = CancellationToken::new();
    let dev = run_dev(opts, shutdown.clone()).await.unwrap();
    assert_eq!(dev.platform_token, token, "the platform token is kept");
    assert_eq!(
        std::fs::metadata(&csv).unwrap().modified().unwrap(),
        modified
    );
    let client = Client::new(&dev.api_url, Some(token)).unwrap();
    assert_eq!(
        sites(&client).await.len(),
        3,
        "sites are remembered by the store"
    );
    shutdown.cancel();
    dev.wait().await.unwrap();
}
