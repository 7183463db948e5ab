//! The engine's events of one site's containers: a container that exits (`die`) wakes the
//! agent's reconcile loop at once, so a batch workspace's end is reported in milliseconds, not at
//! the next recheck. The recheck stays: an event missed while the engine restarted is still
//! seen within [`RECHECK`](crate::runner::RECHECK).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basho_core::{Ident, LABEL_SITE};
use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long after a `die` the agent looks a second time.
const SETTLE: Duration = Duration::from_millis(50);

/// How long a broken event stream waits before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The watch of one backend (its clones share it): started by the first wait on it, ended by
/// the backend's `close`.
#[derive(Debug, Clone, Default)]
pub(super) struct Watch {
    changed: Arc<Notify>,
    started: Arc<Mutex<bool>>,
    stop: CancellationToken,
}

impl Watch {
    /// Waits until one of `site`'s containers exits, starting the watch if it is not running.
    pub(super) async fn changed(&self, docker: &Docker, site: &Ident) {
        {
            let mut started = self
                .started
                .lock()
                .expect("the watch's flag is never poisoned");
            if !*started {
                *started = true;
                tokio::spawn(watch(
                    docker.clone(),
                    site.clone(),
                    self.changed.clone(),
                    self.stop.clone(),
                ));
            }
        }
        self.changed.notified().await;
    }

    /// Ends the watch.
    pub(super) fn close(&self) {
        self.stop.cancel();
    }
}

async fn watch(docker: Docker, site: Ident, changed: Arc<Notify>, stop: CancellationToken) {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned()]),
        ("label".to_owned(), vec![format!("{LABEL_SITE}={site}")]),
    ]);
    loop {
        let options = EventsOptions {
            filters: Some(filters.clone()),
            ..EventsOptions::default()
        };
        let mut events = docker.events(Some(options));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.next() => match event {
                    // One permit is kept while nobody waits: an exit during a pass is not lost.
                    Some(Ok(_)) => {
                        changed.notify_one();
                        // The engine sends `die` before the container list it answers from says
                        // `exited`: a second look shortly after sees it.
                        tokio::time::sleep(SETTLE).await;
                        changed.notify_one();
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "the engine's event stream broke; opening it again");
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REOPEN_AFTER) => {}
        }
    }
}
