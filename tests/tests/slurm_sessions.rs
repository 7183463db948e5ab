//! Interactive sessions on a Slurm site, on the real one-node cluster of `scripts/slurm-up` over
//! real SSH: the backend's `exec` runs a job step in the workspace's allocation that enters the
//! container the job started with the `docker` runtime. Checked from the engine's side with
//! `ps` inside the container.

use std::time::Duration;

use basho_agent::backend::exec::{ExecIo, ExecOutput, ExecRequest, Signal};
use basho_agent::backend::slurm::SlurmBackend;
use basho_agent::backend::{Backend, BackendError, DatasetMount, LaunchSpec, RunState};
use basho_agent::config::Runtime;
use basho_core::Ident;
use basho_tests::slurm::{Testbed, jobs_of};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

const RECORDS: &str = "id,sex,age\nS001,F,34\nS002,M,51\n";

fn site() -> Ident {
    Ident::parse(&basho_tests::unique("slurm")).unwrap()
}

/// Cancels the test's job however the test ends.
struct Job(String);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel")
            .arg(format!("--name=basho-{}", self.0))
            .status();
    }
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty: false,
        cols: 0,
        rows: 0,
    }
}

/// Everything the process wrote, apart, and its exit code.
async fn finish(mut io: ExecIo) -> (String, String, Option<i64>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        while let Some(item) = io.output.next().await {
            match item.expect("output") {
                ExecOutput::Stdout(b) => out.extend(b),
                ExecOutput::Stderr(b) => err.extend(b),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the session ends within 60 s");
    let code = io.control.exit_code().await.expect("exit code");
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        code,
    )
}

async fn run(backend: &SlurmBackend, id: &str, argv: &[&str]) -> (String, String, Option<i64>) {
    let mut io = backend.exec(id, &req(argv)).await.expect("exec starts");
    let _ = io.input.shutdown().await;
    finish(io).await
}

/// Reads stdout until it holds `want` (60 s at most) and returns what was read.
async fn read_until(io: &mut ExecIo, want: &str) -> String {
    let mut seen = Vec::new();
    let read = async {
        while let Some(item) = io.output.next().await {
            if let Ok(ExecOutput::Stdout(b) | ExecOutput::Stderr(b)) = item {
                seen.extend(b);
            }
            if String::from_utf8_lossy(&seen).contains(want) {
                return true;
            }
        }
        false
    };
    let found = tokio::time::timeout(Duration::from_secs(60), read).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(matches!(found, Ok(true)), "no {want:?} in {text:?}");
    text
}

/// The processes in the container, but zombies (an init that does not reap keeps those).
async fn processes(docker: &bollard::Docker, container: &str) -> Vec<String> {
    let (_, ps) = basho_tests::exec(docker, container, &["ps", "-o", "pid,stat,args"]).await;
    ps.lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| !s.starts_with('Z'))
        })
        .map(str::to_owned)
        .collect()
}

/// A backend on the test cluster, and a spec on the demo image for a fresh workspace whose job
/// is cancelled however the test ends.
struct Setup {
    backend: SlurmBackend,
    docker: bollard::Docker,
    dir: tempfile::TempDir,
    id: String,
    spec: LaunchSpec,
    _job: Job,
}

async fn setup(prefix: &str) -> Setup {
    let testbed = Testbed::load();
    let site = site();
    let backend = SlurmBackend::new(site.clone(), testbed.backend(Runtime::Docker)).unwrap();
    let docker = basho_tests::docker().await.expect("a Docker engine");
    let image = basho_cli::dev::image::ensure_demo_image(&docker)
        .await
        .expect("demo image");
    let dir = tempfile::tempdir().unwrap();
    let id = basho_tests::unique(prefix);
    let _job = Job(id.clone());
    let spec = basho_tests::slurm::runnable_spec(dir.path(), &site, &image, &id);
    Setup {
        backend,
        docker,
        dir,
        id,
        spec,
        _job,
    }
}

