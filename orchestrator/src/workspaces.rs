//! Workspaces: creating one (idempotency, admission and placement, revocations, quota, then one
//! insert), deleting one, and every change of state, which keeps the site cache in step and
//! writes who made it to the audit log. The HTTP handlers in `api/workspaces.rs` only translate.

use basho_core::protocol::Launch;
use basho_core::{CreateWorkspace, State, Workspace};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Orchestrator;
use crate::admission::{Admission, AdmissionError, Admitted, admit};
use crate::revocations::Refused;
use crate::store::{
    AuditEvent, Created, IdempotencyKey, NewTask, QueueEntry, StoreError, Transition,
    WorkspaceRecord,
};

/// Why a create was refused. Nothing is stored and no compute stays reserved when one is
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request, its visas or placement: see [`AdmissionError`].
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// A revocation covers it.
    #[error(transparent)]
    Revoked(#[from] Refused),
    /// The project's quota cannot cover the workspace's whole life.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A batch workspace's image is not on the allow-list of the site its datasets placed it at.
    #[error(
        "image {image} is not on site {site}'s allow-list (it lists {listed}); ask its admin, or \
         use one of those"
    )]
    Image {
        /// The image name asked for.
        image: String,
        /// The site placement chose.
        site: basho_core::Ident,
        /// What the site lists, comma-separated.
        listed: String,
    },
    /// Every site placement chose was filled by other creates first, each time.
    #[error(
        "the sites that fit this workspace were filled by other requests while it was placed; \
         retry"
    )]
    Busy,
    /// The store failed, or the idempotency key was used for another request.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A create that was answered.
#[derive(Debug, Clone)]
pub struct Creation {
    /// The workspace.
    pub workspace: Workspace,
    /// It was made by an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// The idempotency key `key` of `req`: the request is hashed as parsed and serialized again, so
/// formatting and field order do not matter.
pub fn idempotency_key(key: &str, req: &impl serde::Serialize) -> IdempotencyKey {
    let canonical = serde_json::to_vec(req).expect("a parsed request serializes");
    let hash = Sha256::digest(&canonical);
    IdempotencyKey {
        key: key.to_owned(),
        request_hash: basho_core::digest::hex(&hash),
    }
}

/// What makes a batch workspace (a TES task's) other than its template's: the executor's image
/// name and argv, its working directory and environment, and the task stored with it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The image name; the site resolves it through its allow-list as any other.
    pub image: String,
    /// The argv.
    pub command: Vec<String>,
    /// Working directory and environment.
    pub launch: Launch,
    /// The TES task, written with the workspace; none for a federated job's step.
    pub task: Option<NewTask>,
    /// The owner of a task that reads no dataset and so carries no visa (a researcher creating
    /// it with their own token).
    pub owner: Option<String>,
}

/// Creates the workspace `req` asks for, in `actor`'s name. Everything is checked before anything
/// is written; a key seen before answers the workspace it made.
pub async fn create(
    o: &Orchestrator,
    actor: &str,
    req: &CreateWorkspace,
    key: Option<&IdempotencyKey>,
) -> Result<Creation, CreateError> {
    create_with(o, actor, req, key, None).await
}

