//! `/v1/agent/*`: an agent registers its site's inventory, long-polls for the workspaces its
//! site should run, and posts what it observed. Every request counts as contact from the site.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use basho_core::protocol::{
    Assignment, Capacity, CapacityReport, DesiredState, ObservationBatch, Registration,
};
use basho_core::{ErrorBody, Ident, State as WsState};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::{Instrument as _, info_span};

use super::auth::AgentSite;
use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::metrics::IgnoredLabels;
use crate::placement::Touch;
use crate::store::{Transition, WorkspaceRecord};

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// The site.
    pub site: Ident,
    /// The site's current revision.
    pub revision: i64,
}

/// The answer to a batch of observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    /// How many observations changed a workspace's state.
    pub applied: u32,
}

pub(super) async fn touch(o: &Orchestrator, site: &Ident) -> ApiResult<()> {
    let now = Utc::now();
    match o.inner().sites.touch(site, now) {
        Touch::Unknown => Err(not_registered(site)),
        Touch::Noted => Ok(()),
        Touch::Persist => Ok(o.inner().store.touch_site(site, now).await?),
    }
}

/// Register (or re-register) a site's inventory.
#[utoipa::path(
    post, path = "/v1/agent/register", operation_id = "agentRegister", tag = "agent",
    request_body = Registration,
    responses(
        (status = 200, description = "Registered", body = Registered),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 422, description = "Invalid registration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiJson(reg): ApiJson<Registration>,
) -> ApiResult<Json<Registered>> {
    agent
        .check_audited(&o, "/v1/agent/register", &reg.site)
        .await?;
    let mut seen = BTreeSet::new();
    for (i, d) in reg.datasets.iter().enumerate() {
        if !seen.insert(&d.id) {
            return Err(ApiError::invalid(format!(
                "datasets[{i}]: dataset {} is listed twice; list each dataset once",
                d.id
            )));
        }
        if d.grant_url.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "datasets[{i}].grant_url is empty; name the URL visas carry for {}",
                d.id
            )));
        }
    }
    if let Some(ceiling) = reg.ceiling {
        within(reg.capacity, ceiling)?;
    }
    if let Some(note) = &reg.capacity_note {
        note_ok(note)?;
    }
    let now = Utc::now();
    o.inner().store.upsert_site(&reg, now).await?;
    o.inner().sites.register(&reg, now);
    o.inner().queue.wake.poke();
    // A site new to this orchestrator starts from the stored revision, which revocations
    // recorded before it registered also moved; otherwise its long-polls would not wait.
    let (stored, _) = o.inner().store.desired(&reg.site).await?;
    o.inner().sites.publish(&reg.site, stored);
    let revision = o
        .inner()
        .sites
        .subscribe(&reg.site)
        .map_or(0, |rx| *rx.borrow());
    tracing::info!(site = %reg.site, backend = %reg.backend, version = %reg.version,
        datasets = reg.datasets.len(), "site registered");
    let datasets: Vec<&str> = reg.datasets.iter().map(|d| d.id.as_str()).collect();
    let detail = serde_json::json!({"backend": reg.backend, "version": reg.version,
        "datasets": datasets, "revision": revision});
    o.audit(
        &format!("agent:{}", reg.site),
        "agent_register",
        reg.site.as_str(),
        detail,
    )
    .await;
    Ok(Json(Registered {
        site: reg.site,
        revision,
    }))
}

/// Longest note a capacity report may carry, characters.
const MAX_NOTE: usize = 200;

fn within(capacity: Capacity, ceiling: Capacity) -> ApiResult<()> {
    if capacity.cpus > ceiling.cpus
        || capacity.memory_mib > ceiling.memory_mib
        || capacity.gpus > ceiling.gpus
    {
        return Err(ApiError::invalid(format!(
            "capacity ({} cpus, {} MiB, {} gpus) is above the site's ceiling ({} cpus, {} MiB, \
             {} gpus); register again to raise the ceiling",
            capacity.cpus,
            capacity.memory_mib,
            capacity.gpus,
            ceiling.cpus,
            ceiling.memory_mib,
            ceiling.gpus
        )));
    }
    Ok(())
}

fn note_ok(note: &str) -> ApiResult<()> {
    if note.chars().count() > MAX_NOTE || note.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "capacity_note must be at most {MAX_NOTE} characters without control characters"
        )));
    }
    Ok(())
}

