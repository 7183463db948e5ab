//! The Helm charts under `helm/` agree with the code they deploy: rendered with their default
//! values and with every `ci/*.yaml` (through `tools/chart-render`, which `scripts/check-charts`
//! builds), the agent's Role grants exactly what the Kubernetes backend calls and only in the
//! workspace namespace, every pod is hardened like a workspace, the workspace NetworkPolicy is the
//! one the agent itself would create, and the config files the charts write load in the real
//! config parsers. `scripts/check-charts` validates the same renderings against the Kubernetes
//! API schemas.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use basho_agent::backend::kubernetes::REQUIRED_PERMISSIONS;
use basho_agent::backend::kubernetes::policy::POLICY_NAME;
use basho_agent::backend::kubernetes::spec::{LABEL_MANAGED_BY, MANAGED_BY};
use serde_json::Value;

const RELEASE_NAMESPACE: &str = "basho";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The renderer, built (once per machine, cached in target/) by `scripts/check-charts`.
fn renderer() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo().join("scripts/check-charts"))
            .arg("--build-only")
            .current_dir(repo())
            .output()
            .expect("running scripts/check-charts --build-only");
        assert!(
            out.status.success(),
            "scripts/check-charts --build-only failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("the renderer's path").trim())
    })
}

/// One rendering of a chart.
struct Rendering {
    /// `chart (values)`, for messages.
    label: String,
    objects: Vec<Value>,
}

impl Rendering {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn one(&self, kind: &str) -> &Value {
        let all: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(all.len(), 1, "{}: expected one {kind}", self.label);
        all[0]
    }
}

