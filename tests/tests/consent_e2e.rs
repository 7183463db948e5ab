//! Consent withdrawal at a site on the real Docker engine: a withdrawal recorded at the site
//! (as `basho-agent withdraw` records it) is applied by the running agent, which makes the
//! dataset's next release without the participant's row; a workspace created afterwards mounts
//! that release, and the one running before is moved to it within seconds, its `/work` kept.

use std::time::Duration;

use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{self, token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The host directory mounted at `/data/<dataset>` in workspace `id`'s container.
async fn data_mount(fed: &Federation, id: &str, dataset: &str) -> std::path::PathBuf {
    try_data_mount(fed, id, dataset)
        .await
        .unwrap_or_else(|| panic!("no one container of {id} with /data/{dataset}"))
}

/// [`data_mount`], `None` while there is not exactly one container (one being moved).
async fn try_data_mount(fed: &Federation, id: &str, dataset: &str) -> Option<std::path::PathBuf> {
    let containers = fed.containers(id).await;
    let [c] = containers.as_slice() else {
        return None;
    };
    let c = fed.docker.inspect_container(c, None).await.ok()?;
    let target = format!("/data/{dataset}");
    let m = c
        .mounts?
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(target.as_str()))?;
    Some(std::path::PathBuf::from(m.source?))
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
        try_data_mount(&fed, &before, D)
            .await?
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

    // The orchestrator has the evidence from the site's report: nobody reads release 1 any
    // more, and no participant ID reached it.
    let path = format!("/v1/withdrawals/{}", answer.id);
    let wd = basho_tests::wait_for(
        "the site's report of the move",
        Duration::from_secs(30),
        || async {
            let moved = fed.api.workspace(&before).await["releases"][D] == 2;
            let (s, v) = fed.api.call(Method::GET, &path, None).await;
            (s == StatusCode::OK && moved).then_some(v)
        },
    )
    .await;
    assert_eq!(wd["still_reading"], false, "{wd}");
    assert_eq!(
        (&wd["release"], &wd["participants"], &wd["unknown"]),
        (&json!(2), &json!(1), &json!(0))
    );
    let (s, list) = fed
        .api
        .call(
            Method::GET,
            &format!("/v1/sites/{}/datasets/{D}/releases", config.site),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["current"], 2, "{list}");
    let uses: Vec<(&Value, &Value)> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (&r["release"], &r["workspaces"]))
        .collect();
    assert_eq!(
        uses,
        [(&json!(1), &json!(0)), (&json!(2), &json!(2))],
        "{list}"
    );
    assert_eq!(list["releases"][1]["digest"], json!(made.digest));
    assert_eq!(list["releases"][1]["withdrawal"], json!(answer.id));
    assert_eq!(fed.api.workspace(&before).await["releases"], json!({D: 2}));
    for text in [wd.to_string(), list.to_string()] {
        assert!(!text.contains(&gone), "{text}");
    }
    let admin = token(&fed, Role::Admin, None).await;
    let mut chain = Vec::new();
    for target in [
        answer.id.clone(),
        before.clone(),
        format!("{}/{D}/2", config.site),
    ] {
        for e in sessions::audit(&fed, &admin, &target).await {
            chain.push(e["action"].as_str().unwrap().to_owned());
        }
    }
    for action in ["consent_withdrawal", "workspace_moved", "dataset_release"] {
        assert!(
            chain.iter().any(|a| a == action),
            "{action} missing from {chain:?}"
        );
    }

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

