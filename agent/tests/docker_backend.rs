//! The Docker backend against the local engine: the shared conformance suite, every isolation
//! default checked from the engine's side (bollard and the `docker` CLI) and from inside the
//! container, re-adoption, per-site separation and refusals. Skips with a printed reason when no
//! engine is reachable; CI guarantees one. Nothing is ever pulled: the demo image is imported
//! from the host's static busybox.

#[path = "../../cli/src/dev/image.rs"]
mod image;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use basho_agent::backend::docker::DockerBackend;
use basho_agent::backend::suite::{example_spec, run_suite};
use basho_agent::backend::{Backend, BackendError, DatasetMount, LaunchSpec, RunState};
use basho_core::{Ident, LABEL_EXPIRES, LABEL_PROJECT, LABEL_SITE, LABEL_WORKSPACE};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, MountType};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures::StreamExt;

/// A TEST-NET-1 address (RFC 5737): never routed, so probing it reaches nobody.
const UNREACHABLE: &str = "192.0.2.1";

/// The engine and the demo image, or `None` (after saying why) when there is no engine; under CI
/// a missing engine fails instead.
async fn engine() -> Option<(Docker, String)> {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("no docker client ({e})"));
            return None;
        }
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("docker engine unreachable ({e})"));
            return None;
        }
    };
    let id = image::ensure_demo_image(&docker)
        .await
        .expect("the demo image builds from the host's static busybox");
    Some((docker, id))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Removes every container of a test's site when dropped, also when the test panics.
struct Cleanup {
    site: Ident,
}

impl Cleanup {
    fn new(prefix: &str) -> Cleanup {
        let site = Ident::parse(&unique(prefix)).unwrap();
        let cleanup = Cleanup { site };
        cleanup.sweep();
        cleanup
    }

