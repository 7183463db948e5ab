//! GA4GH Task Execution Service 1.1 at `/ga4gh/tes/v1`. A task is a batch workspace: its
//! executors are the workspace's image and argv, placed where the task's datasets are, verified
//! again at the site, metered and revoked as every workspace is ([`basho_core::tes`] says what
//! is accepted and how states map). Errors answer `{"msg", "status_code"}`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use basho_core::release::ReleaseRequest;
use basho_core::tes::{
    self, Accepted, LOGS_NOTE, TesExecutorLog, TesState, TesTask, TesTaskLog, View, task_state,
};
use basho_core::{CreateWorkspace, Resources};
use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::principal;
use crate::Orchestrator;
use crate::store::{Cancel, NewTask, TaskFilter, TaskRow};
use crate::tokens::Principal;
use crate::workspaces::{Batch, create_with};

mod outputs;

pub use outputs::{release_id, taken as outputs_taken};

/// Where the TES API is served.
pub const BASE: &str = "/ga4gh/tes/v1";

/// The header carrying a GA4GH passport (or visas).
pub const PASSPORT_HEADER: &str = "ga4gh-passport";

/// A TES error answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TesErrorBody {
    /// What was wrong and what to do.
    pub msg: String,
    /// The HTTP status.
    pub status_code: u16,
}

/// A refused TES request.
#[derive(Debug)]
pub struct TesError(StatusCode, String);

impl TesError {
    fn bad(msg: impl Into<String>) -> Self {
        TesError(StatusCode::BAD_REQUEST, msg.into())
    }

    fn not_found(id: &str) -> Self {
        TesError(
            StatusCode::NOT_FOUND,
            format!("no task {id:?} that this token may see"),
        )
    }
}

impl IntoResponse for TesError {
    fn into_response(self) -> Response {
        let body = TesErrorBody {
            msg: self.1,
            status_code: self.0.as_u16(),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<ApiError> for TesError {
    /// The same answer; what the rest of the API calls unprocessable (422) is a TES 400.
    fn from(e: ApiError) -> Self {
        let status = match e.status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        TesError(status, e.body.error.message)
    }
}

impl From<crate::store::StoreError> for TesError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

type TesResult<T> = Result<T, TesError>;

/// Whoever the bearer token names, refused in TES's shape.
pub struct TesCaller(Principal);

impl FromRequestParts<Orchestrator> for TesCaller {
    type Rejection = TesError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> TesResult<Self> {
        Ok(TesCaller(principal(parts, o).await?))
    }
}

/// Only tasks of this researcher, or every task; refused for roles that read no tasks.
fn owner_filter(who: &Principal) -> TesResult<Option<String>> {
    match who {
        Principal::Researcher(sub) => Ok(Some(sub.clone())),
        Principal::Platform(_) | Principal::Admin(_) | Principal::Auditor(_) => Ok(None),
        Principal::Agent(_) | Principal::OutputChecker(_) => Err(TesError(
            StatusCode::FORBIDDEN,
            "this token's role reads no tasks".into(),
        )),
    }
}

/// The query string's pairs, each key one of `known`.
fn query_pairs(uri: &Uri, known: &[&str]) -> TesResult<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(TesError::bad(format!(
            "unknown query parameter {k:?}; this endpoint takes {}",
            known.join(", ")
        )));
    }
    Ok(pairs)
}

/// The one value of `key`, refusing it twice.
fn single<'a>(pairs: &'a [(String, String)], key: &str) -> TesResult<Option<&'a str>> {
    let mut found = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(TesError::bad(format!("{key} is given more than once")));
    }
    Ok(first)
}

