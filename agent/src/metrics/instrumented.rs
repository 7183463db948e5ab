//! [`InstrumentedBackend`]: any backend, with every call timed and every failure counted for
//! Prometheus (usage metering is the `meter` module's). The agent wraps its backend in one at
//! start, so each backend is instrumented the same way in one place.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use basho_core::protocol::Capacity;

use super::Metrics;
use crate::backend::{Backend, BackendError, Capabilities, LaunchSpec, Observed, UsageSample};

/// The kind label of a backend error.
pub fn error_kind(e: &BackendError) -> &'static str {
    match e {
        BackendError::Unavailable { .. } => "unavailable",
        BackendError::Refused { .. } => "refused",
        BackendError::Unsupported(_) => "unsupported",
    }
}

/// A backend whose calls feed `basho_agent_backend_operation_seconds` and
/// `basho_agent_backend_errors_total`.
pub struct InstrumentedBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for InstrumentedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedBackend")
            .field("backend", &self.inner.kind())
            .finish_non_exhaustive()
    }
}

impl InstrumentedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let out = call.await;
        let error = out.as_ref().err().map(error_kind);
        self.metrics
            .observe_backend(self.inner.kind(), op, started.elapsed(), error);
        out
    }
}

#[async_trait]
impl Backend for InstrumentedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        self.timed("launch", self.inner.launch(spec)).await
    }

    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        self.timed("inspect", self.inner.inspect(workspace)).await
    }

    async fn stop(&self, workspace: &str) -> Result<(), BackendError> {
        self.timed("stop", self.inner.stop(workspace)).await
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        self.timed("list_managed", self.inner.list_managed()).await
    }

    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
        self.timed("usage", self.inner.usage(workspace)).await
    }

    async fn site_load(&self) -> Result<Option<crate::backend::SiteLoad>, BackendError> {
        self.timed("site_load", self.inner.site_load()).await
    }

    async fn site_limit(&self) -> Result<Option<(Capacity, String)>, BackendError> {
        self.timed("site_limit", self.inner.site_limit()).await
    }

    async fn requeue(&self, workspace: &str) -> Result<(), BackendError> {
        self.timed("requeue", self.inner.requeue(workspace)).await
    }

    async fn exec(
        &self,
        workspace: &str,
        req: &crate::backend::exec::ExecRequest,
    ) -> Result<crate::backend::exec::ExecIo, BackendError> {
        self.timed("exec", self.inner.exec(workspace, req)).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn changed(&self) {
        self.inner.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use basho_core::Ident;

    use super::*;
    use crate::backend::fake::FakeBackend;
    use crate::backend::suite::{example_spec, run_suite};

    #[tokio::test]
    async fn passes_the_conformance_suite_and_counts_every_call() {
        let site = Ident::parse("sim").unwrap();
        let fake = Arc::new(FakeBackend::new(site.clone(), Duration::ZERO, 0.0));
        let metrics = Arc::new(Metrics::new("sim", "fake"));
        let metered = InstrumentedBackend::new(fake, metrics.clone());
        assert_eq!(metered.kind(), "fake");
        run_suite(&metered, |ws| example_spec(&site, ws))
            .await
            .unwrap();
        let text = metrics.encode();
        for op in ["launch", "inspect", "stop", "list_managed", "usage"] {
            let series = format!(
                "basho_agent_backend_operation_seconds_count{{backend=\"fake\",op=\"{op}\"}} "
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[tokio::test]
    async fn counts_failures_by_kind_and_passes_them_on() {
        let fake = Arc::new(FakeBackend::new(
            Ident::parse("sim").unwrap(),
            Duration::ZERO,
            0.0,
        ));
        let metrics = Arc::new(Metrics::new("sim", "fake"));
        let metered = InstrumentedBackend::new(fake.clone(), metrics.clone());
        fake.set_unavailable(true);
        assert!(matches!(
            metered.list_managed().await,
            Err(BackendError::Unavailable { .. })
        ));
        let text = metrics.encode();
        let series = "basho_agent_backend_errors_total{backend=\"fake\",op=\"list_managed\",kind=\"unavailable\"} 1";
        assert!(text.contains(series), "{text}");
    }
}