    fn sweep(&self) {
        let filter = format!("label={LABEL_SITE}={}", self.site);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// Host directories of one workspace: two datasets with a file each, `/work`, `/results` and
/// `workspace.json`, readable (and where meant, writable) by the workspace's uid 65534.
struct Dirs {
    _tmp: tempfile::TempDir,
    datasets: Vec<DatasetMount>,
    work: PathBuf,
    results: PathBuf,
    workspace_json: PathBuf,
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let mut datasets = Vec::new();
    for id in ["JGAD000101", "JGAD000202"] {
        let path = tmp.path().join(id);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("file"), format!("contents of {id}\n")).unwrap();
        chmod(&path, 0o755);
        chmod(&path.join("file"), 0o644);
        datasets.push(DatasetMount {
            id: Ident::parse(id).unwrap(),
            host_path: path,
            claim: None,
        });
    }
    let work = tmp.path().join("work");
    let results = tmp.path().join("results");
    for d in [&work, &results] {
        std::fs::create_dir(d).unwrap();
        chmod(d, 0o777);
    }
    let workspace_json = tmp.path().join("workspace.json");
    std::fs::write(&workspace_json, r#"{"id":"demo"}"#).unwrap();
    chmod(&workspace_json, 0o644);
    Dirs {
        _tmp: tmp,
        datasets,
        work,
        results,
        workspace_json,
    }
}

fn spec(site: &Ident, workspace: &str, image: &str, dirs: &Dirs) -> LaunchSpec {
    let mut s = example_spec(site, workspace);
    s.image = image.to_owned();
    s.datasets = dirs.datasets.clone();
    s.work_dir = dirs.work.clone();
    s.results_dir = dirs.results.clone();
    s.workspace_json = dirs.workspace_json.clone();
    s.env = vec![
        ("BASHO_WORKSPACE".into(), workspace.into()),
        ("BASHO_PROJECT".into(), s.project.to_string()),
        ("BASHO_DATASETS".into(), "JGAD000101,JGAD000202".into()),
    ];
    s
}

async fn backend(site: &Ident) -> DockerBackend {
    DockerBackend::connect(None, site.clone()).await.unwrap()
}

/// Runs `cmd` inside the container as its own user; exit code and stdout+stderr.
async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> (i64, String) {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await.unwrap()
    {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk.unwrap().to_string());
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .unwrap()
        .exit_code
        .expect("exec finished");
    (code, out)
}

async fn must(docker: &Docker, container: &str, cmd: &[&str]) -> String {
    let (code, out) = exec(docker, container, cmd).await;
    assert_eq!(code, 0, "{cmd:?} failed: {out}");
    out
}

async fn must_fail(docker: &Docker, container: &str, cmd: &[&str]) -> String {
    let (code, out) = exec(docker, container, cmd).await;
    assert_ne!(code, 0, "{cmd:?} succeeded but must not: {out}");
    out
}

async fn wait_for(backend: &DockerBackend, ws: &str, want: impl Fn(&RunState) -> bool) -> RunState {
    let what = format!("{ws} to reach the awaited state");
    basho_test_util::wait_for(&what, Duration::from_secs(30), || async {
        let seen = backend.inspect(ws).await.unwrap()?;
        want(&seen.state).then_some(seen.state)
    })
    .await
}

fn refused(r: Result<impl std::fmt::Debug, BackendError>, needle: &str) {
    match r {
        Err(BackendError::Refused { message: m, .. }) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some((_docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-conf");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    run_suite(&b, |ws| spec(&guard.site, ws, &image, &dirs))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_isolation_default_holds() {
    let Some((docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-iso");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let ws = unique("ws-test");
    let s = spec(&guard.site, &ws, &image, &dirs);
    let launched = b.launch(&s).await.unwrap();
    wait_for(&b, &ws, |s| *s == RunState::Running).await;
    let id = launched.handle.as_str();

    // The engine's own record, through bollard.
    let c = docker.inspect_container(id, None).await.unwrap();
    assert_eq!(c.name.as_deref(), Some(format!("/basho-{ws}").as_str()));
    let h = c.host_config.as_ref().unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(
        h.cap_add.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        h.cap_add
    );
    let secopt = h.security_opt.clone().unwrap_or_default();
    assert!(
        secopt.iter().any(|o| o.starts_with("no-new-privileges")),
        "{secopt:?}"
    );
    assert!(
        !secopt.iter().any(|o| o.contains("unconfined")),
        "{secopt:?}"
    );
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(
        h.tmpfs.as_ref().unwrap().get("/tmp").map(String::as_str),
        Some("rw,noexec,nosuid,nodev,size=16m")
    );
    assert_eq!(h.pids_limit, Some(s.pids_limit));
    assert_eq!(h.memory, Some(64 * 1024 * 1024));
    assert_eq!(h.memory_swap, Some(64 * 1024 * 1024));
    assert_eq!(h.nano_cpus, Some(1_000_000_000));
    assert_eq!(h.privileged, Some(false));
    assert!(
        h.devices.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        h.devices
    );
    assert!(h.device_requests.as_ref().is_none_or(Vec::is_empty));
    assert_eq!(h.ipc_mode.as_deref(), Some("private"));
    assert!(h.binds.as_ref().is_none_or(Vec::is_empty), "{:?}", h.binds);
    let config = c.config.as_ref().unwrap();
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    let env = config.env.clone().unwrap_or_default();
    for want in [
        format!("BASHO_WORKSPACE={ws}"),
        "BASHO_PROJECT=P-conformance".into(),
        "BASHO_DATASETS=JGAD000101,JGAD000202".into(),
    ] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    let labels = config.labels.clone().unwrap();
    assert_eq!(labels[LABEL_WORKSPACE], ws);
    assert_eq!(labels[LABEL_PROJECT], "P-conformance");
    assert_eq!(labels[LABEL_SITE], guard.site.as_str());
    assert_eq!(
        labels[LABEL_EXPIRES],
        s.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    // Exactly the expected mounts, bound from the host paths given, nothing else.
    let mounts = c.mounts.clone().unwrap();
    let seen: HashMap<String, (String, bool, String)> = mounts
        .iter()
        .map(|m| {
            (
                m.destination.clone().unwrap(),
                (
                    m.source.clone().unwrap(),
                    m.rw.unwrap(),
                    m.typ.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                ),
            )
        })
        .collect();
    let real = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
    let want: HashMap<String, (String, bool, String)> = [
        (
            "/data/JGAD000101".to_string(),
            (real(&dirs.datasets[0].host_path), false),
        ),
        (
            "/data/JGAD000202".to_string(),
            (real(&dirs.datasets[1].host_path), false),
        ),
        ("/work".to_string(), (real(&dirs.work), true)),
        ("/results".to_string(), (real(&dirs.results), true)),
        (
            "/etc/basho/workspace.json".to_string(),
            (real(&dirs.workspace_json), false),
        ),
    ]
    .into_iter()
    .map(|(k, (src, rw))| (k, (src, rw, "bind".to_string())))
    .collect();
    assert_eq!(seen, want);
    assert!(
        !mounts
            .iter()
            .any(|m| m.source.as_deref().unwrap_or("").contains("docker.sock")),
        "the engine socket is mounted: {mounts:?}"
    );
    let requested = h.mounts.clone().unwrap();
    assert!(requested.iter().all(|m| m.typ == Some(MountType::BIND)));
    // Datasets are read-only all the way down where the engine can do it; older engines bind
    // them without submounts instead, so no writable submount shows through.
    let recursive = b.api_version() >= (1, 44);
    assert_eq!(b.capabilities().recursive_readonly, recursive);
    for m in requested
        .iter()
        .filter(|m| m.target.as_deref().unwrap().starts_with("/data/"))
    {
        let o = m.bind_options.as_ref().unwrap();
        if recursive {
            assert_eq!(o.read_only_force_recursive, Some(true), "{m:?}");
        } else {
            assert_eq!(o.non_recursive, Some(true), "{m:?}");
        }
    }

    // An independent view, through the docker CLI.
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hc = &cli[0]["HostConfig"];
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert!(hc["CapAdd"].is_null() || hc["CapAdd"] == serde_json::json!([]));
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["PidsLimit"], s.pids_limit);
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], 64 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 1_000_000_000);
    assert_eq!(hc["IpcMode"], "private");
    assert_eq!(hc["RestartPolicy"]["Name"], "no");
    assert!(hc["Devices"].as_array().is_none_or(Vec::is_empty));
    assert!(
        hc["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("no-new-privileges"))
    );
    assert_eq!(cli[0]["Config"]["User"], "65534:65534");
    assert_eq!(cli[0]["Mounts"].as_array().unwrap().len(), 5);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("docker.sock"));

    // From inside.
    for ds in ["JGAD000101", "JGAD000202"] {
        let file = format!("/data/{ds}/file");
        assert_eq!(
            must(&docker, id, &["cat", &file]).await,
            format!("contents of {ds}\n")
        );
        let out = must_fail(&docker, id, &["touch", &format!("/data/{ds}/new")]).await;
        assert!(out.contains("Read-only file system"), "{out}");
        must_fail(&docker, id, &["sh", "-c", &format!("echo x >> {file}")]).await;
    }
    assert_eq!(
        must(&docker, id, &["cat", "/etc/basho/workspace.json"]).await,
        r#"{"id":"demo"}"#
    );
    must_fail(
        &docker,
        id,
        &["sh", "-c", "echo x > /etc/basho/workspace.json"],
    )
    .await;
    for path in ["/probe", "/etc/probe", "/bin/probe"] {
        let out = must_fail(&docker, id, &["touch", path]).await;
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }
    for path in ["/work/probe", "/results/probe", "/tmp/probe"] {
        must(&docker, id, &["touch", path]).await;
    }
    assert!(dirs.work.join("probe").exists());
    assert!(dirs.results.join("probe").exists());
    // /tmp is noexec: a copied binary does not run from there.
    must(&docker, id, &["cp", "/bin/busybox", "/tmp/bb"]).await;
    must_fail(&docker, id, &["/tmp/bb", "true"]).await;

    assert_eq!(must(&docker, id, &["id", "-u"]).await.trim(), "65534");
    assert_eq!(must(&docker, id, &["id", "-g"]).await.trim(), "65534");
    let status = must(&docker, id, &["cat", "/proc/self/status"]).await;
    for want in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(status.contains(want), "{want} missing from {status}");
    }
    let env = must(&docker, id, &["env"]).await;
    assert!(env.contains(&format!("BASHO_WORKSPACE={ws}")), "{env}");

    // No network but loopback.
    let netdev = must(&docker, id, &["cat", "/proc/net/dev"]).await;
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{netdev}");
    let links = must(&docker, id, &["ip", "-o", "link"]).await;
    assert_eq!(links.lines().count(), 1, "{links}");
    let url = format!("http://{UNREACHABLE}/");
    let started = std::time::Instant::now();
    must_fail(
        &docker,
        id,
        &["wget", "-q", "-T", "2", "-O", "/dev/null", &url],
    )
    .await;
    must_fail(&docker, id, &["nc", "-w", "2", UNREACHABLE, "80"]).await;
    eprintln!("outbound probes refused after {:?}", started.elapsed());

    b.stop(&ws).await.unwrap();
    let gone = docker.inspect_container(id, None).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "container still there after stop: {gone:?}"
    );
    assert!(b.inspect(&ws).await.unwrap().is_none());
}

#[tokio::test]
async fn relaunch_readoption_and_site_separation() {
    let Some((_docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-adopt");
    let other = Cleanup::new("t-other");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let ws = unique("ws-test");
    let s = spec(&guard.site, &ws, &image, &dirs);

    // Two launches racing for the same workspace end up with one container.
    let (first, racer) = tokio::join!(b.launch(&s), b.launch(&s));
    let (first, racer) = (first.unwrap(), racer.unwrap());
    assert_eq!(racer.handle, first.handle);
    let again = b.launch(&s).await.unwrap();
    assert_eq!(again.handle, first.handle);
    assert_eq!(again.workspace, ws);
    assert_eq!(
        again.expires_at.map(|t| t.timestamp()),
        Some(s.expires_at.timestamp())
    );

    // A restarted agent finds its workspaces by label.
    let restarted = backend(&guard.site).await;
    let listed = restarted.list_managed().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].handle, first.handle);
    assert_eq!(listed[0].workspace, ws);
    assert_eq!(restarted.launch(&s).await.unwrap().handle, first.handle);

    // Another site on the same engine neither sees nor touches it.
    let stranger = backend(&other.site).await;
    assert!(stranger.list_managed().await.unwrap().is_empty());
    assert!(stranger.inspect(&ws).await.unwrap().is_none());
    assert!(stranger.usage(&ws).await.unwrap().is_none());
    stranger.stop(&ws).await.unwrap();
    assert!(b.inspect(&ws).await.unwrap().is_some());
    // The same workspace id launched by another site collides on the name and is refused.
    let mut theirs = s.clone();
    theirs.site = other.site.clone();
    refused(stranger.launch(&theirs).await, "another site");

    // An agent of the same site name in another namespace (a second `basho dev` on this engine)
    // neither sees nor touches it either, and the namespaced one sees only its own.
    let namespaced = backend(&guard.site)
        .await
        .with_namespace(Some("dev-elsewhere".into()));
    assert!(namespaced.list_managed().await.unwrap().is_empty());
    namespaced.stop(&ws).await.unwrap();
    assert!(b.inspect(&ws).await.unwrap().is_some());
    refused(namespaced.launch(&s).await, "does not manage");
    let ns_ws = unique("ws-test");
    let ns_spec = spec(&guard.site, &ns_ws, &image, &dirs);
    namespaced.launch(&ns_spec).await.unwrap();
    let mine: Vec<String> = namespaced
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.workspace)
        .collect();
    assert_eq!(mine, vec![ns_ws.clone()]);
    namespaced.stop(&ns_ws).await.unwrap();
    assert!(namespaced.inspect(&ns_ws).await.unwrap().is_none());

    let state = wait_for(&b, &ws, |s| *s == RunState::Running).await;
    assert_eq!(state, RunState::Running);
    let usage = b
        .usage(&ws)
        .await
        .unwrap()
        .expect("a running workspace has usage");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert!(usage.cpu_seconds >= 0.0, "{usage:?}");

    restarted.stop(&ws).await.unwrap();
    assert!(b.inspect(&ws).await.unwrap().is_none());
    b.stop(&ws).await.unwrap();
    b.stop("ws-never-existed").await.unwrap();
}

#[tokio::test]
async fn exited_workspaces_report_their_code() {
    let Some((_docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-exit");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let ws = unique("ws-test");
    let mut s = spec(&guard.site, &ws, &image, &dirs);
    s.command = vec!["sh".into(), "-c".into(), "exit 3".into()];
    b.launch(&s).await.unwrap();
    let state = wait_for(&b, &ws, |s| matches!(s, RunState::Exited(_))).await;
    assert_eq!(state, RunState::Exited(3));
    let listed = b.list_managed().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, RunState::Exited(3));
    assert!(b.usage(&ws).await.unwrap().is_none());
    // Launching again does not restart what has ended: the agent decides what happens next.
    assert_eq!(b.launch(&s).await.unwrap().state, RunState::Exited(3));
    b.stop(&ws).await.unwrap();
    assert!(b.list_managed().await.unwrap().is_empty());
}

/// The statically linked `basho-init` (`scripts/build-init`, which `scripts/test` runs), or
/// `None` (failing under CI) when it was not built.
fn init_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BASHO_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/basho-init"));
    if path.is_file() {
        Some(std::fs::canonicalize(path).unwrap())
    } else {
        basho_test_util::unavailable(&format!("no {}: run scripts/build-init", path.display()));
        None
    }
}

#[tokio::test]
async fn expiry_ends_the_workspace_with_no_agent_running() {
    let Some((docker, image)) = engine().await else {
        return;
    };
    let Some(init) = init_binary() else {
        return;
    };
    let guard = Cleanup::new("t-init");
    let dirs = dirs();
    // Nothing but the engine from here: no agent loop watches the expiry.
    let b = backend(&guard.site).await.with_init(Some(init));
    let ws = unique("ws-test");
    let mut s = spec(&guard.site, &ws, &image, &dirs);
    s.command = vec!["sh".into(), "-c".into(), "sleep 3600 & sleep 3600".into()];
    s.expires_at = chrono::Utc::now() + chrono::Duration::seconds(4);
    b.launch(&s).await.unwrap();
    let c = b.inspect(&ws).await.unwrap().unwrap().handle;
    // The workload runs under basho-init, which the workspace can read but not change.
    let ps = must(&docker, &c, &["ps", "-o", "pid,args"]).await;
    assert!(ps.contains("/.basho/init --until"), "{ps}");
    must_fail(&docker, &c, &["sh", "-c", "echo x > /.basho/init"]).await;
    let state = wait_for(&b, &ws, |s| matches!(s, RunState::Exited(_))).await;
    assert_eq!(state, RunState::Exited(124), "ended by its expiry");
    // The engine's stop reaches the workload through basho-init: it ends by that SIGTERM
    // (128 + 15), not by the SIGKILL the engine sends when a stop is ignored (137).
    let ws = unique("ws-test");
    let mut s = spec(&guard.site, &ws, &image, &dirs);
    s.expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
    b.launch(&s).await.unwrap();
    let c = b.inspect(&ws).await.unwrap().unwrap().handle;
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
        .t(30)
        .build();
    docker.stop_container(&c, Some(stop)).await.unwrap();
    let state = wait_for(&b, &ws, |s| matches!(s, RunState::Exited(_))).await;
    assert_eq!(state, RunState::Exited(143));
    b.stop(&ws).await.unwrap();
}

#[tokio::test]
async fn a_created_but_unstarted_container_is_started_on_launch() {
    let Some((docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-created");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let ws = unique("ws-test");
    let s = spec(&guard.site, &ws, &image, &dirs);
    // What an agent that died between create and start leaves behind.
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        user: Some("65534:65534".into()),
        labels: Some(HashMap::from([
            (LABEL_WORKSPACE.to_string(), ws.clone()),
            (LABEL_SITE.to_string(), guard.site.to_string()),
        ])),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&format!("basho-{ws}"))
        .build();
    let created = docker.create_container(Some(options), body).await.unwrap();
    assert_eq!(
        b.inspect(&ws).await.unwrap().unwrap().state,
        RunState::Created
    );
    let launched = b.launch(&s).await.unwrap();
    assert_eq!(launched.handle, created.id);
    wait_for(&b, &ws, |s| *s == RunState::Running).await;
    b.stop(&ws).await.unwrap();
}

#[tokio::test]
async fn refuses_unsafe_or_impossible_launches() {
    let Some((_docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-refuse");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let ws = unique("ws-test");
    let base = spec(&guard.site, &ws, &image, &dirs);

    let mut s = base.clone();
    s.image = format!("sha256:{:064x}", rand::random::<u128>());
    refused(b.launch(&s).await, "not present on this engine");

    let mut s = base.clone();
    s.image = image::demo_image_ref();
    refused(b.launch(&s).await, "not pinned");

    for user in ["0", "0:0", "root", "65534:0"] {
        let mut s = base.clone();
        s.user = user.into();
        refused(b.launch(&s).await, "not allowed");
    }

    let mut s = base.clone();
    s.datasets[0].host_path = PathBuf::from("/var/run");
    refused(b.launch(&s).await, "engine socket");

    let mut s = base.clone();
    s.resources.gpus = 1;
    assert!(matches!(
        b.launch(&s).await,
        Err(BackendError::Unsupported(_))
    ));
    assert!(!b.capabilities().gpus);

    let mut s = base.clone();
    s.site = Ident::parse("elsewhere").unwrap();
    refused(b.launch(&s).await, "serves site");

    assert!(
        b.list_managed().await.unwrap().is_empty(),
        "a refused launch left a container"
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_not_gone() {
    let site = Ident::parse("t-nowhere").unwrap();
    let err = DockerBackend::connect(Some("/nonexistent/docker.sock"), site)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn demo_image_is_idempotent_and_pinned() {
    let Some((docker, first)) = engine().await else {
        return;
    };
    assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
    let (a, b) = tokio::join!(
        image::ensure_demo_image(&docker),
        image::ensure_demo_image(&docker)
    );
    assert_eq!(a.unwrap(), first);
    assert_eq!(b.unwrap(), first);
    let inspected = docker
        .inspect_image(&image::demo_image_ref())
        .await
        .unwrap();
    assert_eq!(inspected.id.as_deref(), Some(first.as_str()));
    assert_eq!(image::DEMO_IMAGE_NAME, "basho/demo");
}

/// The shared backend suite against the local engine: an exit is the engine killing the
/// container, a fresh instance is a second backend on the engine; the connection is not cut.
mod suite {
    use async_trait::async_trait;
    use basho_agent::backend::suite::Harness;

    use super::*;

    struct Engine {
        docker: Docker,
        image: String,
        dirs: Dirs,
        guard: Cleanup,
        backend: DockerBackend,
    }

    #[async_trait]
    impl Harness for Engine {
        fn backend(&self) -> &dyn Backend {
            &self.backend
        }
        fn spec(&self, workspace: &str) -> LaunchSpec {
            spec(&self.guard.site, workspace, &self.image, &self.dirs)
        }
        async fn make_exit(&self, workspace: &str) -> bool {
            self.docker
                .kill_container(
                    &format!("basho-{workspace}"),
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await
                .expect("the engine kills the container");
            true
        }
        async fn fresh_instance(&self) -> Option<Box<dyn Backend>> {
            Some(Box::new(backend(&self.guard.site).await))
        }
    }

    async fn engine_harness() -> Option<Engine> {
        let (docker, image) = engine().await?;
        let guard = Cleanup::new("t-suite");
        let backend = backend(&guard.site).await;
        Some(Engine {
            docker,
            image,
            dirs: dirs(),
            guard,
            backend,
        })
    }

    basho_agent::backend_suite!(engine_harness());
}
