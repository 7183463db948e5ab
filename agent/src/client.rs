//! The agent's side of `/v1/agent/*`: register, long-poll the desired state, post observations.
//! The agent always dials out. Retrying is the caller's, with [`Backoff`]; [`Link`] logs when the
//! link goes up or down, not every retry.

use std::time::Duration;

use basho_core::protocol::{CapacityReport, DesiredState, ObservationBatch, Registration};
use basho_core::{ErrorBody, Ident};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

pub mod tls;

pub use tls::TlsPolicy;

/// Time allowed for a request that is not a long-poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A long-poll may take this much longer than the wait it asked for.
const LONG_POLL_GRACE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one released file to arrive whole.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a call to the orchestrator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configured URL is unusable.
    #[error("orchestrator URL {url:?} is not valid: {why}; fix orchestrator.url")]
    Url {
        /// The configured URL.
        url: String,
        /// Why.
        why: String,
    },
    /// The HTTP client could not be built (TLS set-up, the CA bundle).
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach the orchestrator: {0}")]
    Transport(String),
    /// 401 or 403.
    #[error("the orchestrator refused the site token ({status}): {message}; check the agent token")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The orchestrator's message.
        message: String,
    },
    /// Any other error answer.
    #[error("the orchestrator answered {status} {code}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error code from the body, or `http_<status>`.
        code: String,
        /// The orchestrator's message.
        message: String,
    },
    /// A success answer that is not what the protocol says.
    #[error("the orchestrator's answer does not decode: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the same request may succeed later. A 4xx means the request itself is wrong and
    /// sending it again changes nothing, except auth (a token being rolled out), 408, 429 and
    /// 409 (the orchestrator restarted and wants the site to register again).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Url { .. } | ClientError::Build(_) => false,
            ClientError::Transport(_) | ClientError::Decode(_) => true,
            ClientError::Unauthorized { .. } => true,
            ClientError::Status { status, .. } => {
                !(400..500).contains(status) || matches!(status, 408 | 409 | 429)
            }
        }
    }
}

/// The answer to `POST /v1/agent/register`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Registered {
    /// The site as the orchestrator knows it.
    pub site: String,
    /// The site's current desired-state revision.
    pub revision: i64,
}

#[derive(Deserialize)]
struct Applied {
    applied: u64,
}

