//! Consent withdrawal at a site on the real Docker engine: a withdrawal recorded at the site
//! (as `basho-agent withdraw` records it) is applied by the running agent, which makes the
//! dataset's next release without the participant's row; a workspace created afterwards mounts
//! that release, and the one running before is moved to it within seconds, its `/work` kept.

use std::time::Duration;

use basho_tests::federation::Federation;

/// The host directory mounted at `/data/<dataset>` in workspace `id`'s container.
async fn data_mount(fed: &Federation, id: &str, dataset: &str) -> std::path::PathBuf {
    let containers = fed.containers(id).await;
    let c = fed
        .docker
        .inspect_container(&containers[0], None)
        .await
        .unwrap();
    let target = format!("/data/{dataset}");
    let m = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(target.as_str()))
        .unwrap_or_else(|| panic!("no mount at {target}"));
    std::path::PathBuf::from(m.source.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_makes_the_release_new_workspaces_mount() {
    let Some(fed) = Federation::start().await else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    const D: &str = "JGAD000201";
    let before = fed.create_running("P-CONSENT", &[D]).await;
    let before = before["id"].as_str().unwrap().to_owned();
    let original = data_mount(&fed, &before, D).await;
    let work = fed.site_config("ncbn").paths.work_root.join(&before);
    std::fs::write(work.join("notes.txt"), "kept across the move\n").unwrap();
    let gone = format!("{D}-3");
    assert!(
        std::fs::read_to_string(original.join("records.csv"))
            .unwrap()
            .contains(&gone)
    );

    let config = fed.site_config("ncbn");
    let answer = fed.withdraw("ncbn", D, &[&gone]).await;
    assert_eq!(answer.error, None, "{answer:?}");
    let made = answer.made.clone().unwrap();
    assert_eq!(
        (made.release, made.removed, made.rows),
        (2, 1, 4),
        "{answer:?}"
    );
    // The one running before is named, unless the agent moved it already.
    assert!(answer.on_older.iter().all(|w| *w == before), "{answer:?}");

    let after = fed.create_running("P-CONSENT", &[D]).await;
    let after = after["id"].as_str().unwrap().to_owned();
    let mounted = data_mount(&fed, &after, D).await;
    assert!(
        mounted.ends_with(format!("releases/{D}/2")),
        "{}",
        mounted.display()
    );
    let rows = std::fs::read_to_string(mounted.join("records.csv")).unwrap();
    assert_eq!(rows.lines().count(), 5, "{rows}");
    assert!(!rows.contains(&gone), "{rows}");
    let json = config
        .paths
        .state_dir
        .join("workspaces")
        .join(&after)
        .join("workspace.json");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(record["releases"][D], 2, "{record}");
    // The workspace running before moves to release 2 within seconds, its /work kept.
    basho_tests::wait_for("the move to release 2", Duration::from_secs(30), || async {
        let containers = fed.containers(&before).await;
        if containers.len() != 1 {
            return None;
        }
        data_mount(&fed, &before, D)
            .await
            .ends_with(format!("releases/{D}/2"))
            .then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(work.join("notes.txt")).unwrap(),
        "kept across the move\n"
    );
    fed.api
        .wait_state(&before, "running", Duration::from_secs(30))
        .await;

    // The site's audit log has the withdrawal: counts and digests, never the ID.
    let log = std::fs::read_to_string(config.paths.state_dir.join("audit.jsonl")).unwrap();
    let entry = log
        .lines()
        .find(|l| l.contains("consent_withdrawal"))
        .expect("a consent_withdrawal entry");
    assert!(!entry.contains(&gone), "{entry}");
    assert!(entry.contains(&made.digest), "{entry}");
    fed.shutdown().await;
}
