//! The agent's main loop: a poller task fetches the desired state, a reporter task posts
//! observations, and this loop reconciles whenever the desired state changes and every couple of
//! seconds besides, so exits, crashes and expiries are seen without the orchestrator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use basho_core::State;
use basho_core::protocol::{Assignment, Observation, Registration};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Error;
use crate::backend::{Backend, BackendError};
use crate::catalog::Catalog;
use crate::client::Client;
use crate::config::SiteConfig;
use crate::reconcile::hostdirs::{HostDirs, Ownership};
use crate::reconcile::{Action, Executor, plan, plan_before_sync};

pub mod ledger;
pub mod poll;

use ledger::Ledger;
use poll::Fetched;

/// How often the backend is looked at when nothing else happens.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Runs the agent for `config` on `backend` until `shutdown`. Workspaces keep running after.
pub async fn run(
    config: SiteConfig,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let token = config.token()?;
    let trusted = config.load_trusted_issuers().map_err(Error::Issuers)?;
    let (uid, gid) = config.isolation.ids()?;
    let client = Client::new(
        &config.orchestrator.url,
        &token,
        &config.orchestrator.tls_policy(),
    )?;
    let catalog = Catalog::from_config(&config);
    let site = config.site.clone();
    let ownership = Ownership::for_user(uid, gid);
    if ownership == Ownership::WorldWritable {
        warn!(user = %config.isolation.user,
            "agent is not root: /work and /results directories are made world-writable instead of \
             being chowned to the workspace user; run the agent as root on a real site");
    }
    let registration = Registration {
        site: site.clone(),
        backend: backend.kind().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        datasets: catalog.inventory(),
        capacity: config.capacity,
        images: catalog.image_names(),
    };
    let executor = Executor::new(
        site.clone(),
        backend,
        trusted,
        catalog,
        HostDirs::new(config.paths.clone(), ownership),
        config.isolation.clone(),
    );
    info!(site = %site, backend = executor.backend().kind(), orchestrator = %config.orchestrator.url, "agent starting");

    let stop = shutdown.child_token();
    let ledger = Arc::new(Ledger::default());
    let (tx, mut fetched) = watch::channel(None::<Fetched>);
    let tasks = TaskTracker::new();
    tasks.spawn(
        poll::poll_loop(
            client.clone(),
            registration,
            config.orchestrator.poll_wait_s,
            tx,
            stop.clone(),
        )
        .instrument(info_span!("poll", site = %site)),
    );
    tasks.spawn(
        ledger::post_loop(
            client,
            site.clone(),
            ledger.clone(),
            fetched.clone(),
            stop.clone(),
        )
        .instrument(info_span!("report", site = %site)),
    );
    tasks.close();

    let mut reconciler = Reconciler {
        executor,
        ledger,
        refused: BTreeMap::new(),
        backend_down: false,
    };
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut desired: Option<Vec<Assignment>> = None;
    let mut stopping: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = fetched.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = fetched.borrow_and_update().as_ref().map(|f| f.state.clone());
                if let Some(state) = state {
                    desired = Some(state.workspaces);
                    stopping = state.stopping;
                }
            }
            _ = tick.tick() => {}
        }
        let span = info_span!("reconcile", site = %site);
        reconciler
            .pass(desired.as_deref(), &stopping)
            .instrument(span)
            .await;
    }
    stop.cancel();
    tasks.wait().await;
    info!(site = %site, "agent stopped; workspaces keep running");
    Ok(())
}

struct Reconciler {
    executor: Executor,
    ledger: Arc<Ledger>,
    /// Assignments refused for good, kept until they change or stop being desired.
    refused: BTreeMap<String, Assignment>,
    backend_down: bool,
}

impl Reconciler {
    /// One pass; `desired` is `None` until the first desired state has arrived.
    async fn pass(&mut self, desired: Option<&[Assignment]>, stopping: &[String]) {
        let now = Utc::now();
        let actual = match self.executor.observe().await {
            Ok(actual) => actual,
            Err(e) => return self.backend_unavailable(desired, &e, now),
        };
        if std::mem::take(&mut self.backend_down) {
            info!("backend answers again");
        }
        let mut actions = match desired {
            Some(d) => plan(d, stopping, &actual, now),
            None => plan_before_sync(&actual, now),
        };
        actions.retain(|a| match a {
            Action::Launch(a) => self.refused.get(&a.id) != Some(a),
            _ => true,
        });
        let changes = actions
            .iter()
            .filter(|a| !matches!(a, Action::Report(_)))
            .count();
        debug!(
            desired = desired.map(<[_]>::len),
            actual = actual.len(),
            changes,
            "reconciling"
        );
        let out = self.executor.execute(actions, now).await;
        for a in out.refused {
            self.refused.insert(a.id.clone(), a);
        }
        self.ledger.record(out.reports);
        if let Some(d) = desired {
            let keep: BTreeSet<&str> = d
                .iter()
                .map(|a| a.id.as_str())
                .chain(actual.iter().map(|o| o.workspace.as_str()))
                .collect();
            self.refused.retain(|id, _| keep.contains(id.as_str()));
            self.ledger.prune(|id| keep.contains(id));
        }
    }

    /// The backend cannot say what runs: every desired workspace is `unknown`, none is `stopped`
    /// and nothing is launched until it answers again.
    fn backend_unavailable(
        &mut self,
        desired: Option<&[Assignment]>,
        e: &BackendError,
        now: DateTime<Utc>,
    ) {
        if !std::mem::replace(&mut self.backend_down, true) {
            warn!(error = %e, "backend does not answer; workspaces are unknown until it does");
        }
        let Some(desired) = desired else { return };
        let unknown = desired
            .iter()
            .filter(|a| !self.refused.contains_key(&a.id))
            // An end already seen stays the end: unknown is for what may still run.
            .filter(|a| {
                !self
                    .ledger
                    .latest(&a.id)
                    .is_some_and(|o| o.state.is_terminal())
            })
            .map(|a| Observation {
                workspace: a.id.clone(),
                state: State::Unknown,
                message: Some(e.to_string()),
                at: now,
            })
            .collect();
        self.ledger.record(unknown);
    }
}
