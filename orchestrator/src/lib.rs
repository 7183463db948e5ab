//! basho-orchestrator: the REST API, the store, placement and visa checks.
//!
//! [`Orchestrator::open`] loads everything the config names and refuses to start on any problem;
//! [`Orchestrator::serve`] runs the API and the background loops until the token is cancelled.

use std::future::IntoFuture as _;
use std::path::Path;
use std::sync::Arc;

use basho_core::State;
use basho_core::visa::TrustedIssuers;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub mod admission;
pub mod api;
pub mod audit;
pub mod config;
pub mod loops;
pub mod metrics;
pub mod quota;
pub mod relay;
pub mod replicas;
pub mod scheduler;
pub mod sites;
pub mod store;
pub mod templates;
pub mod tls;
pub mod tokens;
pub mod tunnel;

pub use config::{Config, ConfigError};

use crate::metrics::Metrics;
use crate::replicas::Replicas;
use crate::sites::SiteCache;
use crate::store::postgres::is_postgres_url;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError, Transition};
use crate::templates::Templates;

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
fn load_files(config: &Config) -> (Option<Templates>, TrustedIssuers, Vec<String>) {
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
    (templates, issuers, problems)
}

/// The running orchestrator: a cheap handle to shared state.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("listen", &self.inner.config.listen)
            .finish_non_exhaustive()
    }
}

/// The shared state behind [`Orchestrator`].
pub(crate) struct Inner {
    pub(crate) config: config::Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) templates: Templates,
    pub(crate) issuers: TrustedIssuers,
    pub(crate) sites: SiteCache,
    pub(crate) metrics: Metrics,
    pub(crate) auth: api::auth::Tokens,
    pub(crate) audit: audit::AuditWriter,
    /// Cancelled when serving stops, so long-polls answer at once instead of holding shutdown.
    pub(crate) closing: CancellationToken,
    /// Terminates HTTPS when the config has `[tls]`; plain HTTP (loopback only) without.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The deny-list, read by every create and every desired-state answer. Revocations are
    /// append-only; this replica's are added as it records them and other replicas' arrive
    /// through [`replicas`], so memory follows the store without a query per request.
    pub(crate) revocations: std::sync::RwLock<Arc<Vec<basho_core::revocation::Revocation>>>,
    /// Each site's session tunnel, while its agent holds one open.
    pub(crate) tunnels: tunnel::Tunnels,
    /// Whether this replica leads (runs the background loops), and how it keeps up with others.
    pub(crate) replicas: Replicas,
    /// This replica's id and address among its peers, for sessions relayed between them.
    pub(crate) peers: relay::Peers,
}

impl Inner {
    /// Every revocation, oldest first.
    pub(crate) fn revocations(&self) -> Arc<Vec<basho_core::revocation::Revocation>> {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a revocation just recorded in the store.
    pub(crate) fn remember_revocation(&self, r: basho_core::revocation::Revocation) {
        let mut list = self.revocations.write().unwrap_or_else(|e| e.into_inner());
        if list.last().is_none_or(|last| last.seq < r.seq) {
            Arc::make_mut(&mut list).push(r);
        }
    }

    /// Replaces the deny-list with the store's, unless memory already holds as many (the list
    /// only grows, so a shorter read is an older one).
    pub(crate) fn replace_revocations(&self, stored: Vec<basho_core::revocation::Revocation>) {
        let mut list = self.revocations.write().unwrap_or_else(|e| e.into_inner());
        if stored.len() > list.len() {
            *list = Arc::new(stored);
        }
    }
}

impl Orchestrator {
    /// Opens the store (applying migrations), loads and validates the templates and the trusted
    /// issuers' JWKS files. Every config, template and issuer problem is reported at once.
    pub async fn open(config: config::Config) -> Result<Orchestrator, Error> {
        let mut problems = config.validate();
        let (templates, issuers, more) = load_files(&config);
        problems.extend(more);
        let Some(templates) = templates.filter(|_| problems.is_empty()) else {
            return Err(ConfigError { problems }.into());
        };
        let (store, replicas): (Arc<dyn Store>, Replicas) = match config.database.as_deref() {
            Some(url) if is_postgres_url(url) => {
                let store = PostgresStore::open(url).await?;
                (Arc::new(store.clone()), Replicas::postgres(store))
            }
            database => (
                Arc::new(SqliteStore::open(database, &config.data_dir).await?),
                Replicas::single(),
            ),
        };
        Self::with_store(config, store, replicas, templates, issuers).await
    }

