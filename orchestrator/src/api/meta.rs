//! `/healthz`, `/metrics` and `/openapi.json`, open to anyone; and the OpenAPI document itself.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use basho_core::error::ErrorDetail;
use basho_core::protocol::{
    Assignment, Capacity, DatasetEntry, DesiredState, Observation, ObservationBatch, Registration,
    Site,
};
use basho_core::{CreateWorkspace, ErrorBody, Resources, State as WsState, Workspace};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::auth::UsageReader;
use super::{
    ApiError, agent, audit, consent, federated, releases, revocations, scheduling, sessions, sites,
    templates, tes, tokens, usage, workspaces,
};
use crate::Orchestrator;
use crate::metrics::{SiteLabels, SiteStateLabels};
use basho_core::audit::AuditEntry;

/// The liveness answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// What every operation shares, written once instead of on each: an operation that takes a JSON
/// body can answer 400 (`invalid_json`, `invalid_body`) and 413 (`body_too_large`) from the body
/// extractor; and the links a stateful client follows from a created workspace to what it can
/// do with it.
struct ContractShape;

impl ContractShape {
    fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    }

    fn link(operation: &str, params: &[(&str, &str)]) -> Link {
        params
            .iter()
            .fold(LinkBuilder::new().operation_id(operation), |l, (k, v)| {
                l.parameter(*k, *v)
            })
            .build()
    }
}

impl Modify for ContractShape {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [&mut item.post, &mut item.put, &mut item.patch];
            for op in ops.into_iter().flatten() {
                if op.request_body.is_none() {
                    continue;
                }
                let r = &mut op.responses.responses;
                r.entry("400".into()).or_insert_with(|| {
                    Self::error("The body is not JSON (`invalid_json`) or could not be read (`invalid_body`)")
                });
                r.entry("413".into()).or_insert_with(|| {
                    Self::error(
                        "The body is larger than the server's `max_body_bytes` (`body_too_large`)",
                    )
                });
            }
        }
        let Some(create) = openapi
            .paths
            .paths
            .get_mut("/v1/workspaces")
            .and_then(|p| p.post.as_mut())
        else {
            return;
        };
        let id = [("id", "$response.body#/id")];
        let links = [
            ("GetWorkspace", Self::link("getWorkspace", &id)),
            ("DeleteWorkspace", Self::link("deleteWorkspace", &id)),
            ("OpenSession", Self::link("openSession", &id)),
            (
                "ProjectUsage",
                Self::link("projectUsage", &[("id", "$response.body#/project")]),
            ),
        ];
        for status in ["200", "201"] {
            if let Some(RefOr::T(answer)) = create.responses.responses.get_mut(status) {
                for (name, link) in &links {
                    answer
                        .links
                        .insert((*name).to_owned(), RefOr::T(link.clone()));
                }
            }
        }
    }
}

