//! The Kubernetes backend against a fake API server (`kube_fake`): the exact pod it sends, the
//! conformance suite, state from the watch, re-adoption after a restart, and the API's failures
//! (409, 410, 500, dropped watches, a forbidden NetworkPolicy, a missing claim). Every request it
//! makes must be within `REQUIRED_PERMISSIONS`. One test runs against a real cluster and is
//! ignored by default.

mod kube_fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use basho_agent::backend::kubernetes::{KubernetesBackend, REQUIRED_PERMISSIONS};
use basho_agent::backend::suite::{example_spec, run_suite};
use basho_agent::backend::{Backend, BackendError, DatasetMount, LaunchSpec, RunState};
use basho_agent::config::{ClaimSource, KubernetesConfig};
use basho_core::Ident;
use chrono::{TimeZone, Utc};
use kube_fake::{FakeApi, Fault, NS, WAIT, site};
use serde_json::{Value, json};

/// The site's configuration, with the watch's grace of 1 s.
fn cfg() -> KubernetesConfig {
    kube_fake::config(1)
}

/// A fake with the site's claims, and a backend on it.
async fn setup() -> (FakeApi, KubernetesBackend) {
    let fake = FakeApi::start(NS).await;
    fake.add_claim("basho-work");
    fake.add_claim("jga");
    let backend = backend(&fake).await;
    (fake, backend)
}

async fn backend(fake: &FakeApi) -> KubernetesBackend {
    KubernetesBackend::with_client(fake.client(), site(), cfg())
        .await
        .unwrap()
}

fn spec(dir: &Path, workspace: &str) -> LaunchSpec {
    let json_path = dir.join(format!("{workspace}.json"));
    std::fs::write(
        &json_path,
        format!("{{\"id\":\"{workspace}\",\"project\":\"P-conformance\"}}\n"),
    )
    .unwrap();
    let mut s = example_spec(&site(), workspace);
    s.image = format!("registry.example/basho/demo@sha256:{}", "d".repeat(64));
    s.workspace_json = json_path;
    s
}

fn with_datasets(mut s: LaunchSpec) -> LaunchSpec {
    s.datasets = vec![
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
    ];
    s
}

/// Every request the backend made is one its Role grants.
fn assert_within_permissions(fake: &FakeApi) {
    for r in fake.requests() {
        let granted = REQUIRED_PERMISSIONS.iter().any(|p| {
            p.api_group == r.group && p.resource == r.resource && p.verbs.contains(&r.verb.as_str())
        });
        assert!(granted, "request {r:?} is outside REQUIRED_PERMISSIONS");
    }
}

/// Polls `f` until it is true.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    basho_test_util::wait_until(what, WAIT, f).await;
}

async fn state(backend: &KubernetesBackend, ws: &str) -> Option<RunState> {
    backend.inspect(ws).await.ok().flatten().map(|o| o.state)
}

