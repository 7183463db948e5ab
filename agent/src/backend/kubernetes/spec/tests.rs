//! The checks of a spec on Kubernetes and the isolation fields of the pod (the whole object is
//! pinned by the golden file of `agent/tests/kubernetes_backend.rs`).

use std::path::PathBuf;

use basho_core::{Ident, Resources};
use chrono::TimeZone;

use super::*;
use crate::backend::DatasetMount;
use crate::config::ClaimSource;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 2, 4, 5).unwrap()
}

fn cfg() -> KubernetesConfig {
    toml::from_str(
        r#"
        namespace = "basho"
        work = { claim = "basho-work" }
        results = { host_path = "/srv/results" }
        "#,
    )
    .unwrap()
}

fn spec() -> LaunchSpec {
    LaunchSpec {
        workspace: basho_core::WorkspaceId::parse("ws-1").unwrap(),
        project: Ident::parse("P-0001").unwrap(),
        site: Ident::parse("k8s").unwrap(),
        image: format!("registry.example/basho/demo@sha256:{}", "a".repeat(64)),
        command: vec!["sleep".into(), "60".into()],
        workdir: None,
        datasets: vec![
            DatasetMount {
                release: 1,
                id: Ident::parse("JGAD000101").unwrap(),
                host_path: PathBuf::from("/srv/jga/JGAD000101"),
                claim: None,
            },
            DatasetMount {
                release: 1,
                id: Ident::parse("JGAD000102").unwrap(),
                host_path: PathBuf::new(),
                claim: Some(ClaimSource {
                    name: "jga".into(),
                    sub_path: Some("JGAD000102".into()),
                }),
            },
        ],
        work_dir: PathBuf::from("/var/lib/basho-agent/work/ws-1"),
        results_dir: PathBuf::from("/unused"),
        inputs_dir: None,
        workspace_json: PathBuf::from("/unused"),
        env: vec![("BASHO_WORKSPACE".into(), "ws-1".into())],
        resources: Resources {
            cpus: 2,
            memory_mib: 512,
            gpus: 1,
        },
        expires_at: Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap(),
        user: "1000:2000".into(),
        pids_limit: 256,
        tmp_size_mib: 64,
    }
}

fn refused_with(s: &LaunchSpec, needle: &str) {
    match check(s, now()) {
        Err(BackendError::Refused { message: m, .. }) => {
            assert!(m.contains(needle), "{needle}: {m}")
        }
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_sound_spec_passes() {
    let c = check(&spec(), now()).unwrap();
    assert_eq!((c.uid, c.gid, c.deadline_s), (1000, 2000, 3600));
}

#[test]
fn refuses_what_a_cluster_cannot_run_safely() {
    let mut s = spec();
    s.image = format!("sha256:{}", "a".repeat(64));
    refused_with(&s, "kubelet cannot pull");
    let mut s = spec();
    s.image = "registry.example/basho/demo:latest".into();
    refused_with(&s, "not pinned");
    let mut s = spec();
    s.user = "0:0".into();
    refused_with(&s, "not allowed");
    let mut s = spec();
    s.user = "1000".into();
    refused_with(&s, "no group");
    let mut s = spec();
    s.expires_at = now();
    refused_with(&s, "has passed");
    let mut s = spec();
    s.workspace = basho_core::WorkspaceId::parse("WS-Upper").unwrap();
    refused_with(&s, "pod name");
    let mut s = spec();
    s.datasets.push(s.datasets[0].clone());
    refused_with(&s, "twice");
    let mut s = spec();
    s.datasets[1].claim.as_mut().unwrap().sub_path = Some("../other".into());
    refused_with(&s, "sub_path");
    let mut s = spec();
    s.datasets[0].host_path = PathBuf::from("relative");
    refused_with(&s, "not absolute");
    let mut s = spec();
    s.datasets[0].host_path = PathBuf::from("/var/run");
    refused_with(&s, "would expose");
    let mut s = spec();
    s.pids_limit = 0;
    refused_with(&s, "pids_limit");
}

#[test]
fn a_batch_launch_sets_its_working_directory_and_environment() {
    let mut s = spec();
    s.workdir = Some("/tmp/run".into());
    s.env.push(("LANG".into(), "C".into()));
    let c = check(&s, now()).unwrap();
    let p = pod(&s, &cfg(), &c, "{}");
    let container = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.working_dir.as_deref(), Some("/tmp/run"));
    let env = container.env.as_ref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "LANG" && e.value.as_deref() == Some("C"))
    );
}

#[test]
fn the_pod_carries_every_isolation_default() {
    let s = spec();
    let c = check(&s, now()).unwrap();
    let p = pod(&s, &cfg(), &c, "{}");
    let ps = p.spec.as_ref().unwrap();
    assert_eq!(ps.restart_policy.as_deref(), Some("Never"));
    assert_eq!(ps.automount_service_account_token, Some(false));
    assert_eq!(ps.enable_service_links, Some(false));
    assert_eq!(
        (ps.host_network, ps.host_pid, ps.host_ipc),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(ps.active_deadline_seconds, Some(3600));
    let sc = ps.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        (sc.run_as_user, sc.run_as_group, sc.fs_group),
        (Some(1000), Some(2000), Some(2000))
    );
    let container = &ps.containers[0];
    let csc = container.security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.privileged, Some(false));
    assert_eq!(
        csc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let r = container.resources.as_ref().unwrap();
    assert_eq!(r.requests, r.limits);
    assert_eq!(r.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "1");
    let mounts: Vec<_> = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/data/JGAD000101", true),
            ("/data/JGAD000102", true),
            ("/work", false),
            ("/results", false),
            ("/tmp", false),
            ("/etc/basho", true),
        ]
    );
    let mut no_gpu = spec();
    no_gpu.resources.gpus = 0;
    let p = pod(&no_gpu, &cfg(), &c, "{}");
    let limits = p.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap();
    assert!(!limits.contains_key("nvidia.com/gpu"));
}

#[test]
fn workspace_json_must_be_json_of_annotation_size() {
    assert_eq!(
        workspace_json("{\"id\":\"ws-1\"}\n").unwrap(),
        "{\"id\":\"ws-1\"}"
    );
    assert!(workspace_json("").is_err());
    assert!(workspace_json(&format!("\"{}\"", "x".repeat(70_000))).is_err());
}
