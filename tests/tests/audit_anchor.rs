//! The audit chain anchored at the sites: the orchestrator signs checkpoints of its chain's head,
//! every agent keeps them in its own audit log beside what it did, and `basho audit verify`
//! holds the chain to them. A tail cut from the orchestrator's audit table, which leaves a
//! shorter chain that still verifies on its own, is caught.

use std::time::Duration;

use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{basho, run, text, token};
use basho_tests::wait_for;

/// A test-only Ed25519 key pair (`openssl genpkey -algorithm ed25519`).
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEGI1Ncg943G/YANBq0lVjljTv9AHe3YyHwdQrJRbDLl
-----END PRIVATE KEY-----
";
const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEArHGcCMV5MBosRZBTj74OHt7EG2hx2FHLEKVctwPjt9w=
-----END PUBLIC KEY-----
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_of_the_audit_table_is_caught_by_the_sites_checkpoints() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = (keys.path().join("key.pem"), keys.path().join("pub.pem"));
    std::fs::write(&key, KEY).unwrap();
    std::fs::write(&public, PUBLIC).unwrap();
    let k = key.clone();
    let Some(mut fed) = Federation::start_custom(
        |_, _| {},
        move |c| {
            c.audit.checkpoint_key_file = Some(k.clone());
            c.audit.checkpoint_every = 1;
        },
    )
    .await
    else {
        return;
    };
    let ws = fed.create_running("P-0161", &["JGAD000101"]).await;
    let site = ws["site"].as_str().unwrap().to_owned();
    let short = site.split('-').next().unwrap().to_owned();
    let log = fed.site_config(&short).paths.state_dir.join("audit.jsonl");
    // The site keeps a checkpoint that covers the workspace's launch.
    let admin = token(&fed, Role::Admin, None).await;
    let newest = |entries: &[basho_core::audit::AuditEntry]| {
        entries
            .iter()
            .filter(|e| e.action == "checkpoint_received")
            .filter_map(|e| {
                let jws = e.detail["checkpoint"].as_str()?;
                let key = jsonwebtoken::DecodingKey::from_ed_pem(PUBLIC.as_bytes()).ok()?;
                basho_core::audit::checkpoint::verify(jws, &key).ok()
            })
            .map(|cp| cp.seq)
            .max()
    };
    let kept = wait_for(
        "the site to keep a checkpoint",
        Duration::from_secs(60),
        || async {
            let entries = basho_agent::site_audit::read(&log).ok()?;
            newest(&entries).filter(|s| *s >= 3)
        },
    )
    .await;
    let entries = basho_agent::site_audit::read(&log).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "workspace_launched" && e.target == ws["id"]),
        "the site recorded its own launch"
    );
    let verify = |fed: &Federation| {
        let mut cmd = basho(fed, &admin);
        cmd.args(["audit", "verify", "--checkpoint-key"])
            .arg(&public)
            .arg("--site-audit")
            .arg(&log);
        cmd
    };
    let out = run(verify(&fed)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("signed checkpoint(s) hold"));

    // Whoever holds the orchestrator's database cuts the chain's tail: what is left is a valid
    // chain on its own.
    fed.stop_orchestrator().await;
    let db = fed.config().data_dir.join("basho.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit WHERE seq >= ?")
        .bind(kept - 1)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    fed.start_orchestrator().await;
    let out = run(verify(&fed)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("its tail was cut") || err.contains("the chain was rewritten"),
        "{err}"
    );
    assert!(
        err.contains(&log.display().to_string()),
        "names the site's log: {err}"
    );
}
