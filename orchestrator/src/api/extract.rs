//! Extractors that answer in the contract's error body: JSON bodies (size cap, syntax, unknown
//! fields, identifier rules, with the field's path in the message) and query strings.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::Orchestrator;

/// A JSON body, refused with `body_too_large` (413), `invalid_json` (400) or `invalid_request`
/// (422, naming the field) when it is not one.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// The serde message without axum's prefix: `datasets[0]: identifier "../x" must start ...`.
fn detail(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

fn body_error(e: &BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes; send fewer or shorter visas"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read; resend it",
        )
    }
}

/// Parses `bytes` as JSON into `T` with the contract's errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, over the whole document, so a truncated body is `invalid_json` even when
    // its first value already has the wrong shape.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON ({e}); send one JSON object"),
        ));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the body is not valid JSON ({}); send one JSON object",
                detail(&e.body_text())
            ),
        )),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::invalid(format!(
            "{}; fix that field and resend (see GET /openapi.json for the schema)",
            detail(&e.body_text())
        ))),
        Err(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("{}; send one JSON object", other.body_text()),
        )),
    }
}

impl<T: DeserializeOwned> FromRequest<Orchestrator> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, o: &Orchestrator) -> Result<Self, ApiError> {
        let limit = o.inner().config.limits.max_body_bytes;
        let bytes = Bytes::from_request(req, o)
            .await
            .map_err(|e| body_error(&e, limit))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A query string, refused with `invalid_request` (422) when it does not fit `T`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Orchestrator> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Orchestrator) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(format!(
                    "bad query string: {}; see GET /openapi.json for the parameters",
                    detail(&e.body_text())
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basho_core::CreateWorkspace;

    #[test]
    fn names_the_field() {
        let e = parse_json::<CreateWorkspace>(
            br#"{"project":"P","template":"shell","visas":[],"datasets":["../x"]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.body.error.message.contains("datasets[0]"), "{e:?}");
        let e = parse_json::<CreateWorkspace>(
            br#"{"project":"P","template":"shell","visas":[],"x":1}"#,
        )
        .unwrap_err();
        assert!(e.body.error.message.contains("unknown field `x`"), "{e:?}");
        let e = parse_json::<CreateWorkspace>(b"{\"project\":").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.error.code, "invalid_json");
    }
}