/// The chart rendered with its default values, then with each of its `ci/*.yaml`.
fn renderings(chart: &str) -> Vec<Rendering> {
    let dir = repo().join("helm").join(chart);
    let mut values: Vec<Option<PathBuf>> = vec![None];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(dir.join("ci"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    ci.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    ci.sort();
    assert!(!ci.is_empty(), "{chart} has no ci/*.yaml example");
    values.extend(ci.into_iter().map(Some));
    values
        .into_iter()
        .map(|v| {
            let mut cmd = Command::new(renderer());
            cmd.args([
                "-o",
                "json",
                "-name",
                chart,
                "-namespace",
                RELEASE_NAMESPACE,
            ]);
            if let Some(v) = &v {
                cmd.arg("-f").arg(v);
            }
            let out = cmd.arg(&dir).output().expect("running chart-render");
            let label = format!(
                "{chart} ({})",
                v.as_ref().map_or("default values".into(), |p| p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned())
            );
            assert!(
                out.status.success(),
                "{label} does not render:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let objects = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>();
            assert!(!objects.is_empty(), "{label} rendered nothing");
            Rendering { label, objects }
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn default_values_render() {
    for chart in ["basho-agent", "basho-orchestrator"] {
        let r = &renderings(chart)[0];
        assert!(r.label.ends_with("(default values)"));
        r.one("Deployment");
        r.one("ServiceAccount");
    }
}

#[test]
fn agent_role_grants_exactly_what_the_kubernetes_backend_calls() {
    let expected: BTreeSet<(String, String, Vec<String>)> = REQUIRED_PERMISSIONS
        .iter()
        .map(|p| {
            let mut verbs: Vec<String> = p.verbs.iter().map(|v| (*v).to_owned()).collect();
            verbs.sort();
            (p.api_group.to_owned(), p.resource.to_owned(), verbs)
        })
        .collect();
    for r in renderings("basho-agent") {
        let role = r.one("Role");
        let mut granted = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            let keys: BTreeSet<&str> = rule.as_object().unwrap().keys().map(|k| &**k).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["apiGroups", "resources", "verbs"]),
                "{}: a rule with other fields (resourceNames, nonResourceURLs): {rule}",
                r.label
            );
            let mut verbs = strings(&rule["verbs"]);
            verbs.sort();
            assert!(
                !verbs.iter().any(|v| v == "*"),
                "{}: wildcard verb",
                r.label
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    assert!(
                        granted.insert((group.clone(), resource, verbs.clone())),
                        "{}: a resource granted twice",
                        r.label
                    );
                }
            }
        }
        assert_eq!(
            granted, expected,
            "{}: the Role differs from REQUIRED_PERMISSIONS",
            r.label
        );
    }
}

#[test]
fn agent_rbac_is_namespaced_to_the_workspace_namespace() {
    for r in renderings("basho-agent") {
        for o in &r.objects {
            let kind = o["kind"].as_str().unwrap();
            assert!(
                !kind.starts_with("Cluster"),
                "{}: renders a cluster-wide {kind}",
                r.label
            );
        }
        let site: toml::Value = toml::from_str(
            r.one("ConfigMap")["data"]["site.toml"]
                .as_str()
                .expect("site.toml in the ConfigMap"),
        )
        .unwrap();
        let workspaces = site["backend"]["namespace"].as_str().unwrap();
        assert_ne!(
            workspaces, RELEASE_NAMESPACE,
            "{}: workspaces share the agent's namespace",
            r.label
        );
        let role = r.one("Role");
        let binding = r.one("RoleBinding");
        assert_eq!(role["metadata"]["namespace"], workspaces, "{}", r.label);
        assert_eq!(binding["metadata"]["namespace"], workspaces, "{}", r.label);
        assert_eq!(binding["roleRef"]["kind"], "Role", "{}", r.label);
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{}", r.label);
        let pod = &r.one("Deployment")["spec"]["template"]["spec"];
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(
            subjects[0]["name"], pod["serviceAccountName"],
            "{}",
            r.label
        );
        assert_eq!(subjects[0]["namespace"], RELEASE_NAMESPACE, "{}", r.label);
        // Only the agent's own pod gets an API token.
        for sa in r.of_kind("ServiceAccount") {
            assert_eq!(sa["automountServiceAccountToken"], false, "{}", r.label);
        }
        assert_eq!(pod["automountServiceAccountToken"], true, "{}", r.label);
        // A namespace the chart creates enforces Pod Security "restricted".
        for ns in r.of_kind("Namespace") {
            assert_eq!(ns["metadata"]["name"], workspaces);
            assert_eq!(
                ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
                "{}",
                r.label
            );
        }
    }
}

#[test]
fn every_pod_is_hardened_like_a_workspace() {
    for chart in ["basho-agent", "basho-orchestrator"] {
        for r in renderings(chart) {
            let deployment = r.one("Deployment");
            let l = &r.label;
            if chart == "basho-agent" {
                // One agent per site: it owns the site's containers and state.
                assert_eq!(deployment["spec"]["replicas"], 1, "{l}");
                assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{l}");
            }
            let pod = &deployment["spec"]["template"]["spec"];
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{l}");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{l}");
            assert_ne!(psc["runAsUser"], 0, "{l}");
            for host in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(pod[host].is_null() || pod[host] == false, "{l}: {host}");
            }
            for v in pod["volumes"].as_array().unwrap() {
                assert!(v["hostPath"].is_null(), "{l}: hostPath volume {v}");
            }
            if chart == "basho-orchestrator" {
                assert_eq!(pod["automountServiceAccountToken"], false, "{l}");
            }
            let containers = pod["containers"].as_array().unwrap();
            assert!(pod["initContainers"].is_null(), "{l}");
            for c in containers {
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{l}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{l}");
                assert_eq!(sc["runAsNonRoot"], true, "{l}");
                assert!(
                    sc["privileged"].is_null() || sc["privileged"] == false,
                    "{l}"
                );
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{l}"
                );
                assert!(sc["capabilities"]["add"].is_null(), "{l}");
                for limit in ["cpu", "memory"] {
                    assert!(
                        c["resources"]["limits"][limit].is_string(),
                        "{l}: no {limit} limit"
                    );
                }
                // The read-only root needs a writable /tmp.
                assert!(
                    c["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["mountPath"] == "/tmp"),
                    "{l}: no /tmp"
                );
            }
        }
    }
}

