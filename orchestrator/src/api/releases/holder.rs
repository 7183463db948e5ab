//! Release calls through any replica: a replica that does not hold the site's tunnel passes the
//! request to the one that does ([`crate::relay::Peers::forward`]) and streams its answer back.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::SHA256_HEADER;
use crate::Orchestrator;
use crate::api::{ApiError, ApiResult};

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
pub(super) async fn via_holder(
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
