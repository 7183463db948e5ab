//! Interactive sessions on the Kubernetes backend against the fake API server (`kube_fake`),
//! whose `pods/exec` runs the command for real on this host: separate streams and exit codes,
//! argv bytes intact, a terminal with input and resize, signals, a kill that leaves no process,
//! refusals, and the exact request the real API server expects. One test runs against a real
//! cluster and is ignored by default.

mod kube_fake;

use std::path::Path;
use std::time::Duration;

use basho_agent::backend::Backend;
use basho_agent::backend::BackendError;
use basho_agent::backend::exec::{ExecIo, ExecOutput, ExecRequest, Signal};
use basho_agent::backend::kubernetes::exec::{KILLER, RECORD_PREFIX, WRAPPER};
use basho_agent::backend::kubernetes::{KubernetesBackend, REQUIRED_PERMISSIONS};
use basho_agent::backend::suite::example_spec;
use basho_agent::backend::{LaunchSpec, RunState};
use basho_agent::config::KubernetesConfig;
use futures::StreamExt;
use kube_fake::{FakeApi, Fault, NS, WAIT, site};
use tokio::io::AsyncWriteExt;

/// The site's configuration, with the watch's grace of 5 s.
fn cfg() -> KubernetesConfig {
    kube_fake::config(5)
}

fn spec(dir: &Path, workspace: &str) -> LaunchSpec {
    let json_path = dir.join(format!("{workspace}.json"));
    std::fs::write(&json_path, format!("{{\"id\":\"{workspace}\"}}\n")).unwrap();
    let mut s = example_spec(&site(), workspace);
    s.image = format!("registry.example/basho/demo@sha256:{}", "d".repeat(64));
    s.workspace_json = json_path;
    s
}

