//! `plan` on every case: missing, running, starting, created but never started, exited (0 and non-zero), unknown, expired
//! (by the assignment and by the backend's label), not desired, before the first sync.

use basho_core::State;
use basho_core::protocol::Assignment;
use chrono::Duration;

use super::*;
use crate::fixtures::{AssignmentExt, observed, t0};

fn reports(actions: &[Action]) -> Vec<(String, State)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(o) => Some((o.workspace.clone(), o.state)),
            _ => None,
        })
        .collect()
}

fn launches(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch(a) => Some(a.id.clone()),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<(String, StopReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { workspace, reason } => Some((workspace.clone(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn missing_is_launched() {
    let a = Assignment::test("ws-1");
    let actions = plan(std::slice::from_ref(&a), &[], &[], t0());
    assert_eq!(actions, vec![Action::Launch(Box::new(a))]);
}

#[test]
fn running_is_reported_not_launched() {
    let actions = plan(
        &[Assignment::test("ws-1")],
        &[],
        &[observed("ws-1", RunState::Running)],
        t0(),
    );
    assert_eq!(reports(&actions), vec![("ws-1".into(), State::Running)]);
    assert_eq!(actions.len(), 1);
}

#[test]
fn starting_is_reported_not_launched() {
    let actions = plan(
        &[Assignment::test("ws-1")],
        &[],
        &[observed("ws-1", RunState::Starting)],
        t0(),
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(reports(&actions), vec![("ws-1".into(), State::Starting)]);
}

#[test]
fn created_but_never_started_is_launched_again_or_removed() {
    let a = Assignment::test("ws-1");
    let actual = [
        observed("ws-1", RunState::Created),
        observed("ws-2", RunState::Created),
    ];
    let actions = plan(std::slice::from_ref(&a), &[], &actual, t0());
    assert_eq!(launches(&actions), vec!["ws-1".to_string()]);
    assert_eq!(
        stops(&actions),
        vec![("ws-2".into(), StopReason::NotDesired)]
    );
    // Before the first sync nothing is known to be wanted: it is only reported.
    let before = plan_before_sync(&actual[..1], t0());
    assert_eq!(reports(&before), vec![("ws-1".into(), State::Starting)]);
}

#[test]
fn not_desired_is_stopped_then_reported_stopped() {
    let actions = plan(&[], &[], &[observed("ws-1", RunState::Running)], t0());
    assert_eq!(
        stops(&actions),
        vec![("ws-1".into(), StopReason::NotDesired)]
    );
    assert!(
        matches!(actions[0], Action::Stop { .. }),
        "stop comes first"
    );
    assert_eq!(reports(&actions), vec![("ws-1".into(), State::Stopped)]);
}

#[test]
fn exited_is_reported_and_not_relaunched() {
    let desired = [Assignment::test("ws-0"), Assignment::test("ws-1")];
    let actual = [
        observed("ws-0", RunState::Exited(0)),
        observed("ws-1", RunState::Exited(137)),
    ];
    let actions = plan(&desired, &[], &actual, t0());
    assert!(launches(&actions).is_empty());
    assert!(stops(&actions).is_empty());
    assert_eq!(
        reports(&actions),
        vec![
            ("ws-0".into(), State::Stopped),
            ("ws-1".into(), State::Failed)
        ]
    );
    let Action::Report(failed) = &actions[1] else {
        panic!("{actions:?}")
    };
    assert_eq!(failed.message.as_deref(), Some("exited with code 137"));
}

#[test]
fn expired_is_stopped_reported_and_never_launched() {
    let at = t0() - Duration::seconds(1);
    let desired = [
        Assignment::test("ws-here").expiring(at),
        Assignment::test("ws-gone").expiring(at),
        Assignment::test("ws-now").expiring(t0()),
    ];
    let actual = [observed("ws-here", RunState::Running)];
    let actions = plan(&desired, &[], &actual, t0());
    assert!(launches(&actions).is_empty(), "{actions:?}");
    assert_eq!(
        stops(&actions),
        vec![("ws-here".into(), StopReason::Expired)]
    );
    assert_eq!(
        reports(&actions),
        vec![
            ("ws-here".into(), State::Expired),
            ("ws-gone".into(), State::Expired),
            ("ws-now".into(), State::Expired),
        ]
    );
}

#[test]
fn the_backend_label_expiry_counts_too() {
    // The orchestrator's expiry is later, but the site launched it with an earlier one (a visa
    // expiring first): the earlier wins.
    let mut o = observed("ws-1", RunState::Running);
    o.expires_at = Some(t0() - Duration::seconds(5));
    let actions = plan(&[Assignment::test("ws-1")], &[], &[o], t0());
    assert_eq!(stops(&actions), vec![("ws-1".into(), StopReason::Expired)]);
    assert_eq!(reports(&actions), vec![("ws-1".into(), State::Expired)]);
}

#[test]
fn unknown_is_reported_never_stopped_nor_relaunched() {
    let actions = plan(
        &[Assignment::test("ws-1")],
        &[],
        &[observed(
            "ws-1",
            RunState::Unknown("squeue timed out".into()),
        )],
        t0(),
    );
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::Report(o) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(o.state, State::Unknown);
    assert_eq!(o.message.as_deref(), Some("squeue timed out"));
}

#[test]
fn unknown_and_unwanted_is_still_stopped() {
    let actions = plan(
        &[],
        &[],
        &[observed("ws-1", RunState::Unknown("timeout".into()))],
        t0(),
    );
    assert_eq!(
        stops(&actions),
        vec![("ws-1".into(), StopReason::NotDesired)]
    );
}

#[test]
fn unwanted_past_its_label_expiry_is_reported_expired() {
    let mut o = observed("ws-1", RunState::Running);
    o.expires_at = Some(t0());
    let actions = plan(&[], &[], &[o], t0());
    assert_eq!(stops(&actions), vec![("ws-1".into(), StopReason::Expired)]);
    assert_eq!(reports(&actions), vec![("ws-1".into(), State::Expired)]);
}

#[test]
fn a_mixed_pass() {
    let desired = [
        Assignment::test("ws-new"),
        Assignment::test("ws-run"),
        Assignment::test("ws-run"),
    ];
    let actual = [
        observed("ws-run", RunState::Running),
        observed("ws-old", RunState::Running),
    ];
    let actions = plan(&desired, &[], &actual, t0());
    assert_eq!(launches(&actions), vec!["ws-new".to_owned()]);
    assert_eq!(
        stops(&actions),
        vec![("ws-old".into(), StopReason::NotDesired)]
    );
    assert_eq!(
        reports(&actions),
        vec![
            ("ws-run".into(), State::Running),
            ("ws-old".into(), State::Stopped)
        ]
    );
}

#[test]
fn before_sync_only_expiry_stops() {
    let mut old = observed("ws-old", RunState::Running);
    old.expires_at = Some(t0() - Duration::minutes(1));
    let mut unlabelled = observed("ws-nolabel", RunState::Running);
    unlabelled.expires_at = None;
    let actual = [observed("ws-live", RunState::Running), old, unlabelled];
    let actions = plan_before_sync(&actual, t0());
    assert_eq!(
        stops(&actions),
        vec![("ws-old".into(), StopReason::Expired)]
    );
    assert!(launches(&actions).is_empty());
    assert_eq!(
        reports(&actions),
        vec![
            ("ws-live".into(), State::Running),
            ("ws-old".into(), State::Expired),
            ("ws-nolabel".into(), State::Running),
        ]
    );
}

#[test]
fn stopping_and_absent_is_reported_stopped() {
    let present = observed("ws-present", RunState::Running);
    let stopping = vec!["ws-never-started".to_string(), "ws-present".to_string()];
    let actions = plan(&[], &stopping, &[present], t0());
    assert_eq!(
        stops(&actions),
        vec![("ws-present".into(), StopReason::NotDesired)]
    );
    assert_eq!(
        reports(&actions),
        vec![
            ("ws-present".into(), State::Stopped),
            ("ws-never-started".into(), State::Stopped),
        ]
    );
    assert!(launches(&actions).is_empty());
}

#[test]
fn a_workspace_on_an_older_release_is_stopped_and_launched_again() {
    let desired = vec![
        Assignment::test("ws-1").expiring(t0() + Duration::hours(1)),
        Assignment::test("ws-2").expiring(t0() + Duration::hours(1)),
    ];
    let actual = vec![
        observed("ws-1", RunState::Running),
        observed("ws-2", RunState::Running),
    ];
    let mut actions = plan(&desired, &[], &actual, t0());
    let stale = BTreeSet::from(["ws-1".to_owned()]);
    move_to_current(&mut actions, &desired, &stale);
    assert_eq!(stops(&actions), vec![("ws-1".into(), StopReason::Moved)]);
    assert_eq!(launches(&actions), ["ws-1"]);
    assert_eq!(
        reports(&actions),
        vec![("ws-2".into(), State::Running)],
        "what was planned for it is replaced; the others are left alone"
    );
    let stop = actions
        .iter()
        .position(|a| matches!(a, Action::Stop { .. }));
    let launch = actions.iter().position(|a| matches!(a, Action::Launch(_)));
    assert!(stop < launch, "stopped first");
}
