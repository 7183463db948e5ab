//! The task that keeps the site registered and long-polls its desired state, publishing each new
//! revision on a watch channel. Any failure means: back off, register again, fetch afresh.

use std::time::Duration;

use basho_core::Ident;
use basho_core::protocol::{DesiredState, Registration};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::client::{Backoff, Client, Link};

/// A long-poll answered sooner than this with nothing new is paced, so a server that does not
/// hold the poll cannot make the agent spin.
const MIN_POLL_SPACING: Duration = Duration::from_secs(1);

/// A desired state, with the registration it was fetched under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Counts successful registrations: a new epoch means the link was re-established.
    pub epoch: u64,
    /// The desired state.
    pub state: DesiredState,
}

/// Sleeps for `d` unless `stop` comes first; false when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Registers, then long-polls until `stop`, publishing on `tx`.
pub async fn poll_loop(
    client: Client,
    mut registration: Registration,
    offered: watch::Receiver<crate::capacity::Offer>,
    wait_s: u64,
    tx: watch::Sender<Option<Fetched>>,
    stop: CancellationToken,
) {
    let site: Ident = registration.site.clone();
    let mut backoff = Backoff::agent_default();
    let mut link = Link::default();
    let mut epoch = 0u64;
    loop {
        {
            // Each registration carries the latest offer, so a re-registration never undoes a
            // capacity report.
            let offer = offered.borrow();
            registration.capacity = offer.capacity;
            registration.ceiling = Some(offer.ceiling);
            registration.capacity_note.clone_from(&offer.note);
        }
        let registered = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.register(&registration) => r,
        };
        match registered {
            Ok(r) => {
                link.up("register");
                info!(
                    revision = r.revision,
                    datasets = registration.datasets.len(),
                    "registered"
                );
                backoff.reset();
            }
            Err(e) => {
                link.down("register", &e);
                if !pause(&stop, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        }
        epoch += 1;
        let mut after = None;
        loop {
            let asked = Instant::now();
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                a = client.desired(&site, after, wait_s) => a,
            };
            let state = match answer {
                Ok(state) => state,
                Err(e) => {
                    link.down("desired", &e);
                    if !pause(&stop, backoff.next_delay()).await {
                        return;
                    }
                    break;
                }
            };
            link.up("desired");
            backoff.reset();
            let unchanged = after == Some(state.revision);
            if after.is_some() && !unchanged {
                info!(
                    revision = state.revision,
                    workspaces = state.workspaces.len(),
                    "desired state changed"
                );
            }
            after = Some(state.revision);
            tx.send_if_modified(|current| {
                let differs = current
                    .as_ref()
                    .is_none_or(|c| c.epoch != epoch || c.state != state);
                if differs {
                    *current = Some(Fetched { epoch, state });
                }
                differs
            });
            if unchanged && asked.elapsed() < MIN_POLL_SPACING {
                debug!("orchestrator answered a long-poll at once with nothing new; pacing polls");
                if !pause(&stop, MIN_POLL_SPACING).await {
                    return;
                }
            }
        }
    }
}
