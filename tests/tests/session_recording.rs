//! Session recordings and signals on real Docker: a `basho shell` driven through a
//! pseudo-terminal leaves an asciicast v2 file at the site (mode 0600, its output in `"o"`
//! events, its path in the audit log); `basho exec` without a terminal forwards the signals
//! it receives and exits as the process did; a signal off the allow-list is refused and the
//! session goes on. Skips (with a note) where there is no Docker.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Output, Stdio};
use std::time::Duration;

use basho_core::tunnel::{Exit, Frame, Kind, Refusal, SessionSpec};
use basho_orchestrator::store::Role;
use basho_tests::exec;
use basho_tests::federation::Federation;
use basho_tests::sessions::{self, audit, text, token};
use tokio::process::Command;

/// The `basho` client, its output captured.
fn basho(fed: &Federation, token: &str) -> Command {
    let mut c = sessions::basho(fed, token);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits until `pattern` runs in container `c` (so the session's process has started).
async fn wait_running(fed: &Federation, c: &str, pattern: &str) {
    basho_tests::wait_for(pattern, Duration::from_secs(30), || async {
        let (_, ps) = exec(&fed.docker, c, &["ps", "-o", "args"]).await;
        ps.lines().any(|l| l.starts_with(pattern)).then_some(())
    })
    .await;
}

/// Sends `sig` to the local process `pid`.
fn kill(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn finish(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("basho ends within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_is_recorded_at_the_site() {
    let recordings = tempfile::tempdir().unwrap();
    let root = recordings.path().join("recordings");
    let dir = root.clone();
    let Some(fed) = Federation::start_with(move |_, cfg| {
        cfg.sessions.recording_dir = Some(dir.clone());
    })
    .await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let ws = fed.create_running("P-0111", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let admin = token(&fed, Role::Admin, None).await;
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the recording directory");

    let mut child = sessions::shell(&fed, &alice, &id);
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stdin
            .write_all("echo rec-$((6*7)) 日本語\n".as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stdin.write_all(b"exit 4\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let out = finish(child).await;
    let screen = text(&out.stdout);
    assert!(screen.contains("rec-42"), "{screen}");
    assert_eq!(out.status.code(), Some(4), "{screen}");

    // One recording, in the workspace's directory, 0600, a valid asciicast v2.
    let files: Vec<_> = std::fs::read_dir(root.join(&id))
        .expect("the workspace's recordings")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = &files[0];
    assert_eq!(path.extension().unwrap(), "cast");
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cast = std::fs::read_to_string(path).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert!(header["width"].as_u64().unwrap() > 0);
    assert!(header["height"].as_u64().unwrap() > 0);
    assert!(header["timestamp"].as_i64().unwrap() > 1_600_000_000);
    let title = header["title"].as_str().unwrap();
    assert!(
        title.contains(&id) && title.contains("researcher:alice"),
        "{title}"
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut last = 0.0;
    let mut output = String::new();
    for e in &events {
        let t = e[0].as_f64().expect("a time");
        assert!(t >= last, "times go forward: {cast}");
        last = t;
        let code = e[1].as_str().unwrap();
        assert!(["o", "r", "m"].contains(&code), "no input by default: {e}");
        if code == "o" {
            output.push_str(e[2].as_str().unwrap());
        }
    }
    assert!(output.contains("rec-42 日本語"), "{output}");
    assert!(
        events.iter().any(|e| e[1] == "m" && e[2] == "exit 4"),
        "{cast}"
    );

    // The audit log names the recording's site-local path.
    let entries = audit(&fed, &admin, &id).await;
    let ended = entries
        .iter()
        .find(|e| e["action"] == "session_ended")
        .expect("the session's end is audited");
    assert_eq!(ended["detail"]["recording"], path.to_str().unwrap());
    assert_eq!(ended["detail"]["exit_code"], 4);
    // ... and the SHA-256 of the file as written, so a later change to it shows.
    let digest = basho_core::digest::sha256_hex(cast.as_bytes());
    assert_eq!(ended["detail"]["recording_sha256"], digest.as_str());
    let started = entries
        .iter()
        .find(|e| e["action"] == "session_started")
        .unwrap();
    assert_eq!(started["detail"]["recording"], path.to_str().unwrap());

    // Without a terminal, stdout and stderr are recorded as output too.
    let mut cmd = basho(&fed, &alice);
    cmd.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo plain-out; echo plain-err >&2",
    ]);
    let out = finish(cmd.spawn().unwrap()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = std::fs::read_dir(root.join(&id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != path)
        .expect("a second recording");
    let cast = std::fs::read_to_string(&second).unwrap();
    assert!(
        cast.contains("plain-out") && cast.contains("plain-err"),
        "{cast}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_forwards_signals_and_exits_as_the_process_did() {
    let Some(fed) = Federation::start().await else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    let ws = fed.create_running("P-0112", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let admin = token(&fed, Role::Admin, None).await;
    let c = fed.containers(&id).await.into_iter().next().unwrap();

    // SIGTERM at the client reaches the shell's process group: its trap runs at once.
    let mut cmd = basho(&fed, &alice);
    cmd.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        r#"trap "echo got-term; exit 3" TERM; sleep 30"#,
    ]);
    let child = cmd.spawn().unwrap();
    wait_running(&fed, &c, "sleep 30").await;
    kill("TERM", child.id().unwrap());
    let out = finish(child).await;
    assert_eq!(text(&out.stdout), "got-term\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // SIGINT ends a plain `sleep`: 128 + 2.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "sleep", "31"]);
    let child = cmd.spawn().unwrap();
    wait_running(&fed, &c, "sleep 31").await;
    kill("INT", child.id().unwrap());
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let (_, ps) = exec(&fed.docker, &c, &["ps", "-o", "args"]).await;
    assert!(!ps.contains("sleep 3"), "nothing left behind: {ps}");

    // A process that ignores SIGINT: the first Ctrl-C reaches it and changes nothing, a second
    // within a second closes the session, kills the process, and basho exits 130.
    let mut cmd = basho(&fed, &alice);
    cmd.args(["exec", &id, "--", "sh", "-c", r#"trap "" INT; sleep 32"#]);
    let child = cmd.spawn().unwrap();
    wait_running(&fed, &c, "sleep 32").await;
    let pid = child.id().unwrap();
    kill("INT", pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill("INT", pid);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interrupted twice"),
        "{}",
        text(&out.stderr)
    );
    basho_tests::wait_for(
        "the ignored sleep to end",
        Duration::from_secs(20),
        || async {
            let (_, ps) = exec(&fed.docker, &c, &["ps", "-o", "args"]).await;
            (!ps.contains("sleep 32")).then_some(())
        },
    )
    .await;

    // A signal off the allow-list is refused, and the session goes on.
    let spec = SessionSpec::exec(["sh", "-c", "read x; echo got-$x"]);
    let mut ws_ = fed.session(&alice, "alice", &id, &spec).await.unwrap();
    assert!(ws_.sealed());
    assert!(ws_.ready.signals(), "a current agent takes signals");
    ws_.send(Kind::Signal, b"STOP").await.unwrap();
    let refused = next(&mut ws_, Kind::Refused).await;
    let r: Refusal = refused.parse().unwrap();
    assert_eq!(r.code, "invalid_signal");
    assert!(r.message.contains("allowed: HUP"), "{}", r.message);
    ws_.send(Kind::Stdin, b"ok\n").await.unwrap();
    let out = next(&mut ws_, Kind::Stdout).await;
    assert_eq!(out.payload, b"got-ok\n");
    let exit: Exit = next(&mut ws_, Kind::Exit).await.parse().unwrap();
    assert_eq!(exit.code, Some(0));

    // The forwarded signals are in the sessions' audit entries.
    let entries = audit(&fed, &admin, &id).await;
    let signals: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "session_ended")
        .map(|e| e["detail"]["signals"].clone())
        .collect();
    assert!(
        signals.contains(&serde_json::json!(["TERM"])),
        "{signals:?}"
    );
    assert!(signals.contains(&serde_json::json!(["INT"])), "{signals:?}");
    fed.shutdown().await;
}

/// The next frame of `kind`, skipping credit.
async fn next(ws: &mut basho_cli::session::Opened, kind: Kind) -> Frame {
    let f = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.recv().await {
                Some(Ok(f)) => {
                    if f.kind == kind {
                        return Some(f);
                    }
                    assert!(
                        f.kind == Kind::Credit,
                        "expected {kind:?}, got {:?} {}",
                        f.kind,
                        String::from_utf8_lossy(&f.payload)
                    );
                }
                _ => return None,
            }
        }
    })
    .await
    .expect("a frame within 20 s");
    f.unwrap_or_else(|| panic!("the socket closed before a {kind:?} frame"))
}
