//! The results airlock's API: release requests made from a workspace's `/results`, reviewed by
//! output checkers, and their approved files downloaded from the site through its tunnel
//! ([`crate::releases`]). Every step is in the audit chain with the files' digests.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basho_core::release::{
    Answer, Call, CreateRelease, Intake, ReleaseRequest, ReleaseState, ReviewBody,
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

mod download;
mod holder;

pub use download::{__path_download, download};
use holder::{Original, via_holder};

use super::extract::{ApiJson, ApiQuery};
use super::sessions::Caller;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::releases::{self, DeskError, Refused};
use crate::store::{ReleaseFilter, WorkspaceRecord};
use crate::tokens::Principal;

/// The reviewed digest of a downloaded file, hex.
pub const SHA256_HEADER: &str = "x-basho-sha256";

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        let status = match r.code {
            "invalid_request" | "comment_required" | "no_such_file" => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            "own_request" => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, r.code, r.message)
    }
}

fn desk_error(site: &basho_core::Ident, e: DeskError) -> ApiError {
    match e {
        DeskError::Unreachable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "site_unreachable",
            format!(
                "site {site} has no tunnel open to this orchestrator right now; retry in a moment, \
                 or ask the site's admin whether its agent runs"
            ),
        ),
        DeskError::Silent(why) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "site_unreachable",
            format!("site {site}: {why}; retry"),
        ),
        DeskError::Refused(r) => {
            let status = match r.code.as_str() {
                "invalid_path" | "not_a_file" | "no_such_file" | "too_large" | "invalid" => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                "proof_required" | "proof_refused" => StatusCode::FORBIDDEN,
                "unknown_workspace" => StatusCode::CONFLICT,
                "airlock_unavailable" | "audit_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, &r.code, format!("site {site}: {}", r.message))
        }
    }
}

/// Who may ask for a release from, and download from, a workspace owned by `owner`: its owner
/// with a researcher token, and the platform (or an admin) on their behalf.
fn may_request(who: &Principal, owner: &str) -> bool {
    match who {
        Principal::Researcher(sub) => sub == owner,
        Principal::Platform(_) | Principal::Admin(_) => true,
        _ => false,
    }
}

/// Who may read a request: the parties above, every output checker, and auditors.
fn may_read(who: &Principal, r: &ReleaseRequest) -> bool {
    may_request(who, &r.owner) || matches!(who, Principal::OutputChecker(_) | Principal::Auditor(_))
}

fn missing_request(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no release request {id}; list yours with GET /v1/release-requests"
    ))
}

fn missing_workspace(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no workspace {id}; list yours with GET /v1/workspaces"
    ))
}

/// The request `id` as `who` may see it; 404 as if absent otherwise.
async fn readable(o: &Orchestrator, who: &Principal, id: &str) -> ApiResult<ReleaseRequest> {
    match o.inner().store.release(id).await? {
        Some(r) if may_read(who, &r) => Ok(r),
        _ => Err(missing_request(id)),
    }
}

/// The workspace a request is made from, when `who` may ask and it still runs at a site that
/// serves the airlock.
async fn source(o: &Orchestrator, who: &Principal, id: &str) -> ApiResult<WorkspaceRecord> {
    let rec = match o.inner().store.workspace(id).await? {
        Some(rec) if may_request(who, &rec.workspace.owner) => rec,
        Some(_) if matches!(who, Principal::Researcher(_)) => return Err(missing_workspace(id)),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the workspace's owner (a researcher token) or the platform asks for a release",
            ));
        }
        None => return Err(missing_workspace(id)),
    };
    let w = &rec.workspace;
    if w.state != basho_core::State::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "workspace_not_running",
            format!(
                "workspace {id} is {}; files are asked for release only from a running workspace \
                 (requests made before stay as they are)",
                w.state.as_str()
            ),
        ));
    }
    let serves = o
        .inner()
        .sites
        .registration(w.site.as_str())
        .is_some_and(|r| {
            r.features
                .iter()
                .any(|f| f == basho_core::release::FEATURE_AIRLOCK)
        });
    if !serves {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "airlock_unavailable",
            format!(
                "site {} does not serve the results airlock (its agent predates it); ask the \
                 site's admin to upgrade",
                w.site
            ),
        ));
    }
    Ok(rec)
}

/// Asks the workspace's site to take `files` into its airlock store and check them.
async fn intake(
    o: &Orchestrator,
    rec: &WorkspaceRecord,
    request: &str,
    files: Vec<String>,
    actor: &str,
    proof: Option<basho_core::proof::Proof>,
) -> ApiResult<Intake> {
    let w = &rec.workspace;
    let call = Call::Intake {
        workspace: w.id.clone(),
        request: request.to_owned(),
        files,
        actor: actor.to_owned(),
        proof,
    };
    let (mut link, answer) =
        releases::call(&o.inner().tunnels, &w.site, &call, releases::INTAKE_TIMEOUT)
            .await
            .map_err(|e| desk_error(&w.site, e))?;
    link.ended();
    match answer {
        Answer::Intake(i) => Ok(i),
        Answer::Fetch { .. } => Err(desk_error(
            &w.site,
            DeskError::Silent("the site answered an intake with a file".into()),
        )),
    }
}

