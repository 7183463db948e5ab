//! Declarative reconcile: a pure `plan` compares what the orchestrator wants (desired) with what
//! the backend runs (actual) and yields actions; `execute` carries them out on a backend after
//! the site has verified each grant for itself.

use std::collections::{BTreeMap, BTreeSet};

use basho_core::State;
use basho_core::protocol::{Assignment, Observation};
use chrono::{DateTime, Utc};

use crate::backend::{Observed, RunState};

pub mod execute;
pub mod hostdirs;
pub mod verify;

pub use execute::{ExecuteError, Executor, by_workspace};
pub use verify::{Approved, Refusal, verify_assignment};

/// Why a workspace is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The orchestrator no longer wants it (deleted, revoked).
    NotDesired,
    /// Past its expiry: the site ends it whether or not the orchestrator is reachable.
    Expired,
    /// Covered by the site's deny-list (`crate::revocations`), whatever the orchestrator says.
    Revoked,
    /// Mounting an older release of a dataset than the current one (a consent withdrawal made
    /// a new one): launched again at once on the current release, `/work` and `/results` kept.
    Moved,
    /// Still on an older release `[consent] max_delay_s` after a withdrawal, on a backend that
    /// cannot launch it again: it ends.
    ConsentOverdue,
}

/// One step of a reconcile pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Verify, prepare and start this workspace.
    Launch(Box<Assignment>),
    /// Stop and remove this workspace. Reports that follow for it are sent only if it succeeds.
    Stop {
        /// Workspace id.
        workspace: String,
        /// Why.
        reason: StopReason,
    },
    /// Tell the orchestrator what the site sees.
    Report(Observation),
    /// Start this running workspace again in place on its datasets' current releases (its
    /// grants verified again): a consent withdrawal made a new release, and the backend can.
    Requeue(Box<Assignment>),
}

impl Action {
    /// The workspace this action is about.
    pub fn workspace(&self) -> &str {
        match self {
            Action::Launch(a) => &a.id,
            Action::Stop { workspace, .. } => workspace,
            Action::Report(o) => &o.workspace,
            Action::Requeue(a) => &a.id,
        }
    }

    /// Whether carrying it out changes the world (a report only tells).
    pub fn changes(&self) -> bool {
        !matches!(self, Action::Report(_))
    }
}

/// The observation a backend's view of a workspace amounts to. An exit code of 0 is a clean stop;
/// any other is a failure.
pub fn observation_of(o: &Observed, now: DateTime<Utc>) -> Observation {
    let (state, message) = match &o.state {
        RunState::Starting | RunState::Created => (State::Starting, None),
        RunState::Running => (State::Running, None),
        RunState::Exited(0) => (State::Stopped, Some("exited with code 0".to_owned())),
        RunState::Exited(code) => (State::Failed, Some(format!("exited with code {code}"))),
        RunState::Failed(why) => (State::Failed, Some(why.clone())),
        RunState::Preempted(why) => (State::Preempted, Some(why.clone())),
        RunState::Unknown(why) => (State::Unknown, Some(why.clone())),
    };
    report(&o.workspace, state, message, now)
}

fn report(
    workspace: &str,
    state: State,
    message: Option<String>,
    now: DateTime<Utc>,
) -> Observation {
    Observation {
        workspace: workspace.to_owned(),
        state,
        message,
        at: now,
        outputs: None,
    }
}

