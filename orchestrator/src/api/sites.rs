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

/// A site's session key, as its agent registered it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionKey {
    /// The site.
    pub site: basho_core::Ident,
    /// The public half of its X25519 session key, base64.
    pub key: String,
    /// `SHA256:` and the base64 of its digest, to compare by eye with what the site's admin
    /// shows (`basho-agent session-key`).
    pub fingerprint: String,
}

/// The session key a site's agent registered: basho's command line seals sessions for it and
/// pins it on first use, so the orchestrator relays them without reading them.
#[utoipa::path(
    get, path = "/v1/sites/{id}/session-key", operation_id = "siteSessionKey", tag = "sessions",
    params(("id" = String, Path, description = "Site name", max_length = 64)),
    responses(
        (status = 200, description = "The site's key", body = SessionKey),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such site (`not_found`), or its agent predates end-to-end encryption (`no_session_key`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn session_key(
    _: super::sessions::Caller,
    State(o): State<Orchestrator>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<SessionKey>> {
    let Some(reg) = o.inner().sites.registration(&id) else {
        return Err(super::ApiError::not_found(format!(
            "no site {id} is registered"
        )));
    };
    let text = reg.session_key.ok_or_else(|| {
        super::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_session_key",
            format!(
                "site {id}'s agent registered no session key: it predates end-to-end \
                 encryption, and sessions there cannot be sealed until its admin updates it"
            ),
        )
    })?;
    let key = basho_core::e2e::parse_key(&text).map_err(|e| {
        super::ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "bad_session_key",
            format!("site {id} registered an unusable session key: {e}"),
        )
    })?;
    Ok(Json(SessionKey {
        site: reg.site,
        key: text,
        fingerprint: basho_core::e2e::fingerprint(&key),
    }))
}
