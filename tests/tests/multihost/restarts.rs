//! Restarts: an agent killed while launching, the orchestrator killed under creates, the
//! agents' reconnect spread after the orchestrator comes back.

use super::*;

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
