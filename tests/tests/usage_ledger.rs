//! Metering on the real Docker engine.
//!
//! - Accuracy: a workspace that burns a CPU and one that sleeps, for 60 s: used CPU-seconds
//!   within 5% of the container's own cgroup counter, allocated core-seconds within 1% of
//!   cpus × the wall time the container ran.
//! - Exactly once: the orchestrator and the agent run as real processes and are killed with
//!   SIGKILL, between sampling and acknowledgement and during ingestion; afterwards the stored
//!   records are numbered 1..N without a gap, their intervals tile the workspace's life from the
//!   container's start without gap or overlap, and their allocation sums to cpus × that life.

use std::path::Path;
use std::time::{Duration, Instant};

use basho_core::usage::UsageRecord;
use basho_orchestrator::store::UsageStore;
use basho_tests::federation::{Federation, templates_dir};
use basho_tests::procs::Proc;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;

const BURN: &str = r#"name = "burn"
description = "Burns one CPU until stopped (metering tests)"
image = "basho/demo"
command = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do :; done"]
max_duration_s = 3600

[resources]
cpus = 1
memory_mib = 128
gpus = 0
"#;

/// The repository's templates plus `burn`.
fn templates(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("templates");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(templates_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(out.join("burn.toml"), BURN).unwrap();
    out
}

async fn cgroup_cpu_seconds(fed: &Federation, container: &str) -> f64 {
    use futures::StreamExt;
    let options = bollard::query_parameters::StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let s = fed
        .docker
        .stats(container, Some(options))
        .next()
        .await
        .expect("a stats sample")
        .expect("stats");
    s.cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .expect("cpu usage") as f64
        / 1e9
}

async fn started_at(fed: &Federation, container: &str) -> DateTime<Utc> {
    let c = fed.docker.inspect_container(container, None).await.unwrap();
    let t = c.state.and_then(|s| s.started_at).unwrap();
    DateTime::parse_from_rfc3339(&t)
        .unwrap()
        .with_timezone(&Utc)
}

/// Polls until the container is gone; the last time it was still seen running.
async fn last_seen_running(fed: &Federation, container: &str) -> DateTime<Utc> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Utc::now();
    loop {
        match fed.docker.inspect_container(container, None).await {
            Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => last = Utc::now(),
            Ok(_) => {}
            Err(_) => return last,
        }
        assert!(
            Instant::now() < deadline,
            "container {container} never went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn report(fed: &Federation, project: &str) -> Value {
    let (status, r) = fed
        .api
        .call(
            reqwest::Method::GET,
            &format!("/v1/projects/{project}/usage"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

fn workspace_totals<'a>(report: &'a Value, id: &str) -> &'a Value {
    &report["by_workspace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workspace"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))["totals"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_metering_matches_the_cgroup_and_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let templates = templates(dir.path());
    let Some(fed) = Federation::start_custom(
        |_, site| site.metering.interval_s = 5,
        |orch| orch.templates_dir = templates,
    )
    .await
    else {
        return;
    };
    let mut ids = Vec::new();
    for template in ["burn", "shell"] {
        let mut body = fed.create_body("P-METER", "alice", &["JGAD000101"]);
        body["template"] = template.into();
        body["resources"] = serde_json::json!({"cpus": 1, "memory_mib": 128, "gpus": 0});
        let ws = fed.create_and_wait(&body).await;
        ids.push(ws["id"].as_str().unwrap().to_owned());
    }
    let containers: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            let cs = fed.containers(id).await;
            assert_eq!(cs.len(), 1);
            v.push(cs[0].clone());
        }
        v
    };
    tokio::time::sleep(Duration::from_secs(60)).await;

    for (id, container) in ids.iter().zip(&containers) {
        let start = started_at(&fed, container).await;
        let cgroup = cgroup_cpu_seconds(&fed, container).await;
        let (status, _) = fed.api.delete(id).await;
        assert!(status.is_success());
        let end = last_seen_running(&fed, container).await;
        fed.api
            .wait_state(id, "stopped", Duration::from_secs(60))
            .await;
        // The final sample is delivered within an interval.
        let wall = (end - start).num_milliseconds() as f64 / 1000.0;
        let totals = basho_tests::wait_for(
            "the final usage record",
            Duration::from_secs(30),
            || async {
                let r = report(&fed, "P-METER").await;
                let t = workspace_totals(&r, id).clone();
                (t["allocated_core_seconds"].as_f64()? >= 0.98 * wall).then_some(t)
            },
        )
        .await;
        let used = totals["used_cpu_seconds"].as_f64().unwrap();
        let allocated = totals["allocated_core_seconds"].as_f64().unwrap();
        eprintln!(
            "{id}: used {used:.3} s (cgroup {cgroup:.3} s), allocated {allocated:.3} core-s \
             over {wall:.3} s of wall time"
        );
        assert!(
            (used - cgroup).abs() <= 0.05 * cgroup + 0.05,
            "used {used} vs cgroup {cgroup}"
        );
        assert!(
            (allocated - wall).abs() <= 0.01 * wall,
            "allocated {allocated} vs 1 cpu x {wall} s"
        );
    }
    let r = report(&fed, "P-METER").await;
    let burn = workspace_totals(&r, &ids[0])["used_cpu_seconds"]
        .as_f64()
        .unwrap();
    let sleep = workspace_totals(&r, &ids[1])["used_cpu_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        burn > 20.0 && sleep < 2.0,
        "burner {burn} s, sleeper {sleep} s"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_is_exactly_once_across_killed_agents_and_orchestrators() {
    // The federation provides configs, an issuer and the engine; its in-process orchestrator
    // and agents are stopped, and real processes run from the same configs instead.
    let Some(mut fed) = Federation::start_with(|_, site| site.metering.interval_s = 1).await else {
        return;
    };
    for name in ["tohoku", "ncbn", "bbj"] {
        fed.stop_agent(name).await;
    }
    fed.stop_orchestrator().await;
    let dir = fed.dir.path().to_owned();
    let orch_toml = dir.join("orchestrator.toml");
    std::fs::write(&orch_toml, toml::to_string(fed.config()).unwrap()).unwrap();
    let site_toml = dir.join("tohoku.toml");
    std::fs::write(
        &site_toml,
        toml::to_string(&fed.site_config("tohoku")).unwrap(),
    )
    .unwrap();
    let log = dir.join("processes.log");
    let orch = |_: ()| Proc::start("basho-orchestrator", &orch_toml, &log);
    let agent = |_: ()| Proc::start("basho-agent", &site_toml, &log);

    let listen = fed.config().listen;
    let up = || async move {
        basho_tests::wait_for(
            "the orchestrator process listens",
            Duration::from_secs(30),
            || async { tokio::net::TcpStream::connect(listen).await.ok().map(drop) },
        )
        .await
    };
    let mut o = orch(());
    up().await;
    let mut a = agent(());
    fed.wait_registered("tohoku").await;
    let mut body = fed.create_body("P-ONCE", "alice", &["JGAD000101"]);
    body["resources"] = serde_json::json!({"cpus": 2, "memory_mib": 128, "gpus": 0});
    let ws = fed.create_and_wait(&body).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let container = fed.containers(&id).await.remove(0);
    let start = started_at(&fed, &container).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The orchestrator dies: the agent keeps sampling into its journal, unacknowledged...
    o.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // ...then the agent dies with those records sampled but not acknowledged.
    a.kill();
    o = orch(());
    tokio::time::sleep(Duration::from_secs(1)).await;
    a = agent(());
    // Records flow again; kill each side a few more times at staggered moments, during
    // deliveries (one a second).
    for pause_ms in [700u64, 1300, 450, 1900] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        o.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        o = orch(());
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        a.kill();
        a = agent(());
    }
    up().await;
    fed.wait_registered("tohoku").await;
    let (status, _) = fed.api.delete(&id).await;
    assert!(status.is_success());
    let end = last_seen_running(&fed, &container).await;
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    // Everything journalled is delivered once the agent's journal has nothing pending.
    let journal = dir
        .join("sites")
        .join(fed.site("tohoku"))
        .join("state")
        .join(basho_agent::meter::journal::FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let pending = basho_tests::pending_records(&text);
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} records still pending in the journal"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.kill();
    o.kill();

    let store = basho_orchestrator::store::SqliteStore::open(None, &fed.config().data_dir)
        .await
        .unwrap();
    let project = basho_core::Ident::parse("P-ONCE").unwrap();
    let rows = store
        .usage_of(
            &project,
            DateTime::UNIX_EPOCH,
            Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap();
    let mut records: Vec<UsageRecord> = rows.into_iter().map(|r| r.record).collect();
    records.sort_by_key(|r| r.seq);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let n = seqs.len() as u64;
    assert!(n >= 10, "at least ten records over the run: {seqs:?}");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "numbered without a gap");
    records.sort_by_key(|r| r.from);
    assert!(
        (records[0].from - start).num_milliseconds().abs() <= 1,
        "metering starts at the container's start: {} vs {start}",
        records[0].from
    );
    for w in records.windows(2) {
        assert_eq!(
            w[1].from, w[0].to,
            "intervals tile the life without gap or overlap: {:?} then {:?}",
            w[0], w[1]
        );
    }
    let last = records.last().unwrap().to;
    let life = (last - records[0].from).num_milliseconds() as f64 / 1000.0;
    let allocated: f64 = records.iter().map(|r| r.allocated_core_seconds).sum();
    assert!(
        (allocated - 2.0 * life).abs() < 0.01,
        "allocated {allocated} core-s for 2 cpus over {life} s"
    );
    let tail = (end - last).num_milliseconds();
    assert!(
        (0..2_000).contains(&tail),
        "the last record ends just before the container stopped ({tail} ms before)"
    );
    eprintln!(
        "{n} records over {life:.1} s, {allocated:.3} core-s; the last ends {tail} ms before the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_refuses_warns_at_80_percent_and_stops_at_100() {
    let Some(fed) = Federation::start_custom(
        |_, site| site.metering.interval_s = 1,
        |orch| orch.limits.quota_grace_s = 2,
    )
    .await
    else {
        return;
    };
    let quota = |core_hours: f64| {
        let fed = &fed;
        async move {
            let (status, q) = fed
                .api
                .call(
                    reqwest::Method::PUT,
                    "/v1/projects/P-QUOTA/quota",
                    Some(&serde_json::json!({"core_hours": core_hours})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{q}");
        }
    };
    quota(1.0).await;
    let mut body = fed.create_body("P-QUOTA", "alice", &["JGAD000101"]);
    body["duration_s"] = 600.into();
    body["resources"] = serde_json::json!({"cpus": 1, "memory_mib": 128, "gpus": 0});
    let ws = fed.create_and_wait(&body).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    // The budget is cut below what the running workspace will use: 14.4 core-seconds.
    quota(0.004).await;
    let mut again = fed.create_body("P-QUOTA", "alice", &["JGAD000101"]);
    again["duration_s"] = 60.into();
    let (status, refused) = fed.api.create(&again).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["code"], "quota_exceeded");

    let stopped = fed
        .api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    let message = stopped["message"].as_str().unwrap_or_default();
    assert!(message.contains("quota exhausted"), "{stopped}");

    let store = basho_orchestrator::store::SqliteStore::open(None, &fed.config().data_dir)
        .await
        .unwrap();
    let audit = basho_orchestrator::store::AuditStore::audit_page(&store, 0, 1000)
        .await
        .unwrap();
    let seq_of = |action: &str, target: &str| {
        audit
            .iter()
            .find(|e| e.action == action && e.target == target)
            .map(|e| e.seq)
            .unwrap_or_else(|| panic!("no {action} for {target} in the audit log"))
    };
    let warned = seq_of("quota_warning", &id);
    let exhausted = seq_of("quota_exhausted", "P-QUOTA");
    assert!(warned < exhausted, "the warning comes first");
    let r = report(&fed, "P-QUOTA").await;
    let used = r["totals"]["allocated_core_seconds"].as_f64().unwrap();
    assert!(
        used >= 14.4,
        "stopped only once the budget was used: {used} core-s"
    );
    fed.shutdown().await;
}