/// Creates a workspace as [`create`] does; a batch one runs `batch`'s executor and stores its
/// task in the same insert.
#[tracing::instrument(name = "create", skip_all, fields(project = %req.project))]
pub async fn create_with(
    o: &Orchestrator,
    actor: &str,
    req: &CreateWorkspace,
    key: Option<&IdempotencyKey>,
    batch: Option<&Batch>,
) -> Result<Creation, CreateError> {
    let inner = o.inner();
    // Fast path for retries; the store decides atomically again at insert time.
    if let Some(k) = key
        && let Some((hash, first)) = inner.store.idempotent_workspace(&k.key).await?
    {
        if hash != k.request_hash {
            let workspace = first.workspace.id;
            return Err(StoreError::IdempotencyKeyReused { workspace }.into());
        }
        return Ok(replayed(o, actor, first).await);
    }
    let now = Utc::now();
    let admission = Admission {
        templates: &inner.templates,
        issuers: &inner.issuers,
        sites: &inner.sites,
        agent_silent_s: inner.config.limits.agent_silent_s,
    };
    // Placement uses this replica's view of what each site holds; the store checks it again
    // under the site's turn. When another replica took the capacity first, the view learns what
    // the site holds and placement runs again: elsewhere, or refused.
    // A batch workspace (a TES task's, a federated step's) is refused rather than queued: its
    // caller has its own answer for no capacity.
    let queue_s = match batch {
        Some(_) => 0,
        None => req
            .max_queue_s
            .unwrap_or(inner.config.scheduler.max_queue_s),
    };
    for _ in 0..PLACEMENT_ATTEMPTS {
        let unlicensed = batch.and_then(|b| b.owner.as_deref());
        let (mut rec, reservation) = match admit(&admission, req, now, unlicensed, queue_s)? {
            Admitted::Placed(rec, reservation) => (rec, reservation),
            Admitted::Queued(rec, entry) => return enqueue(o, actor, rec, &entry, key).await,
        };
        crate::revocations::refuse_revoked(&inner.revocations.all(), &rec)?;
        let w = &rec.workspace;
        admit_quota(o, w, now, w.expires_at).await?;
        basho_core::crash_point!("orchestrator.create.admitted");
        let created = match batch {
            Some(b) => {
                let site = &rec.workspace.site;
                let listed = inner
                    .sites
                    .registration(site.as_str())
                    .map(|r| r.images)
                    .unwrap_or_default();
                if !listed.contains(&b.image) {
                    return Err(CreateError::Image {
                        image: b.image.clone(),
                        site: site.clone(),
                        listed: listed.join(", "),
                    });
                }
                rec.image.clone_from(&b.image);
                rec.command.clone_from(&b.command);
                rec.launch = Some(b.launch.clone());
                match &b.task {
                    Some(task) => inner.store.create_task(&rec, task, key).await?,
                    None => inner.store.create_workspace(&rec, key).await?,
                }
            }
            None => inner.store.create_workspace(&rec, key).await?,
        };
        match created {
            Created::New(stored) => {
                reservation.commit();
                basho_core::crash_point!("orchestrator.create.committed");
                let site = &stored.workspace.site;
                inner.sites.publish(site, stored.revision);
                inner.metrics.workspaces_created.inc();
                let labels = crate::metrics::SiteLabels {
                    site: site.to_string(),
                };
                inner.metrics.placements.get_or_create(&labels).inc();
                let w = &stored.workspace;
                tracing::info!(workspace = %w.id, project = %w.project, %site, "workspace created");
                audit_creation(o, actor, &stored, false).await;
                basho_core::crash_point!("orchestrator.create.audited");
                return Ok(Creation {
                    workspace: stored.workspace,
                    replayed: false,
                });
            }
            Created::Replayed(first) => return Ok(replayed(o, actor, first).await),
            Created::Full(held) => {
                let site = rec.workspace.site;
                drop(reservation);
                tracing::info!(%site, "site filled up meanwhile; placing again");
                inner.sites.learn_held(&site, &held);
            }
        }
    }
    Err(CreateError::Busy)
}

/// Stores a workspace that waits in the queue and wakes the scheduler.
async fn enqueue(
    o: &Orchestrator,
    actor: &str,
    rec: WorkspaceRecord,
    entry: &QueueEntry,
    key: Option<&IdempotencyKey>,
) -> Result<Creation, CreateError> {
    let inner = o.inner();
    crate::revocations::refuse_revoked(&inner.revocations.all(), &rec)?;
    let w = &rec.workspace;
    let lifetime = chrono::TimeDelta::milliseconds(entry.duration_ms);
    let until = (w.created_at + lifetime).min(crate::store::from_millis(entry.visa_exp_ms));
    admit_quota(o, w, w.created_at, until).await?;
    match inner.store.enqueue_workspace(&rec, entry, key).await? {
        Created::New(stored) => {
            inner.metrics.workspaces_created.inc();
            let w = &stored.workspace;
            tracing::info!(workspace = %w.id, project = %w.project, site = %w.site, "workspace queued");
            audit_creation(o, actor, &stored, false).await;
            inner.queue.wake.wake();
            Ok(Creation {
                workspace: stored.workspace,
                replayed: false,
            })
        }
        Created::Replayed(first) => Ok(replayed(o, actor, first).await),
        // A queued insert never checks capacity.
        Created::Full(_) => Err(CreateError::Busy),
    }
}

/// How many times a create is placed again after the store found its site full.
const PLACEMENT_ATTEMPTS: usize = 4;

async fn replayed(o: &Orchestrator, actor: &str, first: WorkspaceRecord) -> Creation {
    audit_creation(o, actor, &first, true).await;
    Creation {
        workspace: first.workspace,
        replayed: true,
    }
}