fn view(pairs: &[(String, String)]) -> TesResult<View> {
    single(pairs, "view")?
        .map(View::parse)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(TesError::bad)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The task a row shows in `view`: the document as accepted, with its id, its state read from
/// its workspace, and its log.
fn shown(row: TaskRow, view: View, release: Option<&ReleaseRequest>) -> TesTask {
    let w = &row.workspace;
    let state = task_state(w.state, w.message.as_deref(), row.canceled);
    if view == View::Minimal {
        // A list's usual view: nothing else is built only to be left out.
        return TesTask {
            id: Some(w.id.clone()),
            state: Some(state),
            ..TesTask::default()
        };
    }
    let mut t = row.body;
    t.id = Some(w.id.clone());
    t.state = Some(state);
    t.creation_time = Some(rfc3339(w.created_at));
    let ended = w.state.is_terminal().then(|| rfc3339(w.updated_at));
    let mut system_logs = row.warnings;
    if row.canceled {
        system_logs.push("canceled by its caller".into());
    }
    system_logs.extend(tes::state_log(w.state, w.message.as_deref()));
    let files = release.map(|r| {
        let (files, note) = outputs::shown(&mut t, r);
        system_logs.push(note);
        files
    });
    system_logs.push(LOGS_NOTE.into());
    let logs = tes::exit_code(w.message.as_deref())
        .map(|exit_code| TesExecutorLog {
            start_time: None,
            end_time: ended.clone(),
            stdout: Some(String::new()),
            stderr: Some(String::new()),
            exit_code,
        })
        .into_iter()
        .collect();
    let metadata = [
        ("site".to_owned(), w.site.to_string()),
        ("workspace_state".to_owned(), w.state.to_string()),
    ]
    .into();
    t.logs = Some(vec![TesTaskLog {
        logs,
        metadata,
        start_time: None,
        end_time: ended,
        outputs: files.unwrap_or_default(),
        system_logs: Some(system_logs),
    }]);
    t.in_view(view)
}

/// `GET /service-info`: what this TES is, and what it stores.
#[utoipa::path(
    get, path = "/ga4gh/tes/v1/service-info", operation_id = "GetServiceInfo", tag = "tes",
    responses((status = 200, description = "The GA4GH service info, TES 1.1")),
)]
pub async fn service_info(State(o): State<Orchestrator>) -> Json<Value> {
    let inner = o.inner();
    // The replica's view of the sites: no query for a page every client reads first.
    let mut backends: Vec<String> = inner.sites.list().into_iter().map(|s| s.backend).collect();
    backends.sort();
    backends.dedup();
    let c = &inner.config.tes;
    Json(json!({
        "id": "org.basho.tes",
        "name": "basho TES",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": tes::SPEC_VERSION},
        "description": format!(
            "Tasks run as batch workspaces where their datasets are, each grant verified again \
             at the site. Inputs name datasets by ID ({}<DATASET>/<path>), mounted read-only at \
             /data/<DATASET>, or come inline; executors run in order in one container and share \
             one image. Outputs (files under /results) become the task's release request when \
             it ends, downloadable once released through the results airlock. {LOGS_NOTE}. \
             Backends of the registered sites: {}.",
            tes::DATASET_URL,
            if backends.is_empty() { "none yet".to_owned() } else { backends.join(", ") }
        ),
        "organization": {"name": c.organization_name, "url": c.organization_url},
        "version": env!("CARGO_PKG_VERSION"),
        "storage": [tes::DATASET_URL],
        "tesResources_backend_parameters": [],
    }))
}