#[test]
fn workspace_network_policy_is_the_agents_deny_all() {
    let mut seen = 0;
    for r in renderings("basho-agent") {
        for np in r
            .of_kind("NetworkPolicy")
            .filter(|np| np["metadata"]["name"] == POLICY_NAME)
        {
            seen += 1;
            let spec = &np["spec"];
            assert_eq!(
                spec["podSelector"],
                serde_json::json!({"matchLabels": {LABEL_MANAGED_BY: MANAGED_BY}}),
                "{}",
                r.label
            );
            assert_eq!(
                spec["policyTypes"],
                serde_json::json!(["Ingress", "Egress"]),
                "{}",
                r.label
            );
            for dir in ["ingress", "egress"] {
                assert!(
                    spec[dir].is_null() || spec[dir] == serde_json::json!([]),
                    "{}: {dir} rules",
                    r.label
                );
            }
        }
    }
    assert!(seen > 0, "no rendering creates the deny-all NetworkPolicy");
}

#[test]
fn rendered_site_configs_load() {
    let mut shared = 0;
    for r in renderings("basho-agent") {
        let text = r.one("ConfigMap")["data"]["site.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        let cfg = basho_agent::config::parse(&text, Path::new("site.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", r.label));
        assert_eq!(cfg.backend.kind(), "kubernetes", "{}", r.label);
        // The chart has no onlyIdle: the kubernetes backend refuses it.
        assert!(!cfg.capacity.only_idle, "{}", r.label);
        if r.label.ends_with("(default values)") {
            // [capacity] keys past gpus are rendered only when set: the agent's defaults apply.
            let site: toml::Value = toml::from_str(&text).unwrap();
            let keys: BTreeSet<&str> = site["capacity"]
                .as_table()
                .unwrap()
                .keys()
                .map(|k| &**k)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["cpus", "memory_mib", "gpus"]),
                "{}",
                r.label
            );
        }
        let c = &cfg.capacity;
        if c.max_share < 1.0
            && !c.quiet_hours.is_empty()
            && c.utc_offset != "+00:00"
            && c.report_every_s != 10
        {
            shared += 1;
        }
        for problem in basho_agent::check_config(&cfg) {
            // Only what exists in the pod, not here: the token, the CA and JWKS files.
            let in_the_pod = problem.contains("/etc/basho/")
                || problem.starts_with("no trusted_issuers")
                || problem.contains("No such file or directory");
            assert!(in_the_pod, "{}: {problem}\n{text}", r.label);
        }
    }
    assert!(
        shared > 0,
        "no rendering sets capacity.maxShare, quietHours, utcOffset and reportEveryS"
    );
}

#[test]
fn rendered_orchestrator_configs_load() {
    let mut validated = 0;
    for r in renderings("basho-orchestrator") {
        let Some(secret) = r
            .of_kind("Secret")
            .find(|s| s["stringData"]["orchestrator.toml"].is_string())
        else {
            continue; // config.existingSecret
        };
        let text = secret["stringData"]["orchestrator.toml"].as_str().unwrap();
        let cfg: basho_orchestrator::config::Config =
            toml::from_str(text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", r.label));
        let problems = cfg.validate();
        if cfg.platform_tokens.is_empty() {
            // The default values name no token; the orchestrator says so at start.
            assert_eq!(problems.len(), 1, "{}: {problems:?}", r.label);
            assert!(problems[0].contains("platform_tokens"), "{problems:?}");
        } else {
            assert!(problems.is_empty(), "{}: {problems:?}", r.label);
            validated += 1;
        }
        let deployment = r.one("Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["path"], "/healthz",
                "{}",
                r.label
            );
            assert_eq!(
                container[probe]["httpGet"]["scheme"], "HTTPS",
                "{}",
                r.label
            );
        }
        assert_eq!(
            container["ports"][0]["containerPort"],
            u64::from(cfg.listen.port()),
            "{}",
            r.label
        );
    }
    assert!(validated > 0, "no ci example with tokens");
}

#[test]
fn orchestrator_chart_ships_the_repository_shell_template() {
    let values =
        std::fs::read_to_string(repo().join("helm/basho-orchestrator/values.yaml")).unwrap();
    let r = &renderings("basho-orchestrator")[0];
    let cm = r
        .of_kind("ConfigMap")
        .find(|c| c["data"]["shell.toml"].is_string())
        .expect("the templates ConfigMap");
    let shipped: toml::Value = toml::from_str(cm["data"]["shell.toml"].as_str().unwrap()).unwrap();
    let repo_template: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo().join("templates/workspaces/shell.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        shipped, repo_template,
        "helm/basho-orchestrator/values.yaml workspaceTemplates differs from templates/workspaces/shell.toml"
    );
    assert!(values.contains("workspaceTemplates:"));
}