/// `basho-agent withdraw` with the site's config file, its exit code and what it printed.
fn withdraw_command(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(basho_tests::binary("basho-agent"))
        .arg("withdraw")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("basho-agent runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_site_command_waits_for_the_agent_and_one_recorded_while_it_is_down_applies_later() {
    let Some(mut fed) = Federation::start().await else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let config = fed.dir.path().join("bbj-agent.toml");
    std::fs::write(&config, toml::to_string(&fed.site_config("bbj")).unwrap()).unwrap();
    let c = config.as_path();
    const D: &str = "JGAD000301";
    // Bad input: exit 64, nothing recorded.
    for bad in [
        vec!["--dataset", D, "--participant", "A B", "--reason", "x"],
        vec![
            "--dataset",
            "JGAD000101",
            "--participant",
            "A",
            "--reason",
            "x",
        ],
        vec!["--dataset", D, "--participant", "A", "--reason", " "],
    ] {
        let (code, text) = withdraw_command(c, &bad);
        assert_eq!(code, 64, "{bad:?}: {text}");
    }
    // The running agent applies it; the command prints what it did.
    let (code, text) = withdraw_command(
        c,
        &[
            "--dataset",
            D,
            "--participant",
            &format!("{D}-1"),
            "--participant",
            "NOPE",
            "--reason",
            "withdrawn",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("release 2 of JGAD000301 is current"),
        "{text}"
    );
    assert!(text.contains("NOPE"), "the unknown one is reported: {text}");
    // With the agent down it stays recorded (exit 75), and the agent applies it when it starts.
    fed.stop_agent("bbj").await;
    let gone = format!("{D}-2");
    let (code, text) = withdraw_command(
        c,
        &[
            "--dataset",
            D,
            "--participant",
            &gone,
            "--reason",
            "withdrawn",
            "--wait-s",
            "1",
        ],
    );
    assert_eq!(code, 75, "{text}");
    fed.start_agent("bbj").await;
    let site = fed.site_config("bbj");
    let releases = basho_agent::catalog::Catalog::from_config(&site)
        .releases(&basho_core::Ident::parse(D).unwrap())
        .unwrap();
    basho_tests::wait_for("release 3", Duration::from_secs(30), || async {
        (releases.current(&site.datasets[0].path).0 == 3).then_some(())
    })
    .await;
    let (n, dir) = releases.current(&site.datasets[0].path);
    assert_eq!(n, 3);
    let rows = std::fs::read_to_string(dir.join("records.csv")).unwrap();
    assert!(!rows.contains(&format!("{gone},")), "{rows}");
    fed.shutdown().await;
}

/// What `cat path` prints inside workspace `id`'s container.
async fn read_inside(fed: &Federation, id: &str, path: &str) -> String {
    let containers = fed.containers(id).await;
    let (code, out) = basho_tests::exec(&fed.docker, &containers[0], &["cat", path]).await;
    assert_eq!(code, 0, "{id}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_reaches_twenty_running_workspaces_and_none_reads_the_row_afterwards() {
    let Some(fed) = Federation::start_with(|name, cfg| {
        if name == "ncbn" {
            cfg.capacity.cpus = 32;
            cfg.capacity.memory_mib = 32 * 1024;
        }
    })
    .await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    const D: &str = "JGAD000201";
    let gone = format!("{D}-2");
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, ws) = fed
            .api
            .create(&fed.create_body("P-CONSENT", "alice", &[D]))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ws}");
        ids.push(ws["id"].as_str().unwrap().to_owned());
    }
    let config = fed.site_config("ncbn");
    for id in &ids {
        fed.api
            .wait_state(id, "running", Duration::from_secs(120))
            .await;
        std::fs::write(config.paths.work_root.join(id).join("mine"), id).unwrap();
        let rows = read_inside(&fed, id, &format!("/data/{D}/records.csv")).await;
        assert!(rows.contains(&gone), "{rows}");
    }

    let started = std::time::Instant::now();
    let answer = fed.withdraw("ncbn", D, &[&gone]).await;
    assert_eq!(
        answer.made.as_ref().map(|m| m.release),
        Some(2),
        "{answer:?}"
    );
    let delay = Duration::from_secs(config.consent.max_delay_s);
    basho_tests::wait_for("every workspace on release 2", delay, || async {
        for id in &ids {
            let mount = try_data_mount(&fed, id, D).await?;
            if !mount.ends_with(format!("releases/{D}/2")) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let took = started.elapsed();
    // A reader inside each container: the row is gone, the workspace's own /work is kept.
    for id in &ids {
        fed.api
            .wait_state(id, "running", Duration::from_secs(30))
            .await;
        let rows = read_inside(&fed, id, &format!("/data/{D}/records.csv")).await;
        assert!(!rows.contains(&gone), "{id} still reads the row: {rows}");
        assert_eq!(rows.lines().count(), 5, "{rows}");
        assert_eq!(read_inside(&fed, id, "/work/mine").await, *id);
    }
    // And the orchestrator, from the site's report, says nobody still reads it.
    let path = format!("/v1/withdrawals/{}", answer.id);
    basho_tests::wait_for(
        "the report of every move",
        Duration::from_secs(30),
        || async {
            let (_, v) = fed.api.call(Method::GET, &path, None).await;
            let list = fed
                .api
                .call(
                    Method::GET,
                    &format!("/v1/sites/{}/datasets/{D}/releases", config.site),
                    None,
                )
                .await
                .1;
            (v["still_reading"] == false && list["releases"][1]["workspaces"] == 20).then_some(())
        },
    )
    .await;
    eprintln!("20 workspaces moved to release 2 within {took:?} of the withdrawal");
    fed.shutdown().await;
}