/// `POST /tasks`: accepts a task and places it as a batch workspace.
#[utoipa::path(
    post, path = "/ga4gh/tes/v1/tasks", operation_id = "CreateTask", tag = "tes",
    request_body = TesTask,
    responses(
        (status = 200, description = "The task's id", body = Object, example = json!({"id": "ws-8f14e45f-ceea-467f-a3a8-0a2bd5d3c1a9"})),
        (status = 400, description = "A task basho does not run, with why", body = TesErrorBody),
        (status = 401, description = "No or unknown token", body = TesErrorBody),
        (status = 403, description = "A role that creates no tasks, or visas of someone else", body = TesErrorBody),
        (status = 409, description = "No site holds every dataset, or none has room", body = TesErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    TesCaller(who): TesCaller,
    State(o): State<Orchestrator>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> TesResult<Json<Value>> {
    if !matches!(who, Principal::Platform(_) | Principal::Researcher(_)) {
        return Err(TesError(
            StatusCode::FORBIDDEN,
            "tasks are created with the platform's token or a researcher's own".into(),
        ));
    }
    let body = body.map_err(|_| TesError::bad("the request body could not be read"))?;
    let task: TesTask = serde_json::from_slice(&body)
        .map_err(|e| TesError::bad(format!("the body is not a TES task: {e}")))?;
    let accepted = tes::accept(task).map_err(TesError::bad)?;
    let mut visas = accepted.visas.clone();
    if let Some(h) = headers.get(PASSPORT_HEADER) {
        let h = h
            .to_str()
            .map_err(|_| TesError::bad("the GA4GH-Passport header is not text"))?;
        visas.extend(tes::passport_visas(h).map_err(TesError::bad)?);
    }
    // A task that reads no dataset needs no visa; its owner is the researcher whose token
    // creates it.
    let owner = match (&who, visas.is_empty()) {
        (_, false) => None,
        (Principal::Researcher(sub), true) if accepted.datasets.is_empty() => Some(sub.clone()),
        (_, true) if accepted.datasets.is_empty() => {
            return Err(TesError::bad(
                "no visas: a task that reads no dataset needs none, but is created with its \
                 owner's own researcher token",
            ));
        }
        _ => {
            return Err(TesError::bad(format!(
                "no visas: send them in the GA4GH-Passport header or the {} tag",
                tes::TAG_VISAS
            )));
        }
    };
    if let Principal::Researcher(sub) = &who
        && visas
            .iter()
            .any(|v| basho_core::visa::unverified_claim(v, "sub").ok().as_ref() != Some(sub))
    {
        return Err(TesError(
            StatusCode::FORBIDDEN,
            "a researcher's token creates tasks with that researcher's own visas".into(),
        ));
    }
    let inner = o.inner();
    let c = &inner.config.tes;
    let project = accepted
        .project
        .clone()
        .or_else(|| c.project.clone())
        .ok_or_else(|| {
            TesError::bad(format!(
                "no project: tag the task {} (this endpoint has no default project)",
                tes::TAG_PROJECT
            ))
        })?;
    let template = inner.templates.get(c.template.as_str()).ok_or_else(|| {
        TesError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the TES template {} is not among the orchestrator's templates; its admin adds \
                 it (templates/workspaces/batch.toml) or names another in [tes] template",
                c.template
            ),
        )
    })?;
    let Accepted {
        datasets,
        cpus,
        memory_mib,
        site,
        image,
        command,
        launch,
        warnings,
        stored,
        ..
    } = accepted;
    let resources = (cpus.is_some() || memory_mib.is_some()).then(|| Resources {
        cpus: cpus.unwrap_or(template.resources.cpus),
        memory_mib: memory_mib.unwrap_or(template.resources.memory_mib),
        gpus: 0,
    });
    let req = CreateWorkspace {
        project,
        template: c.template.clone(),
        visas,
        // A task that names no dataset mounts what its visas grant, as a workspace does.
        datasets: (!datasets.is_empty()).then_some(datasets),
        resources,
        duration_s: None,
        site,
        max_queue_s: None,
    };
    let batch = Batch {
        image,
        command,
        launch,
        task: Some(NewTask {
            body: stored,
            warnings,
        }),
        owner,
    };
    let made = create_with(&o, &who.actor(), &req, None, Some(&batch))
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({"id": made.workspace.id})))
}

/// `GET /tasks`: tasks newest first, a page at a time.
#[utoipa::path(
    get, path = "/ga4gh/tes/v1/tasks", operation_id = "ListTasks", tag = "tes",
    params(
        ("name_prefix" = Option<String>, Query, description = "Only tasks whose name starts so"),
        ("state" = Option<TesState>, Query, description = "Only tasks in this state"),
        ("tag_key" = Option<Vec<String>>, Query, description = "Only tasks with this tag (repeatable)"),
        ("tag_value" = Option<Vec<String>>, Query, description = "The value of the tag_key at the same position"),
        ("page_size" = Option<i64>, Query, description = "1 to 2048; 256 when none"),
        ("page_token" = Option<String>, Query, description = "The next_page_token of the page before"),
        ("view" = Option<String>, Query, description = "MINIMAL (default), BASIC or FULL"),
    ),
    responses(
        (status = 200, description = "`tasks`, and `next_page_token` when there are more", body = Object),
        (status = 400, description = "A parameter out of range, unknown, or a forged page token", body = TesErrorBody),
        (status = 401, description = "No or unknown token", body = TesErrorBody),
        (status = 403, description = "A role that reads no tasks", body = TesErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    TesCaller(who): TesCaller,
    State(o): State<Orchestrator>,
    uri: Uri,
) -> TesResult<Json<Value>> {
    let owner = owner_filter(&who)?;
    let pairs = query_pairs(
        &uri,
        &[
            "name_prefix",
            "state",
            "tag_key",
            "tag_value",
            "page_size",
            "page_token",
            "view",
        ],
    )?;
    let view = view(&pairs)?;
    let asked = single(&pairs, "page_size")?
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| TesError::bad(format!("page_size {v:?} is not a whole number")))
        })
        .transpose()?;
    let size = tes::page_size(asked).map_err(TesError::bad)?;
    let before = single(&pairs, "page_token")?
        .filter(|t| !t.is_empty())
        .map(tes::parse_page_token)
        .transpose()
        .map_err(TesError::bad)?;
    let state = single(&pairs, "state")?
        .map(|s| {
            TesState::parse(s).ok_or_else(|| {
                TesError::bad(format!("state {s:?} is not a TES state, such as RUNNING"))
            })
        })
        .transpose()?;
    let keys: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "tag_key")
        .map(|(_, v)| v.as_str())
        .collect();
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "tag_value")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.len() > keys.len() {
        return Err(TesError::bad(
            "more tag_value than tag_key parameters; each value goes with the key at its position",
        ));
    }
    let tags = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), values.get(i).map(|v| (*v).to_owned())))
        .collect();
    let filter = TaskFilter {
        owner,
        name_prefix: single(&pairs, "name_prefix")?.map(str::to_owned),
        state,
        tags,
        before,
        limit: size + 1,
    };
    let mut rows = o.inner().store.list_tasks(&filter).await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next = more.then(|| tes::page_token(rows.last().map_or(1, |r| r.seq)));
    let mut tasks = Vec::with_capacity(rows.len());
    for row in rows {
        let release = outputs_release(&o, &row, view).await?;
        tasks.push(shown(row, view, release.as_ref()));
    }
    let mut answer = json!({"tasks": tasks});
    if let Some(next) = next {
        answer["next_page_token"] = json!(next);
    }
    Ok(Json(answer))
}