/// A fake, a backend on it and a running workspace `ws`.
async fn running(ws: &str) -> (FakeApi, KubernetesBackend, tempfile::TempDir) {
    let fake = FakeApi::start(NS).await;
    fake.add_claim("basho-work");
    let backend = KubernetesBackend::with_client(fake.client(), site(), cfg())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backend.launch(&spec(dir.path(), ws)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.inspect(ws).await.unwrap().map(|o| o.state) != Some(RunState::Running) {
        assert!(tokio::time::Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (fake, backend, dir)
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        tty: false,
        cols: 0,
        rows: 0,
    }
}

/// Everything the process wrote, (stdout, stderr), until its output ends.
async fn drain(io: &mut ExecIo) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let all = async {
        while let Some(item) = io.output.next().await {
            match item.unwrap() {
                ExecOutput::Stdout(b) => out.extend(b),
                ExecOutput::Stderr(b) => err.extend(b),
            }
        }
    };
    tokio::time::timeout(WAIT, all)
        .await
        .expect("output never ended");
    (out, err)
}

/// Reads output until `want` shows up in it; returns all of it.
async fn read_until(io: &mut ExecIo, seen: &mut Vec<u8>, want: &str) {
    let found = async {
        while !String::from_utf8_lossy(seen).contains(want) {
            match io.output.next().await {
                Some(Ok(ExecOutput::Stdout(b) | ExecOutput::Stderr(b))) => seen.extend(b),
                other => panic!("output ended before {want:?}: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, found)
        .await
        .unwrap_or_else(|_| panic!("never saw {want:?} in {:?}", String::from_utf8_lossy(seen)));
}

async fn exit_code(io: &ExecIo) -> Option<i64> {
    for _ in 0..200 {
        if let Some(c) = io.control.exit_code().await.unwrap() {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Waits for a file the process writes in the fake's container directory.
async fn file(fake: &FakeApi, name: &str) -> String {
    let path = fake.container_dir().join(name);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(&path)
            && s.ends_with('\n')
        {
            return s.trim().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether host pid `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.starts_with('Z') || rest.starts_with('X')
        }
    }
}

async fn all_gone(pids: &[String]) -> bool {
    for _ in 0..250 {
        if pids.iter().all(|p| gone(p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn assert_within_permissions(fake: &FakeApi) {
    for r in fake.requests() {
        let granted = REQUIRED_PERMISSIONS.iter().any(|p| {
            p.api_group == r.group && p.resource == r.resource && p.verbs.contains(&r.verb.as_str())
        });
        assert!(granted, "request {r:?} is outside REQUIRED_PERMISSIONS");
    }
}

#[tokio::test]
async fn stdout_and_stderr_come_apart_with_the_exit_code() {
    let (fake, backend, _dir) = running("ws-streams").await;
    let mut io = backend
        .exec(
            "ws-streams",
            &req(&["sh", "-c", "echo out; echo err >&2; echo more"]),
        )
        .await
        .unwrap();
    let (out, err) = drain(&mut io).await;
    assert_eq!(String::from_utf8_lossy(&out), "out\nmore\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(exit_code(&io).await, Some(0));

    let mut io = backend
        .exec("ws-streams", &req(&["sh", "-c", "echo bye; exit 3"]))
        .await
        .unwrap();
    let (out, err) = drain(&mut io).await;
    assert_eq!((out, err), (b"bye\n".to_vec(), Vec::new()));
    assert_eq!(exit_code(&io).await, Some(3));

    // Standard input reaches the process, and closing it is its end of file (v5's close).
    let mut io = backend
        .exec("ws-streams", &req(&["sh", "-c", "cat; echo done >&2"]))
        .await
        .unwrap();
    io.input.write_all(b"line one\nline two\n").await.unwrap();
    io.input.shutdown().await.unwrap();
    let (out, err) = drain(&mut io).await;
    assert_eq!(out, b"line one\nline two\n");
    assert_eq!(err, b"done\n");
    assert_eq!(exit_code(&io).await, Some(0));
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn hostile_argv_bytes_arrive_intact() {
    let (fake, backend, _dir) = running("ws-argv").await;
    let hostile = [
        "$(touch pwned)",
        "`touch pwned`",
        "; touch pwned",
        "a b\tc\nd",
        "'\"\\",
        "",
        "--",
        "-c",
        "&command=touch&command=pwned&tty=true",
        "%41+%20=&?#",
        "*",
        "$1 $@ ${20}",
        "ünïcødé ✓ \u{202e}",
    ];
    let mut argv = vec!["printf", "%s\\0"];
    argv.extend(hostile);
    let mut io = backend.exec("ws-argv", &req(&argv)).await.unwrap();
    let (out, err) = drain(&mut io).await;
    assert_eq!(String::from_utf8_lossy(&err), "");
    let got: Vec<String> = out
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert_eq!(got[..got.len() - 1], hostile);
    assert_eq!(exit_code(&io).await, Some(0));
    assert!(!fake.container_dir().join("pwned").exists());

    // The argv travels as the exec's `command` array after the fixed wrapper, never as a line.
    let seen = fake.execs().pop().unwrap();
    assert_eq!(seen.command[..4], ["sh", "-c", WRAPPER, "basho-session"]);
    assert_eq!(seen.command[5], "notty");
    assert_eq!(seen.command[6..], argv);

    for bad in [vec![], vec!["-c", "x"], vec!["echo", "nul\0byte"]] {
        let e = backend.exec("ws-argv", &req(&bad)).await.unwrap_err();
        assert!(matches!(e, BackendError::Refused { .. }), "{bad:?}: {e}");
    }
}

#[tokio::test]
async fn the_exec_request_is_the_one_the_api_server_expects() {
    let (fake, backend, _dir) = running("ws-req").await;
    let mut io = backend
        .exec("ws-req", &req(&["echo", "a b&c"]))
        .await
        .unwrap();
    drain(&mut io).await;
    let mut tty = req(&["true"]);
    tty.tty = true;
    let mut io = backend.exec("ws-req", &tty).await.unwrap();
    drain(&mut io).await;

    let execs = fake.execs();
    let (plain, tty) = (&execs[0], &execs[1]);
    // kube's form encoding: stdin, stdout, stderr, tty, container, then one `command` each.
    let prefix = format!("/api/v1/namespaces/{NS}/pods/basho-ws-req/exec?");
    assert!(plain.uri.starts_with(&prefix), "{}", plain.uri);
    assert!(
        plain.uri[prefix.len()..]
            .trim_start_matches('&')
            .starts_with("stdin=true&stdout=true&stderr=true&container=workspace&command=sh&command=-c&command="),
        "{}",
        plain.uri
    );
    assert!(
        plain.uri.ends_with("&command=echo&command=a+b%26c"),
        "{}",
        plain.uri
    );
    assert_eq!(plain.method, "GET");
    assert_eq!(plain.offered, "v5.channel.k8s.io, v4.channel.k8s.io");
    assert_eq!(plain.protocol, "v5.channel.k8s.io");
    assert_eq!(plain.container.as_deref(), Some("workspace"));
    assert!(plain.stdin && plain.stdout && plain.stderr && !plain.tty);
    assert!(
        tty.uri[prefix.len()..]
            .trim_start_matches('&')
            .starts_with("stdin=true&stdout=true&tty=true&container=workspace&command="),
        "{}",
        tty.uri
    );
    assert!(tty.stdin && tty.stdout && !tty.stderr && tty.tty);
    assert_eq!(tty.command[5], "tty");

    let rbac: Vec<(String, String)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.resource == "pods/exec")
        .map(|r| (r.verb, r.group))
        .collect();
    assert_eq!(
        rbac[..2],
        [("get".into(), "".into()), ("create".into(), "".into())]
    );
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_terminal_gets_input_output_and_resizes() {
    let (_fake, backend, _dir) = running("ws-tty").await;
    let r = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo \"term=$TERM\"; stty size; while read line; do echo \"got:$line\"; stty size; \
             done; exit 5"
                .into(),
        ],
        tty: true,
        cols: 100,
        rows: 30,
    };
    let mut io = backend.exec("ws-tty", &r).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut io, &mut seen, "30 100").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("term=xterm-256color"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    io.control.resize(120, 40).await.unwrap();
    // The size and the input travel on separate channels: type until a line shows the new size.
    for i in 0.. {
        io.input
            .write_all(format!("hello{i}\n").as_bytes())
            .await
            .unwrap();
        read_until(&mut io, &mut seen, &format!("got:hello{i}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if String::from_utf8_lossy(&seen).contains("40 120") {
            break;
        }
        assert!(i < 50, "{}", String::from_utf8_lossy(&seen));
    }
    // Ctrl-D is the terminal's end of file.
    io.input.write_all(b"\x04").await.unwrap();
    drain(&mut io).await;
    assert_eq!(exit_code(&io).await, Some(5));
}

#[tokio::test]
async fn a_kill_leaves_no_process_behind() {
    let (fake, backend, _dir) = running("ws-kill").await;
    // A foreground process, a background job, a job in its own process group, and one that left
    // the session: none of them ends with the WebSocket.
    let script = "sleep 300 & echo $! > bg.pid
        set -m; sleep 301 & echo $! > job.pid; set +m
        setsid sleep 302 & echo $! > escaped.pid
        echo $$ > fg.pid
        exec sleep 303";
    let mut io = backend
        .exec("ws-kill", &req(&["sh", "-c", script]))
        .await
        .unwrap();
    let mut pids = Vec::new();
    for f in ["bg.pid", "job.pid", "escaped.pid", "fg.pid"] {
        pids.push(file(&fake, f).await);
    }
    let token = fake.execs()[0].command[4].clone();
    assert!(Path::new(&format!("{RECORD_PREFIX}{token}")).exists());
    assert!(pids.iter().all(|p| !gone(p)));

    io.control.kill().await.unwrap();
    assert!(all_gone(&pids).await, "left behind: {pids:?}");
    assert!(!Path::new(&format!("{RECORD_PREFIX}{token}")).exists());
    let killer = fake.execs().pop().unwrap();
    assert_eq!(
        killer.command[..6],
        ["sh", "-c", KILLER, "basho-kill", &token, "running"]
    );
    // The output ends, with the kill's 137 when the status made it out first, else no code.
    drain(&mut io).await;
    let code = io.control.exit_code().await;
    assert!(matches!(code, Ok(Some(137)) | Err(_)), "{code:?}");

    // The same with a terminal: a shell and its jobs.
    let r = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "set -m; sleep 304 & echo $! > tjob.pid; echo $$ > tsh.pid; wait".into(),
        ],
        tty: true,
        cols: 80,
        rows: 24,
    };
    let io = backend.exec("ws-kill", &r).await.unwrap();
    let pids = vec![file(&fake, "tjob.pid").await, file(&fake, "tsh.pid").await];
    io.control.kill().await.unwrap();
    assert!(all_gone(&pids).await, "left behind: {pids:?}");
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_kill_before_the_process_started_stops_it_from_starting() {
    let (fake, backend, _dir) = running("ws-early").await;
    // The kill's tombstone is already there when the wrapper starts: it runs nothing.
    let io = backend
        .exec("ws-early", &req(&["sh", "-c", "sleep 1; touch started"]))
        .await
        .unwrap();
    io.control.kill().await.unwrap();
    let mut io = io;
    drain(&mut io).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Either the kill beat the wrapper (nothing ran) or it found the record and killed `sleep`:
    // the command never gets to `touch`.
    assert!(!fake.container_dir().join("started").exists());
    let token = fake.execs()[0].command[4].clone();
    assert!(!Path::new(&format!("{RECORD_PREFIX}{token}")).exists());
}

#[tokio::test]
async fn a_signal_reaches_the_process_group() {
    let (_fake, backend, _dir) = running("ws-sig").await;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut io = backend
        .exec("ws-sig", &req(&["sh", "-c", script]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut io, &mut seen, "ready").await;
    io.control.signal(Signal::Term).await.unwrap();
    read_until(&mut io, &mut seen, "got-term").await;
    drain(&mut io).await;
    assert_eq!(exit_code(&io).await, Some(7));
    // After the end a signal is a no-op.
    io.control.signal(Signal::Int).await.unwrap();
}

#[tokio::test]
async fn sessions_are_refused_where_nothing_runs() {
    let fake = FakeApi::start(NS).await;
    fake.add_claim("basho-work");
    fake.set_auto_run(false);
    let backend = KubernetesBackend::with_client(fake.client(), site(), cfg())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let e = backend.exec("ws-none", &req(&["id"])).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Refused { message: m, .. } if m.contains("has no pod")),
        "{e}"
    );

    backend
        .launch(&spec(dir.path(), "ws-pending"))
        .await
        .unwrap();
    let e = backend.exec("ws-pending", &req(&["id"])).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Refused { message: m, .. } if m.contains("is not running")),
        "{e}"
    );
    assert!(fake.execs().is_empty());

    // The watch saw it running but the API server no longer does (a race): its 400 refuses.
    fake.set_status(
        "basho-ws-pending",
        serde_json::json!({"phase": "Running", "containerStatuses": [{"name": "workspace",
            "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}]}),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend
        .inspect("ws-pending")
        .await
        .unwrap()
        .map(|o| o.state)
        != Some(RunState::Running)
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.fault(Fault {
        verb: "get",
        resource: "pods/exec",
        code: 400,
        after: false,
        message: Some("unable to upgrade connection: container not found (\"workspace\")"),
    });
    let e = backend.exec("ws-pending", &req(&["id"])).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Refused { message: m, .. } if m.contains("container not found")),
        "{e}"
    );

    fake.fault(Fault {
        verb: "get",
        resource: "pods/exec",
        code: 403,
        after: false,
        message: Some("pods \"basho-ws-pending\" is forbidden: cannot get resource \"pods/exec\""),
    });
    let e = backend.exec("ws-pending", &req(&["id"])).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Refused { message: m, .. } if m.contains("pods/exec") && m.contains("Role")),
        "{e}"
    );

    // The API server cannot be reached: unavailable, not refused.
    fake.set_down(true);
    let e = backend.exec("ws-pending", &req(&["id"])).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e}");
}

/// Sessions on a real cluster: exec, exit code, and a kill that leaves nothing.
///
/// ```sh
/// # the cluster, namespace, claim and image of `real_cluster` in kubernetes_backend.rs, then:
/// export BASHO_K8S_IMAGE=docker.io/library/busybox@sha256:<digest>
/// export BASHO_K8S_NAMESPACE=basho-test
/// cargo nextest run -p basho-agent --run-ignored only kubernetes_exec::real_cluster_sessions
/// ```
///
/// The agent's kubeconfig user needs `get` and `create` on `pods/exec` in the namespace.
#[tokio::test]
#[ignore = "needs a cluster: kind or k3d with a namespace, see the doc comment"]
async fn real_cluster_sessions() {
    let (backend, image) = kube_fake::real_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ws = format!("ws-exec-{}", std::process::id());
    let mut s = spec(dir.path(), &ws);
    s.image = image;
    s.command = vec!["sleep".into(), "3600".into()];
    backend.launch(&s).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while backend.inspect(&ws).await.unwrap().map(|o| o.state) != Some(RunState::Running) {
        assert!(tokio::time::Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut io = backend
        .exec(&ws, &req(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .unwrap();
    let (out, err) = drain(&mut io).await;
    assert_eq!((out, err), (b"out\n".to_vec(), b"err\n".to_vec()));
    assert_eq!(exit_code(&io).await, Some(3));

    let io = backend
        .exec(&ws, &req(&["sh", "-c", "sleep 300 & exec sleep 301"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    io.control.kill().await.unwrap();
    let mut ps = backend
        .exec(
            &ws,
            &req(&["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]),
        )
        .await
        .unwrap();
    let (out, _) = drain(&mut ps).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        !out.contains("sleep 300") && !out.contains("sleep 301"),
        "{out}"
    );
    backend.stop(&ws).await.unwrap();
}

/// The shells the session scripts must work under: dash (Debian's `sh`), busybox ash (Alpine's),
/// bash (`sh` on RHEL-family images). Each is tested where this host has it.
fn shells() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for shell in [vec!["dash"], vec!["busybox", "sh"], vec!["bash"]] {
        let ok = std::process::Command::new(shell[0])
            .args(&shell[1..])
            .args(["-c", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            found.push(shell.iter().map(|s| (*s).to_owned()).collect());
        } else {
            basho_test_util::unavailable(&format!("shell {shell:?} is not on this host"));
        }
    }
    found
}

#[tokio::test]
async fn the_session_scripts_work_under_dash_busybox_and_bash() {
    for shell in shells() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!(
            "test{}{}",
            std::process::id(),
            shell.len() * 7 + shell[0].len()
        );
        // As a runtime starts an exec: a new session. Each session has its own token.
        let wrapper = |token: &str, argv: &[&str]| {
            let mut c = tokio::process::Command::new("setsid");
            c.args(&shell)
                .args(["-c", WRAPPER, "basho-session", token, "notty"])
                .args(argv)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c
        };
        let hostile = ["$(touch pwned)", "a b\nc", "", "'\"\\`", "-c", "--", "$@"];
        let mut argv = vec!["printf", "%s\\0"];
        argv.extend(hostile);
        let out = wrapper(&format!("{base}a"), &argv).output().await.unwrap();
        assert!(out.status.success(), "{shell:?}: {out:?}");
        let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        let want: Vec<&[u8]> = hostile.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got[..got.len() - 1], want, "{shell:?}");
        assert!(out.stderr.is_empty(), "{shell:?}: {out:?}");
        assert!(!dir.path().join("pwned").exists());

        let script = "sleep 300 & echo $! > bg; (sleep 301 & echo $! > sub; wait) & \
                      echo $$ > fg; exec sleep 302";
        let token = format!("{base}b");
        let mut child = wrapper(&token, &["sh", "-c", script]).spawn().unwrap();
        let mut pids = Vec::new();
        for f in ["bg", "sub", "fg"] {
            let path = dir.path().join(f);
            let deadline = tokio::time::Instant::now() + WAIT;
            while !std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n')) {
                assert!(tokio::time::Instant::now() < deadline, "{shell:?}: no {f}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            pids.push(std::fs::read_to_string(&path).unwrap().trim().to_owned());
        }
        let record = format!("{RECORD_PREFIX}{token}");
        let recorded = std::fs::read_to_string(&record).unwrap();
        assert!(recorded.starts_with(&format!("{} ", pids[2])), "{recorded}");
        let kill = tokio::process::Command::new(&shell[0])
            .args(&shell[1..])
            .args(["-c", KILLER, "basho-kill", &token, "running"])
            .output()
            .await
            .unwrap();
        assert!(
            kill.status.success() && kill.stdout.is_empty() && kill.stderr.is_empty(),
            "{shell:?}: {kill:?}"
        );
        let _ = child.wait().await;
        assert!(all_gone(&pids).await, "{shell:?}: left behind {pids:?}");
        assert!(!Path::new(&record).exists(), "{shell:?}");

        // A kill before the wrapper starts leaves a tombstone: the wrapper then runs nothing.
        let token = format!("{base}c");
        let record = format!("{RECORD_PREFIX}{token}");
        let kill = tokio::process::Command::new(&shell[0])
            .args(&shell[1..])
            .args(["-c", KILLER, "basho-kill", &token, "running"])
            .status()
            .await
            .unwrap();
        assert!(kill.success());
        let out = wrapper(&token, &["touch", "started"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(137), "{shell:?}: {out:?}");
        assert!(!dir.path().join("started").exists(), "{shell:?}");
        assert!(!Path::new(&record).exists(), "{shell:?}");
    }
}

#[tokio::test]
async fn a_port_forward_is_a_relay_exec_with_half_close() {
    // The agent forwards a port by running `nc 127.0.0.1 PORT` in the container; this host has
    // busybox's nc, and the server stands in for a service on the container's loopback.
    if !std::process::Command::new("busybox")
        .args(["nc", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("nc"))
    {
        basho_test_util::unavailable("busybox nc is not on this host");
        return;
    }
    let (_fake, backend, _dir) = running("ws-fwd").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).await.unwrap();
        conn.write_all(b"pong:").await.unwrap();
        conn.write_all(&request).await.unwrap();
        request
    });
    let mut io = backend
        .exec("ws-fwd", &req(&["busybox", "nc", "127.0.0.1", &port]))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    io.input.write_all(&payload).await.unwrap();
    // The client's end of its request: v5's stdin close, then nc's half-close to the server.
    io.input.shutdown().await.unwrap();
    let (out, _) = drain(&mut io).await;
    assert_eq!(server.await.unwrap(), payload);
    assert_eq!(&out[..5], b"pong:");
    assert!(out[5..] == payload[..], "{} bytes back", out.len());
}

#[tokio::test]
async fn output_read_slowly_after_the_exit_arrives_whole() {
    let (_fake, backend, _dir) = running("ws-slow").await;
    let mut io = backend
        .exec(
            "ws-slow",
            &req(&["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; exit 4"]),
        )
        .await
        .unwrap();
    // A reader held back by its client's credit: the status comes in long before the output is
    // read, and nothing of it may be lost.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut n = 0;
    while let Some(item) = io.output.next().await {
        let ExecOutput::Stdout(b) = item.unwrap() else {
            panic!("stderr")
        };
        assert!(b.iter().all(|c| *c == b'x'));
        n += b.len();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(n, 300_000);
    assert_eq!(exit_code(&io).await, Some(4));
}
