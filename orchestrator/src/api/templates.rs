//! `/v1/templates`: the workspace templates this deployment offers, which `template` in a create
//! must name (the schema cannot list them: they are the deployment's files).

use axum::Json;
use axum::extract::State;
use basho_core::ErrorBody;
use basho_core::template::Template;

use super::ApiResult;
use super::auth::Platform;
use crate::Orchestrator;

/// List the workspace templates, by name.
#[utoipa::path(
    get, path = "/v1/templates", operation_id = "listTemplates", tag = "templates",
    responses(
        (status = 200, description = "Templates: name, description, image, command, default resources and longest duration", body = Vec<Template>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform or admin token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(_: Platform, State(o): State<Orchestrator>) -> ApiResult<Json<Vec<Template>>> {
    let templates = &o.inner().templates;
    Ok(Json(
        templates
            .names()
            .into_iter()
            .filter_map(|n| templates.get(n).cloned())
            .collect(),
    ))
}