/// The release request of an ended task's outputs, for views that show them.
async fn outputs_release(
    o: &Orchestrator,
    row: &TaskRow,
    view: View,
) -> TesResult<Option<ReleaseRequest>> {
    if view == View::Minimal || !row.workspace.state.is_terminal() {
        return Ok(None);
    }
    Ok(o.inner()
        .store
        .release(&release_id(&row.workspace.id))
        .await?)
}

/// A task this caller may see.
async fn visible(o: &Orchestrator, who: &Principal, id: &str) -> TesResult<TaskRow> {
    let owner = owner_filter(who)?;
    let row = o.inner().store.task(id).await?;
    row.filter(|r| owner.as_ref().is_none_or(|sub| *sub == r.workspace.owner))
        .ok_or_else(|| TesError::not_found(id))
}

/// `GET /tasks/{id}`: one task.
#[utoipa::path(
    get, path = "/ga4gh/tes/v1/tasks/{id}", operation_id = "GetTask", tag = "tes",
    params(
        ("id" = String, Path, description = "The task's id"),
        ("view" = Option<String>, Query, description = "MINIMAL (default), BASIC or FULL"),
    ),
    responses(
        (status = 200, description = "The task", body = TesTask),
        (status = 400, description = "An unknown view or parameter", body = TesErrorBody),
        (status = 401, description = "No or unknown token", body = TesErrorBody),
        (status = 404, description = "No such task this token may see", body = TesErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get(
    TesCaller(who): TesCaller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
    uri: Uri,
) -> TesResult<Json<TesTask>> {
    let pairs = query_pairs(&uri, &["view"])?;
    let view = view(&pairs)?;
    let row = visible(&o, &who, &id).await?;
    let release = outputs_release(&o, &row, view).await?;
    Ok(Json(shown(row, view, release.as_ref())))
}

/// `POST /tasks/{id}:cancel`: stops a task that has not ended.
#[utoipa::path(
    post, path = "/ga4gh/tes/v1/tasks/{id}:cancel", operation_id = "CancelTask", tag = "tes",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Canceled (its site stops it)", body = Object, example = json!({})),
        (status = 400, description = "The task has already ended; its state is unchanged", body = TesErrorBody),
        (status = 401, description = "No or unknown token", body = TesErrorBody),
        (status = 403, description = "An auditor's token, which only reads", body = TesErrorBody),
        (status = 404, description = "No such task this token may see", body = TesErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    TesCaller(who): TesCaller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> TesResult<Json<Value>> {
    let id = id.as_str();
    let row = visible(&o, &who, id).await?;
    if matches!(who, Principal::Auditor(_)) {
        return Err(TesError(
            StatusCode::FORBIDDEN,
            "an auditor's token only reads tasks".into(),
        ));
    }
    match o.inner().store.cancel_task(id).await? {
        Cancel::Missing => Err(TesError::not_found(id)),
        Cancel::Ended => {
            let w = &row.workspace;
            let state = task_state(w.state, w.message.as_deref(), row.canceled);
            Err(TesError::bad(format!(
                "task {id} has ended ({}); only a task that has not ended can be canceled",
                state.as_str()
            )))
        }
        Cancel::Marked => {
            crate::workspaces::delete(&o, &who.actor(), id).await?;
            Ok(Json(json!({})))
        }
    }
}
