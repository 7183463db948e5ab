//! Moves federated jobs along (on the leader): each step's state from its workspace and its
//! partial's release request, the aggregation placed once every step has ended and enough
//! partials are released, the job's end, and every change in the audit chain. Woken when
//! observations or reviews arrive, and every second regardless; each pass reads the job's
//! workspaces and requests afresh, so a restarted orchestrator picks up where it was.

use std::time::Duration;

use basho_core::federated::{InputFile, JobState, PartialInput, SiteStep, StepState};
use basho_core::protocol::Launch;
use basho_core::release::{ReleaseRequest, ReleaseState};
use basho_core::{State, Workspace};
use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Orchestrator;
use crate::api::tes::release_id;
use crate::store::{JobRow, StoreError};
use crate::wake::{Wake, run_while_leading};
use crate::workspaces::{Batch, CreateError, create_with, idempotency_key};

/// How often jobs are looked at without being woken.
const EVERY: Duration = Duration::from_secs(1);
/// Longer than any job's creation takes: a step still without a workspace after it was never
/// made.
const CREATION_BOUND: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Runs [`advance_all`] when woken and every [`EVERY`] while this replica leads.
pub async fn run_loop(o: Orchestrator, shutdown: CancellationToken) {
    fn wake(i: &crate::context::Inner) -> &Wake {
        &i.federated
    }
    run_while_leading(o, shutdown, (wake, EVERY, "federated job"), advance_all).await;
}

/// Moves every job not ended along.
pub async fn advance_all(o: &Orchestrator) -> Result<(), StoreError> {
    let jobs = o.inner().store.jobs(None, true).await?;
    let mut active = 0;
    for row in jobs {
        let id = row.job.id.clone();
        match advance(o, row).await {
            Ok(state) if !state.is_terminal() => active += 1,
            Ok(_) => {}
            Err(e) => {
                active += 1;
                tracing::warn!(job = %id, error = %e, "federated job not advanced; retrying");
            }
        }
    }
    o.inner().federated.set_active(active);
    Ok(())
}

/// Looks at one job's steps and aggregation, acts on what changed, and keeps it; its state now.
pub async fn advance(o: &Orchestrator, mut row: JobRow) -> Result<JobState, StoreError> {
    if row.job.state.is_terminal() {
        return Ok(row.job.state);
    }
    let before = row.job.clone();
    let store = &o.inner().store;
    for step in &mut row.job.sites {
        if step.state == StepState::Stopped {
            continue;
        }
        if step.workspace.is_empty() {
            // Made just before the orchestrator stopped, it is found by its key; one the
            // creation never reached fails once the creation is surely over.
            let key = super::step_key(&row.job.id, &step.site);
            match store.idempotent_workspace(&key).await? {
                Some((_, rec)) => step.workspace = rec.workspace.id,
                None if Utc::now() - row.job.created_at > CREATION_BOUND => {
                    step.state = StepState::Failed;
                    step.message =
                        Some("its workspace was never made (the job's creation stopped)".into());
                    continue;
                }
                None => continue,
            }
        }
        let Some(rec) = store.workspace(&step.workspace).await? else {
            step.state = StepState::Failed;
            step.message = Some(format!("its workspace {} is gone", step.workspace));
            continue;
        };
        let w = &rec.workspace;
        step.workspace_state = w.state;
        let release = if w.state == State::Stopped {
            store.release(&release_id(&w.id)).await?
        } else {
            None
        };
        judge_step(step, w, release.as_ref());
    }
    if row.job.aggregation.workspace.is_some() {
        aggregated(o, &mut row).await?;
    } else {
        let alive = row
            .job
            .sites
            .iter()
            .filter(|s| !matches!(s.state, StepState::Failed | StepState::Stopped))
            .count();
        if alive < row.job.min_sites as usize {
            let why = failures(&row.job.sites);
            let why = format!(
                "{why}; {alive} of {} sites left, and the job needs {}",
                row.job.sites.len(),
                row.job.min_sites
            );
            fail(o, &mut row, &why).await?;
        } else if row.job.sites.iter().all(|s| s.state.is_final()) {
            aggregate(o, &mut row).await?;
        } else if row.job.sites.iter().any(|s| s.state == StepState::Running) {
            row.job.state = JobState::Running;
            row.job.message = None;
        } else {
            row.job.state = JobState::WaitingForRelease;
            row.job.message = Some(waiting(&row.job.sites));
        }
    }
    if row.job != before {
        row.job.updated_at = Utc::now();
        store.put_job(&row).await?;
        record_changes(o, &before, &row.job).await;
    }
    Ok(row.job.state)
}