#[tokio::test]
async fn the_pod_sent_is_the_golden_one() {
    let (fake, backend) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = with_datasets(spec(dir.path(), "ws-golden"));
    s.resources.gpus = 1;
    s.resources.memory_mib = 512;
    s.expires_at = Utc.with_ymd_and_hms(2099, 1, 2, 3, 4, 5).unwrap();
    backend.launch(&s).await.unwrap();
    let mut sent = fake.created().pop().unwrap();

    let deadline = sent["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
    let expected = (s.expires_at - Utc::now()).num_seconds();
    assert!((expected - deadline).abs() <= 5, "{deadline} vs {expected}");
    sent["spec"]["activeDeadlineSeconds"] = json!("<seconds until expires_at>");

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kubernetes/pod.json");
    let text = serde_json::to_string_pretty(&sent).unwrap() + "\n";
    if std::env::var_os("BASHO_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert_eq!(
        sent,
        want,
        "the pod differs from {}; if the change is meant, regenerate with BASHO_UPDATE_GOLDEN=1",
        golden.display()
    );

    // The fields the design requires, spelled out so a regenerated golden file cannot lose them.
    let spec = &sent["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_eq!(spec[host], false, "{host}");
    }
    let psc = &spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65534);
    assert_eq!(psc["runAsGroup"], 65534);
    assert_eq!(psc["fsGroup"], 65534);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = &spec["containers"][0];
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
    assert_eq!(c["image"], s.image);
    assert_eq!(
        c["imagePullPolicy"], "Never",
        "nothing is pulled unless the site says so"
    );
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["privileged"], false);
    assert_eq!(csc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": "1"})
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "dataset-0",
            "dataset-1",
            "work",
            "results",
            "tmp",
            "workspace-json"
        ]
    );
    let labels = &sent["metadata"]["labels"];
    assert_eq!(labels["io.basho.workspace"], "ws-golden");
    assert_eq!(labels["io.basho.project"], "P-conformance");
    assert_eq!(labels["io.basho.site"], "k8s-site");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "basho");
    assert_eq!(
        sent["metadata"]["annotations"]["io.basho.expires-at"],
        "2099-01-02T03:04:05Z"
    );
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let (fake, backend) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    run_suite(&backend, |id| spec(dir.path(), id))
        .await
        .unwrap();
    assert_eq!(fake.count("create", "pods"), 1);
    assert_eq!(fake.count("delete", "pods"), 2);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn states_follow_the_watch() {
    let (fake, backend) = setup().await;
    fake.set_auto_run(false);
    let dir = tempfile::tempdir().unwrap();
    let first = backend
        .launch(&spec(dir.path(), "ws-states"))
        .await
        .unwrap();
    assert_eq!(first.state, RunState::Starting);
    assert_eq!(first.handle, "basho-ws-states");
    let container = |state: Value| {
        json!([{"name": "workspace", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": state}])
    };
    let cases = [
        (
            json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}))}),
            "unknown",
        ),
        (
            json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "InvalidImageName"}}))}),
            "failed",
        ),
        (json!({"phase": "Running"}), "running"),
        (json!({"phase": "Unknown"}), "unknown"),
        (
            json!({"phase": "Failed", "reason": "DeadlineExceeded", "containerStatuses": container(json!({"terminated": {"exitCode": 137}}))}),
            "exited 137",
        ),
        (json!({"phase": "Succeeded"}), "exited 0"),
    ];
    for (status, want) in cases {
        fake.set_status("basho-ws-states", status);
        eventually(want, || async {
            let s = state(&backend, "ws-states").await;
            let got = match &s {
                Some(RunState::Unknown(_)) => "unknown".to_string(),
                Some(RunState::Failed(_)) => "failed".to_string(),
                Some(RunState::Running) => "running".to_string(),
                Some(RunState::Exited(c)) => format!("exited {c}"),
                other => format!("{other:?}"),
            };
            got == want
        })
        .await;
    }
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn closing_ends_the_watch_within_the_shutdown() {
    let (_fake, backend) = setup().await;
    let again = backend.clone();
    tokio::time::timeout(WAIT, backend.close())
        .await
        .expect("the watch ends when the backend is closed");
    tokio::time::timeout(WAIT, again.close())
        .await
        .expect("closing twice answers at once");
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_pods_and_launches_nothing_twice() {
    let (fake, first) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "ws-adopt");
    let launched = first.launch(&s).await.unwrap();
    drop(first);

    // Pods of another site in the same namespace are none of this agent's business.
    fake.insert_pod(json!({"metadata": {"name": "basho-ws-other", "labels": {
        "io.basho.workspace": "ws-other", "io.basho.site": "elsewhere",
        "app.kubernetes.io/managed-by": "basho"}}, "status": {"phase": "Running"}}));

    let second = backend(&fake).await;
    let listed = second.list_managed().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].workspace, "ws-adopt");
    assert_eq!(listed[0].handle, launched.handle);
    assert!(listed[0].expires_at.is_some());
    let again = second.launch(&s).await.unwrap();
    assert_eq!(again.handle, launched.handle);
    assert_eq!(fake.count("create", "pods"), 1);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_not_repeated() {
    let (fake, backend) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "ws-lost");
    // The pod is made but the answer is a 500: the workspace is unknown, not failed.
    fake.fault(Fault {
        verb: "create",
        resource: "pods",
        code: 500,
        after: true,
        message: None,
    });
    // And the store does not see it yet when the launch is retried: it must go through the 409.
    fake.fault(Fault {
        verb: "watch",
        resource: "pods",
        code: 500,
        after: false,
        message: None,
    });
    fake.drop_watches();
    let err = backend.launch(&s).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    let again = backend.launch(&s).await.unwrap();
    assert_eq!(again.handle, "basho-ws-lost");
    let creates = fake.count("create", "pods");
    assert!(creates <= 2, "{creates} creates");
    eventually("one pod", || async {
        backend.list_managed().await.is_ok_and(|l| l.len() == 1)
    })
    .await;
    assert!(fake.pod("basho-ws-lost").is_some());
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_name_taken_by_another_site_is_refused() {
    let (fake, backend) = setup().await;
    fake.insert_pod(json!({"metadata": {"name": "basho-ws-taken", "labels": {
        "io.basho.workspace": "ws-taken", "io.basho.site": "elsewhere"}}}));
    let dir = tempfile::tempdir().unwrap();
    let err = backend
        .launch(&spec(dir.path(), "ws-taken"))
        .await
        .unwrap_err();
    match err {
        BackendError::Refused { message: m, .. } => assert!(m.contains("does not manage"), "{m}"),
        other => panic!("{other}"),
    }
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_conflict_with_its_own_pod_adopts_it() {
    let (fake, backend) = setup().await;
    // Its own pod, which the watch has not shown (here: it lacks the managed-by label): the
    // create meets 409 and the launch reads the pod back instead of making another.
    fake.insert_pod(json!({"metadata": {"name": "basho-ws-mine", "labels": {
        "io.basho.workspace": "ws-mine", "io.basho.site": "k8s-site"}},
        "status": {"phase": "Running"}}));
    let dir = tempfile::tempdir().unwrap();
    let seen = backend.launch(&spec(dir.path(), "ws-mine")).await.unwrap();
    assert_eq!(seen.handle, "basho-ws-mine");
    assert_eq!(seen.state, RunState::Running);
    assert_eq!(fake.count("create", "pods"), 1);
    assert_eq!(fake.count("get", "pods"), 1);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn the_watch_resumes_after_a_drop_and_relists_after_410() {
    let (fake, backend) = setup().await;
    fake.set_auto_run(false);
    let dir = tempfile::tempdir().unwrap();
    backend.launch(&spec(dir.path(), "ws-watch")).await.unwrap();
    eventually("seen by the watch", || async {
        state(&backend, "ws-watch").await == Some(RunState::Starting)
    })
    .await;

    // A dropped connection: the watch resumes from where it was.
    fake.drop_watches();
    fake.set_status("basho-ws-watch", json!({"phase": "Running"}));
    eventually("running after the drop", || async {
        state(&backend, "ws-watch").await == Some(RunState::Running)
    })
    .await;

    // History gone: resuming gets 410, and the backend lists again.
    let lists = fake.count("list", "pods");
    fake.compact();
    fake.drop_watches();
    fake.set_status("basho-ws-watch", json!({"phase": "Succeeded"}));
    eventually("exited after the 410", || async {
        state(&backend, "ws-watch").await == Some(RunState::Exited(0))
    })
    .await;
    assert!(fake.count("list", "pods") > lists);
    assert_eq!(fake.count("create", "pods"), 1);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn workspaces_are_unknown_while_the_api_is_down() {
    let (fake, backend) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "ws-down");
    backend.launch(&s).await.unwrap();
    eventually("running", || async {
        state(&backend, "ws-down").await == Some(RunState::Running)
    })
    .await;

    fake.set_down(true);
    eventually("unavailable past the grace", || async {
        matches!(
            backend.list_managed().await,
            Err(BackendError::Unavailable { .. })
        )
    })
    .await;
    assert!(matches!(
        backend.inspect("ws-down").await,
        Err(BackendError::Unavailable { .. })
    ));
    assert!(matches!(
        backend.launch(&s).await,
        Err(BackendError::Unavailable { .. })
    ));
    assert!(matches!(
        backend.stop("ws-down").await,
        Err(BackendError::Unavailable { .. })
    ));

    fake.set_down(false);
    eventually("back", || async {
        backend.list_managed().await.is_ok_and(|l| l.len() == 1)
    })
    .await;
    assert_eq!(state(&backend, "ws-down").await, Some(RunState::Running));
    assert_eq!(fake.count("create", "pods"), 1);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_forbidden_network_policy_refuses_the_launch() {
    let fake = FakeApi::start(NS).await;
    fake.add_claim("basho-work");
    fake.deny_policies(true);
    let backend = backend(&fake).await;
    let dir = tempfile::tempdir().unwrap();
    let err = backend
        .launch(&spec(dir.path(), "ws-nonetpol"))
        .await
        .unwrap_err();
    match err {
        BackendError::Refused { message: m, .. } => {
            assert!(m.contains("networkpolicies") && m.contains("get"), "{m}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(fake.count("create", "pods"), 0);

    // Allowed again: the agent creates the policy, then the pod.
    fake.deny_policies(false);
    backend
        .launch(&spec(dir.path(), "ws-nonetpol"))
        .await
        .unwrap();
    assert_eq!(fake.count("create", "networkpolicies"), 1);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_pod_security_refusal_says_so() {
    let (fake, backend) = setup().await;
    fake.fault(Fault {
        verb: "create",
        resource: "pods",
        code: 403,
        after: false,
        message: Some(
            "pods \"basho-ws-psa\" is forbidden: violates PodSecurity \"restricted:latest\": \
             hostPath volumes (volume \"dataset-0\")",
        ),
    });
    let dir = tempfile::tempdir().unwrap();
    let err = backend
        .launch(&with_datasets(spec(dir.path(), "ws-psa")))
        .await
        .unwrap_err();
    match err {
        BackendError::Refused { message: m, .. } => {
            assert!(
                m.contains("Pod Security") && m.contains("PersistentVolumeClaims"),
                "{m}"
            )
        }
        other => panic!("{other}"),
    }
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_missing_claim_refuses_the_launch() {
    let fake = FakeApi::start(NS).await;
    fake.add_claim("basho-work");
    let backend = backend(&fake).await;
    let dir = tempfile::tempdir().unwrap();
    let err = backend
        .launch(&with_datasets(spec(dir.path(), "ws-noclaim")))
        .await
        .unwrap_err();
    match err {
        BackendError::Refused { message: m, .. } => {
            assert!(m.contains("dataset JGAD000102") && m.contains("jga"), "{m}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(fake.count("create", "pods"), 0);
    assert_within_permissions(&fake);
}

#[tokio::test]
async fn a_server_error_on_create_is_unavailable_and_bad_specs_are_refused() {
    let (fake, backend) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    fake.fault(Fault {
        verb: "create",
        resource: "pods",
        code: 500,
        after: false,
        message: None,
    });
    let s = spec(dir.path(), "ws-500");
    assert!(matches!(
        backend.launch(&s).await,
        Err(BackendError::Unavailable { .. })
    ));
    backend.launch(&s).await.unwrap();

    let mut bare = spec(dir.path(), "ws-bare");
    bare.image = format!("sha256:{}", "d".repeat(64));
    assert!(matches!(
        backend.launch(&bare).await,
        Err(BackendError::Refused { message: m, .. }) if m.contains("kubelet cannot pull")
    ));
    // Stopping what is not there succeeds.
    backend.stop("ws-never").await.unwrap();
    assert_eq!(fake.count("create", "pods"), 2);
    assert_within_permissions(&fake);
}

#[test]
fn required_permissions_are_what_the_chart_needs() {
    let rules: Vec<String> = REQUIRED_PERMISSIONS
        .iter()
        .map(|p| format!("{}/{}: {}", p.api_group, p.resource, p.verbs.join(",")))
        .collect();
    assert_eq!(
        rules,
        [
            "/pods: get,list,watch,create,delete",
            "/pods/exec: get,create",
            "/persistentvolumeclaims: get",
            "networking.k8s.io/networkpolicies: get,create",
        ]
    );
}

#[test]
fn the_example_site_config_loads_and_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site-kubernetes.toml");
    let cfg = basho_agent::load_config(&path).unwrap();
    assert_eq!(cfg.backend.kind(), "kubernetes");
    assert_eq!(cfg.datasets[0].claim.as_ref().unwrap().name, "jga-datasets");
    // Only what a machine without the site's files lacks: the token and the issuers' keys.
    for problem in basho_agent::check_config(&cfg) {
        assert!(problem.contains("No such file or directory"), "{problem}");
    }

    let mut bad = cfg.clone();
    let basho_agent::config::BackendConfig::Kubernetes(k8s) = &mut bad.backend else {
        unreachable!()
    };
    k8s.work.host_path = Some("/var/run".into());
    bad.datasets[1].path = PathBuf::from("/");
    bad.datasets[0].claim.as_mut().unwrap().sub_path = Some("../x".into());
    let problems = basho_agent::check_config(&bad);
    for needle in ["backend.work", "dataset JGAD000202", "dataset JGAD000201"] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:#?}"
        );
    }
}

#[test]
fn the_catalog_carries_claims_and_other_backends_refuse_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site-kubernetes.toml");
    let mut cfg = basho_agent::load_config(&path).unwrap();
    let catalog = basho_agent::catalog::Catalog::from_config(&cfg);
    let id = Ident::parse("JGAD000201").unwrap();
    assert_eq!(
        catalog
            .dataset(&id)
            .unwrap()
            .claim
            .as_ref()
            .unwrap()
            .sub_path
            .as_deref(),
        Some("JGAD000201")
    );
    cfg.backend = basho_agent::config::BackendConfig::Docker(basho_agent::config::DockerConfig {
        socket: None,
        namespace: None,
        init: None,
    });
    let problems = basho_agent::check_config(&cfg);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("dataset JGAD000201: claim is only used by the kubernetes backend")),
        "{problems:#?}"
    );
}

/// The conformance suite on a real cluster.
///
/// ```sh
/// kind create cluster --name basho            # or: k3d cluster create basho
/// kubectl create namespace basho-test
/// kubectl -n basho-test apply -f - <<'EOF'
/// apiVersion: v1
/// kind: PersistentVolumeClaim
/// metadata: {name: basho-work}
/// spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
/// EOF
/// # An image by digest the nodes can pull, e.g. busybox:
/// export BASHO_K8S_IMAGE=docker.io/library/busybox@sha256:<digest>
/// export BASHO_K8S_NAMESPACE=basho-test
/// cargo nextest run -p basho-agent --run-ignored only kubernetes_backend::real_cluster
/// ```
///
/// It uses the current kubeconfig context; `/results` is a hostPath `/tmp` on the node.
#[tokio::test]
#[ignore = "needs a cluster: kind or k3d with a namespace, see the doc comment"]
async fn real_cluster() {
    let (backend, image) = kube_fake::real_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    run_suite(&backend, |id| {
        let mut s = spec(dir.path(), id);
        s.image = image.clone();
        s
    })
    .await
    .unwrap();
}

/// The shared backend suite against the fake API server: exits by pod phase, cut off by taking
/// the server down past the watch's grace, a fresh instance is a second backend on the server.
mod suite {
    use async_trait::async_trait;
    use basho_agent::backend::suite::Harness;

    use super::*;

    struct Kube {
        fake: FakeApi,
        backend: KubernetesBackend,
        dir: tempfile::TempDir,
    }

    #[async_trait]
    impl Harness for Kube {
        fn backend(&self) -> &dyn Backend {
            &self.backend
        }
        fn spec(&self, workspace: &str) -> LaunchSpec {
            spec(self.dir.path(), workspace)
        }
        async fn make_exit(&self, workspace: &str) -> bool {
            self.fake
                .set_status(&format!("basho-{workspace}"), json!({"phase": "Succeeded"}));
            true
        }
        async fn cut_connection(&self) -> bool {
            self.fake.set_down(true);
            // Past the watch's grace of 1 s the cached view is no longer trusted.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            true
        }
        async fn fresh_instance(&self) -> Option<Box<dyn Backend>> {
            Some(Box::new(backend(&self.fake).await))
        }
    }

    async fn kube() -> Option<Kube> {
        let (fake, backend) = setup().await;
        let dir = tempfile::tempdir().unwrap();
        Some(Kube { fake, backend, dir })
    }

    basho_agent::backend_suite!(kube());
}