/// What basho may use at the site now, reported by its agent when it changes (the site's own
/// load, quiet hours). The queue looks again at once.
#[utoipa::path(
    put, path = "/v1/agent/capacity", operation_id = "agentCapacity", tag = "agent",
    request_body = CapacityReport,
    responses(
        (status = 204, description = "Taken"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 409, description = "The site has not registered", body = ErrorBody),
        (status = 422, description = "Above the registered ceiling, or a bad note", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn capacity(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiJson(report): ApiJson<CapacityReport>,
) -> ApiResult<StatusCode> {
    agent
        .check_audited(&o, "/v1/agent/capacity", &report.site)
        .await?;
    let Some(reg) = o.inner().sites.registration(report.site.as_str()) else {
        return Err(not_registered(&report.site));
    };
    within(report.capacity, reg.ceiling())?;
    if let Some(note) = &report.note {
        note_ok(note)?;
    }
    let now = Utc::now();
    if !o.inner().store.set_site_capacity(&report, now).await? {
        return Err(not_registered(&report.site));
    }
    o.inner().sites.set_capacity(&report, now);
    o.inner().queue.wake.poke();
    tracing::info!(site = %report.site, cpus = report.capacity.cpus,
        memory_mib = report.capacity.memory_mib, gpus = report.capacity.gpus,
        note = report.note.as_deref().unwrap_or(""), "site capacity now");
    Ok(StatusCode::NO_CONTENT)
}

fn not_registered(site: &Ident) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_registered",
        format!("site {site} has not registered; POST /v1/agent/register first"),
    )
}

/// Longest `wait_s` a desired-state poll may ask for (the schema's maximum).
const MAX_WAIT_S: u16 = 3600;

/// Parameters of the desired-state poll.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DesiredQuery {
    /// The site; must match the token's site (defaults to it).
    pub site: Option<Ident>,
    /// The revision the agent already has; the answer waits while it is still current.
    pub after: Option<i64>,
    /// Longest wait in seconds, capped by the server's `long_poll_max_s` and by half its
    /// `agent_silent_s`; 0 or absent: no wait.
    #[param(minimum = 0, maximum = 3600)]
    pub wait_s: Option<u16>,
}

fn assignment(r: WorkspaceRecord) -> Assignment {
    let w = r.workspace;
    Assignment {
        id: w.id,
        project: w.project,
        owner: w.owner,
        template: w.template,
        image: r.image,
        command: r.command,
        datasets: w.datasets,
        resources: w.resources,
        expires_at: w.expires_at,
        visas: r.visas,
        launch: r.launch,
    }
}

/// The workspaces the site should run (long-poll).
///
/// Answers at once when the site's revision differs from `after`; otherwise waits until it
/// changes or `wait_s` passes, then answers the (possibly unchanged) full set.
#[utoipa::path(
    get, path = "/v1/agent/desired", operation_id = "agentDesired", tag = "agent",
    params(DesiredQuery),
    responses(
        (status = 200, description = "The full desired set and its revision", body = DesiredState),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 409, description = "The site has not registered", body = ErrorBody),
        (status = 422, description = "Bad parameters", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn desired(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiQuery(q): ApiQuery<DesiredQuery>,
) -> ApiResult<Json<DesiredState>> {
    if q.wait_s.is_some_and(|w| w > MAX_WAIT_S) {
        return Err(ApiError::invalid(format!(
            "query parameter wait_s is over {MAX_WAIT_S}; the server caps a wait far lower anyway"
        )));
    }
    let site = q.site.unwrap_or_else(|| agent.0.clone());
    agent.check_audited(&o, "/v1/agent/desired", &site).await?;
    touch(&o, &site).await?;
    let inner = o.inner();
    if let (Some(after), Some(mut rx)) = (q.after, inner.sites.subscribe(&site)) {
        // A poll never outlasts half the silence window, so a waiting agent is never swept.
        let limits = &inner.config.limits;
        let cap = limits
            .long_poll_max_s
            .min((limits.agent_silent_s / 2).max(1));
        let wait = Duration::from_secs(u64::from(q.wait_s.unwrap_or(0)).min(cap));
        // Revisions only grow: a replica whose view lags behind what the agent already saw
        // (another replica answered it) waits too, instead of answering the old state at once.
        if *rx.borrow_and_update() <= after && !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > after)) => {}
                () = inner.closing.cancelled() => {}
            }
        }
    }
    let (revision, list) = inner.store.desired(&site).await?;
    let revocations = inner.revocations.all().as_ref().clone();
    let (stopping, live): (Vec<_>, Vec<_>) = list
        .into_iter()
        .partition(|r| r.workspace.state == WsState::Stopping);
    Ok(Json(DesiredState {
        revision,
        workspaces: live.into_iter().map(assignment).collect(),
        stopping: stopping.into_iter().map(|r| r.workspace.id).collect(),
        revocations,
        checkpoint: inner.audit.latest_checkpoint(),
    }))
}

fn ignore(o: &Orchestrator, site: &Ident, reason: &'static str) {
    o.inner()
        .metrics
        .observations_ignored
        .get_or_create(&IgnoredLabels {
            site: site.to_string(),
            reason,
        })
        .inc();
}

