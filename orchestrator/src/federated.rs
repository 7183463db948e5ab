//! Federated jobs ([`basho_core::federated`]): one question answered across several sites. A job
//! is checked whole before anything starts (visas, datasets and sites, images, the aggregation
//! site, capacity and the project's quota at every site); then each site's step is an ordinary
//! batch workspace pinned to its site, sent only the visas for that site's datasets. The
//! [`driver`] moves the job along as its steps end and their partials are released.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use basho_core::federated::{
    AggregationStep, CreateFederatedJob, FederatedJob, JobState, MAX_NAME, MAX_SITES, SiteStep,
    StepState,
};
use basho_core::protocol::Launch;
use basho_core::visa::verify_all;
use basho_core::{CreateWorkspace, Ident, State};
use chrono::Utc;
use serde_json::json;

use crate::Orchestrator;
use crate::admission::{Admission, Admitted, admit, granted_datasets};
use crate::api::{ApiError, ApiResult};
use crate::store::{IdempotencyKey, JobInsert, JobRow};
use crate::workspaces::{Batch, CreateError, create_with, idempotency_key};

pub mod driver;

pub use driver::run_loop;

/// A partial the site released by its own rule is approved in the name of `site:<site>`.
pub const SITE_RULE_PREFIX: &str = "site:";

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// One site's step as planned: its datasets and only the visas for them.
struct Planned {
    site: Ident,
    req: CreateWorkspace,
}

/// What a step's workspace takes of its `/results`: all of it, as a partial.
fn step_launch() -> Launch {
    Launch {
        all_results: true,
        partial: true,
        ..Launch::default()
    }
}

/// A key used before for another request.
fn key_reused(job: &str) -> ApiError {
    invalid(
        "idempotency_key_reused",
        format!(
            "this Idempotency-Key already started federated job {job} from a different request; \
             use a fresh key for a new job, or resend the original body"
        ),
    )
}

