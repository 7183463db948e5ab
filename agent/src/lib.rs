//! basho-agent: the site agent. It dials out to the orchestrator, registers the site's inventory,
//! long-polls for desired workspaces and reconciles them with its backend, verifying every grant
//! against the site's own issuers, catalog and image allow-list before anything is launched.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub mod airlock;
pub mod backend;
pub mod capacity;
pub mod catalog;
pub mod client;
pub mod config;
pub mod consent;
pub mod inputs;
pub mod meter;
pub mod metrics;
pub mod reconcile;
pub mod revocations;
pub mod runner;
pub mod session;
pub mod site_audit;

#[cfg(test)]
mod fixtures;

/// Spawns `task` inside the caller's span, so what it logs keeps the site, workspace and session
/// the caller's span names.
pub(crate) fn spawn_in_span<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(task))
}

/// Everything that can stop the agent, each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The site config is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Trusted issuers' JWKS files are unusable.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Issuers(Vec<config::ConfigError>),
    /// The orchestrator client cannot be set up.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The backend cannot be built or reached at start.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The site's deny-list cannot be read.
    #[error(transparent)]
    DenyList(#[from] revocations::DenyListError),
    /// `/metrics` cannot be served.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The usage journal cannot be read or written.
    #[error(transparent)]
    Journal(#[from] meter::journal::JournalError),
    /// The session recording directory is unusable.
    #[error(transparent)]
    Recording(#[from] session::recording::RecordingDirError),
    /// The site's own audit log cannot be used.
    #[error(transparent)]
    SiteAudit(#[from] site_audit::SiteAuditError),
    /// The consent API cannot be served as configured.
    #[error("{0}")]
    ConsentApi(String),
    /// The results airlock's store cannot be made.
    #[error("the results airlock's store: {0} (airlock.store_dir)")]
    Airlock(String),
    /// The site's session key cannot be read or made.
    #[error("the session key {path}: {source} (sessions.key_file)")]
    SessionKey {
        /// Where it is kept.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The site's session key ([`basho_core::e2e`]), made on first use.
pub fn session_key(config: &config::SiteConfig) -> Result<basho_core::e2e::KeyPair, Error> {
    let path = config.sessions.key_path(&config.paths.state_dir);
    basho_core::e2e::KeyPair::load_or_create(&path).map_err(|source| Error::SessionKey {
        path: path.display().to_string(),
        source,
    })
}

/// Runs the agent until `shutdown` is cancelled, on the backend the config names. Workspaces keep
/// running when it returns; the next start adopts them again.
pub async fn run(config: config::SiteConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let backend = backend::build(&config).await?;
    run_with_backend(config, backend, shutdown).await
}

/// Runs the agent on a given backend (tests keep one fake backend across agent restarts).
pub async fn run_with_backend(
    config: config::SiteConfig,
    backend: Arc<dyn backend::Backend>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    runner::run(config, backend, shutdown).await
}

/// Reads a site config and applies the `BASHO_*` environment overrides.
pub fn load_config(path: &Path) -> Result<config::SiteConfig, Error> {
    Ok(config::load(path)?)
}

/// Every problem of a site config, empty when it is fine.
pub fn check_config(config: &config::SiteConfig) -> Vec<String> {
    config::check(config)
}
