//! The pod a workspace gets: the checks a launch spec must pass on Kubernetes and the Pod object
//! that carries every isolation default (design §4), built without I/O so tests can pin it.

use std::collections::BTreeMap;

use basho_core::{LABEL_EXPIRES, LABEL_PROJECT, LABEL_SITE, LABEL_WORKSPACE};
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvVar, HostPathVolumeSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::backend::docker::spec::{check_env, check_image, check_limits, check_user};
use crate::backend::{BackendError, LaunchSpec};
use crate::config::{KubernetesConfig, VolumeConfig, is_dns_subdomain, node_path_problem};

/// `app.kubernetes.io/managed-by`, the label the deny-all NetworkPolicy selects.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value on every workspace pod.
pub const MANAGED_BY: &str = "basho";
/// Annotation holding `/etc/basho/workspace.json`, projected into the pod by the downward API.
pub const ANNOTATION_WORKSPACE_JSON: &str = "io.basho.workspace-json";
/// The one container of a workspace pod.
pub const CONTAINER: &str = "workspace";
/// Largest `workspace.json` the agent puts in an annotation (the API allows 256 KiB in all).
const MAX_WORKSPACE_JSON: usize = 64 * 1024;

/// The pod name of a workspace (`basho-<id>`), unique in the namespace.
pub fn pod_name(workspace: &str) -> String {
    format!("basho-{workspace}")
}

fn refused(msg: impl Into<String>) -> BackendError {
    BackendError::refused(msg.into())
}

/// What a checked spec resolves to on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// `runAsUser`.
    pub uid: i64,
    /// `runAsGroup` and `fsGroup`.
    pub gid: i64,
    /// Seconds from now to the workspace's expiry.
    pub deadline_s: i64,
}

/// Refuses a spec that would weaken isolation or that the API server or kubelet would refuse
/// later, with a message saying what to change.
pub fn check(spec: &LaunchSpec, now: DateTime<Utc>) -> Result<Checked, BackendError> {
    // The id is a plain identifier already; a pod name is stricter still.
    if !is_dns_subdomain(&pod_name(&spec.workspace)) || spec.workspace.len() > 63 {
        return Err(refused(format!(
            "workspace id {:?} is not usable as a pod name and label value (lowercase letters, \
             digits, '-' and '.', at most 63)",
            spec.workspace
        )));
    }
    check_user(&spec.user)?;
    let (uid, gid) = spec.user.split_once(':').ok_or_else(|| {
        refused(format!(
            "workspace user {:?} has no group; set isolation.user to uid:gid, the gid becomes \
             the pod's runAsGroup and fsGroup",
            spec.user
        ))
    })?;
    // check_user has made sure both are non-zero numbers.
    let (uid, gid): (i64, i64) = (uid.parse().unwrap_or(0), gid.parse().unwrap_or(0));
    check_image(&spec.image)?;
    if !spec.image.contains('@') {
        return Err(refused(format!(
            "image {:?} is an image ID, which a kubelet cannot pull; pin the site's image as \
             registry/name@sha256:... in images",
            spec.image
        )));
    }
    check_limits(spec)?;
    check_env(&spec.env)?;
    let mut seen = Vec::with_capacity(spec.datasets.len());
    for d in &spec.datasets {
        if seen.contains(&&d.id) {
            return Err(refused(format!("dataset {} is listed twice", d.id)));
        }
        seen.push(&d.id);
        if let Some(claim) = &d.claim {
            if let Some(problem) = claim.problem() {
                return Err(refused(format!("dataset {}: {problem}", d.id)));
            }
        } else if let Some(problem) = node_path_problem(&d.host_path) {
            return Err(refused(format!(
                "dataset {}: {problem}; the catalog must name a directory on the nodes or a claim",
                d.id
            )));
        }
    }
    let deadline_s = (spec.expires_at - now).num_seconds();
    if deadline_s <= 0 {
        return Err(refused(format!(
            "workspace expires at {}, which has passed; an expired workspace is never started",
            spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )));
    }
    Ok(Checked {
        uid,
        gid,
        deadline_s,
    })
}

/// The labels every workspace pod carries; `io.basho.site` and the managed-by label are what the
/// agent's watch and the NetworkPolicy select.
pub fn labels(spec: &LaunchSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_WORKSPACE.to_string(), spec.workspace.to_string()),
        (LABEL_PROJECT.to_string(), spec.project.to_string()),
        (LABEL_SITE.to_string(), spec.site.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
}