    /// Builds an orchestrator on a given store (embedding and tests).
    pub(crate) async fn with_store(
        config: config::Config,
        store: Arc<dyn Store>,
        replicas: Replicas,
        templates: Templates,
        issuers: TrustedIssuers,
    ) -> Result<Orchestrator, Error> {
        let stored_sites = store.sites().await?;
        let counts = store.counts().await?;
        let mut revisions = std::collections::BTreeMap::new();
        for s in &stored_sites {
            let (rev, _) = store.desired(&s.registration.site).await?;
            revisions.insert(s.registration.site.clone(), rev);
        }
        let sites = SiteCache::load(stored_sites, &counts, &revisions);
        let auth = api::auth::Tokens::new(&config);
        let revocations = std::sync::RwLock::new(Arc::new(store.revocations().await?));
        let tls = match &config.tls {
            Some(tls) => {
                Some(tls::server_config(tls).map_err(|problems| ConfigError { problems })?)
            }
            None => None,
        };
        let peers = relay::Peers::new(&config).map_err(|problems| ConfigError { problems })?;
        let metrics = Metrics::new();
        metrics.leader.set(i64::from(replicas.is_leader()));
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                config,
                store,
                templates,
                issuers,
                sites,
                metrics,
                auth,
                audit: audit::AuditWriter::default(),
                closing: CancellationToken::new(),
                tls: tls.map(tokio_rustls::TlsAcceptor::from),
                revocations,
                replicas,
                tunnels: tunnel::Tunnels::default(),
                peers,
            }),
        })
    }

    /// The HTTP API (every route, with auth, body limits, metrics and the error fallback).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves the API on `listener` and runs the background loops until `shutdown` is cancelled;
    /// then stops accepting, lets in-flight requests finish (long-polls answer at once) and
    /// waits for the loops.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let tracker = TaskTracker::new();
        self.spawn_loops(&tracker, shutdown.clone());
        tracker.close();
        if let Ok(addr) = listener.local_addr() {
            let scheme = if self.inner.tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(%addr, scheme, "serving the basho API");
        }
        let closing = self.inner.closing.clone();
        let stop = shutdown.clone();
        let signal = async move {
            stop.cancelled().await;
            closing.cancel();
        };
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match self.inner.tls.clone() {
                Some(acceptor) => Box::pin(tls::serve(listener, self.router(), acceptor, signal)),
                None => Box::pin(
                    // No Nagle delay: a session's keystrokes and echoes are single small frames.
                    axum::serve(
                        axum::serve::ListenerExt::tap_io(listener, |tcp| {
                            let _ = tcp.set_nodelay(true);
                        }),
                        self.router(),
                    )
                    .with_graceful_shutdown(signal)
                    .into_future(),
                ),
            };
        // Draining is bounded: a client holding a connection open cannot stall shutdown.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            r = server => r,
            () = grace => {
                tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the grace period; stopping anyway");
                Ok(())
            }
        };
        shutdown.cancel();
        tracker.wait().await;
        tracing::info!("the basho API stopped");
        result.map_err(Error::Serve)
    }

    /// Whether this replica runs the background loops now (always, on SQLite).
    pub fn is_leader(&self) -> bool {
        self.inner.replicas.is_leader()
    }

    /// Every change of leadership, as this replica sees it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.replicas.subscribe()
    }

    /// Starts the expiry loop, the silent-agent sweep and the quota loop on `tracker` (they act
    /// only while this replica leads), and on PostgreSQL leader election and the replica
    /// listener and refresh.
    pub fn spawn_loops(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        replicas::spawn(self, tracker, &shutdown);
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { loops::expiry(me, stop).await }
                .instrument(tracing::info_span!("expiry_loop")),
        );
        let me = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { loops::silent_agents(me, stop).await }
                .instrument(tracing::info_span!("silent_agent_sweep")),
        );
        let me = self.clone();
        tracker.spawn(
            async move { quota::quota_loop(me, shutdown).await }
                .instrument(tracing::info_span!("quota_loop")),
        );
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Moves a workspace to `to` through the store and keeps the site cache in step: compute is
    /// released when the workspace ends, and the site's agent is woken.
    pub(crate) async fn transition(
        &self,
        id: &str,
        to: State,
        message: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let t = self
            .inner
            .store
            .transition(id, to, message, Utc::now())
            .await?;
        if let Transition::Changed { from, record } = &t {
            let w = &record.workspace;
            if !from.is_terminal() && w.state.is_terminal() {
                self.inner.sites.release(&w.site, &w.resources);
            }
            self.inner.sites.publish(&w.site, record.revision);
            tracing::info!(workspace = %w.id, site = %w.site, from = %from, to = %w.state, "workspace changed state");
        }
        Ok(t)
    }
}
