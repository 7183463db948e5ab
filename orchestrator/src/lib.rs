//! basho-orchestrator: the REST API, the store, placement and visa checks.
//!
//! [`Orchestrator::open`] loads everything the config names and refuses to start on any problem;
//! [`Orchestrator::serve`] runs the API and the background loops until the token is cancelled.

//!
//! Layout: `context.rs` holds the shared state, `server.rs` serves it; the domain modules
//! (`workspaces`, `revocations`, `admission`, `placement`, `quota`, `expiry`, `tokens`, `tunnel`)
//! hold the rules, and `api/` only translates HTTP into calls on them.

use std::path::Path;

use basho_core::visa::TrustedIssuers;

pub mod admission;
pub mod api;
pub mod audit;
pub mod config;
mod context;
pub mod expiry;
pub mod federated;
pub mod metrics;
pub mod placement;
pub mod queue;
pub mod quota;
pub mod relay;
pub mod releases;
pub mod replicas;
pub mod revocations;
pub mod scheduler;
mod server;
pub mod store;
pub mod templates;
pub mod tls;
pub mod tokens;
pub mod tunnel;
pub mod wake;
pub mod workspaces;

pub use config::{Config, ConfigError};
pub use context::Orchestrator;
pub use server::SHUTDOWN_GRACE;

use crate::store::StoreError;
use crate::templates::Templates;

/// Everything that can stop the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config, a template or an issuer's JWKS is unusable; every problem is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Serving failed (the listener broke).
    #[error("serving the API failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Reads the config file, applies `BASHO_*` overrides and checks it, including the templates and
/// JWKS files it names; every problem is reported at once.
pub fn load_config(path: &Path) -> Result<Config, Error> {
    let (config, mut problems) = config::read_config(path)?;
    problems.extend(config.validate());
    problems.extend(load_files(&config).2);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems }.into())
    }
}

/// Loads the templates and the trusted issuers' keys the config names, with every problem found.
pub(crate) fn load_files(config: &Config) -> (Option<Templates>, TrustedIssuers, Vec<String>) {
    let mut problems = Vec::new();
    let templates = match Templates::load(&config.templates_dir) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut issuers = TrustedIssuers::new();
    for (i, t) in config.trusted_issuers.iter().enumerate() {
        let loaded = std::fs::read_to_string(&t.jwks_file)
            .map_err(|e| format!("{}: {e}", t.jwks_file.display()))
            .and_then(|json| issuers.add_json(&t.issuer, &json));
        if let Err(e) = loaded {
            problems.push(format!(
                "trusted_issuers[{i}] ({}): {e}; point jwks_file at the issuer's JWKS document",
                t.issuer
            ));
        }
    }
    if let Some(tls) = &config.tls
        && let Err(more) = tls::server_config(tls)
    {
        problems.extend(more);
    }
    if let Err(e) = audit::checkpoint_key(&config.audit) {
        problems.push(e);
    }
    (templates, issuers, problems)
}