fn quantities(spec: &LaunchSpec, gpu_resource: &str) -> BTreeMap<String, Quantity> {
    let r = &spec.resources;
    let mut q = BTreeMap::from([
        ("cpu".to_string(), Quantity(r.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Mi", r.memory_mib)),
        ),
    ]);
    if r.gpus > 0 {
        q.insert(gpu_resource.to_string(), Quantity(r.gpus.to_string()));
    }
    q
}

/// A site volume (`/work`, `/results`) as a pod volume.
fn site_volume(name: &str, v: &VolumeConfig) -> Volume {
    let mut volume = Volume {
        name: name.to_string(),
        ..Default::default()
    };
    match (&v.claim, &v.host_path) {
        (Some(claim), _) => {
            volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            });
        }
        // The backend refuses a config with neither at start; were it to get here, an empty
        // hostPath is refused by the API server rather than becoming a scratch directory.
        (None, path) => {
            volume.host_path = Some(HostPathVolumeSource {
                path: path
                    .as_deref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                type_: Some("Directory".into()),
            });
        }
    }
    volume
}

fn mount(name: &str, path: &str, read_only: bool, sub_path: Option<String>) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        sub_path,
        mount_propagation: Some("None".into()),
        ..Default::default()
    }
}

/// The Pod for `spec`. Every field that bears on isolation is set explicitly, even where it
/// matches the API's default, so a changed default or an admission webhook's "default" cannot
/// loosen it unnoticed.
pub fn pod(
    spec: &LaunchSpec,
    cfg: &KubernetesConfig,
    checked: &Checked,
    workspace_json: &str,
) -> Pod {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, d) in spec.datasets.iter().enumerate() {
        let name = format!("dataset-{i}");
        let mut volume = Volume {
            name: name.clone(),
            ..Default::default()
        };
        let sub_path = match &d.claim {
            Some(claim) => {
                volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.name.clone(),
                    read_only: Some(true),
                });
                claim.sub_path.clone()
            }
            None => {
                volume.host_path = Some(HostPathVolumeSource {
                    path: d.host_path.to_string_lossy().into_owned(),
                    type_: Some("Directory".into()),
                });
                None
            }
        };
        volumes.push(volume);
        let mut m = mount(&name, &format!("/data/{}", d.id), true, sub_path);
        // Submounts read-only too where the node's runtime can; never writable.
        m.recursive_read_only = Some("IfPossible".into());
        mounts.push(m);
    }
    volumes.push(site_volume("work", &cfg.work));
    // The agent named the workspace's /work (its own, or its project's where the site shares
    // it): the same name is its sub-path of the site's work volume.
    let work = spec.work_dir.file_name().map_or_else(
        || spec.workspace.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    mounts.push(mount("work", "/work", false, Some(work)));
    volumes.push(site_volume("results", &cfg.results));
    mounts.push(mount(
        "results",
        "/results",
        false,
        Some(spec.workspace.to_string()),
    ));
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(format!("{}Mi", spec.tmp_size_mib))),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(mount("tmp", "/tmp", false, None));
    volumes.push(Volume {
        name: "workspace-json".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            default_mode: Some(0o444),
            items: Some(vec![DownwardAPIVolumeFile {
                path: "workspace.json".into(),
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{ANNOTATION_WORKSPACE_JSON}']"),
                }),
                mode: Some(0o444),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(mount("workspace-json", "/etc/basho", true, None));

    let quantities = quantities(spec, &cfg.gpu_resource);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(cfg.pull.as_k8s().into()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                })
                .collect(),
        ),
        working_dir: Some(spec.workdir.clone().unwrap_or_else(|| "/work".into())),
        resources: Some(ResourceRequirements {
            limits: Some(quantities.clone()),
            requests: Some(quantities),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(checked.uid),
            run_as_group: Some(checked.gid),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(runtime_default()),
            proc_mount: Some("Default".into()),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    let annotations = BTreeMap::from([
        (
            LABEL_EXPIRES.to_string(),
            spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        (
            ANNOTATION_WORKSPACE_JSON.to_string(),
            workspace_json.to_string(),
        ),
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&spec.workspace)),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(labels(spec)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(checked.deadline_s),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            termination_grace_period_seconds: Some(i64::from(cfg.stop_grace_s)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(checked.uid),
                run_as_group: Some(checked.gid),
                fs_group: Some(checked.gid),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// `/etc/basho/workspace.json` as the agent wrote it, checked to be one JSON document of a size an
/// annotation can carry.
pub fn workspace_json(text: &str) -> Result<String, BackendError> {
    if text.len() > MAX_WORKSPACE_JSON {
        return Err(refused(format!(
            "workspace.json is {} bytes; at most {MAX_WORKSPACE_JSON} fit in the pod's annotation",
            text.len()
        )));
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| refused(format!("workspace.json is not JSON: {e}")))?;
    Ok(text.trim_end().to_string())
}

#[cfg(test)]
mod tests;
