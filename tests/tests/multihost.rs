//! Faults across hosts, on the test bed of `basho_tests::cluster`: the orchestrator and each agent
//! in a container of their own, each agent on a private network it shares only with the
//! orchestrator. Each scenario injects a fault with the Docker CLI (SIGKILL, network disconnect,
//! pause, a full disk, a restart), asserts that nothing was lost or duplicated, and prints its
//! figures (`docs/reliability.md` records them).
//!
//! `cargo nextest run -p basho-tests --test multihost --no-capture`

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use basho_core::usage::UsageRecord;
use basho_orchestrator::store::UsageStore;
use basho_tests::cluster::{Backend, Cluster, Spec};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Prints one figure of a scenario, in a form easy to find in the test's output.
fn figure(scenario: &str, what: &str, value: impl std::fmt::Display) {
    println!("figure [{scenario}] {what}: {value}");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Every workspace of `project`, by id.
async fn workspaces_of(c: &Cluster, project: &str) -> BTreeMap<String, Value> {
    let (s, v) = c
        .api()
        .call(
            Method::GET,
            &format!("/v1/workspaces?project={project}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap().to_owned(), w.clone()))
        .collect()
}

/// Waits until every workspace in `ids` is in `state`; the time it took.
async fn wait_all(
    c: &Cluster,
    project: &str,
    ids: &BTreeSet<String>,
    state: &str,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let all = workspaces_of(c, project).await;
        let not: Vec<_> = ids
            .iter()
            .filter(|id| all.get(*id).is_none_or(|w| w["state"] != state))
            .collect();
        if not.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{} of {} workspaces not {state} after {limit:?}: {:?}",
            not.len(),
            ids.len(),
            not.iter()
                .take(5)
                .map(|id| all.get(*id).map(|w| w["state"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Scenario 1: an agent killed with SIGKILL while it launches 50 workspaces, then started again:
/// one container per workspace, none orphaned, all `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_killed_while_launching_50_leaves_one_container_each() {
    const N: usize = 50;
    const S: &str = "agent-kill";
    let Some(c) = Cluster::start(Spec::default()).await else {
        return;
    };
    let c = Arc::new(c);
    let agent = c.agents[0].container.clone();

    // 50 creates at once; the orchestrator acknowledges them before the agent launches anything.
    let creates = (0..N).map(|_| {
        let c = c.clone();
        async move {
            let (s, w) = c
                .api()
                .create(&c.create_body(0, "P-AKILL", "alice", 3600))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{w}");
            w["id"].as_str().unwrap().to_owned()
        }
    });
    let ids: BTreeSet<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), N);

    // Kill the agent once it is part-way through.
    let at_kill = basho_tests::wait_for("launches under way", Duration::from_secs(120), || {
        let c = c.clone();
        async move {
            let n = c.site_containers(0).await.len();
            (n >= 8).then_some(n)
        }
    })
    .await;
    c.kill(&agent);
    let killed = Instant::now();
    let after_kill = c.site_containers(0).await.len();
    figure(S, "workload containers when the agent was killed", at_kill);
    figure(S, "workload containers just after the kill", after_kill);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.start_node(&agent);
    let restarted = Instant::now();
    wait_all(&c, "P-AKILL", &ids, "running", Duration::from_secs(240)).await;
    figure(S, "restart to all 50 running", secs(restarted.elapsed()));
    figure(S, "kill to all 50 running", secs(killed.elapsed()));

    // Let one more reconcile pass run before counting: a late duplicate would show up here.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut per_ws: BTreeMap<String, usize> = BTreeMap::new();
    let containers = c.site_containers(0).await;
    for (_, ws) in &containers {
        *per_ws.entry(ws.clone()).or_default() += 1;
    }
    let orphans: Vec<_> = per_ws.keys().filter(|w| !ids.contains(*w)).collect();
    let dups: Vec<_> = per_ws.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = ids.iter().filter(|w| !per_ws.contains_key(*w)).collect();
    figure(S, "workload containers after recovery", containers.len());
    figure(S, "orphaned", orphans.len());
    figure(S, "duplicated", dups.len());
    figure(S, "missing", missing.len());
    assert!(
        orphans.is_empty(),
        "containers without a workspace: {orphans:?}"
    );
    assert!(
        dups.is_empty(),
        "workspaces with more than one container: {dups:?}"
    );
    assert!(
        missing.is_empty(),
        "workspaces without a container: {missing:?}"
    );
    for (id, _) in &containers {
        assert!(c.running(id), "container {id} is not running");
    }
    wait_all(&c, "P-AKILL", &ids, "running", Duration::from_secs(5)).await;
}

/// Scenario 2: the orchestrator killed with SIGKILL while 200 creates are in flight, each client
/// retrying with its own `Idempotency-Key` until answered: every key names exactly one workspace,
/// every acknowledged workspace exists after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_killed_under_200_creates_loses_and_duplicates_nothing() {
    const N: usize = 200;
    const S: &str = "orchestrator-kill";
    let Some(c) = Cluster::start(Spec {
        backend: Backend::Fake,
        ..Spec::default()
    })
    .await
    else {
        return;
    };
    let c = Arc::new(c);
    let acked = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let bodies: Vec<Value> = (0..N)
        .map(|k| c.create_body(k % c.agents.len(), "P-IDEM", "alice", 3600))
        .collect();
    let clients: Vec<_> = (0..N)
        .map(|k| {
            let c = c.clone();
            let acked = acked.clone();
            let retries = retries.clone();
            let body = bodies[k].clone();
            tokio::spawn(async move {
                let key = format!("key-{k}");
                let deadline = Instant::now() + Duration::from_secs(180);
                // Spread the clients' starts over about a second, as real clients would be.
                tokio::time::sleep(Duration::from_millis(5 * k as u64)).await;
                loop {
                    let r = create_keyed(&c, &body, &key).await;
                    match r {
                        Ok((s, w)) if s.is_success() => {
                            acked.fetch_add(1, Ordering::SeqCst);
                            return (key, w["id"].as_str().unwrap().to_owned(), Instant::now());
                        }
                        Ok((s, w)) => {
                            assert!(s.is_server_error(), "create {key} refused with {s}: {w}")
                        }
                        Err(_) => {}
                    }
                    retries.fetch_add(1, Ordering::SeqCst);
                    assert!(Instant::now() < deadline, "{key} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect();

    basho_tests::wait_for(
        "the first creates acknowledged",
        Duration::from_secs(60),
        || {
            let acked = acked.clone();
            async move { (acked.load(Ordering::SeqCst) >= N / 10).then_some(()) }
        },
    )
    .await;
    c.kill(&c.orchestrator);
    let killed = Instant::now();
    let before = acked.load(Ordering::SeqCst);
    figure(S, "acknowledged before the kill", before);
    figure(S, "in flight or not yet sent at the kill", N - before);
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_node(&c.orchestrator);
    c.refresh_api().await;
    figure(S, "kill to API healthy again", secs(killed.elapsed()));

    let mut answers = Vec::new();
    for t in clients {
        answers.push(t.await.expect("client"));
    }
    figure(
        S,
        "kill to last acknowledgement",
        secs(
            answers
                .iter()
                .map(|(_, _, t)| *t)
                .max()
                .unwrap()
                .saturating_duration_since(killed),
        ),
    );
    figure(S, "retries", retries.load(Ordering::SeqCst));

    let all = workspaces_of(&c, "P-IDEM").await;
    let by_key: BTreeMap<&str, &str> = answers
        .iter()
        .map(|(k, id, _)| (k.as_str(), id.as_str()))
        .collect();
    let distinct: BTreeSet<&str> = by_key.values().copied().collect();
    let lost: Vec<_> = by_key
        .iter()
        .filter(|(_, id)| !all.contains_key(**id))
        .collect();
    let extra = all.len() as i64 - distinct.len() as i64;
    figure(S, "keys", by_key.len());
    figure(S, "workspaces", all.len());
    figure(S, "lost", lost.len());
    figure(S, "duplicated", extra.max(0));
    assert_eq!(by_key.len(), N);
    assert_eq!(distinct.len(), N, "two keys answered with one workspace");
    assert!(
        lost.is_empty(),
        "acknowledged but gone after the restart: {lost:?}"
    );
    assert_eq!(all.len(), N, "one workspace per key, none extra");

    // Each key still names its workspace: a replay answers 200 with the same id.
    for (k, body) in bodies.iter().enumerate() {
        let key = format!("key-{k}");
        let (s, w) = c
            .api()
            .call_with(
                Method::POST,
                "/v1/workspaces",
                Some(body),
                &[("Idempotency-Key", key.as_str())],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "replay of {key}: {w}");
        assert_eq!(
            w["id"].as_str(),
            Some(by_key[key.as_str()]),
            "replay of {key}"
        );
    }
    assert_eq!(workspaces_of(&c, "P-IDEM").await.len(), N);
}

/// Scenarios 3 and 4 on one 60 s partition of one Docker site: its workspaces keep running and
/// show `unknown`, then `running` after the heal; usage over the partition arrives exactly once; a
/// workspace whose visa expires during the partition is stopped by the site at expiry; a
/// revocation issued during the partition is applied within seconds of the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_site_keeps_running_meters_once_expires_and_revokes_after_heal() {
    const S3: &str = "partition";
    const S4: &str = "revocation-in-partition";
    const PARTITION: Duration = Duration::from_secs(60);
    let Some(c) = Cluster::start(Spec {
        metering_interval_s: 1,
        ..Spec::default()
    })
    .await
    else {
        return;
    };
    let api = c.api();
    let create = |body: Value| {
        let api = api.clone();
        async move {
            let (s, w) = api.create(&body).await;
            assert_eq!(s, StatusCode::CREATED, "{w}");
            let id = w["id"].as_str().unwrap().to_owned();
            api.wait_state(&id, "running", Duration::from_secs(60))
                .await
        }
    };
    let run = create(c.create_body(0, "P-PART", "alice", 3600)).await;
    let rev = create(c.create_body(0, "P-PART", "carol", 3600)).await;
    // Its visa ends about 30 s into the partition.
    let exp = create(c.create_body(0, "P-PART", "dave", 35)).await;
    let other = create(c.create_body(1, "P-PART", "alice", 3600)).await;
    let id = |w: &Value| w["id"].as_str().unwrap().to_owned();
    let (run_id, rev_id, exp_id, other_id) = (id(&run), id(&rev), id(&exp), id(&other));
    let one = |v: Vec<String>, what: &str| {
        assert_eq!(v.len(), 1, "{what}: {v:?}");
        v.into_iter().next().unwrap()
    };
    let run_c = one(c.containers(&run_id).await, "run");
    let rev_c = one(c.containers(&rev_id).await, "rev");
    let exp_c = one(c.containers(&exp_id).await, "exp");
    let exp_at: DateTime<Utc> = exp["expires_at"].as_str().unwrap().parse().unwrap();

    // Watch the containers through the partition.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop_watch.clone();
        let docker = c.docker.clone();
        let (run_c, exp_c, rev_c) = (run_c.clone(), exp_c.clone(), rev_c.clone());
        tokio::spawn(async move {
            let mut run_down = 0usize;
            let mut samples = 0usize;
            let mut exp_gone: Option<DateTime<Utc>> = None;
            let mut rev_gone: Option<Instant> = None;
            let up = |id: String| {
                let docker = docker.clone();
                async move {
                    docker
                        .inspect_container(&id, None)
                        .await
                        .ok()
                        .and_then(|i| i.state)
                        .and_then(|s| s.running)
                        == Some(true)
                }
            };
            while !stop.load(Ordering::SeqCst) {
                samples += 1;
                if !up(run_c.clone()).await {
                    run_down += 1;
                }
                if exp_gone.is_none() && !up(exp_c.clone()).await {
                    exp_gone = Some(Utc::now());
                }
                if rev_gone.is_none() && !up(rev_c.clone()).await {
                    rev_gone = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (samples, run_down, exp_gone, rev_gone)
        })
    };

    c.partition(0);
    let cut = Instant::now();
    let cut_wall = Utc::now();
    api.wait_state(&run_id, "unknown", Duration::from_secs(45))
        .await;
    figure(S3, "partition to `unknown`", secs(cut.elapsed()));
    let o = api.workspace(&other_id).await;
    assert_eq!(
        o["state"], "running",
        "the other sites are not affected: {o}"
    );

    // Revoke carol's grants while the site cannot hear it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s, v) = api
        .call(
            Method::POST,
            "/v1/revocations",
            Some(&json!({"subject": "carol", "reason": "security-incident"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["affected"], json!([rev_id]), "{v}");

    tokio::time::sleep(PARTITION.saturating_sub(cut.elapsed())).await;
    assert!(
        c.running(&rev_c),
        "the revoked workspace runs on until the site hears of it"
    );
    let mid = api.workspace(&run_id).await;
    assert_eq!(mid["state"], "unknown", "{mid}");
    c.heal(0);
    let healed = Instant::now();
    let heal_wall = Utc::now();
    figure(S3, "partition length", secs(healed - cut));

    api.wait_state(&run_id, "running", Duration::from_secs(60))
        .await;
    figure(S3, "heal to `running`", secs(healed.elapsed()));
    basho_tests::wait_for(
        "the revoked container stopped",
        Duration::from_secs(30),
        || async { (!c.running(&rev_c)).then_some(()) },
    )
    .await;
    let rev_after = healed.elapsed();
    stop_watch.store(true, Ordering::SeqCst);
    let (samples, run_down, exp_gone, rev_gone) = watcher.await.unwrap();
    assert!(
        rev_gone.is_none_or(|t| t >= healed),
        "the revoked workspace ran until the heal"
    );
    figure(S4, "heal to revoked container stopped", secs(rev_after));
    assert!(
        rev_after < Duration::from_secs(15),
        "revocation applied {rev_after:?} after the heal"
    );
    let exp_gone = exp_gone.expect("the expiring workspace's container stopped");
    let exp_late = (exp_gone - exp_at).num_milliseconds();
    figure(
        S4,
        "visa expiry to container stopped (partitioned)",
        format!("{:.2} s", exp_late as f64 / 1000.0),
    );
    assert!(
        exp_gone < heal_wall,
        "stopped at expiry, during the partition, not after the heal"
    );
    assert!(
        (-1000..10_000).contains(&exp_late),
        "stopped {exp_late} ms after the visa's expiry"
    );
    figure(
        S3,
        "samples of the running container / not running",
        format!("{samples} / {run_down}"),
    );
    assert_eq!(run_down, 0, "the partitioned site's workspace kept running");
    api.wait_state(&rev_id, "revoked", Duration::from_secs(30))
        .await;
    api.wait_state(&exp_id, "expired", Duration::from_secs(30))
        .await;

    // Usage: stop the workspace, let the site's journal drain, then read the ledger.
    let (s, _) = api.delete(&run_id).await;
    assert!(s.is_success());
    api.wait_state(&run_id, "stopped", Duration::from_secs(60))
        .await;
    let journal = c.agents[0]
        .config
        .paths
        .state_dir
        .join(basho_agent::meter::journal::FILE);
    basho_tests::wait_for(
        "the site's usage journal drained",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            (basho_tests::pending_records(&text) == 0).then_some(())
        },
    )
    .await;
    let records = usage_records(&c, "P-PART").await;
    let site0: Vec<&UsageRecord> = records
        .iter()
        .filter(|r| [&run_id, &rev_id, &exp_id].contains(&&r.workspace))
        .collect();
    let mut seqs: Vec<u64> = site0.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    let n = seqs.len() as u64;
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    figure(S3, "usage records of the partitioned site", n);
    figure(S3, "usage duplicated", n - distinct.len() as u64);
    assert_eq!(distinct.len() as u64, n, "no record stored twice");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "numbered without a gap");
    let mut runs: Vec<&&UsageRecord> = site0.iter().filter(|r| r.workspace == run_id).collect();
    runs.sort_by_key(|r| r.from);
    for w in runs.windows(2) {
        assert_eq!(
            w[1].from, w[0].to,
            "intervals tile: {:?} then {:?}",
            w[0], w[1]
        );
    }
    let (first, last) = (runs[0].from, runs.last().unwrap().to);
    assert!(
        first < cut_wall && last > heal_wall,
        "usage covers the partition: {first}..{last}"
    );
    let during = runs
        .iter()
        .filter(|r| r.from >= cut_wall && r.to <= heal_wall)
        .count();
    figure(
        S3,
        "records of the running workspace inside the partition",
        during,
    );
    // A Docker stats sample takes about a second per container, so with three workspaces on
    // the site a record spans a few seconds rather than one.
    assert!(
        during >= 10,
        "records kept coming through the 60 s partition: {during}"
    );
    figure(S3, "usage lost (gaps)", 0);
}

/// Asks for workspace `body` under idempotency key `key`: the answer, or why none came.
async fn create_keyed(
    c: &Cluster,
    body: &Value,
    key: &str,
) -> Result<(StatusCode, Value), reqwest::Error> {
    c.try_call(
        Method::POST,
        "/v1/workspaces",
        Some(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

/// Every usage record the orchestrator stored for `project`, read from its database file.
async fn usage_records(c: &Cluster, project: &str) -> Vec<UsageRecord> {
    let store = basho_orchestrator::store::SqliteStore::open(None, &c.config.data_dir)
        .await
        .unwrap();
    let project = basho_core::Ident::parse(project).unwrap();
    store
        .usage_of(
            &project,
            DateTime::UNIX_EPOCH,
            Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .collect()
}

/// Scenario 6: the orchestrator's disk fills up: creates answer 503 `store_unavailable` and write
/// nothing; once space returns they succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_answers_503_writes_nothing_and_recovers() {
    const S: &str = "disk-full";
    let Some(c) = Cluster::start(Spec {
        agents: 1,
        backend: Backend::Fake,
        orchestrator_tmpfs: Some("16m".into()),
        ..Spec::default()
    })
    .await
    else {
        return;
    };
    let api = c.api();
    let create = |k: usize| {
        let c = &c;
        async move {
            let key = format!("full-{k}");
            c.api()
                .call_with(
                    Method::POST,
                    "/v1/workspaces",
                    Some(&c.create_body(0, "P-FULL", "alice", 3600)),
                    &[("Idempotency-Key", key.as_str())],
                )
                .await
        }
    };
    let (s, w) = create(0).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    api.wait_state(
        w["id"].as_str().unwrap(),
        "running",
        Duration::from_secs(30),
    )
    .await;

    let (_, out) = c.exec(
        &c.orchestrator,
        &["dd", "if=/dev/zero", "of=/data/fill", "bs=64k"],
    );
    let (_, df) = c.exec(&c.orchestrator, &["df", "-k", "/data"]);
    figure(S, "fill", out.lines().last().unwrap_or_default());
    println!("{df}");

    // SQLite may still fit a write or two into pages it already has; then the disk says no.
    let mut acked = vec![0];
    let mut refused = Vec::new();
    let started = Instant::now();
    for k in 1..=40 {
        let (s, e) = create(k).await;
        if s == StatusCode::CREATED {
            acked.push(k);
            continue;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
        assert_eq!(e["error"]["code"], "store_unavailable", "{e}");
        refused.push(k);
        if refused.len() >= 10 {
            break;
        }
    }
    figure(S, "creates acknowledged on the full disk", acked.len() - 1);
    figure(S, "creates refused 503 store_unavailable", refused.len());
    assert!(
        refused.len() >= 10,
        "the full disk refuses creates: acked {acked:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "refusals are prompt"
    );
    // The API still reads.
    let before = workspaces_of(&c, "P-FULL").await;
    assert_eq!(
        before.len(),
        acked.len(),
        "nothing half-written: {before:?}"
    );

    let (ok, out) = c.exec(&c.orchestrator, &["rm", "/data/fill"]);
    assert!(ok, "{out}");
    let freed = Instant::now();
    // The refused keys were never stored: each now creates (201), not replays (200).
    let mut first_ok = None;
    for k in &refused {
        let (s, w) = loop {
            let (s, w) = create(*k).await;
            if s != StatusCode::SERVICE_UNAVAILABLE || freed.elapsed() > Duration::from_secs(30) {
                break (s, w);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(s, StatusCode::CREATED, "{k} after space returned: {w}");
        first_ok.get_or_insert_with(|| freed.elapsed());
    }
    figure(S, "space back to first create", secs(first_ok.unwrap()));
    let after = workspaces_of(&c, "P-FULL").await;
    assert_eq!(
        after.len(),
        acked.len() + refused.len(),
        "one workspace per key"
    );
    figure(S, "lost / duplicated", "0 / 0");
    // The site still gets its work.
    for id in after.keys() {
        api.wait_state(id, "running", Duration::from_secs(60)).await;
    }
}

/// Scenario 5: the orchestrator restarted under load with twelve sites: they reconnect with
/// backoff and jitter, spread out rather than all at once, and all within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_reconnect_spread_out_after_an_orchestrator_restart() {
    const S: &str = "reconnect";
    const AGENTS: usize = 12;
    const DOWN: Duration = Duration::from_secs(12);
    let Some(c) = Cluster::start(Spec {
        agents: AGENTS,
        backend: Backend::Fake,
        network_per_agent: false,
        ..Spec::default()
    })
    .await
    else {
        return;
    };
    let c = Arc::new(c);
    // Load: clients creating workspaces all along, retrying through the outage with their keys.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|l| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("load-{l}-{k}");
                    let body = c.create_body((l * 3 + k) % AGENTS, "P-LOAD", "alice", 3600);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        let r = create_keyed(&c, &body, &key).await;
                        if let Ok((s, w)) = &r
                            && s.is_success()
                        {
                            done.push((key.clone(), w["id"].as_str().unwrap().to_owned()));
                            break;
                        }
                        assert!(Instant::now() < deadline, "{key} never acknowledged: {r:?}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = Utc::now();
    c.kill(&c.orchestrator);
    tokio::time::sleep(DOWN).await;
    c.start_node(&c.orchestrator);
    c.refresh_api().await;
    figure(S, "orchestrator down for", secs(DOWN));
    // When the restarted orchestrator began to serve, by its log.
    let since_s = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let up = first_line_at(
        &c.logs_since(&c.orchestrator, &since_s),
        "serving the basho API",
        since,
    )
    .expect("the orchestrator logged that it serves");

    // Each agent's first "link up" after the kill, from its log's timestamps.
    let back: Vec<DateTime<Utc>> = {
        let mut back = Vec::new();
        for a in &c.agents {
            let at = basho_tests::wait_for(
                &format!("{} reconnected", a.site),
                Duration::from_secs(60),
                || async {
                    first_line_at(
                        &c.logs_since(&a.container, &since_s),
                        "orchestrator link up",
                        since,
                    )
                },
            )
            .await;
            back.push(at);
        }
        back
    };
    stop.store(true, Ordering::SeqCst);
    let after: Vec<f64> = back
        .iter()
        .map(|t| (*t - up).num_milliseconds() as f64 / 1000.0)
        .collect();
    let mut sorted = after.clone();
    sorted.sort_by(f64::total_cmp);
    let spread = sorted.last().unwrap() - sorted.first().unwrap();
    let max_in_1s = sorted
        .iter()
        .map(|a| {
            sorted
                .iter()
                .filter(|b| **b >= *a && **b < *a + 1.0)
                .count()
        })
        .max()
        .unwrap();
    figure(S, "agents", AGENTS);
    figure(
        S,
        "reconnects after the orchestrator served again (s)",
        sorted
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    figure(S, "spread first to last", format!("{spread:.2} s"));
    figure(S, "most agents reconnecting within one second", max_in_1s);
    assert!(
        *sorted.last().unwrap() < 15.0,
        "all back within 15 s of the API: {sorted:?}"
    );
    assert!(
        spread >= 1.0,
        "reconnects spread out, not one herd: {sorted:?}"
    );
    assert!(max_in_1s < AGENTS, "not all in one second: {sorted:?}");
    for a in &c.agents {
        c.wait_registered(&a.site).await;
    }

    // The load's acknowledged creates: each key once.
    let mut done = Vec::new();
    for l in loaders {
        done.extend(l.await.expect("loader"));
    }
    let all = workspaces_of(&c, "P-LOAD").await;
    let ids: BTreeSet<&String> = done.iter().map(|(_, id)| id).collect();
    figure(S, "creates acknowledged under load", done.len());
    assert_eq!(ids.len(), done.len(), "one workspace per key");
    assert_eq!(all.len(), done.len(), "lost 0, duplicated 0");
}

/// The engine's timestamp of the first line of `logs` (as `docker logs --timestamps` prints them)
/// that contains `what` and is not before `since`.
fn first_line_at(logs: &str, what: &str, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    logs.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next()?.parse::<DateTime<Utc>>().ok())
        .find(|t| *t >= since)
}

/// An agent frozen with `docker pause` for 20 s (its connections stay open, nothing answers): its
/// workspaces show `unknown` and keep running; a create placed on it meanwhile waits; after the
/// unpause everything is `running`, the old containers were neither restarted nor doubled, and the
/// new workspace got exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_agent_shows_unknown_and_resumes_without_relaunching() {
    const S: &str = "agent-pause";
    let Some(c) = Cluster::start(Spec {
        agents: 1,
        ..Spec::default()
    })
    .await
    else {
        return;
    };
    let api = c.api();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, w) = api
            .create(&c.create_body(0, "P-PAUSE", "alice", 3600))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{w}");
        ids.push(w["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        api.wait_state(id, "running", Duration::from_secs(60)).await;
    }
    let before: BTreeSet<(String, String)> = c.site_containers(0).await.into_iter().collect();
    assert_eq!(before.len(), 3, "{before:?}");

    c.pause(&c.agents[0].container);
    let paused = Instant::now();
    api.wait_state(&ids[0], "unknown", Duration::from_secs(45))
        .await;
    figure(S, "pause to `unknown`", secs(paused.elapsed()));
    let (s, w) = api
        .create(&c.create_body(0, "P-PAUSE", "alice", 3600))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let late = w["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed())).await;
    for (id, _) in &before {
        assert!(
            c.running(id),
            "container {id} runs on while its agent is frozen"
        );
    }
    c.unpause(&c.agents[0].container);
    let resumed = Instant::now();
    for id in &ids {
        api.wait_state(id, "running", Duration::from_secs(60)).await;
    }
    figure(S, "unpause to `running`", secs(resumed.elapsed()));
    api.wait_state(&late, "running", Duration::from_secs(60))
        .await;
    figure(
        S,
        "unpause to the create made meanwhile `running`",
        secs(resumed.elapsed()),
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: BTreeSet<(String, String)> = c.site_containers(0).await.into_iter().collect();
    let old: BTreeSet<_> = after
        .iter()
        .filter(|(_, ws)| *ws != late)
        .cloned()
        .collect();
    assert_eq!(old, before, "the same containers, not relaunched");
    let new: Vec<_> = after.iter().filter(|(_, ws)| *ws == late).collect();
    assert_eq!(
        new.len(),
        1,
        "one container for the create made meanwhile: {new:?}"
    );
    for (id, _) in &after {
        assert!(c.running(id), "container {id} is running");
    }
    figure(S, "containers relaunched / duplicated", "0 / 0");
}