/// A client of one orchestrator for one site.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Client {
    /// A client of the orchestrator at `url`, authenticating with the site's `token`, trusting
    /// the endpoint as `tls` says (a refused `http://` URL is a [`ClientError::Url`]).
    pub fn new(url: &str, token: &str, tls: &TlsPolicy) -> Result<Self, ClientError> {
        let bad = |why: String| ClientError::Url {
            url: url.to_owned(),
            why,
        };
        let mut base = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(bad("use http:// or https:// with a host".into()));
        }
        tls.check_url(&base).map_err(bad)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("basho-agent/", env!("CARGO_PKG_VERSION")));
        let http = tls
            .apply(builder, &base)
            .map_err(ClientError::Build)?
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: token.to_owned(),
            metrics: None,
        })
    }

    /// Counts failed calls and the last desired state in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("a relative path joins onto an http(s) URL")
    }

    /// `POST /v1/agent/register`.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, ClientError> {
        let req = self
            .http
            .post(self.url("v1/agent/register"))
            .json(registration)
            .timeout(REQUEST_TIMEOUT);
        self.send(req).await
    }

    /// `PUT /v1/agent/capacity`: what basho may use at the site now.
    pub async fn report_capacity(&self, report: &CapacityReport) -> Result<(), ClientError> {
        let req = self
            .http
            .put(self.url("v1/agent/capacity"))
            .json(report)
            .timeout(REQUEST_TIMEOUT);
        let out = self.answered(req).await.map(drop);
        if let (Err(e), Some(m)) = (&out, &self.metrics) {
            m.orchestrator_error(crate::metrics::client_error_kind(e));
        }
        out
    }

    /// `GET /v1/agent/desired`: at once when the revision is not `after`, else after up to
    /// `wait_s` seconds. `after = None` asks for the current state without waiting (sent as
    /// `after=-1&wait_s=0`, which every revision differs from).
    pub async fn desired(
        &self,
        site: &Ident,
        after: Option<i64>,
        wait_s: u64,
    ) -> Result<DesiredState, ClientError> {
        let mut url = self.url("v1/agent/desired");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("site", site.as_str());
            // `-1` is no revision, so the answer comes at once; so does a wait of 0.
            q.append_pair("after", &after.unwrap_or(-1).to_string());
            let wait = if after.is_some() { wait_s } else { 0 };
            q.append_pair("wait_s", &wait.to_string());
        }
        let timeout = Duration::from_secs(wait_s) + LONG_POLL_GRACE;
        let state = self.send(self.http.get(url).timeout(timeout)).await?;
        if let Some(m) = &self.metrics {
            m.synced(chrono::Utc::now());
        }
        Ok(state)
    }

    /// `POST /v1/agent/observations`; returns how many the orchestrator applied.
    pub async fn observations(&self, batch: &ObservationBatch) -> Result<u64, ClientError> {
        let req = self
            .http
            .post(self.url("v1/agent/observations"))
            .json(batch)
            .timeout(REQUEST_TIMEOUT);
        let a: Applied = self.send(req).await?;
        Ok(a.applied)
    }

    /// `POST /v1/agent/consent`.
    pub async fn consent(
        &self,
        report: &basho_core::consent::ConsentReport,
    ) -> Result<(), ClientError> {
        let req = self
            .http
            .post(self.url("v1/agent/consent"))
            .json(report)
            .timeout(REQUEST_TIMEOUT);
        let _: basho_core::consent::ConsentAck = self.send(req).await?;
        Ok(())
    }

    /// `POST /v1/agent/usage`; returns the orchestrator's acknowledgement.
    pub async fn usage(
        &self,
        batch: &basho_core::usage::UsageBatch,
    ) -> Result<basho_core::usage::UsageAck, ClientError> {
        let req = self
            .http
            .post(self.url("v1/agent/usage"))
            .json(batch)
            .timeout(REQUEST_TIMEOUT);
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let out = self.exchange(req).await;
        if let (Err(e), Some(m)) = (&out, &self.metrics) {
            m.orchestrator_error(crate::metrics::client_error_kind(e));
        }
        out
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.answered(req)
            .await?
            .json::<T>()
            .await
            .map_err(|e| ClientError::Decode(describe(&e)))
    }

    /// The answer to `req` sent with the site's token, when it is a success.
    async fn answered(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                text.chars().take(200).collect(),
            ),
        };
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(ClientError::Unauthorized {
                status: status.as_u16(),
                message,
            });
        }
        Err(ClientError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// `GET /v1/release-requests/{request}/files/{name}`: a released file (a federated job's
    /// partial this site's aggregation step reads), its bytes to be read from the answer.
    pub async fn released_file(
        &self,
        request: &str,
        name: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let mut url = self.url("v1/release-requests");
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .push(request)
            .push("files")
            .extend(name.split('/'));
        self.answered(self.http.get(url).timeout(DOWNLOAD_TIMEOUT))
            .await
    }

    /// The next chunk of an answer's body; none at its end.
    pub async fn chunk(resp: &mut reqwest::Response) -> Result<Option<Vec<u8>>, ClientError> {
        resp.chunk()
            .await
            .map(|c| c.map(|b| b.to_vec()))
            .map_err(|e| ClientError::Transport(describe(&e)))
    }
}

/// A reqwest error with its causes, which carry the useful part ("connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Exponential backoff with full jitter: each delay is uniform in `[0, min(cap, base·2ⁿ)]`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: StdRng::from_entropy(),
        }
    }

    /// The agent's default: 200 ms doubling up to 10 s.
    pub fn agent_default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.gen_range(0..=ms))
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Logs the link to the orchestrator when it changes, and retries only at debug level.
#[derive(Debug, Default)]
pub struct Link {
    up: Option<bool>,
}

impl Link {
    /// A request succeeded. Returns true when the link was down (or unknown) before.
    pub fn up(&mut self, what: &str) -> bool {
        let was = self.up.replace(true);
        if was != Some(true) {
            info!(what, "orchestrator link up");
            return true;
        }
        false
    }

    /// A request failed.
    pub fn down(&mut self, what: &str, error: &ClientError) {
        if self.up.replace(false) != Some(false) {
            warn!(what, %error, "orchestrator link down; retrying with backoff");
        } else {
            debug!(what, %error, "still no orchestrator");
        }
    }

    /// Whether the last request succeeded.
    pub fn is_up(&self) -> bool {
        self.up == Some(true)
    }
}

#[cfg(test)]
mod tests;
