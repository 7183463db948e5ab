//! Several orchestrator replicas on one PostgreSQL database: every replica serves the whole API;
//! the background loops (expiry, silent-agent sweep, quotas) run only on the leader, the replica
//! holding a session advisory lock on a connection of its own; and each replica keeps its
//! in-memory views (the deny-list, site revisions that wake long-polls, site registrations and
//! allocations) in step with what the others write, through `LISTEN` and a periodic refresh.
//!
//! On SQLite there is one replica and it always leads.
//!
//! What is eventually consistent, and for how long:
//! - a long-poll on one replica wakes on another's change when the `NOTIFY` arrives
//!   (milliseconds); a lost notification (the listening connection broke) is made good by the
//!   refresh, at most [`REFRESH_EVERY`] later;
//! - the deny-list: the same, as a revocation is announced too; until then a replica's create
//!   check and desired-state answers lack the new revocation;
//! - a site registered through another replica, and the compute held at each site (placement's
//!   view): at most [`REFRESH_EVERY`]. Placement may rank sites on a stale view, but the insert
//!   checks the site's capacity again in the database under the site's turn, so two replicas
//!   never overbook a site;
//! - leadership: a leader whose lock connection breaks stops starting loop passes within
//!   [`LEADER_CHECK`]; a follower tries for the lock every [`LEADER_RETRY`]. A pass that
//!   straddles the hand-over is harmless: transitions lock their row, so a workspace is expired
//!   (and audited) once.

use std::time::Duration;

use basho_core::Ident;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::Orchestrator;
use crate::store::postgres::{REVISION_CHANNEL, REVOCATION_CHANNEL, SITE_CHANNEL};
use crate::store::{PostgresStore, RevocationStore as _, Store as _, StoreError};

/// How often a follower tries to become the leader.
pub const LEADER_RETRY: Duration = Duration::from_secs(2);
/// How often the leader checks that its lock connection still answers.
pub const LEADER_CHECK: Duration = Duration::from_millis(500);
/// How often every replica reloads sites, allocations, revisions and revocations.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The session advisory lock whose holder leads ("basho" and 1).
const LEADER_LOCK: (i32, i32) = (0x6261_7368, 0x6f00_0001);

/// Who leads, as this replica sees it.
#[derive(Debug)]
pub struct Replicas {
    store: Option<PostgresStore>,
    leader: watch::Sender<bool>,
}

impl Replicas {
    /// The only replica (SQLite): always the leader.
    pub fn single() -> Self {
        Self {
            store: None,
            leader: watch::channel(true).0,
        }
    }

    /// One of possibly several replicas on `store`; a follower until it wins the lock.
    pub fn postgres(store: PostgresStore) -> Self {
        Self {
            store: Some(store),
            leader: watch::channel(false).0,
        }
    }

    /// Whether this replica runs the background loops now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver that sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    fn set_leader(&self, o: &Orchestrator, leads: bool) {
        self.leader
            .send_if_modified(|l| std::mem::replace(l, leads) != leads);
        o.inner().metrics.leader.set(i64::from(leads));
    }
}

/// Starts leader election, the listener and the refresh when the store is PostgreSQL.
pub(crate) fn spawn(o: &Orchestrator, tracker: &TaskTracker, shutdown: &CancellationToken) {
    let replicas = &o.inner().replicas;
    let Some(store) = replicas.store.clone() else {
        o.inner().metrics.leader.set(1);
        return;
    };
    let (me, stop, s) = (o.clone(), shutdown.clone(), store.clone());
    tracker.spawn(
        async move { elect(me, s, stop).await }.instrument(tracing::info_span!("leader_election")),
    );
    let (me, stop, s) = (o.clone(), shutdown.clone(), store.clone());
    tracker.spawn(
        async move { listen(me, s, stop).await }
            .instrument(tracing::info_span!("replica_listener")),
    );
    let (me, stop) = (o.clone(), shutdown.clone());
    tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = refresh_once(&me, &store).await {
                    tracing::warn!(error = %e, "replica refresh failed; retrying");
                }
            }
        }
        .instrument(tracing::info_span!("replica_refresh")),
    );
}

