//! The results airlock's API: release requests made from a workspace's `/results`, reviewed by
//! output checkers, and their approved files downloaded from the site through its tunnel
//! ([`crate::releases`]). Every step is in the audit chain with the files' digests.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use basho_core::digest::hex;
use basho_core::release::{
    Answer, Call, CreateRelease, Intake, ReleaseRequest, ReleaseState, ReviewBody,
};
use basho_core::tunnel::{Exit, Kind};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

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
async fn audited(
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

/// The original request, for passing it to the replica that holds the site's tunnel.
pub struct Original {
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Original {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |u| u.0.clone());
        Ok(Original {
            method: parts.method.clone(),
            uri,
            headers: parts.headers.clone(),
        })
    }
}

/// When another replica holds `site`'s tunnel (and this one holds none), that replica's answer
/// to the same request: it authorizes, calls the site, stores and audits as if asked directly.
async fn via_holder(
    o: &Orchestrator,
    site: &basho_core::Ident,
    original: &Original,
    body: Option<Vec<u8>>,
) -> Option<ApiResult<Response>> {
    let inner = o.inner();
    if inner.tunnels.is_up(site) || original.headers.contains_key(crate::relay::RELAYED) {
        return None;
    }
    let holder = match inner.store.tunnel_holder(site).await {
        Ok(Some(h)) if h.replica != inner.peers.id() => h,
        _ => return None,
    };
    let authorization = original.headers.get(header::AUTHORIZATION)?;
    let path = original.uri.path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(original.method.as_str().as_bytes()).ok()?;
    let answer = inner
        .peers
        .forward(&holder.url, method, path, authorization, body)
        .await;
    Some(match answer {
        Ok(res) => Ok(passed_on(res)),
        Err(e) => {
            let why = match e {
                crate::relay::RelayError::Unreachable(why) => why,
                crate::relay::RelayError::Answered { body, .. } => body.error.message,
            };
            tracing::warn!(%site, peer = %holder.url, %why, "the replica holding the tunnel is unreachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "site_unreachable",
                format!(
                    "site {site}: the replica holding its tunnel cannot be reached ({why}); retry"
                ),
            ))
        }
    })
}

/// A peer's answer as this replica's, its body streamed through.
fn passed_on(res: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = axum::http::HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_DISPOSITION,
        axum::http::HeaderName::from_static(SHA256_HEADER),
    ] {
        let value = res
            .headers()
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
    let body = futures::stream::unfold(Some(res), |res| async move {
        let mut res = res?;
        match res.chunk().await {
            Ok(Some(c)) => Some((Ok(c.to_vec()), Some(res))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
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
        releases::check_request(&["-".into()], j)?;
    }
    let bytes = serde_json::to_vec(&body).expect("requests serialize");
    let taken = match body.files {
        Some(files) => {
            releases::check_request(&files, &before.justification)?;
            let rec = source(&o, &who, &before.workspace).await?;
            if let Some(answer) = via_holder(&o, &rec.workspace.site, &original, Some(bytes)).await
            {
                return answer;
            }
            Some(intake(&o, &rec, &id, files, &actor, body.proof).await?)
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

/// Downloads an approved file from the site's airlock store, streamed through the site's tunnel
/// and checked against the reviewed digest on the way: a mismatch ends the download with an
/// error, never a file.
#[utoipa::path(
    get, path = "/v1/release-requests/{id}/files/{name}", operation_id = "downloadReleasedFile",
    tag = "airlock",
    params(
        ("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64),
        ("name" = String, Path, description = "The file's name under /results"),
    ),
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "The file's bytes; `x-basho-sha256` is the reviewed digest", content_type = "application/octet-stream"),
        (status = 404, description = "No such request or file", body = basho_core::ErrorBody),
        (status = 409, description = "Not approved, or the file was rejected or refused", body = basho_core::ErrorBody),
        (status = 503, description = "The site cannot be reached", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn download(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path((id, name)): Path<(String, String)>,
    original: Original,
) -> ApiResult<Response> {
    let actor = who.actor();
    let r = readable(&o, &who, &id).await?;
    if !may_request(&who, &r.owner) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the workspace's owner and the platform download released files",
        ));
    }
    let Some(file) = r.files.iter().find(|f| f.name == name).cloned() else {
        return Err(ApiError::not_found(format!(
            "release request {id} has no file {name:?}"
        )));
    };
    if !matches!(r.state, ReleaseState::Approved | ReleaseState::Released) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_approved",
            format!(
                "release request {id} is {}; only approved files leave",
                r.state
            ),
        ));
    }
    if !file.releasable() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_approved",
            format!("{name} was rejected by a checker or refused by the site's checks"),
        ));
    }
    if let Some(answer) = via_holder(&o, &r.site, &original, None).await {
        return answer;
    }
    let call = Call::Fetch {
        workspace: r.workspace.clone(),
        request: id.clone(),
        sha256: file.sha256.clone(),
        actor: actor.clone(),
    };
    let (link, answer) =
        releases::call(&o.inner().tunnels, &r.site, &call, releases::FETCH_TIMEOUT)
            .await
            .map_err(|e| desk_error(&r.site, e))?;
    let size = match answer {
        Answer::Fetch { size } if size == file.size => size,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "digest_mismatch",
                format!(
                    "site {} holds a different {name} than the one reviewed",
                    r.site
                ),
            ));
        }
    };
    audited(
        &o,
        &actor,
        "release_download_started",
        &r,
        json!({"file": name, "sha256": file.sha256}),
    )
    .await?;
    let stream = Relay {
        link,
        o: o.clone(),
        actor,
        request: id,
        name: name.clone(),
        expected: file.sha256.clone(),
        hasher: Sha256::new(),
        sent: 0,
        size,
        done: false,
    }
    .into_stream();
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&file.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    let base = name.rsplit('/').next().unwrap_or(&name).replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{base}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.into_response())
}