/// The OpenAPI document of the orchestrator's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "basho orchestrator",
        description = "Places DAC-approved projects into isolated containers at the sites that \
            hold their data. Every 4xx/5xx answer carries `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        workspaces::create, workspaces::list, workspaces::show, workspaces::delete,
        sites::list, sites::session_key, templates::list,
        revocations::revoke,
        agent::register, agent::capacity, agent::desired, agent::observations, agent::tunnel,
        sessions::open,
        audit::list,
        tokens::create, tokens::list, tokens::revoke,
        usage::ingest, usage::report, usage::set_quota, usage::get_quota,
        scheduling::set, scheduling::get,
        releases::create, releases::list, releases::get, releases::review, releases::submit,
        releases::withdraw, releases::download,
        tes::service_info, tes::create, tes::list, tes::get, tes::cancel,
        consent::ingest, consent::releases, consent::withdrawal,
        federated::create, federated::list, federated::get, federated::cancel,
        healthz, metrics, openapi,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, CreateWorkspace, Workspace, Resources, WsState, Site, Capacity,
        basho_core::template::Template,
        DatasetEntry, Registration, basho_core::protocol::CapacityReport, DesiredState, Assignment, Observation, ObservationBatch,
        agent::Registered, agent::Applied, sites::SessionKey, basho_core::revocation::Revoked,
        basho_core::revocation::RevocationRequest, basho_core::revocation::Revocation,
        basho_core::revocation::Reason, Health, audit::AuditPage, AuditEntry,
        tokens::TokenInfo, tokens::CreateToken, tokens::CreatedToken,
        basho_core::usage::UsageRecord, basho_core::usage::UsageBatch,
        basho_core::usage::UsageAck, basho_core::usage::UsageReport, basho_core::usage::Totals, basho_core::usage::SiteUsage,
        basho_core::usage::WorkspaceUsage, usage::QuotaStatus, crate::quota::Balance, crate::store::Quota,
        scheduling::SchedulingStatus, basho_core::queue::Scheduling, basho_core::queue::QueueInfo,
        basho_core::release::ReleaseRequest, basho_core::release::ReleaseFile,
        basho_core::release::ReleaseState, basho_core::release::Review,
        basho_core::release::Verdict, basho_core::release::CreateRelease,
        basho_core::release::ReviewBody, basho_core::release::Compared, releases::SubmitBody,
        basho_core::airlock::Checked, basho_core::airlock::Finding, basho_core::airlock::Check,
        basho_core::airlock::FileType,
        basho_core::tes::TesTask, basho_core::tes::TesState, basho_core::tes::TesExecutor,
        basho_core::tes::TesInput, basho_core::tes::TesOutput, basho_core::tes::TesResources,
        basho_core::tes::TesTaskLog, basho_core::tes::TesExecutorLog,
        basho_core::tes::TesOutputFileLog, basho_core::tes::FileType, tes::TesErrorBody,
        basho_core::consent::ConsentReport, basho_core::consent::ConsentAck,
        basho_core::consent::DatasetReleases, basho_core::consent::Release,
        basho_core::consent::Withdrawal, basho_core::consent::ReleaseList,
        basho_core::consent::ReleaseUse, basho_core::consent::WithdrawalStatus,
        basho_core::consent::StillReading,
        basho_core::federated::CreateFederatedJob, basho_core::federated::SiteStepSpec,
        basho_core::federated::AggregationSpec, basho_core::federated::FederatedJob,
        basho_core::federated::JobState, basho_core::federated::StepState,
        basho_core::federated::SiteStep, basho_core::federated::AggregationStep,
        basho_core::federated::PartialInput, basho_core::federated::InputFile,
    )),
    modifiers(&BearerAuth, &ContractShape),
    tags(
        (name = "workspaces", description = "Workspaces (platform or admin token; a researcher's token reads that researcher's own)"),
        (name = "sites", description = "Sites (platform or admin token)"),
        (name = "templates", description = "The deployment's workspace templates (platform or admin token)"),
        (name = "revocations", description = "Revocations (platform or admin token)"),
        (name = "sessions", description = "Interactive sessions in a running workspace (its owner's researcher token; an admin with a break-glass reason)"),
        (name = "agent", description = "The site agents' protocol (agent token of that site)"),
        (name = "audit", description = "The hash-chained audit log (auditor or admin token)"),
        (name = "tokens", description = "Stored API tokens (admin token)"),
        (name = "usage", description = "Usage reports (platform, admin or auditor token), quotas (set with a platform or admin token) and scheduling: a project's priority and fair-share weight (set with a platform token)"),
        (name = "airlock", description = "The results airlock: release requests from a workspace's /results (its owner's researcher token, or the platform), reviewed by output checkers (output_checker token), downloaded by the owner or the platform once two checkers approve"),
        (name = "tes", description = "GA4GH Task Execution Service 1.1 (platform token, or a researcher's own with that researcher's visas; admin and auditor tokens read). Errors here answer `{\"msg\", \"status_code\"}` as TES clients expect"),
        (name = "federated", description = "Federated jobs: a site step at every site holding the job's datasets, its partial released through that site's airlock, and an aggregation step over the released partials (platform token, or a researcher's own with that researcher's visas; admin and auditor tokens read)"),
        (name = "meta", description = "Liveness, metrics and this document (no token)"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON, built once.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        s.push('\n');
        s
    })
}

/// Liveness: answers 200 when the store answers.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "meta",
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub async fn healthz(State(o): State<Orchestrator>) -> Result<axum::Json<Health>, ApiError> {
    match o.inner().store.ping().await {
        Ok(()) => Ok(axum::Json(Health {
            status: "ok".into(),
        })),
        Err(e) => {
            tracing::error!(error = %e, "health check: store does not answer");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store does not answer; check the database file and disk",
            ))
        }
    }
}

/// Prometheus metrics (text format), for the readers of usage: they name projects, sites and
/// quotas. A scrape network without tokens gets them on `[metrics] listen` instead.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String,
            content_type = "application/openmetrics-text; version=1.0.0"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(_: UsageReader, State(o): State<Orchestrator>) -> Result<Response, ApiError> {
    exposition(&o).await
}

/// The metrics of `/metrics` on the separate, tokenless listener of `[metrics] listen`.
pub async fn open_metrics(State(o): State<Orchestrator>) -> Result<Response, ApiError> {
    exposition(&o).await
}

async fn exposition(o: &Orchestrator) -> Result<Response, ApiError> {
    let inner = o.inner();
    let counts = inner.store.counts().await?;
    let m = &inner.metrics;
    // Rebuilt at every scrape so states and sites that emptied drop to nothing.
    m.workspaces.clear();
    for (site, state, c) in counts {
        m.workspaces
            .get_or_create(&SiteStateLabels {
                site: site.to_string(),
                state: state.as_str().to_owned(),
            })
            .set(i64::try_from(c.count).unwrap_or(i64::MAX));
    }
    let now = Utc::now();
    m.agent_last_contact_age.clear();
    for (site, last) in inner.sites.last_contacts() {
        let age = (now - last).num_milliseconds().max(0) as f64 / 1000.0;
        m.agent_last_contact_age
            .get_or_create(&SiteLabels {
                site: site.to_string(),
            })
            .set(age);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