/// Tries for the leader lock every [`LEADER_RETRY`]; holding it, checks the connection every
/// [`LEADER_CHECK`] and steps down when it breaks. On shutdown, lets go at once.
async fn elect(o: Orchestrator, store: PostgresStore, shutdown: CancellationToken) {
    let replicas = &o.inner().replicas;
    let options = store
        .connect_options()
        .clone()
        .application_name("basho-orchestrator-leader");
    loop {
        match try_lock(&options).await {
            Ok(Some(mut conn)) => {
                replicas.set_leader(&o, true);
                tracing::info!("leading: this replica runs the background loops");
                let lost = hold(&mut conn, &shutdown).await;
                replicas.set_leader(&o, false);
                match lost {
                    Some(e) => {
                        tracing::warn!(error = %e, "lost the leader lock's connection; stepping down");
                    }
                    None => {
                        // Let go explicitly so a follower need not wait for the server to notice.
                        let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                            .bind(LEADER_LOCK.0)
                            .bind(LEADER_LOCK.1)
                            .execute(&mut conn)
                            .await;
                        let _ = conn.close().await;
                        tracing::info!("stepped down: shutting down");
                        return;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot try for the leader lock; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LEADER_RETRY) => {}
        }
    }
}

/// A connection holding the leader lock, or `None` when another replica holds it.
async fn try_lock(
    options: &sqlx::postgres::PgConnectOptions,
) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = options.connect().await?;
    let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LEADER_LOCK.0)
        .bind(LEADER_LOCK.1)
        .fetch_one(&mut conn)
        .await?;
    if won {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

/// Waits until shutdown (`None`) or until the lock connection fails (`Some(error)`).
async fn hold(conn: &mut PgConnection, shutdown: &CancellationToken) -> Option<sqlx::Error> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(LEADER_CHECK) => {}
        }
        let check = tokio::time::timeout(LEADER_CHECK, conn.ping()).await;
        match check {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(e),
            Err(_) => {
                return Some(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the leader lock's connection did not answer",
                )));
            }
        }
    }
}

/// Applies other replicas' announcements as they arrive.
async fn listen(o: Orchestrator, store: PostgresStore, shutdown: CancellationToken) {
    let mut listener = loop {
        let attempt = async {
            let mut l = PgListener::connect_with(store.pool()).await?;
            l.listen_all([REVISION_CHANNEL, REVOCATION_CHANNEL, SITE_CHANNEL])
                .await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' changes; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LEADER_RETRY) => {}
        }
    };
    loop {
        let note = tokio::select! {
            () = shutdown.cancelled() => return,
            n = listener.try_recv() => n,
        };
        let result = match note {
            Ok(Some(n)) => apply(&o, &store, n.channel(), n.payload()).await,
            // The connection broke and was re-established: what was said meanwhile is lost.
            Ok(None) => refresh_once(&o, &store).await,
            Err(e) => {
                tracing::warn!(error = %e, "listening for other replicas' changes failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(LEADER_RETRY) => {}
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying another replica's change failed; the refresh will");
        }
    }
}

async fn apply(
    o: &Orchestrator,
    store: &PostgresStore,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    let inner = o.inner();
    match channel {
        REVISION_CHANNEL => {
            let parsed = payload
                .split_once(' ')
                .and_then(|(s, r)| Some((Ident::parse(s).ok()?, r.parse::<i64>().ok()?)));
            match parsed {
                Some((site, rev)) if inner.sites.subscribe(&site).is_some() => {
                    inner.sites.publish(&site, rev);
                    Ok(())
                }
                _ => refresh_once(o, store).await,
            }
        }
        REVOCATION_CHANNEL => {
            inner.revocations.replace(store.revocations().await?);
            if let Ok(rev) = payload.parse::<i64>() {
                inner.sites.publish_all(rev);
            }
            Ok(())
        }
        _ => refresh_once(o, store).await,
    }
}

/// Reloads what other replicas may have changed: revocations, sites (registrations, last
/// contact, compute held) and each site's revision.
pub async fn refresh_once(o: &Orchestrator, store: &PostgresStore) -> Result<(), StoreError> {
    let inner = o.inner();
    inner.revocations.replace(store.revocations().await?);
    let sites = store.sites().await?;
    let counts = store.counts().await?;
    inner.sites.refresh(sites, &counts);
    for (site, rev) in store.site_revisions().await? {
        inner.sites.publish(&site, rev);
    }
    Ok(())
}