/// Lets the container's user (nobody) read everything under `dir`.
fn readable(dir: &std::path::Path) {
    let ok = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_enter_the_running_container_of_a_slurm_job() {
    let Setup {
        backend,
        docker,
        dir,
        id,
        mut spec,
        _job,
    } = setup("sess").await;
    let data = dir.path().join("JGAD000101");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("records.csv"), RECORDS).unwrap();
    std::fs::write(spec.work_dir.join("index.html"), "hello from slurm\n").unwrap();
    // The container's user (nobody) reads the dataset and the work directory.
    readable(dir.path());
    spec.datasets.push(DatasetMount {
        release: 1,
        id: Ident::parse("JGAD000101").unwrap(),
        host_path: data,
        claim: None,
    });
    backend.launch(&spec).await.expect("launch");
    let container = format!("basho-{id}");
    basho_tests::wait_for(
        "the job's container to run",
        Duration::from_secs(90),
        || async {
            let running = matches!(
                backend.inspect(&id).await,
                Ok(Some(o)) if o.state == RunState::Running
            );
            let up = docker
                .inspect_container(&container, None)
                .await
                .ok()
                .and_then(|c| c.state?.running)
                == Some(true);
            (running && up).then_some(())
        },
    )
    .await;
    let job = jobs_of(&id)[0].0;

    // A dataset file, exit 0.
    let (out, err, code) = run(&backend, &id, &["cat", "/data/JGAD000101/records.csv"]).await;
    assert_eq!((out.as_str(), code), (RECORDS, Some(0)), "stderr: {err}");
    assert_eq!(err, "");

    // A failing command: its code, stdout and stderr apart, nothing from srun in between.
    let (out, err, code) = run(
        &backend,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    )
    .await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("out\n", "err\n", Some(3))
    );

    // Hostile bytes are argv all the way into the container.
    let hostile = [
        "$(id)",
        "; rm -rf /work",
        "`whoami`",
        "a\nb",
        "'\"|&>x",
        "tab\tand\u{1b}[0m",
        "",
        "ünï",
    ];
    let mut argv = vec!["printf", "%s|"];
    argv.extend(hostile);
    let (out, err, code) = run(&backend, &id, &argv).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{}|", hostile.join("|")));

    // As the workspace's user, never root; standard input arrives, and its end too.
    let (out, _, _) = run(&backend, &id, &["id", "-u"]).await;
    assert_eq!(out.trim(), "65534");
    let mut io = backend.exec(&id, &req(&["wc", "-c"])).await.unwrap();
    io.input.write_all(b"twelve bytes").await.unwrap();
    io.input.shutdown().await.unwrap();
    let (out, _, code) = finish(io).await;
    assert_eq!((out.trim(), code), ("12", Some(0)));

    // A terminal: input, output, resize, exit code.
    let mut io = backend
        .exec(
            &id,
            &ExecRequest {
                argv: vec!["sh".into()],
                tty: true,
                cols: 80,
                rows: 24,
            },
        )
        .await
        .unwrap();
    // The runtime sizes the container's terminal once the shell has started: wait for its
    // prompt before asking.
    read_until(&mut io, "$ ").await;
    io.input.write_all(b"stty size; tty\n").await.unwrap();
    read_until(&mut io, "24 80").await;
    io.control.resize(100, 30).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    io.input.write_all(b"stty size\n").await.unwrap();
    read_until(&mut io, "30 100").await;
    io.input.write_all(b"exit 7\n").await.unwrap();
    let (_, _, code) = finish(io).await;
    assert_eq!(code, Some(7));

    // A signal reaches the session's process group; the command decides what it means.
    let mut io = backend
        .exec(
            &id,
            &req(&[
                "sh",
                "-c",
                "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 1; done",
            ]),
        )
        .await
        .unwrap();
    read_until(&mut io, "ready").await;
    io.control.signal(Signal::Int).await.expect("signal");
    let (out, _, code) = finish(io).await;
    assert_eq!((out.as_str(), code), ("got-int\n", Some(9)));

    // A port-forward: the tunnel's loopback relay to a server on the container's own loopback.
    let httpd = backend
        .exec(
            &id,
            &req(&["httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/work"]),
        )
        .await
        .unwrap();
    let page = basho_tests::wait_for("the page through nc", Duration::from_secs(30), || async {
        let mut nc = backend
            .exec(&id, &req(&["nc", "127.0.0.1", "8000"]))
            .await
            .unwrap();
        nc.input
            .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let (out, _, _) = finish(nc).await;
        out.contains("hello from slurm").then_some(out)
    })
    .await;
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 OK"),
        "{page}"
    );

    // Ending a session ends everything it started inside the container, and its step.
    let ps = processes(&docker, &container).await;
    assert!(ps.iter().any(|l| l.contains("httpd")), "{ps:?}");
    let busy = backend
        .exec(
            &id,
            &req(&["sh", "-c", "sleep 1001 & setsid sleep 1002 & sleep 1003"]),
        )
        .await
        .unwrap();
    basho_tests::wait_for(
        "the session's processes",
        Duration::from_secs(30),
        || async {
            let ps = processes(&docker, &container).await;
            ["1001", "1002", "1003"]
                .iter()
                .all(|n| ps.iter().any(|l| l.contains(&format!("sleep {n}"))))
                .then_some(())
        },
    )
    .await;
    httpd.control.kill().await.expect("kill");
    busy.control.kill().await.expect("kill");
    let _ = finish(busy).await;
    drop(httpd);
    let ps = basho_tests::wait_for("nothing left", Duration::from_secs(30), || async {
        let ps = processes(&docker, &container).await;
        (!ps.iter()
            .any(|l| l.contains("sleep 100") || l.contains("httpd")))
        .then_some(ps)
    })
    .await;
    assert!(
        ps.iter().all(|l| !l.contains("nc ")),
        "no relay left either: {ps:?}"
    );
    // The workload itself still runs.
    assert!(ps.iter().any(|l| l.contains("sleep 3600")), "{ps:?}");
    basho_tests::wait_for(
        "the session steps to end",
        Duration::from_secs(30),
        || async {
            let steps = basho_tests::slurm::slurm(&[
                "squeue",
                "--steps",
                "--noheader",
                "--jobs",
                &job.to_string(),
                "--format=%i",
            ]);
            let left: Vec<&str> = steps
                .lines()
                .map(str::trim)
                .filter(|s| !s.ends_with(".batch") && !s.ends_with(".extern") && !s.is_empty())
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;

    // Once the workspace is stopped, a session is refused.
    backend.stop(&id).await.expect("stop");
    match backend.exec(&id, &req(&["true"])).await {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains("no job at this site"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn sessions_are_refused_clearly_without_a_running_job_a_login_node_or_an_instance() {
    let testbed = Testbed::load();
    let backend = SlurmBackend::new(site(), testbed.backend(Runtime::Docker)).unwrap();
    match backend.exec("no-such-ws", &req(&["true"])).await {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains("no job at this site"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    match backend.exec("no-such-ws", &req(&[])).await {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains("empty command"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }

    // A job of this site that is not running yet (held), and one of another site.
    let site_a = site();
    let held = SlurmBackend::new(site_a.clone(), testbed.backend(Runtime::Docker)).unwrap();
    let ws = basho_tests::unique("held");
    let _job = Job(ws.clone());
    let comment = format!("basho site={site_a} expires=2099-01-01T00:00:00Z");
    let user = testbed.get("SLURM_SSH_USER").to_owned();
    let name = format!("basho-{ws}");
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            &user,
            "--",
            "sbatch",
            "--hold",
            "--parsable",
            "--job-name",
            &name,
        ])
        .args(["--comment", &comment, "--wrap", "sleep 60"])
        .current_dir("/tmp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match held.exec(&ws, &req(&["true"])).await {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains("is not running"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    match backend.exec(&ws, &req(&["true"])).await {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains("no job at this site"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }

    let mut cfg = testbed.backend(Runtime::Docker);
    cfg.login.port = 1;
    let down = SlurmBackend::new(site(), cfg).unwrap();
    match down.exec("ws", &req(&["true"])).await {
        Err(BackendError::Unavailable { message: m, .. }) => {
            assert!(m.contains("cannot connect"), "{m}")
        }
        other => panic!(
            "expected the login node to be unavailable, got {:?}",
            other.map(|_| ())
        ),
    }

    let apptainer = SlurmBackend::new(site(), testbed.backend(Runtime::Apptainer)).unwrap();
    match apptainer.exec("ws", &req(&["true"])).await {
        Err(BackendError::Unsupported(m)) => assert!(m.contains("apptainer"), "{m}"),
        other => panic!("expected unsupported, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basho_exec_and_port_forward_reach_a_slurm_workspace_through_the_tunnel() {
    use basho_orchestrator::store::Role;
    use basho_tests::sessions::{self, run, text};

    let backend = Testbed::load().backend(Runtime::Docker);
    let fed = basho_tests::federation::Federation::start_with(|name, cfg| {
        if name == "tohoku" {
            cfg.backend = basho_agent::config::BackendConfig::Slurm(backend.clone());
        }
    })
    .await
    .expect("a Docker engine (the jobs' runtime)");
    let (status, ws) = fed
        .api
        .create(&fed.create_body("P-SLURM", "alice", &["JGAD000101"]))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "create: {ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    let _job = Job(id.clone());
    fed.api
        .wait_state(&id, "running", Duration::from_secs(90))
        .await;
    let container =
        basho_tests::wait_for("the job's container", Duration::from_secs(60), || async {
            let cs = fed.containers(&id).await;
            (cs.len() == 1).then(|| cs[0].clone())
        })
        .await;
    let (_, expected) = basho_tests::exec(
        &fed.docker,
        &container,
        &["cat", "/data/JGAD000101/records.csv"],
    )
    .await;
    assert!(!expected.is_empty());
    let alice = sessions::token(&fed, Role::Researcher, Some("alice")).await;
    let basho = || sessions::basho(&fed, &alice);

    let mut cmd = basho();
    cmd.args(["exec", &id, "--", "cat", "/data/JGAD000101/records.csv"]);
    let out = run(cmd).await;
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);

    let mut cmd = basho();
    cmd.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // A server on the container's loopback, reached through `basho port-forward`.
    let (local, _httpd, _pf) = sessions::serve_and_forward(&fed, &alice, &id, "/data/JGAD000101");
    let body = basho_tests::wait_for("the forwarded file", Duration::from_secs(60), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{local}/records.csv"))
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(body, expected);
}

/// Figures, printed (never asserted): how long a session takes to start, a keystroke's round
/// trip through a terminal session running `cat`, and `cat` of a 32 MiB file, at the backend
/// (no tunnel). `cargo nextest run -p basho-tests --test slurm_sessions --no-capture figures`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn figures_of_slurm_sessions() {
    let Setup {
        backend,
        dir,
        id,
        spec,
        _job,
        ..
    } = setup("fig").await;
    let big = vec![b'x'; 32 << 20];
    std::fs::write(spec.work_dir.join("big"), &big).unwrap();
    readable(dir.path());
    backend.launch(&spec).await.expect("launch");
    basho_tests::wait_for("a session to start", Duration::from_secs(90), || async {
        let (out, _, code) = match backend.exec(&id, &req(&["true"])).await {
            Ok(mut io) => {
                let _ = io.input.shutdown().await;
                finish(io).await
            }
            Err(_) => return None,
        };
        (code == Some(0)).then_some(out)
    })
    .await;

    let mut starts = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let (_, _, code) = run(&backend, &id, &["true"]).await;
        assert_eq!(code, Some(0));
        starts.push(t.elapsed());
    }

    let mut io = backend
        .exec(
            &id,
            &ExecRequest {
                argv: vec!["cat".into()],
                tty: true,
                cols: 80,
                rows: 24,
            },
        )
        .await
        .unwrap();
    io.input.write_all(b"warm\n").await.unwrap();
    read_until(&mut io, "warm\r\nwarm\r\n").await;
    let mut keys = Vec::new();
    for _ in 0..200 {
        let t = std::time::Instant::now();
        io.input.write_all(b"k").await.unwrap();
        loop {
            match io.output.next().await {
                Some(Ok(ExecOutput::Stdout(b))) if b.contains(&b'k') => break,
                Some(_) => {}
                None => panic!("cat ended"),
            }
        }
        keys.push(t.elapsed());
    }
    io.control.kill().await.unwrap();
    drop(io);

    let t = std::time::Instant::now();
    let mut io = backend
        .exec(&id, &req(&["cat", "/work/big"]))
        .await
        .unwrap();
    let _ = io.input.shutdown().await;
    let mut n = 0usize;
    while let Some(Ok(ExecOutput::Stdout(b))) = io.output.next().await {
        n += b.len();
    }
    let took = t.elapsed();
    assert_eq!(n, big.len());

    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() - 1) * p / 100]
    };
    println!(
        "slurm sessions: start (squeue + srun step + runtime exec of `true`, 10 runs) p50 {:?} max {:?}; \
         keystroke round trip (200 keys, tty cat) p50 {:?} p99 {:?}; cat of 32 MiB {:?} ({:.0} MiB/s)",
        pct(&mut starts, 50),
        pct(&mut starts, 100),
        pct(&mut keys, 50),
        pct(&mut keys, 99),
        took,
        32.0 / took.as_secs_f64()
    );
    println!(
        "reproduce: cargo nextest run -p basho-tests --test slurm_sessions --no-capture figures"
    );
    backend.stop(&id).await.unwrap();
}
