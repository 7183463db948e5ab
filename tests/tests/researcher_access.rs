//! Researchers get in: `basho exec`, `basho shell` and `basho port-forward` through the agents'
//! tunnels on real Docker, for the owner only; refusals for everyone else; sessions that end
//! with revocation and leave no process behind. Skips (with a note) where there is no Docker.

use std::process::Stdio;
use std::time::Duration;

use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{self, audit, basho, run, text, token};
use basho_tests::{exec, wait_for};
use reqwest::Method;
use serde_json::json;

/// The container of workspace `id`.
async fn container(fed: &Federation, id: &str) -> String {
    fed.containers(id)
        .await
        .into_iter()
        .next()
        .expect("a container")
}

/// `ps` inside the container, as the workspace user.
async fn ps(fed: &Federation, c: &str) -> String {
    exec(&fed.docker, c, &["ps", "-o", "pid,args"]).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_shell_and_port_forward_for_the_owner_only() {
    let Some(fed) = Federation::start().await else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let ws = fed.create_running("P-0101", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let mallory = token(&fed, Role::Researcher, Some("mallory")).await;
    let admin = token(&fed, Role::Admin, None).await;
    let c = container(&fed, &id).await;
    let (_, expected) = exec(&fed.docker, &c, &["cat", "/data/JGAD000101/records.csv"]).await;

    // The owner's exec: the file, exit code 0.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "cat", "/data/JGAD000101/records.csv"]);
    let out = run(cmd).await;
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);
    assert!(!expected.is_empty());

    // A failing command: its code, stdout and stderr apart.
    let mut cmd = basho(&fed, &alice);
    cmd.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // Hostile bytes are argv, never a shell's input.
    let hostile = ["$(id)", "; rm -rf /work", "`whoami`", "a\nb", "'\"|&>x"];
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "printf", "%s|"]).args(hostile);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}|", hostile.join("|")));
    assert!(exec(&fed.docker, &c, &["ls", "/work"]).await.0 == 0);

    // It runs as the workspace's user, not root.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "id", "-u"]);
    let out = run(cmd).await;
    assert_ne!(text(&out.stdout).trim(), "0");

    // Standard input is forwarded from a pipe.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&vec![b'x'; 1_000_000]).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(text(&out.stdout).trim(), "1000000");

    // Another researcher, the platform, an admin without a reason: refused.
    for (who, tok, code) in [
        ("mallory", mallory.as_str(), "not_found"),
        (
            "platform",
            fed.config().platform_tokens[0].as_str(),
            "forbidden",
        ),
        ("admin", admin.as_str(), "break_glass_required"),
    ] {
        let mut cmd = basho(&fed, tok);
        cmd.args(["exec", &id, "--", "id"]);
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(255), "{who}");
        assert!(
            text(&out.stderr).contains(code),
            "{who}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{who}");
    }
    // The orchestrator lets an admin with a reason through; the site still wants the signature
    // of one of its approvers, and refuses a forged or reused one.
    let break_glass = |approval: Option<&std::path::Path>| {
        let mut cmd = basho(&fed, &admin);
        cmd.args(["exec", &id, "--break-glass", "INC-42 stuck job"]);
        if let Some(a) = approval {
            cmd.arg("--approval").arg(a);
        }
        cmd.args(["--", "true"]);
        cmd
    };
    let out = run(break_glass(None)).await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("proof_required"),
        "{}",
        text(&out.stderr)
    );
    let forged = fed.dir.path().join("forged-approval");
    let claims = basho_core::proof::approval_claims(
        basho_tests::federation::APPROVER,
        "dave",
        &id,
        "INC-42 stuck job",
        chrono::Utc::now().timestamp(),
        600,
    );
    let jwt = fed
        .issuer
        .sign_claims(&claims, Some(basho_core::proof::APPROVAL_TYP));
    std::fs::write(&forged, jwt).unwrap();
    let out = run(break_glass(Some(&forged))).await;
    assert!(
        text(&out.stderr).contains("proof_refused"),
        "{}",
        text(&out.stderr)
    );
    // With the site's approval the admin gets in, audited with the reason, once.
    let approval = fed.approval("dave", &id, "INC-42 stuck job");
    assert!(run(break_glass(Some(&approval))).await.status.success());
    let out = run(break_glass(Some(&approval))).await;
    assert!(
        text(&out.stderr).contains("opened a session already"),
        "{}",
        text(&out.stderr)
    );

    // A shell through a pseudo-terminal.
    let mut child = sessions::shell(&fed, &alice, &id);
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stdin
            .write_all(b"echo hello-$((6*7)); tty\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stdin.write_all(b"exit 5\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("shell ends")
        .unwrap();
    let screen = text(&out.stdout);
    assert!(screen.contains("hello-42"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "a terminal: {screen}");
    assert_eq!(out.status.code(), Some(5), "{screen}");

    // Port-forward to an HTTP server on the container's own loopback.
    let (code, o) = exec(
        &fed.docker,
        &c,
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hi-from-inside > /tmp/www/index.html",
        ],
    )
    .await;
    assert_eq!(code, 0, "{o}");
    let (local, _httpd, _pf) = sessions::serve_and_forward(&fed, &alice, &id, "/tmp/www");
    let body = wait_for("the forwarded page", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{local}/index.html"))
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(body.trim(), "hi-from-inside");

    // The audit log has each session: who, bytes, exit code.
    let entries = audit(&fed, &admin, &id).await;
    let ended: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "session_ended")
        .collect();
    assert!(
        ended.iter().any(|e| e["detail"]["exit_code"] == 3),
        "{entries:?}"
    );
    assert!(
        ended
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("researcher:alice"))
    );
    assert!(
        ended
            .iter()
            .any(|e| e["detail"]["bytes_out"].as_u64() >= Some(expected.len() as u64))
    );
    assert!(entries.iter().any(|e| {
        e["action"] == "session_break_glass"
            && e["detail"]["break_glass"] == "INC-42 stuck job"
            && e["detail"]["proven"]
                .as_str()
                .is_some_and(|p| p.contains("approval for dave signed by site-approver"))
    }));
    // Each of alice's sessions carried her identity token, which the site checked.
    assert!(entries.iter().any(|e| {
        e["action"] == "session_started"
            && e["detail"]["proven"]
                .as_str()
                .is_some_and(|p| p.starts_with("identity token of alice from "))
    }));
    assert!(entries.iter().any(|e| e["action"] == "session_refused"));
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_with_revocation_and_leave_no_process() {
    let Some(fed) = Federation::start_with(|_, cfg| {
        cfg.sessions.max_per_workspace = 3;
    })
    .await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let ws = fed.create_running("P-0102", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let c = container(&fed, &id).await;

    // A client killed mid-stream: its process (and its children) end in the container.
    let mut cmd = basho(&fed, &alice);
    cmd.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "sleep 1234 & sleep 1235; true",
    ])
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for(
        "the session's processes",
        Duration::from_secs(20),
        || async { ps(&fed, &c).await.contains("sleep 1235").then_some(()) },
    )
    .await;
    child.kill().await.unwrap();
    wait_for("no process left", Duration::from_secs(20), || async {
        let p = ps(&fed, &c).await;
        (!p.contains("sleep 1234") && !p.contains("sleep 1235")).then_some(())
    })
    .await;

    // A client that never reads its output stalls only its own session.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "cat", "/dev/zero"])
        .stdout(Stdio::piped());
    let mut hog = cmd.spawn().unwrap();
    wait_for("the unread session", Duration::from_secs(20), || async {
        ps(&fed, &c).await.contains("cat /dev/zero").then_some(())
    })
    .await;
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "echo", "still-here"]);
    let out = run(cmd).await;
    assert_eq!(text(&out.stdout), "still-here\n");
    tokio::time::timeout(Duration::from_secs(10), hog.kill())
        .await
        .expect("kill within 10 s")
        .unwrap();
    wait_for(
        "the unread session's process gone",
        Duration::from_secs(20),
        || async { (!ps(&fed, &c).await.contains("cat /dev/zero")).then_some(()) },
    )
    .await;

    // An agent that stops mid-session ends it, process included; once back, sessions work.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "sleep", "777"]);
    let mut held = cmd.spawn().unwrap();
    wait_for("the session", Duration::from_secs(20), || async {
        ps(&fed, &c).await.contains("sleep 777").then_some(())
    })
    .await;
    let mut fed = fed;
    fed.stop_agent("tohoku").await;
    let status = tokio::time::timeout(Duration::from_secs(30), held.wait())
        .await
        .expect("the session ends with its agent")
        .unwrap();
    assert_eq!(status.code(), Some(255));
    assert!(!ps(&fed, &c).await.contains("sleep 777"));
    fed.start_agent("tohoku").await;
    wait_for(
        "sessions after the agent's restart",
        Duration::from_secs(30),
        || async {
            let mut cmd = basho(&fed, &alice);
            cmd.args(["exec", &id, "--", "true"]);
            run(cmd).await.status.success().then_some(())
        },
    )
    .await;

    // The per-workspace limit.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut cmd = basho(&fed, &alice);
        cmd.args(["exec", &id, "--", "sleep", "300"]);
        held.push(cmd.spawn().unwrap());
    }
    wait_for("three sessions", Duration::from_secs(20), || async {
        (ps(&fed, &c).await.matches("sleep 300").count() == 3).then_some(())
    })
    .await;
    refused_exec(&fed, &alice, &id, "too_many_sessions").await;

    // Revoking the grant ends the open sessions.
    let (s, v) = fed
        .api
        .call(
            Method::POST,
            "/v1/revocations",
            Some(&json!({"subject": "alice", "reason": "dac-revoked"})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    for mut h in held {
        let status = tokio::time::timeout(Duration::from_secs(30), h.wait())
            .await
            .expect("the session ends after revocation")
            .unwrap();
        // Cut off by the orchestrator (255) or killed as the container stopped (137).
        assert!(matches!(status.code(), Some(255 | 137)), "{status:?}");
    }
    // A revoked workspace takes no new session.
    refused_exec(&fed, &alice, &id, "workspace_not_running").await;
    fed.shutdown().await;
}

/// `basho exec ID -- true` fails as a session (255), saying `code`.
async fn refused_exec(fed: &Federation, token: &str, id: &str, code: &str) {
    let mut cmd = basho(fed, token);
    cmd.args(["exec", id, "--", "true"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains(code), "{err}");
}
