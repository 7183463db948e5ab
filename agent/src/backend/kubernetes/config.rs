//! The `[backend]` table of a Kubernetes site: the namespace workspace pods live in, how the agent
//! reaches the API server, and where `/work` and `/results` come from.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A Kubernetes site: one pod per workspace in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of the workspace pods, the deny-all NetworkPolicy and the dataset claims. The
    /// agent's RBAC Role is granted in this namespace only.
    pub namespace: String,
    /// Kubeconfig file; when absent the agent uses its pod's service account (in-cluster), or
    /// else `$KUBECONFIG` / `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of `kubeconfig` to use; its current context when absent.
    #[serde(default)]
    pub context: Option<String>,
    /// Where `/work` comes from: one subdirectory per project (the volume's `subPath` is the
    /// project ID), kept across the project's workspaces.
    pub work: VolumeConfig,
    /// Where `/results` comes from: one subdirectory per workspace (`subPath` is the workspace
    /// id), kept after the workspace ends.
    pub results: VolumeConfig,
    /// Extended resource that counts GPUs on this cluster's nodes.
    #[serde(default = "default_gpu_resource")]
    pub gpu_resource: String,
    /// Seconds a workspace gets between SIGTERM and SIGKILL when it is stopped.
    #[serde(default = "default_stop_grace_s")]
    pub stop_grace_s: u32,
    /// How long the agent answers from its last view of the pods after the watch fails, seconds;
    /// past it workspaces are reported `unknown` until the watch is back.
    #[serde(default = "default_watch_grace_s")]
    pub watch_grace_s: u64,
    /// Whether the kubelet may pull a workspace image: `never` (the default, as on every other
    /// backend: the site puts the pinned images on its nodes) or `if-not-present` (it may pull
    /// the allow-listed `name@sha256:...` from the site's registry; the digest fixes the content).
    #[serde(default)]
    pub pull: PullPolicy,
}

/// When the kubelet pulls a workspace image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only images already on the node run.
    #[default]
    Never,
    /// The pinned image is pulled when the node lacks it.
    IfNotPresent,
}

impl PullPolicy {
    /// The Pod spec's `imagePullPolicy`.
    pub fn as_k8s(self) -> &'static str {
        match self {
            PullPolicy::Never => "Never",
            PullPolicy::IfNotPresent => "IfNotPresent",
        }
    }
}

/// A volume the site provides for `/work` or `/results`: exactly one of `claim` (a
/// PersistentVolumeClaim in the namespace, `ReadWriteMany` when workspaces run on several
/// nodes) or `host_path` (a directory present on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Name of a PersistentVolumeClaim in `namespace`.
    #[serde(default)]
    pub claim: Option<String>,
    /// Absolute directory on the nodes (mounted as a `hostPath` of type `Directory`).
    #[serde(default)]
    pub host_path: Option<PathBuf>,
}

/// Where a dataset of the catalog lives on a Kubernetes site, when not at its `path` on the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSource {
    /// Name of a PersistentVolumeClaim in the backend's namespace, mounted read-only.
    pub name: String,
    /// Directory inside the claim holding the dataset; the claim's root when absent.
    #[serde(default)]
    pub sub_path: Option<String>,
}

fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}
fn default_stop_grace_s() -> u32 {
    10
}
fn default_watch_grace_s() -> u64 {
    30
}

/// Node paths that hand a pod the node (runtime sockets, kubelet credentials, kernel
/// interfaces): never the source of a dataset, `/work` or `/results`, nor any parent of them.
const NODE_SENSITIVE: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/var/lib/kubelet",
    "/etc/kubernetes",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
];

