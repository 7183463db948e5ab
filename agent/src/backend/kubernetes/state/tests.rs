//! Pod phases and container reasons as run states.

use serde_json::json;

use super::*;

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "basho-ws-1",
            "uid": "u-1",
            "labels": {"io.basho.workspace": "ws-1", "io.basho.site": "k8s"},
            "annotations": {"io.basho.expires-at": "2030-01-02T03:04:05Z"}
        },
        "spec": {"containers": [{
            "name": "workspace",
            "resources": {"limits": {"cpu": "2", "memory": "512Mi"}}
        }]},
        "status": status
    }))
    .unwrap()
}

fn waiting(reason: &str) -> Pod {
    pod(json!({"phase": "Pending", "containerStatuses": [{
        "name": "workspace", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": "it went wrong"}}
    }]}))
}

fn terminated(phase: &str, reason: Option<&str>, code: Option<i32>) -> Pod {
    let mut status = json!({"phase": phase});
    if let Some(r) = reason {
        status["reason"] = json!(r);
    }
    if let Some(c) = code {
        status["containerStatuses"] = json!([{
            "name": "workspace", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": c, "reason": "Error"}}
        }]);
    }
    pod(status)
}

#[test]
fn phases_map_to_run_states() {
    assert_eq!(state_of(&pod(json!({}))), RunState::Starting);
    assert_eq!(
        state_of(&pod(json!({"phase": "Pending"}))),
        RunState::Starting
    );
    assert_eq!(state_of(&waiting("ContainerCreating")), RunState::Starting);
    assert_eq!(
        state_of(&pod(json!({"phase": "Running"}))),
        RunState::Running
    );
    assert_eq!(
        state_of(&pod(json!({"phase": "Succeeded"}))),
        RunState::Exited(0)
    );
    assert_eq!(
        state_of(&terminated("Failed", None, Some(3))),
        RunState::Exited(3)
    );
    // Killed at its deadline before the container reported an exit code.
    let deadline = terminated("Failed", Some("DeadlineExceeded"), None);
    assert_eq!(state_of(&deadline), RunState::Exited(1));
    assert_eq!(end_reason(&deadline).as_deref(), Some("DeadlineExceeded"));
    match state_of(&pod(json!({"phase": "Unknown"}))) {
        RunState::Unknown(m) => assert!(m.contains("phase Unknown"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn waiting_reasons_are_permanent_or_troubled() {
    for permanent in [
        "InvalidImageName",
        "CreateContainerConfigError",
        "ErrImageNeverPull",
    ] {
        match state_of(&waiting(permanent)) {
            RunState::Failed(m) => {
                assert!(m.contains(permanent) && m.contains("it went wrong"), "{m}")
            }
            other => panic!("{permanent}: {other:?}"),
        }
    }
    for troubled in ["ErrImagePull", "ImagePullBackOff", "CreateContainerError"] {
        match state_of(&waiting(troubled)) {
            RunState::Unknown(m) => assert!(m.contains(troubled), "{m}"),
            other => panic!("{troubled}: {other:?}"),
        }
    }
}

#[test]
fn observed_carries_workspace_handle_and_expiry() {
    let o = observe(&pod(json!({"phase": "Running"}))).unwrap();
    assert_eq!(o.workspace, "ws-1");
    assert_eq!(o.handle, "basho-ws-1");
    assert_eq!(
        o.expires_at.unwrap().to_rfc3339(),
        "2030-01-02T03:04:05+00:00"
    );
    let mut unlabelled = pod(json!({}));
    unlabelled.metadata.labels = None;
    assert!(observe(&unlabelled).is_none());
}

#[test]
fn usage_is_the_allocation_while_running() {
    let now = chrono::Utc::now();
    let started = (now - chrono::Duration::seconds(10)).to_rfc3339();
    let running = pod(json!({"phase": "Running", "containerStatuses": [{
        "name": "workspace", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": started}}
    }]}));
    let u = usage_of(&running, now).unwrap();
    assert!((u.cpu_seconds - 20.0).abs() < 1.5, "{u:?}");
    assert_eq!(u.memory_bytes, 512 * 1024 * 1024);
    assert_eq!(
        u.started_at.map(|t| t.timestamp()),
        Some((now - chrono::Duration::seconds(10)).timestamp())
    );
    assert!(usage_of(&pod(json!({"phase": "Succeeded"})), now).is_none());
}
