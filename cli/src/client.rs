//! The HTTP client of the orchestrator's REST API: finds it through `--addr`/`BASHO_ADDR`, sends
//! the bearer token, and turns every failure into an [`ApiError`] that says what to do.

use std::path::Path;
use std::time::Duration;

use basho_agent::client::TlsPolicy;
use basho_core::{CreateWorkspace, ErrorBody};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// The address `--addr` defaults to: where `basho dev` listens.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8080";

/// Why a request to the orchestrator failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The orchestrator answered with an error body (or a status without one).
    #[error("{code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error.code` of the body (`http_<status>` when the body had none).
        code: String,
        /// The `error.message` of the body.
        message: String,
    },
    /// Nothing answered at the address.
    #[error(
        "cannot reach the orchestrator at {addr} ({reason}); set BASHO_ADDR or --addr to its \
         address, or start a local one with `basho dev`"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The transport's reason.
        reason: String,
    },
    /// `--addr` is not an http(s) URL.
    #[error("--addr {0:?} is not an http:// or https:// URL (e.g. {DEFAULT_ADDR})")]
    BadAddr(String),
    /// `--addr` is plain http:// to another machine, where tokens would travel in the clear.
    #[error("--addr {addr:?}: {why}")]
    Insecure {
        /// The address given.
        addr: String,
        /// What to change.
        why: String,
    },
    /// `--ca-file` is unusable.
    #[error("--ca-file: {0}")]
    CaFile(String),
    /// The answer arrived but is not what the API promises.
    #[error("the orchestrator at {addr} answered {what} that does not parse: {reason}")]
    Decode {
        /// The address asked.
        addr: String,
        /// What was being read.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// The request failed in transit after the connection was made.
    #[error("request to {addr} failed: {reason}")]
    Transport {
        /// The address asked.
        addr: String,
        /// The transport's reason.
        reason: String,
    },
}

impl ApiError {
    /// Whether retrying the same request later may succeed (the server is down or overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Api { status, .. } => *status >= 500 || *status == 429,
            ApiError::Unreachable { .. } | ApiError::Transport { .. } => true,
            ApiError::BadAddr(_)
            | ApiError::Insecure { .. }
            | ApiError::CaFile(_)
            | ApiError::Decode { .. } => false,
        }
    }

    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful answer: the body exactly as sent, so `--output json` can pass it through.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The raw body.
    pub body: String,
}

impl Answer {
    /// Parses the body as `T`.
    pub fn parse<T: DeserializeOwned>(&self, client: &Client, what: &str) -> Result<T, ApiError> {
        serde_json::from_str(&self.body).map_err(|e| client.decode_error(what, e))
    }
}