/// Checks `req` whole, then starts each site's step; the job as stored, and whether an earlier
/// request with the same `key` made it (nothing is done again then). `owner` is the researcher
/// whose own token asks (their visas only), none for the platform.
pub async fn create(
    o: &Orchestrator,
    actor: &str,
    owner: Option<&str>,
    req: CreateFederatedJob,
    key: Option<&IdempotencyKey>,
) -> ApiResult<(FederatedJob, bool)> {
    let inner = o.inner();
    let now = Utc::now();
    if let Some(k) = key
        && let Some((hash, first)) = inner.store.job_by_key(&k.key).await?
    {
        return match hash == k.request_hash {
            true => Ok((first.job, true)),
            false => Err(key_reused(&first.job.id)),
        };
    }
    if let Some(n) = &req.name
        && (n.chars().count() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(invalid(
            "invalid_request",
            format!("name is longer than {MAX_NAME} characters or holds control characters"),
        ));
    }
    if !req.aggregation.datasets.is_empty() {
        return Err(invalid(
            "aggregation_reads_no_data",
            "the aggregation step reads only the released partials under /inputs/<site>/; it \
             mounts no dataset, so name none (datasets belong to the site step)",
        ));
    }
    if req.visas.is_empty() || req.visas.len() > basho_core::workspace::MAX_VISAS {
        return Err(invalid(
            "invalid_request",
            format!(
                "visas holds {}; send 1 to {} visas (JWTs) granting the datasets the site \
                 steps read",
                req.visas.len(),
                basho_core::workspace::MAX_VISAS
            ),
        ));
    }
    let grants = verify_all(&req.visas, &inner.issuers, now.timestamp()).map_err(|(i, e)| {
        ApiError::new(StatusCode::FORBIDDEN, e.code(), format!("visas[{i}]: {e}"))
    })?;
    let subject = grants[0].sub.clone();
    if let Some(me) = owner
        && me != subject
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a researcher's token runs federated jobs with that researcher's own visas",
        ));
    }
    let values: BTreeSet<String> = grants.iter().map(|g| g.value.clone()).collect();
    let datasets: Vec<Ident> = match &req.datasets {
        Some(list) if list.is_empty() => {
            return Err(invalid("invalid_request", "datasets is empty"));
        }
        Some(list) => list.clone(),
        None => granted_datasets(&inner.sites, &values)
            .into_iter()
            .collect(),
    };
    let planned = plan(o, &req, &datasets, &grants)?;
    let agg_site = aggregation_site(o, &req, &planned)?;
    let min_sites = req.min_sites.unwrap_or(planned.len() as u32);
    if min_sites == 0 || min_sites as usize > planned.len() {
        return Err(invalid(
            "invalid_request",
            format!(
                "min_sites is {min_sites}; the job runs at {} site(s), so ask for 1 to that",
                planned.len()
            ),
        ));
    }
    // Every step admitted (visas, datasets, capacity), its image allowed and not revoked, and
    // the project's quota covering every step and the aggregation, before anything is written.
    let admission = Admission {
        templates: &inner.templates,
        issuers: &inner.issuers,
        sites: &inner.sites,
        agent_silent_s: inner.config.limits.agent_silent_s,
    };
    // Each admission is a check only: its reservation is dropped at once, the steps reserve
    // their own as they are made, and the aggregation when it is placed.
    let mut need = (0.0, 0.0);
    for p in &planned {
        let rec = admit(&admission, &p.req, now, None, 0)
            .map(Admitted::into_record)
            .map_err(|e| step_error(&p.site, CreateError::from(e)))?;
        crate::revocations::refuse_revoked(&inner.revocations.all(), &rec)
            .map_err(|e| step_error(&p.site, CreateError::from(e)))?;
        allowed(o, &p.site, &req.site_step.image)?;
        add(
            &mut need,
            crate::quota::hours(&rec.workspace.resources, now, rec.workspace.expires_at),
        );
    }
    allowed(o, &agg_site, &req.aggregation.image)?;
    let agg = aggregation_request(o, &req.project, &req.aggregation, &agg_site);
    let agg_rec = admit(&admission, &agg, now, Some(&subject), 0)
        .map(Admitted::into_record)
        .map_err(|e| step_error(&agg_site, CreateError::from(e)))?;
    add(
        &mut need,
        crate::quota::hours(
            &agg_rec.workspace.resources,
            now,
            agg_rec.workspace.expires_at,
        ),
    );
    if let Some((balance, _)) = crate::quota::balance(o, &req.project, now).await? {
        balance.admit(&req.project, need).map_err(|m| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "quota_exceeded",
                format!("the whole job (every site's step and the aggregation) does not fit: {m}"),
            )
        })?;
    }
    let id = format!("fj-{}", uuid::Uuid::now_v7());
    let mut row = JobRow {
        job: FederatedJob {
            id: id.clone(),
            name: req.name.clone(),
            project: req.project.clone(),
            owner: subject,
            state: JobState::Running,
            message: None,
            min_sites,
            sites: planned
                .iter()
                .map(|p| SiteStep {
                    site: p.site.clone(),
                    datasets: p.req.datasets.clone().unwrap_or_default(),
                    workspace: String::new(),
                    state: StepState::Running,
                    workspace_state: State::Pending,
                    message: None,
                    partial: None,
                    released_by: None,
                })
                .collect(),
            aggregation: AggregationStep {
                site: agg_site,
                workspace: None,
                workspace_state: None,
                inputs: Vec::new(),
                result: None,
            },
            created_at: now,
            updated_at: now,
        },
        aggregation: req.aggregation.clone(),
    };
    // Kept before any step starts: a step never runs without its job.
    match inner.store.insert_job(&row, key).await? {
        JobInsert::New => {}
        JobInsert::Replayed(first) => return Ok((first.job, true)),
        JobInsert::KeyReused(job) => return Err(key_reused(&job)),
    }
    let batch = Batch {
        image: req.site_step.image.clone(),
        command: req.site_step.command.clone(),
        launch: step_launch(),
        task: None,
        owner: None,
    };
    for (i, p) in planned.iter().enumerate() {
        let key = idempotency_key(&step_key(&id, &p.site), &p.req);
        match create_with(o, actor, &p.req, Some(&key), Some(&batch)).await {
            Ok(made) => {
                basho_core::crash_point!("orchestrator.federated.step_created");
                row.job.sites[i].workspace = made.workspace.id;
                row.job.sites[i].workspace_state = made.workspace.state;
                // Kept at once: a step made is never one the job does not know.
                inner.store.put_job(&row).await?;
            }
            Err(e) => {
                // Filled or revoked since the check: the job is kept failed, its started steps
                // stop, and the caller hears why.
                let e = step_error(&p.site, e);
                driver::fail(o, &mut row, &e.body.error.message).await?;
                inner.store.put_job(&row).await?;
                o.audit(
                    actor,
                    "federated_job_refused",
                    &id,
                    json!({"site": p.site, "why": e.body.error.message}),
                )
                .await;
                return Err(e);
            }
        }
    }
    let steps: BTreeMap<&str, serde_json::Value> = row
        .job
        .sites
        .iter()
        .map(|s| {
            (
                s.site.as_str(),
                json!({"workspace": s.workspace, "datasets": s.datasets}),
            )
        })
        .collect();
    o.audit(
        actor,
        "federated_job_created",
        &id,
        json!({"project": req.project.as_str(), "owner": row.job.owner, "name": req.name,
            "sites": steps, "site_step": {"image": req.site_step.image,
            "command": req.site_step.command}, "aggregation": {"site": row.job.aggregation.site,
            "image": req.aggregation.image, "command": req.aggregation.command},
            "min_sites": min_sites}),
    )
    .await;
    inner.federated.wake();
    Ok((row.job, false))
}