fn expired(workspace: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Observation {
    report(
        workspace,
        State::Expired,
        Some(format!("expired at {}", at.to_rfc3339())),
        now,
    )
}

/// The earlier of two optional expiries: a workspace ends at the first deadline anyone set.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What to do so that `actual` matches `desired` at `now`.
///
/// - desired, absent → launch;
/// - desired, present → report what the backend sees (an exited one is not relaunched; unknown
///   is reported as unknown and never stopped);
/// - desired, made but never started (`Created`, a launch cut short) → launch again: grants are
///   re-verified and the backend starts what it made;
/// - desired, expired (its or the backend's expiry at or before `now`) → stop if present, report
///   `expired`, never launch;
/// - present, not desired → stop, then report `stopped` (or `expired` when past its expiry).
///   Unknown does not shield it: the orchestrator asked for it to go.
/// - being stopped (`stopping`) and absent → report `stopped`: it is gone, or never started.
pub fn plan(
    desired: &[Assignment],
    stopping: &[String],
    actual: &[Observed],
    now: DateTime<Utc>,
) -> Vec<Action> {
    let seen: BTreeMap<&str, &Observed> =
        actual.iter().map(|o| (o.workspace.as_str(), o)).collect();
    let mut wanted = BTreeSet::new();
    let mut actions = Vec::new();
    for a in desired {
        if !wanted.insert(a.id.as_str()) {
            continue;
        }
        let present = seen.get(a.id.as_str()).copied();
        let deadline = earliest(Some(a.expires_at), present.and_then(|o| o.expires_at));
        if let Some(at) = deadline.filter(|at| *at <= now) {
            if present.is_some() {
                actions.push(Action::Stop {
                    workspace: a.id.clone(),
                    reason: StopReason::Expired,
                });
            }
            actions.push(Action::Report(expired(&a.id, at, now)));
            continue;
        }
        match present {
            None => actions.push(Action::Launch(Box::new(a.clone()))),
            Some(o) if o.state == RunState::Created => {
                actions.push(Action::Launch(Box::new(a.clone())))
            }
            Some(o) => actions.push(Action::Report(observation_of(o, now))),
        }
    }
    for (id, o) in &seen {
        if !wanted.contains(id) {
            actions.extend(end_unwanted(o, now));
        }
    }
    for id in stopping {
        if !seen.contains_key(id.as_str()) && !wanted.contains(id.as_str()) {
            actions.push(Action::Report(report(
                id,
                State::Stopped,
                Some("stopped: no container at the site".into()),
                now,
            )));
        }
    }
    actions
}

/// Replaces what `actions` planned for each workspace in `stale` (running on an older release
/// of a dataset) with a stop and a launch of its assignment from `desired`: the launch verifies
/// its grants again and mounts the current release.
pub fn move_to_current(
    actions: &mut Vec<Action>,
    desired: &[Assignment],
    stale: &BTreeSet<String>,
) {
    actions.retain(|a| !stale.contains(a.workspace()));
    for a in desired.iter().filter(|a| stale.contains(&a.id)) {
        actions.push(Action::Stop {
            workspace: a.id.clone(),
            reason: StopReason::Moved,
        });
        actions.push(Action::Launch(Box::new(a.clone())));
    }
}

/// Replaces what `actions` planned for each workspace in `requeue` (running on an older release
/// of a dataset, on a backend that can start it again in place) with a requeue of its
/// assignment from `desired`.
pub fn requeue_on_current(
    actions: &mut Vec<Action>,
    desired: &[Assignment],
    requeue: &BTreeSet<String>,
) {
    actions.retain(|a| !requeue.contains(a.workspace()));
    for a in desired.iter().filter(|a| requeue.contains(&a.id)) {
        actions.push(Action::Requeue(Box::new(a.clone())));
    }
}

/// Replaces what `actions` planned for each workspace in `overdue` with a stop and a report
/// of `stopped` saying why.
pub fn end_overdue(
    actions: &mut Vec<Action>,
    overdue: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) {
    actions.retain(|a| !overdue.contains_key(a.workspace()));
    for (id, why) in overdue {
        actions.push(Action::Stop {
            workspace: id.clone(),
            reason: StopReason::ConsentOverdue,
        });
        actions.push(Action::Report(report(
            id,
            State::Stopped,
            Some(why.clone()),
            now,
        )));
    }
}

/// What to do before the first desired state has arrived: nothing is known to be unwanted yet, so
/// nothing is stopped except what is past its own expiry; everything else is reported as seen.
pub fn plan_before_sync(actual: &[Observed], now: DateTime<Utc>) -> Vec<Action> {
    let mut actions = Vec::new();
    for o in actual {
        match o.expires_at.filter(|at| *at <= now) {
            Some(at) => {
                actions.push(Action::Stop {
                    workspace: o.workspace.clone(),
                    reason: StopReason::Expired,
                });
                actions.push(Action::Report(expired(&o.workspace, at, now)));
            }
            None => actions.push(Action::Report(observation_of(o, now))),
        }
    }
    actions
}

fn end_unwanted(o: &Observed, now: DateTime<Utc>) -> [Action; 2] {
    let (reason, then) = match o.expires_at.filter(|at| *at <= now) {
        Some(at) => (StopReason::Expired, expired(&o.workspace, at, now)),
        None => (
            StopReason::NotDesired,
            report(
                &o.workspace,
                State::Stopped,
                Some("stopped: no longer desired".into()),
                now,
            ),
        ),
    };
    [
        Action::Stop {
            workspace: o.workspace.clone(),
            reason,
        },
        Action::Report(then),
    ]
}

#[cfg(test)]
mod tests;
