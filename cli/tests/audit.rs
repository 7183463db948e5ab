//! `basho audit verify|list` against a real orchestrator served in-process on 127.0.0.1:0,
//! with its SQLite file edited behind its back.

use std::net::SocketAddr;
use std::process::Output;

use basho_orchestrator::store::{Role, SqliteStore};
use basho_orchestrator::tokens::{self, NewToken};
use basho_orchestrator::{Config, Orchestrator};
use tokio_util::sync::CancellationToken;

const PLATFORM: &str = "platform-cli-audit-token";

struct Running {
    addr: SocketAddr,
    auditor: String,
    db: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
    let mut config = Config::for_tests(templates, PLATFORM);
    config.data_dir = dir.path().to_owned();
    config.database = None;
    let orchestrator = Orchestrator::open(config).await.unwrap();
    let store = SqliteStore::open(None, dir.path()).await.unwrap();
    let new = NewToken {
        role: Role::Auditor,
        subject: None,
        site: None,
        name: None,
        ttl: None,
    };
    let (_, auditor) = tokens::create(&store, new, "operator").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { orchestrator.serve(listener, s).await.unwrap() });
    Running {
        addr,
        auditor,
        db: format!("sqlite://{}", dir.path().join("basho.db").display()),
        stop,
        _dir: dir,
    }
}

async fn basho(r: &Running, token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_basho"))
        .args(args)
        .env("BASHO_TOKEN", token)
        .env("BASHO_ADDR", format!("http://{}", r.addr))
        .env("BASHO_LOG", "off")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn verify_names_the_first_altered_or_deleted_entry() {
    let r = start().await;
    // Refused requests are audited too: a few entries to chain.
    let http = reqwest::Client::new();
    for _ in 0..4 {
        let res = http
            .get(format!("http://{}/v1/workspaces", r.addr))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let out = basho(&r, &r.auditor, &["audit", "verify"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "audit chain intact: 5 entries");

    let out = basho(
        &r,
        &r.auditor,
        &["audit", "list", "--after", "3", "--output", "json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let seqs: Vec<i64> = listed.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![4, 5]);
    assert!(listed.iter().all(|e| e["action"] == "auth_failed"));

    let out = basho(&r, PLATFORM, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("auditor or admin"),
        "{}",
        text(&out.stderr)
    );

    let pool = sqlx::SqlitePool::connect(&r.db).await.unwrap();
    // Each edit of the database, and what `basho audit verify` must say of it.
    for (edit, entry, why) in [
        (
            "UPDATE audit SET actor = 'platform' WHERE seq = 3",
            3,
            "altered",
        ),
        ("DELETE FROM audit WHERE seq = 2", 2, "missing"),
    ] {
        sqlx::query(edit).execute(&pool).await.unwrap();
        let out = basho(&r, &r.auditor, &["audit", "verify"]).await;
        assert_eq!(out.status.code(), Some(1), "{edit}");
        let err = text(&out.stderr);
        let broken = format!("audit chain broken at entry {entry}:");
        assert!(err.contains(&broken) && err.contains(why), "{edit}: {err}");
    }
    r.stop.cancel();
}