/// Report what the agent saw.
///
/// Each observation is applied as a state change when the state machine allows it. Observations
/// of unknown workspaces, of another site's workspaces, and illegal changes are skipped.
#[utoipa::path(
    post, path = "/v1/agent/observations", operation_id = "agentObservations", tag = "agent",
    request_body = ObservationBatch,
    responses(
        (status = 200, description = "How many observations changed a state", body = Applied),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 409, description = "The site has not registered", body = ErrorBody),
        (status = 422, description = "Invalid batch", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "observations", skip_all)]
pub async fn observations(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiJson(batch): ApiJson<ObservationBatch>,
) -> ApiResult<Json<Applied>> {
    agent
        .check_audited(&o, "/v1/agent/observations", &batch.site)
        .await?;
    touch(&o, &batch.site).await?;
    let site = &batch.site;
    let mut applied = 0;
    for obs in batch.observations {
        let reportable = matches!(
            obs.state,
            WsState::Starting
                | WsState::Running
                | WsState::Preempted
                | WsState::Stopped
                | WsState::Failed
                | WsState::Expired
                | WsState::Revoked
                | WsState::Unknown
        );
        if !reportable {
            ignore(&o, site, "unsupported_state");
            continue;
        }
        let Some(rec) = o.inner().store.workspace(&obs.workspace).await? else {
            ignore(&o, site, "unknown_workspace");
            continue;
        };
        if &rec.workspace.site != site {
            tracing::warn!(%site, workspace = %obs.workspace, owner_site = %rec.workspace.site,
                "observation of another site's workspace ignored");
            ignore(&o, site, "other_site");
            continue;
        }
        // The site confirms a revoked workspace's container is gone (`basho revoke --wait`).
        if rec.workspace.state == WsState::Revoked
            && matches!(obs.state, WsState::Revoked | WsState::Stopped)
        {
            let note = basho_core::revocation::SITE_CONFIRMED;
            if o.inner().store.note_revoked(&obs.workspace, note).await? {
                // What the site did (its quarantine of /work and /results, say), in the chain.
                o.audit(
                    &format!("agent:{site}"),
                    "revocation_confirmed",
                    &obs.workspace,
                    serde_json::json!({"state": obs.state.as_str(), "message": obs.message}),
                )
                .await;
            }
            o.inner().metrics.revocation_confirmed(&obs.workspace);
            continue;
        }
        // A stop was asked: the agent losing sight of the container must not cancel it.
        if rec.workspace.state == WsState::Stopping && obs.state == WsState::Unknown {
            ignore(&o, site, "illegal_transition");
            continue;
        }
        // Why it was stopped (deletion, quota) stays on the workspace beside the site's word.
        let mut message = match (&rec.workspace.message, &obs.message) {
            (Some(why), Some(seen))
                if rec.workspace.state == WsState::Stopping && obs.state == WsState::Stopped =>
            {
                Some(format!("{why}; {seen}"))
            }
            _ => obs.message.clone(),
        };
        // A batch workspace that ended by itself: what its site took of its outputs becomes
        // its task's release request before it leaves the desired set.
        if let Some(outputs) = &obs.outputs
            && matches!(obs.state, WsState::Stopped | WsState::Failed)
            && rec.workspace.state.wants_container()
            && let Some(note) = super::tes::outputs_taken(&o, site, &rec, outputs).await?
        {
            message = Some(match message {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        match o
            .transition_as(
                &format!("agent:{site}"),
                &obs.workspace,
                obs.state,
                message.as_deref(),
            )
            .await?
        {
            Transition::Changed { .. } => applied += 1,
            Transition::Unchanged(_) => {}
            Transition::Refused(_) => ignore(&o, site, "illegal_transition"),
        }
    }
    if applied > 0 {
        basho_core::crash_point!("orchestrator.observation.applied");
        o.inner().federated.poke();
    }
    Ok(Json(Applied { applied }))
}
/// `GET /v1/agent/tunnel`: the agent's session tunnel (a WebSocket).
#[utoipa::path(
    get, path = "/v1/agent/tunnel", operation_id = "agentTunnel", tag = "agent",
    responses(
        (status = 101, description = "A WebSocket carrying every session of the site as binary frames tagged with a session id"),
        (status = 400, description = "Not a WebSocket upgrade (`websocket_required`)", body = basho_core::ErrorBody),
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "Not an agent token", body = basho_core::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn tunnel(
    AgentSite(site): AgentSite,
    State(o): State<Orchestrator>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return super::websocket_required(&e, "the agent's session tunnel").into_response();
        }
    };
    let span = info_span!("tunnel", site = %site);
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| crate::tunnel::serve(o, site, socket).instrument(span))
}
