//! The agent protocol through the real router, and the background loops through a real server.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn desired(h: &Harness, site: &str, query: &str) -> (StatusCode, Value) {
    h.call(
        Method::GET,
        &format!("/v1/agent/desired?{query}"),
        &agent_token(site),
        None,
    )
    .await
}

/// `tohoku`'s agent posts `reg`.
async fn register(h: &Harness, reg: Value) -> (StatusCode, Value) {
    let token = agent_token("tohoku");
    h.call(Method::POST, "/v1/agent/register", &token, Some(reg))
        .await
}

#[tokio::test]
async fn register_and_desired() {
    let h = Harness::new().await;
    let (status, reg) = register(&h, registration("tohoku", &["JGAD000101"], 8, 8192)).await;
    assert_eq!(status, StatusCode::OK, "{reg}");
    assert_eq!(reg, json!({"site": "tohoku", "revision": 0}));

    let (status, d) = desired(&h, "tohoku", "site=tohoku").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d, json!({"revision": 0, "workspaces": [], "stopping": []}));

    let visa = h.visa("r-1", "JGAD000101");
    let (status, w) = h
        .create(json!({"project": "P-1", "template": "shell", "visas": [visa.clone()]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let (_, d) = desired(&h, "tohoku", "after=0").await;
    let rev = d["revision"].as_i64().unwrap();
    assert!(rev > 0);
    let a = &d["workspaces"][0];
    assert_eq!(a["id"], w["id"]);
    assert_eq!(a["image"], "basho/demo");
    assert_eq!(a["command"][0], "sh");
    assert_eq!(a["datasets"], json!(["JGAD000101"]));
    assert_eq!(a["visas"], json!([visa]));
    assert_eq!(a["expires_at"], w["expires_at"]);
    assert_eq!(a["owner"], "r-1");

    // Re-registering keeps the revision; the sites list shows the new capacity.
    let (_, reg) = register(&h, registration("tohoku", &["JGAD000101"], 32, 8192)).await;
    assert_eq!(reg["revision"], rev);
    let (_, sites) = h.get("/v1/sites").await;
    assert_eq!(sites[0]["capacity"]["cpus"], 32);
    assert_eq!(sites[0]["allocated"]["cpus"], 1);
}

#[tokio::test]
async fn agents_speak_only_for_their_site() {
    let h = Harness::new().await;
    h.register_demo().await;
    let got = register(&h, registration("ncbn", &["JGAD000201"], 8, 8192)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert_error(
        &desired(&h, "tohoku", "site=ncbn").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let got = h
        .call(
            Method::POST,
            "/v1/agent/observations",
            &agent_token("tohoku"),
            Some(json!({"site": "ncbn", "observations": []})),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert_error(
        &desired(&h, "tohoku", "after=x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );

    // An agent observing another site's workspace changes nothing.
    let (_, w) = h.create(h.body(&["JGAD000201"])).await;
    let id = w["id"].as_str().unwrap();
    let (status, applied) = h.observe("tohoku", &[(id, "failed", Some("nope"))]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(applied, json!({"applied": 0}));
    assert_eq!(h.state(id).await, "placed");
    let (_, metrics) = h
        .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
        .await;
    assert!(metrics.as_str().unwrap().contains(
        "basho_agent_observations_ignored_total{site=\"tohoku\",reason=\"other_site\"} 1"
    ));
}

#[tokio::test]
async fn unregistered_sites_must_register_first() {
    let h = Harness::new().await;
    assert_error(
        &desired(&h, "bbj", "").await,
        StatusCode::CONFLICT,
        "not_registered",
    );
}

#[tokio::test]
async fn a_create_wakes_a_waiting_poll() {
    let h = std::sync::Arc::new(Harness::new().await);
    h.register_demo().await;
    let (_, d) = desired(&h, "tohoku", "").await;
    let rev = d["revision"].as_i64().unwrap();
    let poll = {
        let h = h.clone();
        tokio::spawn(async move { desired(&h, "tohoku", &format!("after={rev}&wait_s=30")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the poll must wait while nothing changed"
    );
    // A create at another site does not wake it.
    assert_eq!(
        h.create(h.body(&["JGAD000201"])).await.0,
        StatusCode::CREATED
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !poll.is_finished(),
        "another site's change must not wake the poll"
    );
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let (status, d) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the create must wake the poll well before wait_s")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(d["revision"].as_i64().unwrap() > rev);
    assert_eq!(d["workspaces"][0]["id"], w["id"]);

    // A poll with nothing new answers the same set after wait_s.
    let (_, again) = desired(&h, "tohoku", &format!("after={}&wait_s=1", d["revision"])).await;
    assert_eq!(again, d);
}

#[tokio::test]
async fn lifecycle_through_observations() {
    let h = Harness::new().await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let id = w["id"].as_str().unwrap();
    let (_, applied) = h
        .observe("tohoku", &[(id, "starting", None), (id, "running", None)])
        .await;
    assert_eq!(applied, json!({"applied": 2}));
    assert_eq!(h.state(id).await, "running");
    // Repeats, unknown workspaces and illegal moves are skipped, not errors.
    let (status, applied) = h
        .observe(
            "tohoku",
            &[
                (id, "running", None),
                ("ws-ghost", "running", None),
                (id, "starting", None),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        applied["applied"], 1,
        "running -> starting is allowed by the state machine"
    );
    h.observe("tohoku", &[(id, "running", None)]).await;

    let (status, del) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{id}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{del}");
    assert_eq!(del["state"], "stopping");
    let (_, d) = desired(&h, "tohoku", "").await;
    assert_eq!(
        d["workspaces"],
        json!([]),
        "a stopping workspace is no longer desired"
    );
    // Losing sight of it, or a stale `running`, does not undo the stop.
    let (_, applied) = h
        .observe("tohoku", &[(id, "unknown", None), (id, "running", None)])
        .await;
    assert_eq!(applied["applied"], 0);
    assert_eq!(h.state(id).await, "stopping");
    let (_, applied) = h.observe("tohoku", &[(id, "stopped", None)]).await;
    assert_eq!(applied["applied"], 1);
    assert_eq!(h.state(id).await, "stopped");
    // Deleting again changes nothing and answers the same way.
    let (status, del) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{id}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(del["state"], "stopped");
    let tohoku = h.site("tohoku").await;
    assert_eq!(
        tohoku["workspaces"], 0,
        "an ended workspace releases its compute"
    );
    assert_eq!(tohoku["allocated"]["cpus"], 0);
    assert_error(
        &h.call(Method::DELETE, "/v1/workspaces/ws-ghost", PLATFORM, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn failures_keep_their_message() {
    let h = Harness::new().await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000301"])).await;
    let id = w["id"].as_str().unwrap();
    h.observe(
        "bbj",
        &[(id, "failed", Some("image basho/demo is not allowed here"))],
    )
    .await;
    let (_, shown) = h.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["message"], "image basho/demo is not allowed here");
}

/// A workspace its site's scheduler preempted shows `preempted` with the site's reason, keeps
/// its compute and its place in the site's desired state, and runs again from there.
#[tokio::test]
async fn a_preempted_workspace_keeps_its_site_and_runs_again() {
    let h = Harness::new().await;
    h.register_demo().await;
    let (_, w) = h.create(h.body(&["JGAD000101"])).await;
    let id = w["id"].as_str().unwrap();
    h.observe("tohoku", &[(id, "running", None)]).await;
    let why = "Slurm requeued its job after it ran (restart 1): the site's own work preempted it";
    let (_, applied) = h.observe("tohoku", &[(id, "preempted", Some(why))]).await;
    assert_eq!(applied["applied"], 1);
    let (_, shown) = h.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(shown["state"], "preempted");
    assert_eq!(shown["message"], why);
    let (_, d) = desired(&h, "tohoku", "").await;
    assert_eq!(d["workspaces"][0]["id"], id, "the site keeps its job");
    assert_eq!(
        h.site("tohoku").await["workspaces"],
        1,
        "its compute stays held"
    );
    let (_, applied) = h.observe("tohoku", &[(id, "running", None)]).await;
    assert_eq!(applied["applied"], 1);
    assert_eq!(h.state(id).await, "running");
}

async fn wait_state(client: &reqwest::Client, base: &str, id: &str, want: &str) {
    for _ in 0..100 {
        let w: Value = client
            .get(format!("{base}/v1/workspaces/{id}"))
            .bearer_auth(PLATFORM)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if w["state"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("workspace {id} never reached {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_loops_and_shutdown() {
    let h = Harness::with(|c| c.limits.agent_silent_s = 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(h.orchestrator.clone().serve(listener, stop.clone()));
    let client = reqwest::Client::new();
    h.register_demo().await;

    // Expiry: a one-second workspace ends by itself.
    let mut body = h.body(&["JGAD000201"]);
    body["duration_s"] = json!(1);
    let (_, short) = h.create(body).await;
    let short_id = short["id"].as_str().unwrap();

    // Silence: a running workspace whose agent goes quiet becomes unknown, then comes back.
    let (_, long) = h.create(h.body(&["JGAD000101"])).await;
    let long_id = long["id"].as_str().unwrap();
    h.observe("tohoku", &[(long_id, "running", None)]).await;
    wait_state(&client, &base, short_id, "expired").await;
    wait_state(&client, &base, long_id, "unknown").await;
    h.observe("tohoku", &[(long_id, "running", None)]).await;
    assert_eq!(h.state(long_id).await, "running");

    // A waiting long-poll does not hold shutdown up.
    let poll = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let d: Value = client
                .get(format!("{base}/v1/agent/desired"))
                .bearer_auth(agent_token("bbj"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            client
                .get(format!(
                    "{base}/v1/agent/desired?after={}&wait_s=30",
                    d["revision"]
                ))
                .bearer_auth(agent_token("bbj"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let served = tokio::time::timeout(Duration::from_secs(8), server)
        .await
        .expect("serve returns promptly after cancel")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    assert_eq!(poll.await.unwrap(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_stuck_past_the_start_timeout_fail_and_release_their_compute() {
    use basho_orchestrator::expiry::time_out_once;
    let h = Harness::with(|c| c.limits.agent_silent_s = 1).await;
    for (site, dataset, timeout) in [("tohoku", "JGAD000101", 1), ("ncbn", "JGAD000201", 0)] {
        let mut reg = registration(site, &[dataset], 8, 8192);
        reg["start_timeout_s"] = json!(timeout);
        h.register_as(site, reg).await;
    }
    assert_eq!(h.site("tohoku").await["start_timeout_s"], 1);
    assert_eq!(h.site("ncbn").await["start_timeout_s"], 0);
    let id = |w: &Value| w["id"].as_str().unwrap().to_owned();
    let placed = id(&h.create(h.body(&["JGAD000101"])).await.1);
    let starting = id(&h.create(h.body(&["JGAD000101"])).await.1);
    let running = id(&h.create(h.body(&["JGAD000101"])).await.1);
    let unlimited = id(&h.create(h.body(&["JGAD000201"])).await.1);
    h.observe(
        "tohoku",
        &[(&starting, "starting", None), (&running, "running", None)],
    )
    .await;
    let started = chrono::Utc::now();
    // Within the timeout nothing moves.
    assert_eq!(time_out_once(&h.orchestrator, started).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Time before this replica began to lead (the orchestrator was down) does not count.
    assert_eq!(
        time_out_once(&h.orchestrator, chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    // A site not heard from is not judged: nobody there says the workspace is still stuck.
    assert_eq!(time_out_once(&h.orchestrator, started).await.unwrap(), 0);
    let (status, _) = desired(&h, "tohoku", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(time_out_once(&h.orchestrator, started).await.unwrap(), 2);
    for (w, was) in [(&placed, "placed"), (&starting, "starting")] {
        let (_, v) = h.get(&format!("/v1/workspaces/{w}")).await;
        assert_eq!(v["state"], "failed", "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "{was} for longer than site tohoku's start_timeout_s (1 s)"
            )),
            "{msg}"
        );
    }
    assert_eq!(h.state(&running).await, "running");
    assert_eq!(h.state(&unlimited).await, "placed");
    // Their compute is released and the agent is no longer asked to run them.
    let site = h.site("tohoku").await;
    let (_, live) = h.get(&format!("/v1/workspaces/{running}")).await;
    assert_eq!(site["workspaces"], 1, "{site}");
    assert_eq!(
        site["allocated"]["cpus"], live["resources"]["cpus"],
        "{site}"
    );
    let (_, d) = desired(&h, "tohoku", "").await;
    let wanted: Vec<&str> = d["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(wanted, vec![running.as_str()], "{d}");
    let (_, metrics) = h
        .raw(Method::GET, "/metrics", Some(PLATFORM), &[], vec![])
        .await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for state in ["placed", "starting"] {
        let line =
            format!("basho_workspaces_timed_out_total{{site=\"tohoku\",state=\"{state}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // Counted once: a second pass finds nothing left to fail.
    assert_eq!(time_out_once(&h.orchestrator, started).await.unwrap(), 0);
}
