//! The orchestrator's disk full.

use super::*;

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
