//! The queue: workspaces no site can start now wait here, in the order of their project's
//! priority, its fair share of recent use, then arrival ([`order`]), and the leader places them
//! as compute frees. The head of the queue holds the sites that could run it: nothing behind it
//! takes them, so a large workspace is not passed over forever by small ones. A workspace that
//! waits past its `max_queue_s` (its `expires_at` while queued) is expired by the expiry loop.

pub mod order;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use basho_core::queue::QueueInfo;
use basho_core::{Ident, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Orchestrator;
use crate::admission::{queue_reason, visa_refs};
use crate::scheduler::{PlacementError, Request};
use crate::store::{Placed, Placement, Queued, StoreError};
use crate::wake::{Wake, run_while_leading};
use order::{Entry, decayed_use, factors};

/// How often the leader looks at the queue when nothing wakes it.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long fair share's view of the ledger is kept before it is read again.
const USE_FRESH_FOR: TimeDelta = TimeDelta::seconds(5);
/// How long the leader works from its copy of the queue (reading only what joined since) before
/// it reads the whole queue again, so a workspace deleted or expired on another replica leaves
/// its copy within this.
const REREAD_EVERY: TimeDelta = TimeDelta::seconds(30);

/// The scheduler's state on this replica: what wakes it, and where each queued workspace stood
/// at its last pass.
#[derive(Debug, Default)]
pub struct Queue {
    /// Woken when a workspace is queued; poked, while any waits, when something it may wait
    /// for happens (a workspace holding compute ended, a site registered, a priority set).
    pub wake: Wake,
    view: Mutex<View>,
}

#[derive(Debug, Default)]
struct View {
    positions: HashMap<String, QueueInfo>,
    used: Option<(DateTime<Utc>, std::collections::BTreeMap<Ident, f64>)>,
    copy: Option<Copy>,
}

/// The leader's copy of the queue: what a pass does not place stays for the next, which reads
/// only the entries that joined after `seq`.
#[derive(Debug)]
struct Copy {
    rows: Vec<Queued>,
    seq: i64,
    read_at: DateTime<Utc>,
}

impl Queue {
    /// Where queued workspace `id` stood at the last pass on this replica.
    pub fn info(&self, id: &str) -> Option<QueueInfo> {
        self.lock().positions.get(id).cloned()
    }

    /// Drops workspace `id`, which left the queue other than by a pass (deleted, expired,
    /// revoked), from this replica's copy and positions.
    pub fn forget(&self, id: &str) {
        let mut view = self.lock();
        view.positions.remove(id);
        if let Some(c) = view.copy.as_mut() {
            c.rows.retain(|q| q.workspace.id != id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs [`pass`] when woken and every [`EVERY`] while this replica leads.
pub async fn run_loop(o: Orchestrator, shutdown: CancellationToken) {
    fn wake(i: &crate::context::Inner) -> &Wake {
        &i.queue.wake
    }
    run_while_leading(o, shutdown, (wake, EVERY, "queue"), pass).await;
}

/// Decayed use per project, read from the ledger at most every [`USE_FRESH_FOR`].
pub(crate) async fn recent_use(
    o: &Orchestrator,
    now: DateTime<Utc>,
) -> Result<std::collections::BTreeMap<Ident, f64>, StoreError> {
    let inner = o.inner();
    if let Some((at, used)) = &inner.queue.lock().used
        && now - *at < USE_FRESH_FOR
    {
        return Ok(used.clone());
    }
    let cfg = &inner.config.scheduler;
    let half_life_ms = i64::try_from(cfg.half_life_s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    // Eight half-lives back: older use weighs under 0.4 %.
    let since = now - TimeDelta::milliseconds(half_life_ms.saturating_mul(8));
    let bucket_ms = (half_life_ms / 32).max(1000);
    let buckets = inner.store.usage_buckets(since, bucket_ms).await?;
    let now_ms = now.timestamp_millis();
    let used = decayed_use(&buckets, bucket_ms, now_ms, half_life_ms, cfg.gpu_weight);
    inner.queue.lock().used = Some((now, used.clone()));
    Ok(used)
}

/// Orders the queue and places every workspace that fits now; returns how many were placed.
pub async fn pass(o: &Orchestrator) -> Result<usize, StoreError> {
    let inner = o.inner();
    let now = Utc::now();
    let (mut queued, seq, read_at) = read(o, now).await?;
    if queued.is_empty() {
        inner.queue.lock().positions.clear();
        inner.queue.wake.set_active(0);
        return Ok(0);
    }
    let schedulings = inner.store.schedulings().await?;
    let used = recent_use(o, now).await?;
    let active: BTreeSet<Ident> = queued.iter().map(|q| q.workspace.project.clone()).collect();
    let factors = factors(&active, &used, &schedulings);
    let entries: Vec<Entry<'_>> = queued
        .iter()
        .map(|q| Entry {
            project: &q.workspace.project,
            seq: q.entry.seq,
        })
        .collect();
    let order = order::order(&entries, &schedulings, &factors);

    let online_s = i64::try_from(inner.config.limits.agent_silent_s).unwrap_or(i64::MAX);
    let online_since = now - TimeDelta::try_seconds(online_s).unwrap_or(TimeDelta::MAX);
    let mut held_back = BTreeSet::new();
    // Within a pass free compute only shrinks and held sites only grow, so a request that found
    // no site finds none again: the same shape further down the queue waits for the same reason
    // without placement being run again (a long queue is mostly such repeats).
    let mut no_site: HashMap<Shape<'_>, String> = HashMap::new();
    let mut waiting = Vec::new();
    let mut placed = 0;
    let mut left = vec![false; queued.len()];
    for i in order {
        let q = &queued[i];
        let id = q.workspace.id.clone();
        if q.workspace.expires_at <= now {
            left[i] = true;
            continue; // the expiry loop ends it
        }
        let shape = Shape::of(q);
        if let Some(reason) = no_site.get(&shape) {
            waiting.push((id, reason.clone()));
            continue;
        }
        match place_one(o, q, now, online_since, &held_back).await? {
            Outcome::Placed => {
                placed += 1;
                left[i] = true;
            }
            Outcome::Gone => left[i] = true,
            Outcome::NoSite { reason, holds } => {
                held_back.extend(holds);
                no_site.insert(shape, reason.clone());
                waiting.push((id, reason));
            }
            Outcome::Waits { reason, holds } => {
                held_back.extend(holds);
                waiting.push((id, reason));
            }
        }
    }
    let waits = waiting.len();
    let length = waits as u64;
    let positions = waiting
        .into_iter()
        .zip(1..)
        .map(|((id, reason), position)| {
            let info = QueueInfo {
                position,
                length,
                reason,
            };
            (id, info)
        })
        .collect();
    drop(no_site);
    let mut kept = left.iter().map(|gone| !gone);
    queued.retain(|_| kept.next().unwrap_or(true));
    {
        let mut view = inner.queue.lock();
        view.positions = positions;
        view.copy = Some(Copy {
            rows: queued,
            seq,
            read_at,
        });
    }
    inner.queue.wake.set_active(waits);
    inner
        .metrics
        .queued
        .set(i64::try_from(length).unwrap_or(i64::MAX));
    Ok(placed)
}

/// The queue: the leader's copy and what joined since, or the whole queue from the store when
/// there is no copy or it is [`REREAD_EVERY`] old. With the highest `seq` seen and when the
/// whole queue was last read. Reading by `seq` misses nothing: an entry's `seq` is its create's
/// revision, taken under the revision row's lock held to commit, so entries become visible in
/// `seq` order.
async fn read(
    o: &Orchestrator,
    now: DateTime<Utc>,
) -> Result<(Vec<Queued>, i64, DateTime<Utc>), StoreError> {
    let inner = o.inner();
    // Taken, not cloned: a pass that fails leaves no copy, and the next reads the whole queue.
    let copy = inner.queue.lock().copy.take();
    let (mut rows, read_at, after) = match copy {
        Some(c) if now - c.read_at < REREAD_EVERY => (c.rows, c.read_at, c.seq),
        _ => (Vec::new(), now, -1),
    };
    let joined = inner.store.queued_after(after).await?;
    let seq = joined.last().map_or(after, |q| q.entry.seq.max(after));
    rows.extend(joined);
    Ok((rows, seq, read_at))
}

/// What placement sees of a queued workspace: two of one shape place alike.
#[derive(PartialEq, Eq, Hash)]
struct Shape<'q> {
    datasets: &'q [Ident],
    resources: (u32, u64, u32),
    pinned: Option<&'q Ident>,
    grants: BTreeSet<&'q str>,
}

impl<'q> Shape<'q> {
    fn of(q: &'q Queued) -> Self {
        let r = q.workspace.resources;
        Shape {
            datasets: &q.workspace.datasets,
            resources: (r.cpus, r.memory_mib, r.gpus),
            pinned: q.entry.pinned.as_ref(),
            grants: q.entry.grants.iter().map(String::as_str).collect(),
        }
    }
}

enum Outcome {
    Placed,
    /// It left the queue meanwhile (deleted, expired).
    Gone,
    /// No site can take it now, for `reason`; `holds` are the sites nothing behind it may take.
    NoSite {
        reason: String,
        holds: Vec<Ident>,
    },
    /// It waits for `reason` (its project's quota, a site filled by another replica), holding
    /// `holds`; another of its shape may still be placed.
    Waits {
        reason: String,
        holds: Vec<Ident>,
    },
}

async fn place_one(
    o: &Orchestrator,
    q: &Queued,
    now: DateTime<Utc>,
    online_since: DateTime<Utc>,
    held_back: &BTreeSet<Ident>,
) -> Result<Outcome, StoreError> {
    let inner = o.inner();
    let w = &q.workspace;
    let granted: BTreeSet<String> = q.entry.grants.iter().cloned().collect();
    let req = Request {
        datasets: &w.datasets,
        resources: w.resources,
        site: q.entry.pinned.as_ref(),
        granted: &granted,
        held_back: Some(held_back),
    };
    let reservation = match inner.sites.place_and_reserve(&req, online_since) {
        Ok(r) => r,
        Err(PlacementError::InsufficientCapacity {
            need, could_hold, ..
        }) => {
            let reason = queue_reason(&could_hold, need);
            let holds = could_hold.into_iter().map(|c| c.site).collect();
            return Ok(Outcome::NoSite { reason, holds });
        }
        // The sites changed under it (a dataset moved, a site left): it waits, saying why, in
        // case they come back before its time is up.
        Err(e) => {
            let reason = e.to_string();
            return Ok(Outcome::NoSite {
                reason,
                holds: Vec::new(),
            });
        }
    };
    let lifetime = TimeDelta::milliseconds(q.entry.duration_ms);
    let expires_at = (now + lifetime).min(crate::store::from_millis(q.entry.visa_exp_ms));
    if let Err(e) = crate::workspaces::admit_quota(o, w, now, expires_at).await {
        let reason = format!("project {} at its quota: {e}", w.project);
        return Ok(Outcome::Waits {
            reason,
            holds: Vec::new(),
        });
    }
    let site = reservation.site().clone();
    let mut at_site = w.clone();
    at_site.site = site.clone();
    let refs = visa_refs(&inner.sites, &at_site, &q.visa_refs, &q.entry.grants);
    let placement = Placement {
        site: site.clone(),
        expires_at,
        visa_refs: refs,
    };
    match inner.store.place_queued(&w.id, &placement, now).await? {
        Placed::Placed(rec) => {
            reservation.commit();
            inner.sites.publish(&site, rec.revision);
            let labels = crate::metrics::SiteLabels {
                site: site.to_string(),
            };
            inner.metrics.placements.get_or_create(&labels).inc();
            let waited = (now - w.created_at).num_milliseconds() as f64 / 1000.0;
            inner.metrics.queue_wait.observe(waited);
            tracing::info!(workspace = %w.id, %site, waited_s = waited, "queued workspace placed");
            let detail = json!({"site": site.as_str(), "state": State::Placed.as_str(),
                "queued_s": waited, "expires_at": rec.workspace.expires_at});
            o.audit(crate::audit::SYSTEM, "workspace_placed", &w.id, detail)
                .await;
            Ok(Outcome::Placed)
        }
        Placed::Full(held) => {
            drop(reservation);
            inner.sites.learn_held(&site, &held);
            let reason = format!("site {site}: filled by another replica's placement");
            Ok(Outcome::Waits {
                reason,
                holds: vec![site],
            })
        }
        Placed::Gone(_) => Ok(Outcome::Gone),
    }
}