/// What is wrong with `path` as a `hostPath` source on the nodes, if anything. The agent cannot
/// see the nodes' filesystems, so this checks the path's form: absolute, plain, and neither one
/// of the node's sensitive paths nor a parent of one.
pub fn node_path_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Some(format!("path {shown} is not absolute"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Some(format!("path {shown} holds '.' or '..'; write it plainly"));
    }
    if path.parent().is_none() {
        return Some(format!("path {shown} is the node's root"));
    }
    NODE_SENSITIVE
        .iter()
        .map(Path::new)
        .find(|s| s.starts_with(path) || path.starts_with(s))
        .map(|s| {
            format!(
                "path {shown} would expose {} of the node; point it at the data itself",
                s.display()
            )
        })
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace or claim name part.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what Kubernetes accepts as an object name.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A relative path inside a volume that cannot climb out of it.
pub(crate) fn is_plain_sub_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl KubernetesConfig {
    /// Every problem of this table, each naming the field to fix.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !is_dns_label(&self.namespace) {
            p.push(format!(
                "backend.namespace {:?} is not a Kubernetes namespace name (lowercase letters, \
                 digits and '-', at most 63)",
                self.namespace
            ));
        }
        if let Some(path) = &self.kubeconfig
            && let Err(e) = std::fs::metadata(path)
        {
            p.push(format!(
                "backend.kubeconfig {} cannot be read: {e}",
                path.display()
            ));
        }
        for (name, v) in [("work", &self.work), ("results", &self.results)] {
            match (&v.claim, &v.host_path) {
                (Some(c), None) if !is_dns_subdomain(c) => p.push(format!(
                    "backend.{name}.claim {c:?} is not a PersistentVolumeClaim name"
                )),
                (None, Some(h)) if node_path_problem(h).is_some() => p.push(format!(
                    "backend.{name}.host_path: {}",
                    node_path_problem(h).unwrap_or_default()
                )),
                (Some(_), None) | (None, Some(_)) => {}
                _ => p.push(format!(
                    "backend.{name}: set exactly one of claim (a PersistentVolumeClaim) or \
                     host_path (a directory on every node)"
                )),
            }
        }
        if self.gpu_resource.is_empty() || self.gpu_resource.contains(char::is_whitespace) {
            p.push(format!(
                "backend.gpu_resource {:?} is not a resource name such as nvidia.com/gpu",
                self.gpu_resource
            ));
        }
        if self.watch_grace_s == 0 {
            p.push("backend.watch_grace_s must be at least 1".into());
        }
        p
    }
}

impl ClaimSource {
    /// What is wrong with this catalog entry's claim, if anything.
    pub fn problem(&self) -> Option<String> {
        if !is_dns_subdomain(&self.name) {
            return Some(format!(
                "claim.name {:?} is not a PersistentVolumeClaim name",
                self.name
            ));
        }
        match &self.sub_path {
            Some(s) if !is_plain_sub_path(s) => Some(format!(
                "claim.sub_path {s:?} must be a relative path without '..'"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KubernetesConfig {
        toml::from_str(
            r#"
            namespace = "basho-workspaces"
            work = { claim = "basho-work" }
            results = { host_path = "/srv/basho/results" }
            "#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_a_good_table() {
        let c = cfg();
        assert_eq!(c.gpu_resource, "nvidia.com/gpu");
        assert_eq!(c.stop_grace_s, 10);
        assert_eq!(c.watch_grace_s, 30);
        assert_eq!(c.check(), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem() {
        let mut c = cfg();
        c.namespace = "Basho_WS".into();
        c.work.host_path = Some("/srv/work".into());
        c.results.host_path = Some("relative".into());
        c.gpu_resource = String::new();
        c.watch_grace_s = 0;
        let p = c.check();
        for needle in [
            "backend.namespace",
            "backend.work: set exactly one",
            "backend.results.host_path",
            "backend.gpu_resource",
            "watch_grace_s",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:#?}");
        }
        assert_eq!(p.len(), 5, "{p:#?}");
    }

    #[test]
    fn node_paths_that_expose_the_node_are_refused() {
        for ok in ["/srv/jga/JGAD000101", "/data/basho/work"] {
            assert_eq!(node_path_problem(Path::new(ok)), None, "{ok}");
        }
        for bad in [
            "/",
            "relative",
            "/var/run",
            "/run",
            "/var",
            "/var/lib/kubelet/pods",
            "/etc",
            "/proc/1",
            "/srv/../etc",
        ] {
            assert!(node_path_problem(Path::new(bad)).is_some(), "{bad}");
        }
    }

    #[test]
    fn names_and_sub_paths() {
        assert!(is_dns_subdomain("basho-ws-0192.a"));
        assert!(!is_dns_subdomain("basho-WS"));
        assert!(!is_dns_subdomain("-x"));
        assert!(is_plain_sub_path("jga/JGAD000101"));
        for bad in ["", "/abs", "a/../b", "..", "a//b", "./a"] {
            assert!(!is_plain_sub_path(bad), "{bad}");
        }
        let c = ClaimSource {
            name: "jga".into(),
            sub_path: Some("../etc".into()),
        };
        assert!(c.problem().unwrap().contains("sub_path"));
    }
}