fn digests(r: &ReleaseRequest) -> serde_json::Value {
    json!(
        r.files
            .iter()
            .map(
                |f| json!({"name": f.name, "size": f.size, "sha256": f.sha256,
                "passed": f.checked.passed(), "refused": f.checked.refused,
                "findings": f.checked.findings.len() as u64 + f.checked.omitted})
            )
            .collect::<Vec<_>>()
    )
}

/// Audits a step; a request whose step cannot be recorded is answered 503, as the rest of the
/// API does for what grants access.
pub(crate) async fn audited(
    o: &Orchestrator,
    actor: &str,
    action: &str,
    r: &ReleaseRequest,
    extra: serde_json::Value,
) -> ApiResult<()> {
    let mut detail = json!({"workspace": r.workspace, "site": r.site.as_str(),
        "state": r.state, "round": r.round, "files": digests(r)});
    if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    if o.audit(actor, action, &r.id, detail).await {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the step could not be written to the audit chain; retry",
        ))
    }
}

/// Asks for files of a running workspace's `/results` to be released.
#[utoipa::path(
    post, path = "/v1/workspaces/{id}/release-requests", operation_id = "createReleaseRequest",
    tag = "airlock",
    params(("id" = String, Path, description = "Workspace id (`ws-...`)", max_length = 64)),
    request_body = CreateRelease,
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 201, description = "Taken and checked at the site", body = ReleaseRequest),
        (status = 403, description = "Not the owner, or the site refused the proof", body = basho_core::ErrorBody),
        (status = 404, description = "No such workspace (or another researcher's)", body = basho_core::ErrorBody),
        (status = 409, description = "The workspace does not run, or its site serves no airlock", body = basho_core::ErrorBody),
        (status = 422, description = "Bad names, or files the site refuses to take", body = basho_core::ErrorBody),
        (status = 503, description = "The site cannot be reached", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
    original: Original,
    ApiJson(body): ApiJson<CreateRelease>,
) -> ApiResult<Response> {
    let actor = who.actor();
    let rec = source(&o, &who, &id).await?;
    releases::check_request(&body.files, &body.justification)?;
    let bytes = serde_json::to_vec(&body).expect("requests serialize");
    if let Some(answer) = via_holder(&o, &rec.workspace.site, &original, Some(bytes)).await {
        return answer;
    }
    let request = format!("rr-{}", uuid::Uuid::now_v7());
    let taken = intake(&o, &rec, &request, body.files, &actor, body.proof).await?;
    let r = releases::New {
        id: request,
        workspace: &rec.workspace,
        requester: requester(&who, &rec.workspace.owner),
        justification: body.justification,
        draft: body.draft,
        intake: taken,
        now: Utc::now(),
    }
    .request();
    audited(
        &o,
        &actor,
        "release_requested",
        &r,
        json!({"compared": r.compared}),
    )
    .await?;
    o.inner().store.insert_release(&r).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

/// The requester recorded: the researcher, or the owner the platform asks for.
fn requester(who: &Principal, owner: &str) -> String {
    match who {
        Principal::Researcher(sub) => sub.clone(),
        _ => owner.to_owned(),
    }
}

/// Filters of `GET /v1/release-requests`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this workspace's.
    pub workspace: Option<String>,
    /// Only requests in this state.
    pub state: Option<ReleaseState>,
}

/// Lists release requests: a researcher sees their own workspaces', checkers, auditors and the
/// platform see all.
#[utoipa::path(
    get, path = "/v1/release-requests", operation_id = "listReleaseRequests", tag = "airlock",
    params(ListQuery),
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "Oldest first", body = [ReleaseRequest]),
        (status = 422, description = "Unknown state", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<ReleaseRequest>>> {
    let states: Vec<ReleaseState> = q.state.into_iter().collect();
    let owner = match &who {
        Principal::Researcher(sub) => Some(sub.clone()),
        Principal::Platform(_)
        | Principal::Admin(_)
        | Principal::OutputChecker(_)
        | Principal::Auditor(_) => None,
        Principal::Agent(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "agents do not read release requests",
            ));
        }
    };
    let filter = ReleaseFilter {
        workspace: q.workspace,
        owner,
        states,
    };
    Ok(Json(o.inner().store.list_releases(&filter).await?))
}

