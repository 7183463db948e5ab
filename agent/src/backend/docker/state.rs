//! What the engine reports, mapped onto the backend contract's `Observed`, `RunState` and
//! `UsageSample`.
//!
//! Docker states map as follows: `created` is `Created` (made, never started: only a launch
//! starts it); `restarting` is `Starting` (the restart policy is `no`, so it only shows up if
//! someone changed it by hand); `running` and `stopping`
//! are `Running` (the process is still there); `exited` and `dead` are `Exited(code)`; `paused`
//! and `removing` are `Unknown`, because neither is a state basho puts a container in and the
//! agent should look again rather than act on a guess.

use std::collections::HashMap;

use basho_core::{LABEL_EXPIRES, LABEL_WORKSPACE};
use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, ContainerStatsResponse,
    ContainerSummary, ContainerSummaryStateEnum,
};
use chrono::{DateTime, Utc};

use crate::backend::{Observed, RunState, UsageSample};

/// Exit code reported when the engine does not give one.
const NO_EXIT_CODE: i64 = -1;

/// A container from a listing. Exit codes are not in listings except inside the human-readable
/// status (`Exited (3) 2 seconds ago`); callers wanting certainty inspect the container.
pub(super) fn from_summary(summary: &ContainerSummary) -> Observed {
    let state = match summary.state {
        Some(ContainerSummaryStateEnum::CREATED) => RunState::Created,
        Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Starting,
        Some(ContainerSummaryStateEnum::RUNNING) | Some(ContainerSummaryStateEnum::STOPPING) => {
            RunState::Running
        }
        Some(ContainerSummaryStateEnum::EXITED) | Some(ContainerSummaryStateEnum::DEAD) => {
            RunState::Exited(
                summary
                    .status
                    .as_deref()
                    .and_then(exit_code_from_status)
                    .unwrap_or(NO_EXIT_CODE),
            )
        }
        Some(ContainerSummaryStateEnum::PAUSED) => RunState::Unknown("paused".into()),
        Some(ContainerSummaryStateEnum::REMOVING) => RunState::Unknown("removing".into()),
        Some(ContainerSummaryStateEnum::EMPTY) | None => {
            RunState::Unknown("engine reported no state".into())
        }
    };
    let labels = summary.labels.as_ref();
    Observed {
        workspace: label(labels, LABEL_WORKSPACE).unwrap_or_default(),
        handle: summary.id.clone().unwrap_or_default(),
        state,
        expires_at: label(labels, LABEL_EXPIRES).and_then(|s| parse_expiry(&s)),
    }
}

/// A container from `inspect`, which carries the exact exit code.
pub(super) fn from_inspect(workspace: &str, details: &ContainerInspectResponse) -> Observed {
    let labels = details.config.as_ref().and_then(|c| c.labels.as_ref());
    Observed {
        workspace: label(labels, LABEL_WORKSPACE).unwrap_or_else(|| workspace.to_string()),
        handle: details.id.clone().unwrap_or_default(),
        state: state_of(details.state.as_ref()),
        expires_at: label(labels, LABEL_EXPIRES).and_then(|s| parse_expiry(&s)),
    }
}

/// The run state from an inspected container's `State`.
pub(super) fn state_of(state: Option<&ContainerState>) -> RunState {
    let Some(state) = state else {
        return RunState::Unknown("engine reported no state".into());
    };
    let code = state.exit_code.unwrap_or(NO_EXIT_CODE);
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RESTARTING) => RunState::Starting,
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            RunState::Running
        }
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            RunState::Exited(code)
        }
        Some(ContainerStateStatusEnum::PAUSED) => RunState::Unknown("paused".into()),
        Some(ContainerStateStatusEnum::REMOVING) => RunState::Unknown("removing".into()),
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            RunState::Unknown("engine reported no state".into())
        }
    }
}

/// CPU time (cgroup `usage`, nanoseconds) and memory in use from a one-shot stats sample.
pub(super) fn usage_of(stats: &ContainerStatsResponse) -> UsageSample {
    let cpu_ns = stats
        .cpu_stats
        .as_ref()
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let memory_bytes = stats
        .memory_stats
        .as_ref()
        .and_then(|m| m.usage)
        .unwrap_or(0);
    UsageSample {
        cpu_seconds: cpu_ns as f64 / 1e9,
        memory_bytes,
        started_at: None,
    }
}

fn label(labels: Option<&HashMap<String, String>>, key: &str) -> Option<String> {
    labels.and_then(|l| l.get(key)).cloned()
}

fn parse_expiry(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `Exited (137) 5 minutes ago` → 137.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(state: ContainerSummaryStateEnum, status: &str) -> ContainerSummary {
        ContainerSummary {
            id: Some("c0ffee".into()),
            state: Some(state),
            status: Some(status.into()),
            labels: Some(HashMap::from([
                (LABEL_WORKSPACE.to_string(), "ws-1".to_string()),
                (
                    LABEL_EXPIRES.to_string(),
                    "2030-01-02T03:04:05Z".to_string(),
                ),
            ])),
            ..Default::default()
        }
    }

    #[test]
    fn summary_states_map_as_documented() {
        use ContainerSummaryStateEnum as S;
        let cases = [
            (S::CREATED, "Created", RunState::Created),
            (S::RESTARTING, "Restarting (1)", RunState::Starting),
            (S::RUNNING, "Up 2 seconds", RunState::Running),
            (S::EXITED, "Exited (3) 2 seconds ago", RunState::Exited(3)),
            (S::DEAD, "Dead", RunState::Exited(NO_EXIT_CODE)),
            (S::PAUSED, "Up (Paused)", RunState::Unknown("paused".into())),
            (
                S::REMOVING,
                "Removal In Progress",
                RunState::Unknown("removing".into()),
            ),
        ];
        for (state, status, want) in cases {
            assert_eq!(from_summary(&summary(state, status)).state, want, "{state}");
        }
    }

    #[test]
    fn summary_carries_labels_and_handle() {
        let o = from_summary(&summary(ContainerSummaryStateEnum::RUNNING, "Up"));
        assert_eq!(o.workspace, "ws-1");
        assert_eq!(o.handle, "c0ffee");
        assert_eq!(
            o.expires_at,
            Some("2030-01-02T03:04:05Z".parse::<DateTime<Utc>>().unwrap())
        );
    }

    #[test]
    fn inspected_exit_code_is_exact() {
        let state = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            ..Default::default()
        };
        assert_eq!(state_of(Some(&state)), RunState::Exited(137));
        assert!(matches!(state_of(None), RunState::Unknown(_)));
    }

    #[test]
    fn exit_code_parses_only_exited_status() {
        assert_eq!(exit_code_from_status("Exited (0) 1 second ago"), Some(0));
        assert_eq!(exit_code_from_status("Exited (255) now"), Some(255));
        assert_eq!(exit_code_from_status("Up 3 minutes"), None);
    }
}