/// Renders `chart` with `--set` overrides; the error text when it refuses.
fn render_with(chart: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(renderer());
    cmd.args(["-o", "json", "-namespace", RELEASE_NAMESPACE]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd
        .arg(repo().join("helm").join(chart))
        .output()
        .expect("running chart-render");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn values_schemas_refuse_loosening_and_bad_identifiers() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "basho-agent",
            "securityContext.privileged=true",
            "securityContext.privileged",
        ),
        (
            "basho-orchestrator",
            "securityContext.readOnlyRootFilesystem=false",
            "readOnlyRootFilesystem",
        ),
        (
            "basho-agent",
            "securityContext.allowPrivilegeEscalation=true",
            "allowPrivilegeEscalation",
        ),
        (
            "basho-agent",
            "podSecurityContext.runAsNonRoot=false",
            "runAsNonRoot",
        ),
        ("basho-agent", "isolation.user=0:0", "isolation.user"),
        ("basho-agent", "sessions.proof=optional", "sessions.proof"),
        (
            "basho-agent",
            "sessions.identityIssuers=[{issuer: 'https://idp.example.org', jwks: '{}'}]",
            "audience",
        ),
        (
            "basho-agent",
            "orchestrator.url=http://basho.example.org",
            "orchestrator.url",
        ),
        (
            "basho-agent",
            "images={basho/shell: 'basho/shell:latest'}",
            "images",
        ),
        (
            "basho-agent",
            "datasets=[{id: '../etc', hostPath: /srv}]",
            "datasets.0.id",
        ),
        (
            "basho-agent",
            "datasets=[{id: JGAD000101, claim: {name: jga, subPath: ../x}}]",
            "subPath",
        ),
        ("basho-agent", "datasets=[{id: JGAD000101}]", "datasets.0"),
        (
            "basho-agent",
            "workspaces.work={claim: a, hostPath: /b}",
            "workspaces.work",
        ),
        ("basho-agent", "rbac.clusterWide=true", "rbac"),
        // The kubernetes backend refuses only_idle, so the chart has no value for it.
        ("basho-agent", "capacity.onlyIdle=true", "onlyIdle"),
        ("basho-agent", "capacity.maxShare=0", "capacity.maxShare"),
        ("basho-agent", "capacity.maxShare=1.5", "capacity.maxShare"),
        (
            "basho-agent",
            "capacity.quietHours=['mon-fri 9:00-18:00']",
            "capacity.quietHours.0",
        ),
        (
            "basho-agent",
            "capacity.quietHours=['24:00-06:00']",
            "capacity.quietHours.0",
        ),
        (
            "basho-agent",
            "capacity.utcOffset=JST",
            "capacity.utcOffset",
        ),
        (
            "basho-agent",
            "capacity.reportEveryS=0",
            "capacity.reportEveryS",
        ),
        (
            "basho-agent",
            "capacity.reportEveryS=3601",
            "capacity.reportEveryS",
        ),
        (
            "basho-orchestrator",
            "tokens.platform=['has space']",
            "tokens.platform.0",
        ),
        (
            "basho-orchestrator",
            "limits.longPollMaxS=0",
            "limits.longPollMaxS",
        ),
    ];
    for (chart, set, field) in cases {
        match render_with(chart, &[set]) {
            Ok(_) => panic!("{chart} rendered with --set {set}"),
            Err(e) => assert!(
                e.contains("values don't meet the schema") && e.contains(field),
                "{chart} --set {set}: {e}"
            ),
        }
    }
    // And what the schema allows still renders.
    assert!(render_with("basho-agent", &["isolation.user=1000:1000"]).is_ok());
}

