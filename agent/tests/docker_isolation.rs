//! Every isolation default of a Docker workspace, checked from the engine's side (bollard and
//! the `docker` CLI) and from inside the container, and its expiry holding with no agent running
//! (`basho-init`). Skips with a printed reason when no engine is reachable; CI guarantees one.

mod docker;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use basho_agent::backend::{Backend, RunState};
use basho_core::{LABEL_EXPIRES, LABEL_PROJECT, LABEL_SITE, LABEL_WORKSPACE};
use bollard::models::MountType;
use docker::*;

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
async fn expiry_ends_the_workspace_with_no_agent_running() {
    let Some((docker, image)) = engine().await else {
        return;
    };
    let Some(init) = basho_test_util::init_binary() else {
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
