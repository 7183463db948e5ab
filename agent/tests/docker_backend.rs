//! The Docker backend against the local engine: the shared conformance suite, re-adoption,
//! per-site separation, exit codes and refusals (every isolation default and expiry without an
//! agent: `docker_isolation.rs`). Skips with a printed reason when no engine is reachable; CI
//! guarantees one.

mod docker;

use std::collections::HashMap;
use std::path::PathBuf;

use basho_agent::backend::docker::DockerBackend;
use basho_agent::backend::suite::run_suite;
use basho_agent::backend::{Backend, BackendError, LaunchSpec, RunState};
use basho_agent::capacity::{self, CapacityConfig};
use basho_core::{Ident, LABEL_SITE, LABEL_WORKSPACE};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use docker::*;

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

/// A container of the site that exits wakes whoever waits on `changed`, and the list then says
/// it exited; one of another site does not.
#[tokio::test]
async fn an_exit_is_announced_by_changed() {
    let Some((_docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-changed");
    let other = Cleanup::new("t-changed-other");
    let dirs = dirs();
    let b = backend(&guard.site).await;
    let elsewhere = backend(&other.site).await;
    // The watch runs from the first wait on it.
    let woken = tokio::spawn({
        let b = b.clone();
        async move { b.changed().await }
    });
    let quiet = tokio::spawn({
        let b = elsewhere.clone();
        async move { b.changed().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ws = unique("ws-test");
    let mut s = spec(&guard.site, &ws, &image, &dirs);
    s.command = vec!["sh".into(), "-c".into(), "exit 4".into()];
    b.launch(&s).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), woken)
        .await
        .expect("changed resolves once the container exits")
        .unwrap();
    let state = wait_for(&b, &ws, |s| matches!(s, RunState::Exited(_))).await;
    assert_eq!(state, RunState::Exited(4));
    assert!(!quiet.is_finished(), "another site's backend was woken");
    quiet.abort();
    b.close().await;
    b.stop(&ws).await.unwrap();
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

/// `[capacity] only_idle` on Docker: a container that is not one of the site's workspaces holds
/// its limits of the host, and basho's offer shrinks by them; the site's own workspaces are not
/// counted against it; the offer comes back when the container goes. Other tests' containers on
/// this engine can only lower the offer, so every assertion is a bound they cannot break.
#[tokio::test]
async fn only_idle_leaves_what_other_containers_hold() {
    let Some((docker, image)) = engine().await else {
        return;
    };
    let guard = Cleanup::new("t-idle");
    let b = backend(&guard.site).await;
    let info = docker.info().await.unwrap();
    let ncpu = u32::try_from(info.ncpu.unwrap()).unwrap();
    let mem_mib = info.mem_total.unwrap() as u64 / (1024 * 1024);
    let config: CapacityConfig = toml::from_str(&format!(
        "cpus = {ncpu}\nmemory_mib = {mem_mib}\nmax_share = 0.5\nonly_idle = true"
    ))
    .unwrap();
    let ceiling = config.ceiling();
    assert_eq!(ceiling.cpus, ncpu / 2);
    assert_eq!(ceiling.memory_mib, mem_mib / 2);
    let big = (mem_mib - 1024) * 1024 * 1024;

    // The site's own workspace, even one with a limit of nearly all the memory, is basho's.
    let dirs = dirs();
    let ws = unique("ws-idle");
    let mut s = spec(&guard.site, &ws, &image, &dirs);
    s.resources.memory_mib = mem_mib - 1024;
    b.launch(&s).await.unwrap();
    let ours = capacity::current(&config, &b).await;
    assert!(ours.capacity.memory_mib > 1024, "{ours:?}");
    b.stop(&ws).await.unwrap();

    // A container of the host's own, limited to every CPU and all but 1 GiB.
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(vec!["sleep".into(), "600".into()]),
        user: Some("65534:65534".into()),
        labels: Some(HashMap::from([(
            LABEL_SITE.to_string(),
            guard.site.to_string(),
        )])),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            nano_cpus: Some(i64::from(ncpu) * 1_000_000_000),
            memory: Some(i64::try_from(big).unwrap()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = unique("host-load");
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&name, None).await.unwrap();
    let busy = capacity::current(&config, &b).await;
    assert_eq!(busy.capacity.cpus, 0, "{busy:?}");
    assert!(busy.capacity.memory_mib <= 1024, "{busy:?}");
    assert_eq!(busy.ceiling, ceiling);
    let note = busy.note.clone().unwrap();
    assert!(
        note.starts_with("the site's own work holds") && note.contains(&format!("of {ncpu} cpus")),
        "{note}"
    );

    guard.sweep();
    let after = capacity::current(&config, &b).await;
    assert!(after.capacity.memory_mib > 1024, "{after:?}");
    assert!(after.capacity.cpus <= ceiling.cpus);
}
