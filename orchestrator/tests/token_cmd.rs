//! `basho-orchestrator token create|list|revoke` on a temporary SQLite file.

use std::process::{Command, Output};

use basho_orchestrator::store::{SqliteStore, TokenStore as _};
use basho_orchestrator::tokens::token_hash;

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ntemplates_dir = {:?}\nplatform_tokens = [\"p-token\"]\n",
            dir.path().join("data"),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces"),
        ),
    )
    .unwrap();
    Setup { dir, config }
}

fn token(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basho-orchestrator"))
        .arg("token")
        .args(&args[..1])
        .arg("--config")
        .arg(&s.config)
        .args(&args[1..])
        .env_remove("BASHO_DATA_DIR")
        .env_remove("BASHO_DATABASE")
        .env("BASHO_LOG", "off")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn create_list_and_revoke() {
    let s = setup();
    let out = token(
        &s,
        &[
            "create",
            "--role",
            "researcher",
            "--subject",
            "alice",
            "--name",
            "Alice",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id = field(&stdout, "id:");
    let secret = field(&stdout, "token:");
    assert!(id.starts_with("tok-"), "{stdout}");
    assert_eq!(secret.len(), 64, "{stdout}");

    let store = SqliteStore::open(None, &s.dir.path().join("data"))
        .await
        .unwrap();
    let rec = store
        .token_by_hash(&token_hash(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.id.as_str(), rec.subject.as_deref()),
        (id.as_str(), Some("alice"))
    );

    let out = token(&s, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let line = listed.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        line.contains("researcher") && line.contains("alice") && line.contains("Alice"),
        "{line}"
    );
    assert!(
        !listed.contains(&secret) && !listed.contains(&token_hash(&secret)),
        "{listed}"
    );

    let out = token(&s, &["revoke", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rec = store
        .token_by_hash(&token_hash(&secret))
        .await
        .unwrap()
        .unwrap();
    assert!(rec.revoked_at.is_some());
    let out = token(&s, &["list"]);
    let listed = text(&out.stdout);
    let line = listed.lines().find(|l| l.starts_with(&id)).unwrap();
    assert_eq!(
        line.split('\t').nth(4).map(|r| r != "-"),
        Some(true),
        "{line}"
    );

    let out = token(&s, &["revoke", "tok-00000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no token tok-00000000"));
}

#[test]
fn bad_requests_are_refused_with_usage() {
    let s = setup();
    for (args, says) in [
        (&["create", "--role", "root"][..], "unknown role"),
        (&["create", "--role", "researcher"][..], "--subject"),
        (&["create", "--role", "agent"][..], "--site"),
        (
            &["create", "--role", "agent", "--site", "../etc"][..],
            "--site",
        ),
        (
            &["create", "--role", "admin", "--subject", "x"][..],
            "neither",
        ),
    ] {
        let out = token(&s, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
