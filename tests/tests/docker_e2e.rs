//! End to end on the real Docker engine: the platform creates a workspace with visas from an issuer
//! the test generates, the orchestrator places it at the site holding the data, the site's agent
//! starts a hardened container with exactly the approved datasets, and delete removes it.

use std::time::Duration;

use basho_tests::federation::Federation;
use basho_tests::{exec, wait_for};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workspace_for_two_datasets_runs_isolated_at_the_site_holding_them() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let visa_ec = fed.issuer.mint("alice", "JGAD000101");
    let visa_rsa = fed
        .issuer
        .sign(&basho_core::visa::mint::Visa::new("alice", "JGAD000102").alg(Algorithm::RS256));
    let body = json!({
        "project": "P-0001", "template": "shell", "visas": [visa_ec, visa_rsa],
        "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 600,
    });
    let (status, ws) = fed.api.create(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(
        ws["site"],
        fed.site("tohoku").as_str(),
        "placed where the data is: {ws}"
    );
    assert_eq!(ws["owner"], "alice");
    assert_eq!(ws["datasets"], json!(["JGAD000101", "JGAD000102"]));
    let id = ws["id"].as_str().unwrap().to_owned();
    fed.api
        .wait_state(&id, "running", Duration::from_secs(60))
        .await;

    let containers = fed.containers(&id).await;
    assert_eq!(containers.len(), 1, "exactly one container: {containers:?}");
    let c = fed
        .docker
        .inspect_container(&containers[0], None)
        .await
        .unwrap();
    let host = c.host_config.clone().unwrap();
    let config = c.config.clone().unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(host.cap_add.unwrap_or_default().is_empty());
    assert!(
        host.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host.tmpfs.unwrap_or_default().contains_key("/tmp"));
    assert_eq!(host.privileged, Some(false));
    assert!(host.devices.unwrap_or_default().is_empty());
    assert!(host.pids_limit.unwrap_or(0) > 0);
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    let user = config.user.clone().unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with("0") && user != "root",
        "user {user:?}"
    );
    let labels = config.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("io.basho.workspace"), Some(&id));
    assert_eq!(
        labels.get("io.basho.project").map(String::as_str),
        Some("P-0001")
    );
    let env = config.env.clone().unwrap_or_default();
    assert!(env.contains(&format!("BASHO_WORKSPACE={id}")));
    assert!(env.contains(&"BASHO_PROJECT=P-0001".to_string()));
    assert!(env.contains(&"BASHO_DATASETS=JGAD000101,JGAD000102".to_string()));

    let mounts = basho_tests::mounts(&fed.docker, &containers[0]).await;
    assert_eq!(
        mounts,
        vec![
            ("/.basho/init".into(), false),
            ("/data/JGAD000101".into(), false),
            ("/data/JGAD000102".into(), false),
            ("/etc/basho/workspace.json".into(), false),
            ("/results".into(), true),
            ("/work".into(), true),
        ],
        "exactly the approved datasets, read-only, plus /work and /results, and basho-init \
         read-only"
    );

    let cid = &containers[0];
    let (code, out) = exec(&fed.docker, cid, &["cat", "/data/JGAD000101/records.csv"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("record_id,age_band,sex,prefecture,icd10"),
        "{out}"
    );
    let (code, out) = exec(&fed.docker, cid, &["touch", "/data/JGAD000101/x"]).await;
    assert_ne!(code, 0, "a dataset must not be writable: {out}");
    let (code, _) = exec(&fed.docker, cid, &["touch", "/x"]).await;
    assert_ne!(code, 0, "the root filesystem must be read-only");
    for dir in ["/work", "/results", "/tmp"] {
        let (code, out) = exec(&fed.docker, cid, &["touch", &format!("{dir}/ok")]).await;
        assert_eq!(code, 0, "{dir} must be writable: {out}");
    }
    let (_, ifaces) = exec(&fed.docker, cid, &["cat", "/proc/net/dev"]).await;
    let names: Vec<&str> = ifaces
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"], "no network but loopback: {ifaces}");
    let (code, out) = exec(
        &fed.docker,
        cid,
        &["wget", "-q", "-T", "2", "-O", "-", "http://192.0.2.1/"],
    )
    .await;
    assert_ne!(code, 0, "the network must be unreachable: {out}");
    let (code, out) = exec(&fed.docker, cid, &["id", "-u"]).await;
    assert_eq!(code, 0);
    assert_ne!(out.trim(), "0", "runs as non-root");
    let (_, out) = exec(&fed.docker, cid, &["cat", "/etc/basho/workspace.json"]).await;
    let meta: serde_json::Value = serde_json::from_str(&out).expect("workspace.json is JSON");
    assert_eq!(meta["id"], id.as_str());
    assert_eq!(meta["project"], "P-0001");

    let (status, _) = fed.api.delete(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    wait_for("container removed", Duration::from_secs(30), || async {
        fed.containers(&id).await.is_empty().then_some(())
    })
    .await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_start_nothing_and_leave_no_record() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let stranger = basho_core::visa::mint::Issuer::generate(basho_tests::federation::ISSUER);
    let good = |d: &str| fed.issuer.mint("alice", d);
    let cases = vec![
        (
            "forged visa",
            json!([stranger.mint("alice", "JGAD000101")]),
            None,
            "visa_bad_signature",
        ),
        (
            "expired visa",
            json!([fed
                .issuer
                .sign(&basho_core::visa::mint::Visa::new("alice", "JGAD000101").expires_in(-10))]),
            None,
            "visa_expired",
        ),
        (
            "two subjects",
            json!([good("JGAD000101"), fed.issuer.mint("bob", "JGAD000102")]),
            None,
            "visa_subject_mismatch",
        ),
        (
            "no site holds it",
            json!([good("JGAD999999")]),
            None,
            "no_site_holds_datasets",
        ),
        (
            "data at two sites",
            json!([good("JGAD000101"), good("JGAD000201")]),
            None,
            "no_site_holds_datasets",
        ),
        (
            "dataset not granted",
            json!([good("JGAD000101")]),
            Some(json!(["JGAD000102"])),
            "dataset_not_granted",
        ),
    ];
    for (what, visas, datasets, code) in cases {
        let mut body = json!({"project": "P-BAD", "template": "shell", "visas": visas,
            "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0}, "duration_s": 600});
        if let Some(d) = datasets {
            body["datasets"] = d;
        }
        let (status, err) = fed.api.create(&body).await;
        assert!(status.is_client_error(), "{what}: {status} {err}");
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        assert!(
            !err["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{what}"
        );
    }
    let (_, list) = fed
        .api
        .call(reqwest::Method::GET, "/v1/workspaces?project=P-BAD", None)
        .await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "no record left: {list}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = basho_tests::containers_labelled(&fed.docker, "io.basho.project", "P-BAD").await;
    assert!(started.is_empty(), "no container started: {started:?}");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_ends_the_workspace_and_removes_its_container() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let mut body = fed.create_body("P-EXPIRE", "alice", &["JGAD000301"]);
    body["duration_s"] = json!(4);
    let (status, ws) = fed.api.create(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    fed.api
        .wait_state(&id, "running", Duration::from_secs(60))
        .await;
    assert_eq!(fed.containers(&id).await.len(), 1);
    wait_for("workspace expired", Duration::from_secs(30), || async {
        (fed.api.workspace(&id).await["state"] == "expired").then_some(())
    })
    .await;
    wait_for(
        "expired container removed",
        Duration::from_secs(30),
        || async { fed.containers(&id).await.is_empty().then_some(()) },
    )
    .await;
    fed.shutdown().await;
}