/// A step's state from its workspace and, once that ended, its partial's release request.
fn judge_step(step: &mut SiteStep, w: &Workspace, release: Option<&ReleaseRequest>) {
    let (state, message) = match w.state {
        State::Pending | State::Placed | State::Starting | State::Running | State::Stopping => {
            (StepState::Running, None)
        }
        State::Unknown => (
            StepState::Running,
            Some("its site cannot tell how it is; waiting for its agent".to_owned()),
        ),
        State::Preempted => (
            StepState::Running,
            Some("preempted by its site's own work; it runs again there".to_owned()),
        ),
        State::Stopped if basho_core::tes::exit_code(w.message.as_deref()) == Some(0) => {
            match release {
                None => (
                    StepState::Failed,
                    Some(format!(
                        "no partial was taken: {}",
                        w.message.as_deref().unwrap_or("the site took nothing")
                    )),
                ),
                Some(r) => {
                    step.partial = Some(r.id.clone());
                    match r.state {
                        ReleaseState::Approved | ReleaseState::Released => {
                            step.released_by = Some(released_by(r));
                            (StepState::Released, None)
                        }
                        // A returned partial cannot be taken again: its step has ended.
                        ReleaseState::Rejected
                        | ReleaseState::Withdrawn
                        | ReleaseState::Returned => (
                            StepState::Failed,
                            Some(format!("its partial {} was {}", r.id, r.state)),
                        ),
                        _ => (
                            StepState::WaitingForRelease,
                            Some(format!(
                                "its partial {} waits for output checkers ({})",
                                r.id, r.state
                            )),
                        ),
                    }
                }
            }
        }
        s => (
            StepState::Failed,
            Some(match &w.message {
                Some(m) => format!("{s}: {m}"),
                None => s.to_string(),
            }),
        ),
    };
    step.state = state;
    step.message = message;
}

/// Who released a partial: the site's own rule, or the checkers who approved it.
fn released_by(r: &ReleaseRequest) -> String {
    if let Some(v) = r
        .reviews
        .iter()
        .find(|v| v.checker.starts_with(super::SITE_RULE_PREFIX))
    {
        return format!("{} ({})", v.checker, v.comment);
    }
    let names: Vec<&str> = r
        .reviews
        .iter()
        .filter(|v| v.round == r.round && v.verdict == basho_core::release::Verdict::Approve)
        .map(|v| v.checker.as_str())
        .collect();
    format!("output checkers {}", names.join(", "))
}

