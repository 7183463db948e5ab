//! Writing the audit log: [`Orchestrator::audit`] appends one entry and says whether it was
//! written: what grants access (a session's start) does not happen unless it was; what already
//! happened is logged and counted. `Orchestrator::transition_as` (in `workspaces.rs`) records who
//! moved a workspace.
//!
//! One writer task per orchestrator appends what concurrent requests hand it in batches, one
//! transaction each (group commit): the chain stays linear and the create path does not queue on
//! SQLite's write lock once per entry. A request still waits until its entry is written.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use basho_core::audit::checkpoint::{self, Checkpoint};
use chrono::Utc;
use jsonwebtoken::EncodingKey;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::Orchestrator;
use crate::config::AuditConfig;
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

/// An event and where to say whether it was written.
type Job = (AuditEvent, oneshot::Sender<bool>);

/// The channel to the writer task, started on first use, and the checkpoints it signs.
#[derive(Default)]
pub(crate) struct AuditWriter {
    tx: OnceLock<mpsc::Sender<Job>>,
    signer: Option<Arc<Signer>>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("checkpoints", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// Signs checkpoints of the chain ([`basho_core::audit::checkpoint`]).
struct Signer {
    key: EncodingKey,
    every: i64,
    interval: Duration,
    /// The newest checkpoint signed, as handed to the sites.
    latest: RwLock<Option<String>>,
}

/// The key of `[audit] checkpoint_key_file`, or why it cannot be used.
pub(crate) fn checkpoint_key(cfg: &AuditConfig) -> Result<Option<EncodingKey>, String> {
    let Some(path) = &cfg.checkpoint_key_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| format!("audit.checkpoint_key_file {}: {e}", path.display()))?;
    EncodingKey::from_ed_pem(&pem).map(Some).map_err(|e| {
        format!(
            "audit.checkpoint_key_file {}: not an Ed25519 private key in PKCS#8 PEM ({e}); make \
             one with `openssl genpkey -algorithm ed25519`",
            path.display()
        )
    })
}

impl AuditWriter {
    /// A writer that signs checkpoints with `key` (none without one).
    pub(crate) fn new(cfg: &AuditConfig, key: Option<EncodingKey>) -> Self {
        Self {
            tx: OnceLock::new(),
            signer: key.map(|key| {
                Arc::new(Signer {
                    key,
                    every: i64::try_from(cfg.checkpoint_every.max(1)).unwrap_or(i64::MAX),
                    interval: Duration::from_secs(cfg.checkpoint_interval_s.max(1)),
                    latest: RwLock::new(None),
                })
            }),
        }
    }

    /// The newest checkpoint this replica signed, for the sites.
    pub(crate) fn latest_checkpoint(&self) -> Option<String> {
        let s = self.signer.as_ref()?;
        s.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the writer knows of the chain's head and the last checkpoint it signed.
#[derive(Default)]
struct Head {
    written: Option<(i64, String)>,
    checkpointed: i64,
    at: Option<Instant>,
}

impl Signer {
    /// Signs the head and appends the checkpoint to the chain when enough entries or time have
    /// passed since the last one.
    async fn maybe_checkpoint(&self, store: &dyn Store, head: &mut Head) {
        let Some((seq, hash)) = head.written.clone() else {
            return;
        };
        let due = seq - head.checkpointed >= self.every
            || head.at.is_none_or(|t| t.elapsed() >= self.interval);
        if seq <= head.checkpointed || !due {
            return;
        }
        let cp = Checkpoint {
            seq,
            hash,
            iat: Utc::now().timestamp(),
        };
        let jws = checkpoint::sign(&cp, &self.key);
        let ev = AuditEvent::new(
            SYSTEM,
            "audit_checkpoint",
            "",
            json!({"seq": cp.seq, "hash": cp.hash, "checkpoint": jws}),
        );
        match store.append_audit(Utc::now(), &[ev]).await {
            Ok(written) => {
                head.written = written.last().map(|e| (e.seq, e.hash.clone()));
                head.checkpointed = head.written.as_ref().map_or(seq, |(s, _)| *s);
                head.at = Some(Instant::now());
                *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(jws);
            }
            Err(e) => tracing::error!(error = %e, seq, "audit checkpoint not written"),
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    failures: Counter,
    signer: Option<Arc<Signer>>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut head = Head::default();
    let mut tick = tokio::time::interval(
        signer
            .as_ref()
            .map_or(Duration::from_secs(3600), |s| s.interval),
    );
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut jobs, BATCH) => n,
            _ = tick.tick() => {
                if let Some(s) = &signer {
                    s.maybe_checkpoint(store.as_ref(), &mut head).await;
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        let (events, done): (Vec<AuditEvent>, Vec<_>) = jobs.drain(..).unzip();
        let written = match store.append_audit(Utc::now(), &events).await {
            Ok(entries) => {
                if let Some(e) = entries.last() {
                    head.written = Some((e.seq, e.hash.clone()));
                }
                true
            }
            Err(e) => {
                failures.inc_by(events.len() as u64);
                for ev in &events {
                    tracing::error!(error = %e, actor = %ev.actor, action = %ev.action,
                        target = %ev.target, "audit entry not written");
                }
                false
            }
        };
        for d in done {
            let _ = d.send(written);
        }
        if let Some(s) = &signer {
            s.maybe_checkpoint(store.as_ref(), &mut head).await;
        }
    }
}

impl Orchestrator {
    /// Appends an audit entry and waits until it is written; false when it was not. A failed
    /// append is logged and counted (`basho_audit_append_failures`); a caller about to grant
    /// access refuses it then.
    pub(crate) async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> bool {
        self.audit_event(AuditEvent::new(actor, action, target, detail))
            .await
    }

    /// [`Orchestrator::audit`] of a prepared event (one marked [`AuditEvent::once`], say).
    pub(crate) async fn audit_event(&self, ev: AuditEvent) -> bool {
        self.audit_events(vec![ev]).await
    }

    /// [`Orchestrator::audit_event`] of several events in order, handed to the writer together
    /// so they share its next transaction instead of waiting for one each.
    pub(crate) async fn audit_events(&self, events: Vec<AuditEvent>) -> bool {
        let inner = self.inner();
        let tx = inner.audit.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            let failures = inner.metrics.audit_append_failures.clone();
            let signer = inner.audit.signer.clone();
            tokio::spawn(
                write_loop(inner.store.clone(), failures, signer, rx)
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
        let mut all = true;
        for ((actor, action, target), written) in pending {
            let answer = match written {
                Some(w) => w.await.ok(),
                None => None,
            };
            match answer {
                Some(written) => all &= written,
                None => {
                    all = false;
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
        all
    }
}
