//! Writing the audit log: [`Orchestrator::audit`] appends one entry and never fails the request
//! it belongs to, and `Orchestrator::transition_as` (in `workspaces.rs`) records who moved a workspace.
//!
//! One writer task per orchestrator appends what concurrent requests hand it in batches, one
//! transaction each (group commit): the chain stays linear and the create path does not queue on
//! SQLite's write lock once per entry. A request still waits until its entry is written.

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::Orchestrator;
use crate::store::{AuditEvent, Store, VisaRef};

/// The actor of background work (the expiry loop, the silent-agent sweep).
pub const SYSTEM: &str = "orchestrator";

/// Most entries written in one transaction.
const BATCH: usize = 256;

/// Issuer and id of each visa: all an audit entry says about a visa.
pub fn visa_detail(refs: &[VisaRef]) -> Value {
    Value::Array(
        refs.iter()
            .map(|v| json!({"iss": v.iss, "jti": v.jti}))
            .collect(),
    )
}

type Job = (AuditEvent, oneshot::Sender<()>);

/// The channel to the writer task, started on first use.
#[derive(Debug, Default)]
pub(crate) struct AuditWriter {
    tx: OnceLock<mpsc::Sender<Job>>,
}

async fn write_loop(store: Arc<dyn Store>, failures: Counter, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let (events, done): (Vec<AuditEvent>, Vec<_>) = jobs.drain(..).unzip();
        if let Err(e) = store.append_audit(Utc::now(), &events).await {
            failures.inc_by(events.len() as u64);
            for ev in &events {
                tracing::error!(error = %e, actor = %ev.actor, action = %ev.action,
                    target = %ev.target, "audit entry not written");
            }
        }
        for d in done {
            let _ = d.send(());
        }
    }
}

impl Orchestrator {
    /// Appends an audit entry and waits until it is written. A failed append is logged and
    /// counted (`basho_audit_append_failures`) but does not fail the caller: the action already
    /// happened.
    pub(crate) async fn audit(&self, actor: &str, action: &str, target: &str, detail: Value) {
        self.audit_event(AuditEvent::new(actor, action, target, detail))
            .await;
    }

    /// [`Orchestrator::audit`] of a prepared event (one marked [`AuditEvent::once`], say).
    pub(crate) async fn audit_event(&self, ev: AuditEvent) {
        self.audit_events(vec![ev]).await;
    }

    /// [`Orchestrator::audit_event`] of several events in order, handed to the writer together
    /// so they share its next transaction instead of waiting for one each.
    pub(crate) async fn audit_events(&self, events: Vec<AuditEvent>) {
        let inner = self.inner();
        let tx = inner.audit.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            let failures = inner.metrics.audit_append_failures.clone();
            tokio::spawn(
                write_loop(inner.store.clone(), failures, rx)
                    .instrument(tracing::info_span!("audit_writer")),
            );
            tx
        });
        let mut pending = Vec::with_capacity(events.len());
        for ev in events {
            let (done, written) = oneshot::channel();
            let what = (ev.actor.clone(), ev.action.clone(), ev.target.clone());
            let sent = tx.send((ev, done)).await.is_ok();
            pending.push((what, sent.then_some(written)));
        }
        for ((actor, action, target), written) in pending {
            let ok = match written {
                Some(w) => w.await.is_ok(),
                None => false,
            };
            if !ok {
                inner.metrics.audit_append_failures.inc();
                tracing::error!(
                    actor,
                    action,
                    target,
                    "audit entry not written: the audit writer stopped"
                );
            }
        }
    }
}
