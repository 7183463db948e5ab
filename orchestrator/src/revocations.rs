//! Revocations: the deny-list every create and every desired state is checked against, and
//! recording one (end every live workspace it covers; agents hear of it with their next desired
//! state and apply the whole list themselves).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use basho_core::State;
use basho_core::revocation::{Holder, Revocation, Revoked, VisaId, first_match, visa_id};
use chrono::Utc;

use crate::Orchestrator;
use crate::metrics::ReasonLabels;
use crate::store::{NewRevocation, StoreError, Transition, WorkspaceFilter, WorkspaceRecord};

/// The deny-list in memory. Revocations are append-only; this replica's are added as it records
/// them and other replicas' arrive through [`crate::replicas`], so memory follows the store
/// without a query per request.
#[derive(Debug, Default)]
pub struct DenyList(RwLock<Arc<Vec<Revocation>>>);

impl DenyList {
    /// The list as the store holds it now.
    pub fn new(stored: Vec<Revocation>) -> Self {
        Self(RwLock::new(Arc::new(stored)))
    }

    /// Every revocation, oldest first.
    pub fn all(&self) -> Arc<Vec<Revocation>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a revocation just recorded in the store.
    pub fn remember(&self, r: Revocation) {
        let mut list = self.0.write().unwrap_or_else(|e| e.into_inner());
        if list.last().is_none_or(|last| last.seq < r.seq) {
            Arc::make_mut(&mut list).push(r);
        }
    }

    /// Replaces the list with the store's, unless memory already holds as many (the list only
    /// grows, so a shorter read is an older one).
    pub fn replace(&self, stored: Vec<Revocation>) {
        let mut list = self.0.write().unwrap_or_else(|e| e.into_inner());
        if stored.len() > list.len() {
            *list = Arc::new(stored);
        }
    }
}

/// A create that a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (revocation {seq} of {at}, {reason}: {selectors}); ask the DAC for a new approval")]
pub struct Refused {
    /// `project_revoked` when the revocation names the project alone, else `visa_revoked`.
    pub code: &'static str,
    what: String,
    seq: i64,
    at: String,
    reason: String,
    selectors: String,
}

/// The visa ids of a stored workspace, from its stored (already verified) visas, each granting
/// the datasets placement resolved for it. A visa whose payload cannot be read counts as issued
/// at time 0, so an older revocation still covers it.
fn visa_ids(rec: &WorkspaceRecord) -> Vec<VisaId> {
    rec.visas
        .iter()
        .enumerate()
        .map(|(i, jwt)| {
            let stored = rec.visa_refs.get(i);
            let id = visa_id(jwt).unwrap_or_else(|| VisaId {
                jti: stored.map(|r| r.jti.clone()).unwrap_or_default(),
                iat: 0,
                datasets: None,
            });
            match stored.and_then(|r| r.datasets.clone()) {
                Some(datasets) => id.granting(datasets),
                None => id,
            }
        })
        .collect()
}

/// The revocation that covers `rec`, if any.
pub fn covering<'r>(list: &'r [Revocation], rec: &WorkspaceRecord) -> Option<&'r Revocation> {
    let visas = visa_ids(rec);
    let w = &rec.workspace;
    first_match(
        list,
        Holder {
            project: w.project.as_str(),
            owner: &w.owner,
            datasets: &w.datasets,
            visas: &visas,
        },
    )
}

/// Refuses a create that a revocation in `list` covers.
pub fn refuse_revoked(list: &[Revocation], rec: &WorkspaceRecord) -> Result<(), Refused> {
    let Some(r) = covering(list, rec) else {
        return Ok(());
    };
    let only_project = r.dataset.is_none() && r.subject.is_none() && r.visa_jti.is_none();
    let (code, what) = if only_project {
        (
            "project_revoked",
            format!("project {} was revoked", rec.workspace.project),
        )
    } else {
        (
            "visa_revoked",
            "a visa of this request was revoked".to_owned(),
        )
    };
    Err(Refused {
        code,
        what,
        seq: r.seq,
        at: r.at.to_rfc3339(),
        reason: r.reason.to_string(),
        selectors: r.selectors(),
    })
}

/// Records `new` and moves every live workspace it covers to `revoked`, in `actor`'s name; every
/// agent is woken so each applies the list to what it runs. `started` is when the request came
/// in, for the revocation's latency figures.
pub async fn revoke(
    o: &Orchestrator,
    actor: &str,
    new: NewRevocation,
    started: Instant,
) -> Result<Revoked, StoreError> {
    let inner = o.inner();
    let reason = new.reason;
    let (revocation, revision) = inner.store.record_revocation(&new, Utc::now()).await?;
    basho_core::crash_point!("orchestrator.revocation.recorded");
    inner.revocations.remember(revocation.clone());
    let timer = &inner.metrics.revocations_pending;
    timer.begin(revocation.seq, started);
    for (site, _) in inner.sites.last_contacts() {
        inner.sites.publish(&site, revision);
    }
    let filter = WorkspaceFilter {
        project: revocation.project.clone(),
        states: State::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect(),
        ..WorkspaceFilter::default()
    };
    let candidates = inner.store.list_workspaces(&filter).await?;
    let one = std::slice::from_ref(&revocation);
    let message = format!(
        "revoked ({}, revocation {}: {})",
        revocation.reason,
        revocation.seq,
        revocation.selectors()
    );
    let mut affected = Vec::new();
    for rec in candidates.iter().filter(|r| covering(one, r).is_some()) {
        let id = &rec.workspace.id;
        // Before the change, so the site's confirmation cannot come first.
        timer.expect(revocation.seq, id);
        let t = o.transition_as(actor, id, State::Revoked, Some(&message));
        if let Transition::Changed { .. } = t.await? {
            if matches!(
                rec.workspace.state,
                State::Pending | State::Queued | State::Placed
            ) {
                let note = basho_core::revocation::NOTHING_REPORTED;
                inner.store.note_revoked(id, note).await?;
                timer.settled(revocation.seq, id);
            }
            affected.push(id.clone());
        } else {
            timer.settled(revocation.seq, id);
        }
    }
    basho_core::crash_point!("orchestrator.revocation.applied");
    inner.metrics.revocation_end(revocation.seq);
    let labels = ReasonLabels {
        reason: reason.as_str(),
    };
    inner.metrics.revocations.get_or_create(&labels).inc();
    let seconds = started.elapsed().as_secs_f64();
    inner.metrics.revocation_duration.observe(seconds);
    tracing::info!(seq = revocation.seq, reason = %reason, selectors = %revocation.selectors(),
        affected = affected.len(), "revocation recorded");
    let detail = serde_json::json!({"revocation": revocation, "affected": affected});
    let target = format!("revocation-{}", revocation.seq);
    o.audit(actor, "revocation", &target, detail).await;
    Ok(Revoked {
        affected,
        revocation,
    })
}