/// A client of one orchestrator.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the orchestrator at `addr` (`http://host:port`; a bare `host:port` means
    /// http), authenticating with `token` when given. An `https://` orchestrator is verified
    /// against the bundled web PKI roots; plain `http://` is allowed only to a loopback host.
    pub fn new(addr: &str, token: Option<String>) -> Result<Self, ApiError> {
        Self::with_ca(addr, token, None)
    }

    /// [`Client::new`], verifying an `https://` orchestrator against the PEM bundle `ca_file`
    /// (only its certificates) when given.
    pub fn with_ca(
        addr: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ApiError> {
        let addr = addr.trim().trim_end_matches('/');
        let base = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let parsed = reqwest::Url::parse(&base).map_err(|_| ApiError::BadAddr(addr.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ApiError::BadAddr(addr.into()));
        }
        // The CLI has no config file: plain HTTP stays allowed to this machine (`basho dev`).
        let policy = TlsPolicy {
            ca_file: ca_file.map(Path::to_owned),
            plain_http_on_loopback: true,
        };
        policy
            .check_url(&parsed)
            .map_err(|why| ApiError::Insecure {
                addr: addr.into(),
                why,
            })?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("basho-cli/", env!("CARGO_PKG_VERSION")));
        let http = policy
            .apply(builder, &parsed)
            .map_err(ApiError::CaFile)?
            .build()
            .map_err(|e| ApiError::Transport {
                addr: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The base URL requests go to.
    pub fn addr(&self) -> &str {
        &self.base
    }

    /// `POST /v1/workspaces` with an `Idempotency-Key`.
    pub async fn create_workspace(
        &self,
        body: &CreateWorkspace,
        idempotency_key: &str,
    ) -> Result<Answer, ApiError> {
        let req = self
            .request(Method::POST, "/v1/workspaces")
            .header("Idempotency-Key", idempotency_key)
            .json(body);
        self.send(req).await
    }

    /// `GET /v1/workspaces` with the filters given.
    pub async fn list_workspaces(&self, filters: &[(&str, String)]) -> Result<Answer, ApiError> {
        let req = self.request(Method::GET, "/v1/workspaces").query(filters);
        self.send(req).await
    }

    /// `GET /v1/workspaces/{id}`.
    pub async fn get_workspace(&self, id: &str) -> Result<Answer, ApiError> {
        let req = self.request(Method::GET, &format!("/v1/workspaces/{}", path_segment(id)));
        self.send(req).await
    }

    /// `DELETE /v1/workspaces/{id}`.
    pub async fn delete_workspace(&self, id: &str) -> Result<Answer, ApiError> {
        let req = self.request(
            Method::DELETE,
            &format!("/v1/workspaces/{}", path_segment(id)),
        );
        self.send(req).await
    }

    /// `POST /v1/revocations`.
    pub async fn revoke(
        &self,
        body: &basho_core::revocation::RevocationRequest,
    ) -> Result<Answer, ApiError> {
        let req = self.request(Method::POST, "/v1/revocations").json(body);
        self.send(req).await
    }

    /// `GET /v1/sites`.
    pub async fn list_sites(&self) -> Result<Answer, ApiError> {
        self.send(self.request(Method::GET, "/v1/sites")).await
    }

    /// `GET /v1/sites/{id}/session-key`.
    pub async fn site_session_key(&self, site: &str) -> Result<Answer, ApiError> {
        let path = format!("/v1/sites/{}/session-key", path_segment(site));
        self.send(self.request(Method::GET, &path)).await
    }

    /// `GET /v1/audit?after=&limit=`.
    pub async fn audit_page(&self, after: i64, limit: u32) -> Result<Answer, ApiError> {
        let query = [("after", after.to_string()), ("limit", limit.to_string())];
        let req = self.request(Method::GET, "/v1/audit").query(&query);
        self.send(req).await
    }

    /// `GET /v1/projects/{id}/usage` with `from`/`to`.
    pub async fn usage(&self, project: &str, query: &[(&str, String)]) -> Result<Answer, ApiError> {
        let path = format!("/v1/projects/{}/usage", path_segment(project));
        self.send(self.request(Method::GET, &path).query(query))
            .await
    }

    /// `PUT /v1/projects/{id}/quota`.
    pub async fn set_quota(
        &self,
        project: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ApiError> {
        let path = format!("/v1/projects/{}/quota", path_segment(project));
        self.send(self.request(Method::PUT, &path).json(body)).await
    }

    /// `GET /v1/projects/{id}/quota`.
    pub async fn quota(&self, project: &str) -> Result<Answer, ApiError> {
        let path = format!("/v1/projects/{}/quota", path_segment(project));
        self.send(self.request(Method::GET, &path)).await
    }

    /// `GET path` with `query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, ApiError> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    /// `POST path` with a JSON body, waiting up to `timeout` (the site may copy and check files
    /// meanwhile).
    pub async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        let req = self.request(Method::POST, path).json(body).timeout(timeout);
        self.send(req).await
    }

    /// `GET path`, answered as a stream of bytes (no overall timeout: the caller watches
    /// progress); an error answer is read and returned as an error.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let req = self
            .request(Method::GET, path)
            .timeout(Duration::from_secs(24 * 3600));
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.map_err(|e| self.transport_error(e))?;
        Err(self.api_error(status, &body))
    }

    /// A transport failure in the middle of an answer.
    pub fn broken(&self, e: reqwest::Error) -> ApiError {
        self.transport_error(e)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, ApiError> {
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body,
            });
        }
        Err(self.api_error(status, &body))
    }

    fn api_error(&self, status: StatusCode, body: &str) -> ApiError {
        let (code, mut message) = match serde_json::from_str::<ErrorBody>(body) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => {
                let text = body.trim();
                let message = if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_owned()
                } else {
                    text.chars().take(500).collect()
                };
                (format!("http_{}", status.as_u16()), message)
            }
        };
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            message.push_str(
                " (no token was sent: set BASHO_TOKEN or --token; \
                 `basho dev token --role platform` prints the dev one)",
            );
        }
        ApiError::Api {
            status: status.as_u16(),
            code,
            message,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_connect() {
            ApiError::Unreachable {
                addr: self.base.clone(),
                reason: innermost(&e),
            }
        } else {
            ApiError::Transport {
                addr: self.base.clone(),
                reason: innermost(&e),
            }
        }
    }

    pub(crate) fn decode_error(&self, what: &str, e: serde_json::Error) -> ApiError {
        ApiError::Decode {
            addr: self.base.clone(),
            what: what.into(),
            reason: e.to_string(),
        }
    }
}

