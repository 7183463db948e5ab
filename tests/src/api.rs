//! A thin HTTP client for the orchestrator's REST API, answering status and JSON so tests can
//! assert on both.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The platform's view of one orchestrator.
#[derive(Clone)]
pub struct Api {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base` that authenticates with `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// The token it authenticates with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A client for `base` that authenticates with `token` over `http` (a custom CA, a fixed
    /// address for a name).
    pub fn with_client(
        base: impl Into<String>,
        token: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            base: base.into(),
            token: token.into(),
            http,
        }
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request with an optional JSON body and returns the status and JSON answer
    /// (`Value::Null` when the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// Like [`Api::call`] with extra headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        self.try_call_with(method, path, body, headers)
            .await
            .expect("orchestrator answers")
    }

    /// Like [`Api::call_with`], `None` when no answer came (the orchestrator died under it).
    pub async fn try_call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Option<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `POST /v1/workspaces`.
    pub async fn create(&self, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/workspaces", Some(body)).await
    }

    /// `GET /v1/workspaces/{id}`, panicking unless 200.
    pub async fn workspace(&self, id: &str) -> Value {
        let (s, v) = self
            .call(Method::GET, &format!("/v1/workspaces/{id}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "GET workspace {id}: {v}");
        v
    }

    /// `DELETE /v1/workspaces/{id}`.
    pub async fn delete(&self, id: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
            .await
    }

    /// Waits until the workspace reaches `state`; panics on timeout or on a terminal state that is
    /// not the one awaited, with the workspace's message.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ws = self.workspace(id).await;
            let now = ws["state"].as_str().unwrap_or_default().to_owned();
            if now == state {
                return ws;
            }
            let terminal = matches!(now.as_str(), "stopped" | "failed" | "expired" | "revoked");
            assert!(
                !terminal,
                "workspace {id} ended {now} while waiting for {state}: {ws}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "workspace {id} still {now} after {timeout:?}, waiting for {state}: {ws}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
