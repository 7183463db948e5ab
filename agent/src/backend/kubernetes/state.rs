//! What a pod means for its workspace: the pod phase and container statuses mapped to a
//! `RunState`, the expiry from its annotation, and the usage the backend reports.

use basho_core::{LABEL_EXPIRES, LABEL_WORKSPACE};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::spec::CONTAINER;
use crate::backend::{Observed, RunState, UsageSample};

/// Waiting reasons that the kubelet will not get past by retrying: the pod never starts as it is.
const PERMANENT_WAITING: &[&str] = &[
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];
/// Waiting reasons that mean trouble the kubelet keeps retrying (a registry down, an image not
/// pushed yet, a runtime hiccup): reported with the reason so an admin sees it, not as failed.
const TROUBLED_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "RegistryUnavailable",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
    "PreStartHookError",
    "PostStartHookError",
];

/// The workspace of a pod, from its label.
pub fn workspace_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(LABEL_WORKSPACE)
        .map(String::as_str)
}

/// The pod as the agent sees it, `None` for a pod without the workspace label.
pub fn observe(pod: &Pod) -> Option<Observed> {
    let workspace = workspace_of(pod)?.to_string();
    let expires_at = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LABEL_EXPIRES))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(Observed {
        workspace,
        handle: pod.metadata.name.clone().unwrap_or_default(),
        state: state_of(pod),
        expires_at,
    })
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|c| c.name == CONTAINER)
        .or(statuses.first())
}

/// The run state a pod stands for.
pub fn state_of(pod: &Pod) -> RunState {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    match phase {
        "Pending" => pending(pod),
        "Running" => RunState::Running,
        "Succeeded" => RunState::Exited(0),
        "Failed" => {
            let terminated = container(pod)
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref());
            match terminated {
                Some(t) if t.exit_code != 0 => RunState::Exited(i64::from(t.exit_code)),
                // Killed for its deadline (or evicted) before the container could say anything.
                _ => RunState::Exited(1),
            }
        }
        "Unknown" => RunState::Unknown(format!(
            "pod {name} is in phase Unknown: its node does not report; check the node with \
             `kubectl get nodes`"
        )),
        other => RunState::Unknown(format!("pod {name} is in an unexpected phase {other:?}")),
    }
}

fn pending(pod: &Pod) -> RunState {
    let waiting = container(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let Some(w) = waiting else {
        return RunState::Starting;
    };
    let reason = w.reason.as_deref().unwrap_or_default();
    let message = w.message.as_deref().unwrap_or_default();
    let said = if message.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {message}")
    };
    if PERMANENT_WAITING.contains(&reason) {
        RunState::Failed(format!("the workspace container cannot start: {said}"))
    } else if TROUBLED_WAITING.contains(&reason) {
        RunState::Unknown(format!(
            "the workspace container is not starting yet: {said}; the kubelet keeps trying (is \
             the image in the registry and may the nodes pull it?)"
        ))
    } else {
        RunState::Starting
    }
}

/// Why a finished pod ended, for the log: the pod's reason (`DeadlineExceeded`, `Evicted`) or the
/// container's (`OOMKilled`, `Error`, `Completed`).
pub fn end_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        return Some(r.to_string());
    }
    container(pod)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .clone()
}

/// What a running workspace holds. Requests equal limits, so the pod has its CPUs and memory set
/// aside whatever it does with them: the sample is the allocation (CPUs times the seconds since
/// the container started, and the memory limit), not a measurement, with the container's start.
/// `None` unless running.
pub fn usage_of(pod: &Pod, now: DateTime<Utc>) -> Option<UsageSample> {
    if state_of(pod) != RunState::Running {
        return None;
    }
    let started = container(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map(|t| t.0)
        .or_else(|| pod.status.as_ref()?.start_time.as_ref().map(|t| t.0))
        .and_then(|t| DateTime::from_timestamp_millis(t.as_millisecond()));
    let seconds = started.map_or(0.0, |t| {
        let ms = (now - t).num_milliseconds();
        (ms.max(0) as f64) / 1000.0
    });
    let limits = pod
        .spec
        .as_ref()?
        .containers
        .first()?
        .resources
        .as_ref()?
        .limits
        .as_ref()?;
    let cpus = limits
        .get("cpu")
        .and_then(|q| q.0.parse::<f64>().ok())
        .unwrap_or(0.0);
    let memory_bytes = limits
        .get("memory")
        .and_then(|q| q.0.strip_suffix("Mi"))
        .and_then(|m| m.parse::<u64>().ok())
        .map_or(0, |m| m * 1024 * 1024);
    Some(UsageSample {
        cpu_seconds: cpus * seconds,
        memory_bytes,
        started_at: started,
    })
}

#[cfg(test)]
mod tests;