/// One release request, with its files, findings and reviews.
#[utoipa::path(
    get, path = "/v1/release-requests/{id}", operation_id = "getReleaseRequest", tag = "airlock",
    params(("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64)),
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "The request", body = ReleaseRequest),
        (status = 404, description = "No such request (or one the caller may not see)", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReleaseRequest>> {
    Ok(Json(readable(&o, &who, &id).await?))
}

/// Applies a change under the request's lock; 404 when it vanished.
async fn change(
    o: &Orchestrator,
    id: &str,
    f: crate::store::releases::Change<'_>,
) -> ApiResult<ReleaseRequest> {
    match o.inner().store.change_release(id, f).await? {
        None => Err(missing_request(id)),
        Some(Ok(r)) => Ok(r),
        Some(Err(refused)) => Err(refused.into()),
    }
}

/// An output checker's decision on a request, or on one file of it.
#[utoipa::path(
    post, path = "/v1/release-requests/{id}/reviews", operation_id = "reviewReleaseRequest",
    tag = "airlock",
    params(("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64)),
    request_body = ReviewBody,
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 200, description = "Recorded; the request as it now stands", body = ReleaseRequest),
        (status = 403, description = "Not an output checker, or a party to the request", body = basho_core::ErrorBody),
        (status = 404, description = "No such request", body = basho_core::ErrorBody),
        (status = 409, description = "Not submitted, or this checker already decided so", body = basho_core::ErrorBody),
        (status = 422, description = "A comment is missing, or no such file", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn review(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> ApiResult<Json<ReleaseRequest>> {
    let Principal::OutputChecker(checker) = &who else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an output checker (a token of role output_checker) reviews release requests",
        ));
    };
    readable(&o, &who, &id).await?;
    let now = Utc::now();
    let apply = |r: &mut ReleaseRequest| {
        releases::review(
            r,
            checker,
            body.verdict,
            body.file.as_deref(),
            &body.comment,
            now,
        )
    };
    let r = change(&o, &id, &apply).await?;
    let extra = json!({"verdict": body.verdict, "file": body.file, "comment": body.comment});
    audited(&o, &who.actor(), "release_reviewed", &r, extra).await?;
    o.inner().federated.poke();
    Ok(Json(r))
}

/// `POST /v1/release-requests/{id}/submit`: a draft as it is, or a returned request with its
/// files taken again.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Take these files again from `/results` (required after a return).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// A new justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The site's proof that the owner asks.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub proof: Option<basho_core::proof::Proof>,
}

/// Submits a draft, or resubmits a returned request (a new round).
#[utoipa::path(
    post, path = "/v1/release-requests/{id}/submit", operation_id = "submitReleaseRequest",
    tag = "airlock",
    params(("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64)),
    request_body = SubmitBody,
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "Submitted", body = ReleaseRequest),
        (status = 404, description = "No such request", body = basho_core::ErrorBody),
        (status = 409, description = "Not a draft or returned request", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn submit(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
    original: Original,
    ApiJson(body): ApiJson<SubmitBody>,
) -> ApiResult<Response> {
    let actor = who.actor();
    let before = readable(&o, &who, &id).await?;
    if !may_request(&who, &before.owner) {
        return Err(missing_request(&id));
    }
    if let Some(j) = &body.justification {
        releases::check_justification(j)?;
    }
    let taken = match &body.files {
        Some(files) => {
            releases::check_request(files, &before.justification)?;
            let rec = source(&o, &who, &before.workspace).await?;
            let bytes = serde_json::to_vec(&body).expect("requests serialize");
            if let Some(answer) = via_holder(&o, &rec.workspace.site, &original, Some(bytes)).await
            {
                return answer;
            }
            let (files, proof) = (files.clone(), body.proof.clone());
            Some(intake(&o, &rec, &id, files, &actor, proof).await?)
        }
        None => None,
    };
    let now = Utc::now();
    let apply = |r: &mut ReleaseRequest| {
        releases::submit(r, taken.clone(), body.justification.clone(), now)
    };
    let r = change(&o, &id, &apply).await?;
    audited(&o, &actor, "release_submitted", &r, json!({})).await?;
    Ok(Json(r).into_response())
}

/// Withdraws a request before a decision.
#[utoipa::path(
    post, path = "/v1/release-requests/{id}/withdraw", operation_id = "withdrawReleaseRequest",
    tag = "airlock",
    params(("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64)),
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "Withdrawn", body = ReleaseRequest),
        (status = 404, description = "No such request", body = basho_core::ErrorBody),
        (status = 409, description = "Already decided", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn withdraw(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReleaseRequest>> {
    let before = readable(&o, &who, &id).await?;
    if !may_request(&who, &before.owner) {
        return Err(missing_request(&id));
    }
    let now = Utc::now();
    let r = change(&o, &id, &|r: &mut ReleaseRequest| {
        releases::withdraw(r, now)
    })
    .await?;
    audited(&o, &who.actor(), "release_withdrawn", &r, json!({})).await?;
    Ok(Json(r))
}
