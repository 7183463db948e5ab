//! The reconciler's part in consent withdrawal: workspaces on an older release of a dataset
//! move to the current one (launched again, requeued, or ended past `[consent] max_delay_s`),
//! and the consent reporter hears which release each workspace mounts.

use std::time::Duration;

use basho_core::State;
use basho_core::protocol::Assignment;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::Reconciler;
use crate::backend::Observed;
use crate::reconcile::{Action, end_overdue, move_to_current, requeue_on_current};

/// Longest a workspace requeued on a new release is shown as still running while Slurm holds it.
const REQUEUE_GRACE: Duration = Duration::from_secs(15 * 60);

impl Reconciler {
    /// A consent withdrawal made a new release: what runs on an older one moves to it, in place
    /// of what `actions` planned for it.
    pub(super) fn reach_current_releases(
        &mut self,
        actions: &mut Vec<Action>,
        d: &[Assignment],
        actual: &[Observed],
        now: DateTime<Utc>,
    ) {
        let mut older = self.executor.on_older_release(d, actual, now);
        older.moves.retain(|id| !self.busy_ids.contains_key(id));
        older
            .overdue
            .retain(|id, _| !self.busy_ids.contains_key(id));
        older.requeues.retain(|id| !self.busy_ids.contains_key(id));
        if !older.moves.is_empty() {
            info!(workspaces = ?older.moves, "moving workspaces to their datasets' current release");
            move_to_current(actions, d, &older.moves);
        }
        if !older.requeues.is_empty() {
            info!(workspaces = ?older.requeues, "requeueing workspaces on their datasets' current release");
            requeue_on_current(actions, d, &older.requeues);
            for id in &older.requeues {
                self.requeued
                    .insert(id.clone(), (std::time::Instant::now(), false));
            }
        }
        if !older.overdue.is_empty() {
            warn!(workspaces = ?older.overdue.keys().collect::<Vec<_>>(),
                "stopping workspaces still on an older release past [consent] max_delay_s");
            end_overdue(actions, &older.overdue, now);
            // Not launched again while the orchestrator still lists it.
            for a in d.iter().filter(|a| older.overdue.contains_key(&a.id)) {
                self.refused.insert(a.id.clone(), a.clone());
            }
        }
    }

    /// A workspace requeued on a new release waits in Slurm's queue (its requeue delay, about 2
    /// minutes) before it runs again: it is the same workspace, not a new start, so its
    /// `starting` is not reported; once it ran again (or after [`REQUEUE_GRACE`]) it is reported
    /// as seen.
    pub(super) fn hide_requeued_starts(&mut self, actions: &mut Vec<Action>, actual: &[Observed]) {
        for o in actual {
            if let Some((_, left)) = self.requeued.get_mut(&o.workspace) {
                if o.state != crate::backend::RunState::Running {
                    *left = true;
                } else if *left {
                    self.requeued.remove(&o.workspace);
                }
            }
        }
        self.requeued
            .retain(|_, (at, _)| at.elapsed() < REQUEUE_GRACE);
        actions.retain(|a| match a {
            Action::Report(o) => {
                !(matches!(o.state, State::Starting | State::Preempted)
                    && self.requeued.contains_key(&o.workspace))
            }
            _ => true,
        });
    }

    /// Tells the consent reporter which release each workspace mounts, if that changed.
    pub(super) fn publish_mounted(&self) {
        let mounted = self
            .executor
            .mounted_by(self.running.iter().map(String::as_str));
        self.mounted.send_if_modified(|m| {
            let changed = m.as_ref() != Some(&mounted);
            *m = Some(mounted);
            changed
        });
    }
}
