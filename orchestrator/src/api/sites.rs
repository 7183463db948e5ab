//! `/v1/sites`: every registered site with its datasets, capacity, allocation and last contact.

use axum::Json;
use axum::extract::State;
use basho_core::ErrorBody;
use basho_core::protocol::Site;

use super::ApiResult;
use super::auth::Platform;
use crate::Orchestrator;

/// List the registered sites, by name.
#[utoipa::path(
    get, path = "/v1/sites", operation_id = "listSites", tag = "sites",
    responses(
        (status = 200, description = "Sites", body = Vec<Site>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform or admin token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(_: Platform, State(o): State<Orchestrator>) -> ApiResult<Json<Vec<Site>>> {
    Ok(Json(o.inner().sites.list()))
}