/// The idempotency key a job's step at `site` is made with: a step made just before the
/// orchestrator stopped is found again by it ([`driver`]), never made twice.
pub(crate) fn step_key(job: &str, site: &Ident) -> String {
    format!("{job}/step/{site}")
}

fn add(sum: &mut (f64, f64), more: (f64, f64)) {
    sum.0 += more.0;
    sum.1 += more.1;
}

/// A step's refusal, naming its site.
fn step_error(site: &Ident, e: CreateError) -> ApiError {
    let mut e = ApiError::from(e);
    e.body.error.message = format!("site {site}: {}", e.body.error.message);
    e
}

/// Refuses an image not on `site`'s allow-list.
fn allowed(o: &Orchestrator, site: &Ident, image: &str) -> ApiResult<()> {
    let listed = o
        .inner()
        .sites
        .registration(site.as_str())
        .map(|r| r.images)
        .unwrap_or_default();
    if listed.iter().any(|i| i == image) {
        return Ok(());
    }
    Err(step_error(
        site,
        CreateError::Image {
            image: image.to_owned(),
            site: site.clone(),
            listed: listed.join(", "),
        },
    ))
}

/// Each site's step: the sites named (or every site holding one of `datasets`), each with the
/// datasets it holds (a dataset held at several goes to the first, by name) and only the visas
/// granting them there.
fn plan(
    o: &Orchestrator,
    req: &CreateFederatedJob,
    datasets: &[Ident],
    grants: &[basho_core::visa::Grant],
) -> ApiResult<Vec<Planned>> {
    let inner = o.inner();
    let mut held: BTreeMap<Ident, BTreeSet<Ident>> = BTreeMap::new();
    for s in inner.sites.list() {
        held.insert(s.name, s.datasets.into_iter().map(|d| d.id).collect());
    }
    let sites: Vec<Ident> = match &req.sites {
        Some(named) => {
            let mut seen = BTreeSet::new();
            if let Some(s) = named.iter().find(|s| !seen.insert(*s)) {
                return Err(invalid("invalid_request", format!("sites names {s} twice")));
            }
            if let Some(s) = named.iter().find(|s| !held.contains_key(*s)) {
                return Err(invalid(
                    "unknown_site",
                    format!(
                        "no site {s} is registered; known: {}",
                        held.keys()
                            .map(Ident::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            named.clone()
        }
        None => held
            .iter()
            .filter(|(_, ds)| datasets.iter().any(|d| ds.contains(d)))
            .map(|(s, _)| s.clone())
            .collect(),
    };
    if sites.is_empty() {
        return Err(invalid(
            "no_site",
            "no registered site holds any of the job's datasets",
        ));
    }
    if sites.len() > MAX_SITES {
        return Err(invalid(
            "invalid_request",
            format!("the job names {} sites; at most {MAX_SITES}", sites.len()),
        ));
    }
    let mut assigned: BTreeMap<Ident, Vec<Ident>> = BTreeMap::new();
    for d in datasets {
        let Some(site) = sites.iter().find(|s| held[*s].contains(d)) else {
            return Err(invalid(
                "dataset_not_at_sites",
                format!(
                    "no site of the job holds dataset {d}; name a site that does, or leave the \
                     dataset out"
                ),
            ));
        };
        assigned.entry(site.clone()).or_default().push(d.clone());
    }
    let mut planned = Vec::with_capacity(sites.len());
    for site in sites {
        let Some(ds) = assigned.remove(&site) else {
            return Err(invalid(
                "no_datasets_at_site",
                format!(
                    "site {site} holds none of the datasets the visas cover ({}); a site step \
                     reads that site's datasets only, so leave the site out",
                    datasets
                        .iter()
                        .map(Ident::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let urls: BTreeSet<String> = inner
            .sites
            .site_grant_urls(&site, &ds)
            .into_iter()
            .map(|(_, u)| u)
            .collect();
        let visas: Vec<String> = req
            .visas
            .iter()
            .zip(grants)
            .filter(|(_, g)| urls.contains(&g.value))
            .map(|(v, _)| v.clone())
            .collect();
        if visas.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "dataset_not_granted",
                format!(
                    "no visa grants the datasets the job reads at site {site} ({})",
                    ds.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        planned.push(Planned {
            req: CreateWorkspace {
                project: req.project.clone(),
                template: inner.config.federated.template.clone(),
                visas,
                datasets: Some(ds),
                resources: req.site_step.resources,
                duration_s: req.site_step.duration_s,
                site: Some(site.clone()),
                max_queue_s: None,
            },
            site,
        });
    }
    Ok(planned)
}

/// Where the aggregation runs: the job's choice, the orchestrator's `[federated]
/// aggregation_site`, or the first of the job's sites; refused where the agent does not stage
/// partials.
fn aggregation_site(
    o: &Orchestrator,
    req: &CreateFederatedJob,
    planned: &[Planned],
) -> ApiResult<Ident> {
    let inner = o.inner();
    let site = req
        .aggregation
        .site
        .clone()
        .or_else(|| inner.config.federated.aggregation_site.clone())
        .unwrap_or_else(|| planned[0].site.clone());
    let Some(reg) = inner.sites.registration(site.as_str()) else {
        return Err(invalid(
            "unknown_site",
            format!("no site {site} is registered to run the aggregation step"),
        ));
    };
    if !reg
        .features
        .iter()
        .any(|f| f == basho_core::federated::FEATURE_FEDERATED)
    {
        return Err(invalid(
            "aggregation_site_unsupported",
            format!(
                "site {site}'s agent does not stage federated partials (it predates them, or \
                 its backend cannot bind /inputs); name another aggregation site"
            ),
        ));
    }
    Ok(site)
}

/// The aggregation step's workspace request: no visas, no dataset, pinned to `site`.
pub(crate) fn aggregation_request(
    o: &Orchestrator,
    project: &Ident,
    spec: &basho_core::federated::AggregationSpec,
    site: &Ident,
) -> CreateWorkspace {
    CreateWorkspace {
        project: project.clone(),
        template: o.inner().config.federated.template.clone(),
        visas: Vec::new(),
        datasets: None,
        resources: spec.resources,
        duration_s: spec.duration_s,
        site: Some(site.clone()),
        max_queue_s: None,
    }
}

/// Whether `r` holds a federated job's partial (its workspace was made as a job's step).
pub async fn is_partial(
    o: &Orchestrator,
    r: &basho_core::release::ReleaseRequest,
) -> ApiResult<bool> {
    let rec = o.inner().store.workspace(&r.workspace).await?;
    Ok(rec.is_some_and(|rec| rec.launch.is_some_and(|l| l.partial)))
}

/// Whether `site`'s agent may fetch the released partial `release`: it feeds an aggregation
/// step placed at that site.
pub async fn feeds(o: &Orchestrator, site: &Ident, release: &str) -> ApiResult<bool> {
    let jobs = o.inner().store.jobs(None, true).await?;
    Ok(jobs.iter().any(|r| {
        let j = &r.job;
        j.aggregation.site == *site
            && j.aggregation.workspace.is_some()
            && j.sites
                .iter()
                .any(|s| s.state == StepState::Released && s.partial.as_deref() == Some(release))
    }))
}