/// A file on its way from the site: bytes are passed on as they come, credit is returned for
/// each chunk, and the digest is checked at the end.
struct Relay {
    link: crate::tunnel::SessionLink,
    o: Orchestrator,
    actor: String,
    request: String,
    name: String,
    expected: String,
    hasher: Sha256,
    sent: u64,
    size: u64,
    done: bool,
}

impl Relay {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            if s.done {
                return None;
            }
            let item = s.next().await;
            if !matches!(item, Ok(Some(_))) {
                s.done = true;
            }
            match item {
                Ok(Some(bytes)) => Some((Ok(bytes), s)),
                Ok(None) => None,
                Err(e) => Some((Err(e), s)),
            }
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, std::io::Error> {
        if self.sent == self.size && self.size > 0 {
            return Ok(None);
        }
        loop {
            match self.link.rx.recv().await {
                Some(f) if f.kind == Kind::Stdout => {
                    if f.payload.is_empty() {
                        continue;
                    }
                    self.sent += f.payload.len() as u64;
                    if self.sent > self.size {
                        return Err(broken("the site sent more bytes than the file holds"));
                    }
                    self.hasher.update(&f.payload);
                    let credit = (f.payload.len() as u32).to_be_bytes().to_vec();
                    let _ = self.link.send(Kind::Credit, credit).await;
                    if self.sent == self.size {
                        // The last bytes go out only once the whole file matched its digest,
                        // so a file that does not match never arrives whole.
                        self.finish().await?;
                    }
                    return Ok(Some(f.payload));
                }
                Some(f) if f.kind == Kind::Exit && self.size == 0 => {
                    self.link.ended();
                    self.finish().await?;
                    return Ok(None);
                }
                Some(f) if f.kind == Kind::Exit => {
                    self.link.ended();
                    let exit: Exit = f.parse().unwrap_or_default();
                    return Err(broken(&format!(
                        "the site stopped after {} of {} bytes: {}",
                        self.sent,
                        self.size,
                        exit.reason.unwrap_or_default()
                    )));
                }
                Some(f) if f.kind == Kind::Refused => {
                    return Err(broken(&format!(
                        "the site refused: {}",
                        String::from_utf8_lossy(&f.payload)
                    )));
                }
                Some(_) => continue,
                None => return Err(broken("the site's tunnel closed mid-file")),
            }
        }
    }

    /// Checks the whole file's digest, then records the download.
    async fn finish(&mut self) -> Result<(), std::io::Error> {
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        if got != self.expected {
            self.o
                .audit(
                    &self.actor,
                    "release_digest_mismatch",
                    &self.request,
                    json!({"file": self.name, "expected": self.expected, "got": got}),
                )
                .await;
            return Err(broken(&format!(
                "{} does not match the reviewed digest (got {got}); nothing was released",
                self.name
            )));
        }
        let now = Utc::now();
        let changed = self
            .o
            .inner()
            .store
            .change_release(&self.request, &|r: &mut ReleaseRequest| {
                releases::downloaded(r, now)
            })
            .await;
        if let Ok(Some(Ok(r))) = changed {
            let detail = json!({"file": self.name, "sha256": got, "bytes": self.sent});
            let _ = audited(&self.o, &self.actor, "release_downloaded", &r, detail).await;
        }
        Ok(())
    }
}

fn broken(m: &str) -> std::io::Error {
    std::io::Error::other(m.to_owned())
}
