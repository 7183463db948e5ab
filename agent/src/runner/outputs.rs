//! The reconciler's part in batch workspaces' outputs: when one ends by itself, what its launch
//! names of its `/results` (all of it, for a federated job's step) is taken into the site's
//! airlock store and written to the site's audit log before its end is reported.

use basho_core::State;
use basho_core::protocol::{Assignment, Launch, Observation, TaskOutputs};
use tracing::{Instrument, info, info_span, warn};

use super::Reconciler;
use crate::reconcile::Action;
use crate::reconcile::execute::Outcome;

impl Reconciler {
    /// Keeps what each desired batch workspace with outputs takes of its `/results`.
    pub(super) fn learn_outputs(&mut self, desired: &[Assignment]) {
        self.outputs = desired
            .iter()
            .filter_map(|a| Some((a.id.clone(), a.launch.clone()?)))
            .filter(|(_, l)| !l.outputs.is_empty() || l.all_results)
            .collect();
    }

    /// Takes the reports of batch workspaces that ended by themselves out of `actions`, and
    /// takes their outputs first (each is reported once they are).
    pub(super) fn take_ended_outputs(&mut self, actions: &mut Vec<Action>) {
        let mut taking = Vec::new();
        actions.retain(|a| match a {
            Action::Report(o) => match self.outputs_to_take(o) {
                Some(launch) => {
                    taking.push((o.clone(), launch));
                    false
                }
                None => true,
            },
            _ => true,
        });
        for (report, launch) in taking {
            self.take_outputs(report, launch);
        }
    }

    /// The outputs to take before `report` is sent: those of a batch workspace it says ended by
    /// itself, unless they were taken or that end was already reported.
    pub(super) fn outputs_to_take(&self, report: &Observation) -> Option<Launch> {
        if report.outputs.is_some() || !matches!(report.state, State::Stopped | State::Failed) {
            return None;
        }
        if self
            .outbox
            .latest(&report.workspace)
            .is_some_and(|l| l.state == report.state)
        {
            return None;
        }
        self.outputs.get(&report.workspace).cloned()
    }

    /// Takes what `launch` names of an ended batch workspace's `/results` into the airlock store,
    /// in the site's audit log, then reports `report` with them.
    pub(super) fn take_outputs(&mut self, mut report: Observation, launch: Launch) {
        let (desk, audit) = (self.desk.clone(), self.site_audit.clone());
        let key = report.workspace.clone();
        let span = info_span!("outputs", workspace = %key);
        let task = self.busy.spawn(
            async move {
                let ws = report.workspace.clone();
                let taken = {
                    let ws = ws.clone();
                    tokio::task::spawn_blocking(move || desk.outputs(&ws, &launch)).await
                };
                let mut outputs = taken.unwrap_or_else(|e| TaskOutputs {
                    intake: None,
                    missing: Vec::new(),
                    error: Some(format!("taking the outputs failed: {e}")),
                    released_by: None,
                });
                let files = outputs.intake.as_ref().map(crate::airlock::serve::digests);
                let detail = serde_json::json!({"files": files, "missing": outputs.missing,
                    "error": outputs.error, "released_by": outputs.released_by});
                if let Err(e) = audit.record("task_outputs_taken", &ws, detail).await {
                    warn!(error = %e, "the outputs taken could not be written to the site's audit log");
                    outputs.intake = None;
                    outputs.released_by = None;
                    outputs.error = Some("the site's audit log could not record them".into());
                }
                info!(
                    files = outputs.intake.as_ref().map_or(0, |i| i.files.len()),
                    missing = outputs.missing.len(),
                    "outputs taken"
                );
                report.outputs = Some(outputs);
                let out = Outcome {
                    reports: vec![report],
                    refused: Vec::new(),
                };
                (ws, out)
            }
            .instrument(span),
        );
        self.busy_ids.insert(key, task.id());
    }
}