fn failures(steps: &[SiteStep]) -> String {
    steps
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .map(|s| {
            format!(
                "site {} failed: {}",
                s.site,
                s.message.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn waiting(steps: &[SiteStep]) -> String {
    let sites: Vec<&str> = steps
        .iter()
        .filter(|s| s.state == StepState::WaitingForRelease)
        .map(|s| s.site.as_str())
        .collect();
    format!(
        "the partials of {} wait for output checkers",
        sites.join(", ")
    )
}

/// Places the aggregation step over the released partials, unless its site is silent or full
/// (the job waits, saying why).
async fn aggregate(o: &Orchestrator, row: &mut JobRow) -> Result<(), StoreError> {
    let inner = o.inner();
    let site = row.job.aggregation.site.clone();
    let silent_s = i64::try_from(inner.config.limits.agent_silent_s).unwrap_or(i64::MAX);
    let heard = inner
        .sites
        .last_contacts()
        .into_iter()
        .find(|(s, _)| *s == site)
        .map(|(_, at)| at);
    let cutoff = Utc::now() - chrono::TimeDelta::seconds(silent_s);
    if heard.is_none_or(|at| at < cutoff) {
        row.job.state = JobState::WaitingForRelease;
        row.job.message = Some(match heard {
            Some(at) => format!(
                "the partials are released; waiting for aggregation site {site}, not heard \
                 from since {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => format!("the partials are released; waiting for aggregation site {site}"),
        });
        return Ok(());
    }
    let mut inputs = Vec::new();
    for s in row
        .job
        .sites
        .iter()
        .filter(|s| s.state == StepState::Released)
    {
        let Some(id) = &s.partial else { continue };
        let Some(r) = inner.store.release(id).await? else {
            continue;
        };
        inputs.push(PartialInput {
            site: s.site.clone(),
            release: r.id.clone(),
            files: r
                .files
                .iter()
                .filter(|f| f.releasable())
                .map(|f| InputFile {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        });
    }
    let req = super::aggregation_request(o, &row.job.project, &row.aggregation, &site);
    let batch = Batch {
        image: row.aggregation.image.clone(),
        command: row.aggregation.command.clone(),
        launch: Launch {
            all_results: true,
            inputs: inputs.clone(),
            ..Launch::default()
        },
        task: None,
        owner: Some(row.job.owner.clone()),
    };
    // One aggregation per job, also when a pass is cut short after placing it.
    let key = idempotency_key(&format!("{}/aggregation", row.job.id), &req);
    let actor = format!("federated:{}", row.job.id);
    match create_with(o, &actor, &req, Some(&key), Some(&batch)).await {
        Ok(made) => {
            basho_core::crash_point!("orchestrator.federated.aggregation_placed");
            let w = made.workspace;
            row.job.aggregation.workspace = Some(w.id.clone());
            row.job.aggregation.workspace_state = Some(w.state);
            row.job.aggregation.inputs = inputs.iter().map(|i| i.site.clone()).collect();
            row.job.state = JobState::Aggregating;
            row.job.message = None;
            o.audit(
                &actor,
                "federated_aggregation_placed",
                &row.job.id,
                json!({"site": site, "workspace": w.id, "inputs": inputs}),
            )
            .await;
        }
        Err(CreateError::Busy) => {
            row.job.state = JobState::WaitingForRelease;
            row.job.message = Some(format!("waiting for room at aggregation site {site}"));
        }
        Err(CreateError::Admission(crate::admission::AdmissionError::Placement(p)))
            if p.code() == "insufficient_capacity" =>
        {
            row.job.state = JobState::WaitingForRelease;
            row.job.message = Some(format!("waiting for aggregation site {site}: {p}"));
        }
        Err(CreateError::Store(e)) => return Err(e),
        Err(e) => {
            let why = format!("the aggregation step could not be placed at site {site}: {e}");
            fail(o, row, &why).await?;
        }
    }
    Ok(())
}

/// The job from its aggregation workspace: under way, completed with its result, or failed.
async fn aggregated(o: &Orchestrator, row: &mut JobRow) -> Result<(), StoreError> {
    let store = &o.inner().store;
    let id = row.job.aggregation.workspace.clone().unwrap_or_default();
    let Some(rec) = store.workspace(&id).await? else {
        return fail(o, row, &format!("its aggregation workspace {id} is gone")).await;
    };
    let w = &rec.workspace;
    row.job.aggregation.workspace_state = Some(w.state);
    let site = &row.job.aggregation.site;
    match w.state {
        s if !s.is_terminal() => {
            row.job.state = JobState::Aggregating;
            row.job.message = (s == State::Unknown)
                .then(|| format!("aggregation site {site} cannot tell how it is; waiting"));
        }
        State::Stopped if basho_core::tes::exit_code(w.message.as_deref()) == Some(0) => {
            match store.release(&release_id(&w.id)).await? {
                Some(r) => {
                    row.job.aggregation.result = Some(r.id.clone());
                    row.job.state = JobState::Completed;
                    row.job.message = Some(format!(
                        "the result is release request {}, released once two output checkers \
                         approve it",
                        r.id
                    ));
                }
                None => {
                    let why = format!(
                        "the aggregation wrote no result: {}",
                        w.message.as_deref().unwrap_or("nothing under /results")
                    );
                    fail(o, row, &why).await?;
                }
            }
        }
        s => {
            let why = format!(
                "the aggregation at site {site} {s}: {}",
                w.message.as_deref().unwrap_or("no reason given")
            );
            fail(o, row, &why).await?;
        }
    }
    Ok(())
}

/// Cancels `row`'s job in `actor`'s name: failed, saying who, what of it runs stopped, kept and
/// audited.
pub async fn cancel(o: &Orchestrator, row: &mut JobRow, actor: &str) -> Result<(), StoreError> {
    let before = row.job.clone();
    fail(o, row, &format!("canceled by {actor}")).await?;
    row.job.updated_at = Utc::now();
    o.inner().store.put_job(row).await?;
    o.audit(
        actor,
        "federated_job_canceled",
        &row.job.id,
        json!({"from": before.state}),
    )
    .await;
    record_changes(o, &before, &row.job).await;
    Ok(())
}

/// Fails `row`'s job with `why` and stops what of it still runs.
pub(super) async fn fail(o: &Orchestrator, row: &mut JobRow, why: &str) -> Result<(), StoreError> {
    let actor = format!("federated:{}", row.job.id);
    row.job.state = JobState::Failed;
    row.job.message = Some(why.to_owned());
    let mut running: Vec<String> = Vec::new();
    for s in &mut row.job.sites {
        if !s.state.is_final() && !s.workspace.is_empty() {
            s.state = StepState::Stopped;
            s.message = Some("stopped: the job failed".into());
            running.push(s.workspace.clone());
        }
    }
    if let Some(w) = &row.job.aggregation.workspace
        && row
            .job
            .aggregation
            .workspace_state
            .is_none_or(|s| !s.is_terminal())
    {
        running.push(w.clone());
    }
    for w in running {
        crate::workspaces::delete(o, &actor, &w).await?;
    }
    Ok(())
}

/// Writes what changed between `before` and `after` to the audit chain: each step's new state
/// (with its partial and who released it) and the job's.
async fn record_changes(
    o: &Orchestrator,
    before: &basho_core::federated::FederatedJob,
    after: &basho_core::federated::FederatedJob,
) {
    let actor = format!("federated:{}", after.id);
    for (b, a) in before.sites.iter().zip(&after.sites) {
        if a.state != b.state {
            let detail = json!({"site": a.site, "workspace": a.workspace,
                "from": b.state, "to": a.state, "message": a.message, "partial": a.partial,
                "released_by": a.released_by});
            o.audit(&actor, "federated_step", &after.id, detail).await;
        }
    }
    if after.state != before.state {
        let fed: Vec<&str> = after
            .aggregation
            .inputs
            .iter()
            .map(|s| s.as_str())
            .collect();
        let detail = json!({"from": before.state, "to": after.state,
            "message": after.message, "aggregated_sites": fed,
            "result": after.aggregation.result});
        o.audit(&actor, "federated_job_state", &after.id, detail)
            .await;
    }
}