/// The deepest cause of an error chain: reqwest's own message ("error sending request") says less
/// than the OS's ("Connection refused").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Escapes a path segment; workspace ids are `ws-<uuid>`, but a mistyped id must not change the
/// path it is sent to.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(
            Client::new("http://127.0.0.1:8080/", None).unwrap().addr(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Client::new("localhost:9000", None).unwrap().addr(),
            "http://localhost:9000"
        );
        assert!(matches!(
            Client::new("ftp://x", None),
            Err(ApiError::BadAddr(_))
        ));
        assert!(matches!(Client::new("", None), Err(ApiError::BadAddr(_))));
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in ["http://localhost:1", "[::1]:8080", "127.0.0.1:8080"] {
            assert!(Client::new(ok, None).is_ok(), "{ok}");
        }
        for remote in [
            "http://basho.example.org",
            "10.1.2.3:8080",
            "http://0.0.0.0:8080",
        ] {
            let e = Client::new(remote, None).unwrap_err();
            assert!(matches!(e, ApiError::Insecure { .. }), "{remote}: {e}");
            assert!(e.to_string().contains("https://"), "{e}");
        }
        assert!(Client::new("https://basho.example.org", None).is_ok());
        let e = Client::with_ca(
            "https://basho.example.org",
            None,
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err();
        assert!(matches!(e, ApiError::CaFile(_)), "{e}");
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("ws-0190abcd"), "ws-0190abcd");
        assert_eq!(path_segment("../sites"), "..%2Fsites");
        assert_eq!(path_segment("a b?"), "a%20b%3F");
    }

    #[test]
    fn error_bodies_keep_their_code() {
        let c = Client::new(DEFAULT_ADDR, Some("t".into())).unwrap();
        let e = c.api_error(
            StatusCode::BAD_REQUEST,
            r#"{"error":{"code":"visa_expired","message":"visa expired"}}"#,
        );
        assert_eq!(e.to_string(), "visa_expired: visa expired");
        assert!(!e.is_transient());
        let e = c.api_error(StatusCode::BAD_GATEWAY, "");
        assert_eq!(e.to_string(), "http_502: Bad Gateway");
        assert!(e.is_transient());
    }

    #[test]
    fn unauthorised_without_a_token_says_how_to_set_one() {
        let c = Client::new(DEFAULT_ADDR, Some(String::new())).unwrap();
        let e = c.api_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"unauthorized","message":"no bearer token"}}"#,
        );
        assert!(e.to_string().contains("BASHO_TOKEN"), "{e}");
    }
}