#[test]
fn every_jwks_file_the_site_config_names_is_mounted() {
    let mut named = 0;
    for r in renderings("basho-agent") {
        let text = r.one("ConfigMap")["data"]["site.toml"].as_str().unwrap();
        let cfg = basho_agent::config::parse(text, Path::new("site.toml")).unwrap();
        let files: Vec<PathBuf> = cfg
            .trusted_issuers
            .iter()
            .map(|i| i.jwks_file.clone())
            .chain(
                cfg.sessions
                    .identity_issuers
                    .iter()
                    .map(|i| i.jwks_file.clone()),
            )
            .chain(cfg.sessions.approvers.iter().map(|i| i.jwks_file.clone()))
            .collect();
        let deployment = r.one("Deployment");
        let volumes = deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        let projected: Vec<String> = volumes
            .iter()
            .filter(|v| v["name"] == "issuers")
            .flat_map(|v| v["projected"]["sources"].as_array().unwrap().iter())
            .flat_map(|s| {
                let src = s.get("secret").or_else(|| s.get("configMap")).unwrap();
                src["items"].as_array().unwrap().iter()
            })
            .map(|i| format!("/etc/basho/issuers/{}", i["path"].as_str().unwrap()))
            .collect();
        for f in &files {
            assert!(
                projected.contains(&f.display().to_string()),
                "{}: {} is not mounted ({projected:?})",
                r.label,
                f.display()
            );
        }
        named += cfg.sessions.identity_issuers.len() + cfg.sessions.approvers.len();
    }
    assert!(named >= 2, "no rendering names a session key");
}

#[test]
fn the_service_monitor_scrapes_with_a_token() {
    let mut seen = 0;
    for r in renderings("basho-orchestrator") {
        for m in r.of_kind("ServiceMonitor") {
            let auth = &m["spec"]["endpoints"][0]["authorization"];
            assert_eq!(auth["type"], "Bearer", "{}", r.label);
            assert!(
                auth["credentials"]["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no rendering makes a ServiceMonitor");
    let e = render_with("basho-orchestrator", &["serviceMonitor.enabled=true"]).unwrap_err();
    assert!(e.contains("serviceMonitor.tokenSecret.name"), "{e}");
}

#[test]
fn orchestrator_replicas_need_postgres_and_advertise_their_peer_address() {
    let mut replicated = 0;
    for r in renderings("basho-orchestrator") {
        let deployment = r.one("Deployment");
        let spec = &deployment["spec"];
        let pod = &spec["template"]["spec"];
        let env = &pod["containers"][0]["env"];
        let advertise = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "BASHO_ADVERTISE_URL");
        if spec["replicas"] == 1 {
            assert_eq!(spec["strategy"]["type"], "Recreate", "{}", r.label);
            assert!(advertise.is_none(), "{}", r.label);
            continue;
        }
        replicated += 1;
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "BASHO_DATABASE"),
            "{}: replicas without PostgreSQL",
            r.label
        );
        assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{}", r.label);
        assert_eq!(r.of_kind("PersistentVolumeClaim").count(), 0, "{}", r.label);
        // The pod's subdomain is a headless Service selecting these pods, and the advertised URL
        // is the pod's name under it: what DNS answers for a pod with a subdomain.
        let subdomain = pod["subdomain"].as_str().expect("a subdomain");
        let peers = r
            .of_kind("Service")
            .find(|s| s["metadata"]["name"] == subdomain)
            .unwrap_or_else(|| panic!("{}: no Service {subdomain}", r.label));
        assert_eq!(peers["spec"]["clusterIP"], "None", "{}", r.label);
        assert_eq!(
            peers["spec"]["selector"], spec["selector"]["matchLabels"],
            "{}",
            r.label
        );
        let url = advertise.expect("BASHO_ADVERTISE_URL")["value"]
            .as_str()
            .unwrap();
        let port = pod["containers"][0]["ports"][0]["containerPort"].clone();
        assert_eq!(
            url,
            format!("https://$(POD_NAME).{subdomain}.{RELEASE_NAMESPACE}.svc:{port}"),
            "{}",
            r.label
        );
        let pod_name = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POD_NAME")
            .expect("POD_NAME");
        assert_eq!(
            pod_name["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
    }
    assert!(replicated > 0, "no ci example runs several replicas");
    let e = render_with("basho-orchestrator", &["replicaCount=2"]).unwrap_err();
    assert!(e.contains("database.postgres.existingSecret"), "{e}");
}
