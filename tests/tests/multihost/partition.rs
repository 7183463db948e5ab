//! A site cut off from the orchestrator (with an expiry and a revocation inside the partition),
//! and a site frozen.

use super::*;

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
