//! The observation outbox and the reporter task that empties it: each workspace's latest
//! observation, sent once when its state changes, all of them again after a reconnect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use basho_core::protocol::{Observation, ObservationBatch};
use basho_core::{Ident, State};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use super::poll::Fetched;
use crate::client::{Backoff, Client, Link};

/// Most observations in one request.
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Default)]
struct Inner {
    latest: BTreeMap<String, Observation>,
    posted: BTreeMap<String, State>,
}

/// Latest observation per workspace, and the state last acknowledged by the orchestrator.
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records observations; only a change of state replaces the one held (so `at` stays the time
    /// the state began).
    pub fn record(&self, observations: Vec<Observation>) {
        let mut changed = false;
        {
            let mut inner = self.lock();
            for o in observations {
                if inner.latest.get(&o.workspace).map(|p| p.state) != Some(o.state) {
                    inner.latest.insert(o.workspace.clone(), o);
                    changed = true;
                }
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// What to send: every observation not yet acknowledged in its current state, oldest first,
    /// at most `limit`.
    pub fn pending(&self, limit: usize) -> Vec<Observation> {
        let inner = self.lock();
        let mut out: Vec<Observation> = inner
            .latest
            .values()
            .filter(|o| inner.posted.get(&o.workspace) != Some(&o.state))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.workspace.cmp(&b.workspace)));
        out.truncate(limit);
        out
    }

    /// The orchestrator has these.
    pub fn mark_posted(&self, sent: &[Observation]) {
        let mut inner = self.lock();
        for o in sent {
            inner.posted.insert(o.workspace.clone(), o.state);
        }
    }

    /// Treats everything as unsent, for a full resend after a reconnect.
    pub fn forget_posted(&self) {
        self.lock().posted.clear();
    }

    /// Forgets workspaces neither desired nor running any more, once their last word is posted.
    pub fn prune(&self, keep: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        let Inner { latest, posted } = &mut *inner;
        latest.retain(|id, o| keep(id) || posted.get(id) != Some(&o.state));
        posted.retain(|id, _| latest.contains_key(id));
    }

    /// The latest state of every workspace held.
    pub fn states(&self) -> Vec<State> {
        self.lock().latest.values().map(|o| o.state).collect()
    }

    /// The latest observation of `workspace`.
    pub fn latest(&self, workspace: &str) -> Option<Observation> {
        self.lock().latest.get(workspace).cloned()
    }
}

/// The crash points of a report the orchestrator took: a launch's `running`, a stop's end.
fn reported(observations: &[Observation]) {
    if observations.iter().any(|o| o.state == State::Running) {
        basho_core::crash_point!("agent.launch.reported");
    }
    if observations
        .iter()
        .any(|o| matches!(o.state, State::Stopped | State::Revoked | State::Expired))
    {
        basho_core::crash_point!("agent.stop.reported");
    }
}

/// Posts the outbox's changes until `stop`: wakes on a change and on a (re)connection, which is
/// answered with a full resend.
pub async fn post_loop(
    client: Client,
    site: Ident,
    outbox: Arc<Outbox>,
    mut fetched: watch::Receiver<Option<Fetched>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::agent_default();
    let mut link = Link::default();
    let mut sent_epoch = None;
    loop {
        let epoch = fetched.borrow().as_ref().map(|f| f.epoch);
        if epoch.is_some() && epoch != sent_epoch {
            // A new registration: the orchestrator may have lost what it was told.
            outbox.forget_posted();
            sent_epoch = epoch;
        }
        let batch = if epoch.is_some() {
            outbox.pending(MAX_BATCH)
        } else {
            Vec::new()
        };
        if !batch.is_empty() {
            let body = ObservationBatch {
                site: site.clone(),
                observations: batch,
            };
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                a = client.observations(&body) => a,
            };
            match answer {
                Ok(applied) => {
                    link.up("observations");
                    backoff.reset();
                    debug!(
                        sent = body.observations.len(),
                        applied, "observations posted"
                    );
                }
                Err(e) if !e.is_retryable() => {
                    // Sending the same batch again would be refused the same way.
                    error!(error = %e, count = body.observations.len(), "orchestrator refused observations; dropping them");
                }
                Err(e) => {
                    link.down("observations", &e);
                    outbox.forget_posted();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            }
            outbox.mark_posted(&body.observations);
            reported(&body.observations);
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = outbox.changed.notified() => {}
            changed = fetched.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::fixtures::t0;

    fn obs(ws: &str, state: State, secs: i64) -> Observation {
        Observation {
            workspace: ws.into(),
            state,
            message: None,
            at: t0() + Duration::seconds(secs),
            outputs: None,
        }
    }

    fn ids(v: &[Observation]) -> Vec<(&str, State)> {
        v.iter().map(|o| (o.workspace.as_str(), o.state)).collect()
    }

    #[test]
    fn sends_changes_only_and_everything_after_a_reconnect() {
        let l = Outbox::default();
        l.record(vec![
            obs("b", State::Starting, 2),
            obs("a", State::Running, 1),
        ]);
        let first = l.pending(10);
        assert_eq!(
            ids(&first),
            vec![("a", State::Running), ("b", State::Starting)]
        );
        l.mark_posted(&first);
        assert!(l.pending(10).is_empty());

        // Same state again: nothing new, and the time the state began is kept.
        l.record(vec![obs("a", State::Running, 9)]);
        assert!(l.pending(10).is_empty());
        assert_eq!(l.latest("a").unwrap().at, t0() + Duration::seconds(1));

        l.record(vec![obs("b", State::Running, 3)]);
        assert_eq!(ids(&l.pending(10)), vec![("b", State::Running)]);
        assert_eq!(l.pending(1).len(), 1);
        l.mark_posted(&l.pending(10));
        l.forget_posted();
        assert_eq!(l.pending(10).len(), 2);
    }

    #[test]
    fn prunes_only_what_is_gone_and_posted() {
        let l = Outbox::default();
        l.record(vec![
            obs("gone", State::Stopped, 1),
            obs("unsent", State::Stopped, 2),
        ]);
        l.mark_posted(&[obs("gone", State::Stopped, 1)]);
        l.prune(|_| false);
        assert!(l.latest("gone").is_none());
        assert!(
            l.latest("unsent").is_some(),
            "its last word is not posted yet"
        );
    }
}
