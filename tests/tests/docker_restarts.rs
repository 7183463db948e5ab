//! Restarts on the real Docker engine: an agent restart re-adopts what runs (no duplicate, no
//! orphan, nothing started again); an orchestrator restart keeps state and agents reconnect.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_tests::federation::Federation;
use reqwest::StatusCode;

/// Container id and start time of each workspace, the evidence that nothing was started again.
async fn fingerprint(fed: &Federation, ids: &[String]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for id in ids {
        let cs = fed.containers(id).await;
        assert_eq!(
            cs.len(),
            1,
            "workspace {id} has exactly one container: {cs:?}"
        );
        let c = fed.docker.inspect_container(&cs[0], None).await.unwrap();
        let started = c.state.and_then(|s| s.started_at).unwrap_or_default();
        out.insert(id.clone(), (cs[0].clone(), started));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_restart_readopts_running_workspaces() {
    let Some(mut fed) = Federation::start().await else {
        return;
    };
    let mut ids = Vec::new();
    for datasets in [
        &["JGAD000101"][..],
        &["JGAD000102"],
        &["JGAD000101", "JGAD000102"],
    ] {
        let ws = fed.create_running("P-RESTART", datasets).await;
        ids.push(ws["id"].as_str().unwrap().to_owned());
    }
    let before = fingerprint(&fed, &ids).await;

    fed.stop_agent("tohoku").await;
    // With the agent gone the containers keep running.
    assert_eq!(fingerprint(&fed, &ids).await, before);
    fed.start_agent("tohoku").await;
    // Let the restarted agent register and reconcile several times.
    let site = fed.site("tohoku");
    basho_tests::wait_for("agent re-registered", Duration::from_secs(30), || async {
        let (_, sites) = fed.api.call(reqwest::Method::GET, "/v1/sites", None).await;
        let s = sites
            .as_array()?
            .iter()
            .find(|s| s["name"] == site.as_str())?
            .clone();
        let age = chrono::Utc::now()
            - s["last_contact"]
                .as_str()?
                .parse::<chrono::DateTime<chrono::Utc>>()
                .ok()?;
        (age.num_seconds() < 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for id in &ids {
        assert_eq!(fed.api.workspace(id).await["state"], "running", "{id}");
    }
    assert_eq!(
        fingerprint(&fed, &ids).await,
        before,
        "same containers, none started again"
    );
    let all = basho_tests::containers_labelled(&fed.docker, basho_core::LABEL_SITE, &site).await;
    assert_eq!(
        all.len(),
        3,
        "no orphan and no duplicate at the site: {all:?}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_restart_keeps_state_and_agents_reconnect() {
    let Some(mut fed) = Federation::start().await else {
        return;
    };
    let first = fed.create_running("P-ORCH", &["JGAD000201"]).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let before = fingerprint(&fed, std::slice::from_ref(&id)).await;

    fed.stop_orchestrator().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    fed.start_orchestrator().await;

    let again = fed.api.workspace(&id).await;
    for field in [
        "id",
        "project",
        "owner",
        "site",
        "datasets",
        "resources",
        "created_at",
        "expires_at",
    ] {
        assert_eq!(again[field], first[field], "{field} survived the restart");
    }
    assert_eq!(again["state"], "running");
    // The agents reconnect by themselves: a workspace created after the restart runs.
    let second = fed.create_running("P-ORCH", &["JGAD000201"]).await;
    assert_eq!(second["site"], fed.site("ncbn").as_str());
    assert_eq!(fingerprint(&fed, std::slice::from_ref(&id)).await, before);

    let (status, _) = fed.api.delete(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_before_its_site_launched_it_ends_stopped() {
    let Some(mut fed) = Federation::start().await else {
        return;
    };
    fed.stop_agent("ncbn").await;
    let (status, ws) = fed
        .api
        .create(&fed.create_body("P-EARLY", "alice", &["JGAD000201"]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    assert_eq!(ws["state"], "placed");
    let (status, ws) = fed.api.delete(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ws}");
    assert_eq!(fed.api.workspace(&id).await["state"], "stopping");
    fed.start_agent("ncbn").await;
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(30))
        .await;
    assert!(fed.containers(&id).await.is_empty(), "never launched");
    fed.shutdown().await;
}