/// Refuses a workspace its project's quota cannot cover from `now` until `until`.
pub(crate) async fn admit_quota(
    o: &Orchestrator,
    w: &Workspace,
    now: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
) -> Result<(), CreateError> {
    let Some((balance, _)) = crate::quota::balance(o, &w.project, now).await? else {
        return Ok(());
    };
    let need = crate::quota::hours(&w.resources, now, until);
    balance
        .admit(&w.project, need)
        .map_err(CreateError::QuotaExceeded)
}

/// The creation's two entries, `workspace_create` and `workspace_placed`, each written once: a
/// retry with the same Idempotency-Key writes them (marked `recorded_on_replay`) only if the
/// first attempt ended between its commit and its entries, so every workspace has exactly one.
async fn audit_creation(o: &Orchestrator, actor: &str, rec: &WorkspaceRecord, replay: bool) {
    let w = &rec.workspace;
    let visas = crate::audit::visa_detail(&rec.visa_refs);
    let mut created = json!({"project": w.project.as_str(), "owner": w.owner,
        "template": w.template.as_str(), "site": w.site.as_str(), "datasets": w.datasets,
        "resources": w.resources, "expires_at": w.expires_at, "visas": visas});
    // A queued workspace is placed later, by the scheduler, which writes its `workspace_placed`.
    let (action, mut placed) = match w.state {
        State::Queued => (
            "workspace_queued",
            json!({"site": w.site.as_str(), "reason": w.message, "until": w.expires_at}),
        ),
        _ => (
            "workspace_placed",
            json!({"site": w.site.as_str(), "state": State::Placed.as_str()}),
        ),
    };
    if replay {
        created["recorded_on_replay"] = json!(true);
        placed["recorded_on_replay"] = json!(true);
    }
    o.audit_events(vec![
        AuditEvent::new(actor, "workspace_create", &w.id, created).once(),
        AuditEvent::new(actor, action, &w.id, placed).once(),
    ])
    .await;
}

/// Asks for workspace `id` to stop, in `actor`'s name: a live one moves to `stopping` (its agent
/// stops it and reports `stopped`); one already stopping or ended is answered as it is.
#[tracing::instrument(name = "delete", skip_all, fields(workspace = %id))]
pub async fn delete(o: &Orchestrator, actor: &str, id: &str) -> Result<Workspace, StoreError> {
    let mut t = o
        .transition_as(actor, id, State::Stopping, Some("deletion requested"))
        .await?;
    // A queued workspace has nothing at any site to stop. Placed by the queue meanwhile, it is
    // stopped as any placed one.
    if let Transition::Refused(rec) = &t
        && rec.workspace.state == State::Queued
    {
        let message = Some("deleted while queued");
        t = o.transition_as(actor, id, State::Stopped, message).await?;
        if let Transition::Refused(rec) = &t
            && rec.workspace.state.holds_compute()
        {
            t = o
                .transition_as(actor, id, State::Stopping, Some("deletion requested"))
                .await?;
        }
    }
    let rec = match t {
        Transition::Changed { record, .. }
        | Transition::Unchanged(record)
        | Transition::Refused(record) => record,
    };
    basho_core::crash_point!("orchestrator.delete.recorded");
    let detail = json!({"state": rec.workspace.state.as_str()});
    o.audit(actor, "workspace_delete", id, detail).await;
    Ok(rec.workspace)
}

impl Orchestrator {
    /// Moves a workspace to `to` through the store and keeps the site cache in step: compute is
    /// released when the workspace ends, and the site's agent is woken.
    pub(crate) async fn transition(
        &self,
        id: &str,
        to: State,
        message: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let inner = self.inner();
        let t = inner.store.transition(id, to, message, Utc::now()).await?;
        if let Transition::Changed { from, record } = &t {
            let w = &record.workspace;
            if from.holds_compute() && w.state.is_terminal() {
                inner.sites.release(&w.site, &w.resources);
                inner.queue.wake.poke();
            }
            if *from == State::Queued {
                inner.queue.forget(&w.id);
            }
            inner.sites.publish(&w.site, record.revision);
            tracing::info!(workspace = %w.id, site = %w.site, from = %from, to = %w.state, "workspace changed state");
        }
        Ok(t)
    }

    /// [`Orchestrator::transition`], writing a `workspace_state` entry naming `actor` when the
    /// state changed.
    pub(crate) async fn transition_as(
        &self,
        actor: &str,
        id: &str,
        to: State,
        message: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let t = self.transition(id, to, message).await?;
        if let Transition::Changed { from, record } = &t {
            let w = &record.workspace;
            let detail = json!({"from": from.as_str(), "to": w.state.as_str(),
                "site": w.site.as_str(), "message": message});
            self.audit(actor, "workspace_state", &w.id, detail).await;
        }
        Ok(t)
    }
}
