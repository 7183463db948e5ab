//! Extractors that answer in the contract's error body: JSON bodies (size cap, syntax, unknown
//! fields, identifier rules, with the field's path in the message) and query strings.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

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
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // Well-formed but nested past serde_json's limit (128): no field of the API nests
        // that deep, so it is the request that is wrong, not its syntax.
        if e.to_string().starts_with("recursion limit exceeded") {
            return ApiError::invalid(format!(
                "the body nests deeper than any field of the API allows ({e}); see GET \
                 /openapi.json for the schema"
            ));
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON ({e}); send one JSON object"),
        )
    })?;
    // Every body of the API is one JSON object; serde alone would take `[a, b]` for a struct.
    if !value.is_object() {
        return Err(ApiError::invalid(
            "the body must be one JSON object; see GET /openapi.json for its fields",
        ));
    }
    integral(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiError::invalid(format!(
            "{what}; fix that field and resend (see GET /openapi.json for the schema)"
        ))
    })
}

/// JSON Schema's integers include `130.0`: a whole number written with a fraction becomes the
/// integer, so an integer field takes it (a float field takes either).
fn integral(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable: below 2^53 every whole f64 is its integer.
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *v = Value::from(i);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
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
        let e = parse_json::<CreateWorkspace>(b"[1, 2]").unwrap_err();
        assert_eq!(e.body.error.code, "invalid_request");
    }

    #[test]
    fn a_whole_number_with_a_fraction_is_an_integer() {
        let r: basho_core::Resources =
            parse_json(br#"{"cpus": 2.0, "memory_mib": 512.0, "gpus": 0}"#).unwrap();
        assert_eq!((r.cpus, r.memory_mib, r.gpus), (2, 512, 0));
        let e =
            parse_json::<basho_core::Resources>(br#"{"cpus": 2.5, "memory_mib": 1, "gpus": 0}"#)
                .unwrap_err();
        assert!(e.body.error.message.contains("cpus"), "{e:?}");
    }
}
