//! `basho-agent approver-key` and `basho-agent approve`: the approval they make is what the
//! site's session gate accepts, and nothing else it is not.

use std::process::Command;

use basho_core::proof::{check_approval, signed};
use basho_core::visa::TrustedIssuers;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_basho-agent"))
        .args(args)
        .output()
        .expect("basho-agent runs")
}

#[test]
fn an_approval_made_by_the_command_opens_its_workspace_for_its_reason() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = agent(&["approver-key", "--name", "carol", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[sessions.approvers]]"));
    let key = dir.path().join("carol.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second run does not overwrite the key.
    assert!(
        !agent(&["approver-key", "--name", "carol", "--dir", d])
            .status
            .success()
    );

    let approve = |ttl: &str| {
        agent(&[
            "approve",
            "--key",
            key.to_str().unwrap(),
            "--name",
            "carol",
            "--workspace",
            "ws-0001",
            "--who",
            "dave",
            "--reason",
            "INC-7",
            "--ttl",
            ttl,
        ])
    };
    let out = approve("30m");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut trusted = TrustedIssuers::new();
    let jwks = std::fs::read_to_string(dir.path().join("carol.jwks.json")).unwrap();
    trusted.add_json("carol", &jwks).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = signed(&jwt, &trusted, "approval").unwrap();
    let p = check_approval(&jwt, claims.clone(), "ws-0001", Some("INC-7"), now).unwrap();
    assert_eq!((p.who.as_str(), p.issuer.as_str()), ("dave", "carol"));
    assert!((p.expires - now - 1800).abs() <= 5);
    assert!(check_approval(&jwt, claims, "ws-0002", Some("INC-7"), now).is_err());
    // Longer than a day: refused before anything is signed.
    let out = approve("25h");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}
