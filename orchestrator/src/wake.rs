//! The leader's background loops that look at their work when woken and every so often: what
//! wakes one, and the loop itself (the federated jobs' driver and the queue's scheduler).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Orchestrator;
use crate::context::Inner;
use crate::store::StoreError;

/// Wakes a loop: kept in the orchestrator's state.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    /// Work left undone at the last pass: while none, pokes wake nothing.
    active: AtomicUsize,
}

impl Wake {
    /// New work arrived, or may have moved: look again now.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Something the work may wait for happened (a workspace ended, a review): wakes the loop
    /// only while some work is under way.
    pub fn poke(&self) {
        if self.active.load(Ordering::Relaxed) > 0 {
            self.notify.notify_one();
        }
    }

    /// What the pass that just ended left under way.
    pub fn set_active(&self, n: usize) {
        self.active.store(n, Ordering::Relaxed);
    }
}

/// Runs `pass` when `wake` (of the orchestrator's state) is woken and every `every`, while
/// this replica leads; a failed pass is logged and tried again at the next.
pub(crate) async fn run_while_leading<T>(
    o: Orchestrator,
    shutdown: CancellationToken,
    (wake, every, what): (fn(&Inner) -> &Wake, Duration, &str),
    pass: impl AsyncFn(&Orchestrator) -> Result<T, StoreError>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            () = wake(o.inner()).notify.notified() => {}
        }
        if !o.is_leader() {
            continue;
        }
        if let Err(e) = pass(&o).await {
            tracing::error!(error = %e, "{what} pass failed; retrying");
        }
    }
}
