//! The orchestrator's shared state: [`Orchestrator`], a cheap handle to [`Inner`], built by
//! [`Orchestrator::open`] from the config (store, templates, issuers, site cache, tokens).

use std::sync::Arc;

use basho_core::visa::TrustedIssuers;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::placement::SiteCache;
use crate::replicas::Replicas;
use crate::revocations::DenyList;
use crate::store::postgres::is_postgres_url;
use crate::store::{PostgresStore, SqliteStore, Store};
use crate::templates::Templates;
use crate::{ConfigError, Error, audit, config, load_files, relay, tls, tokens, tunnel};

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
    pub(crate) auth: tokens::Tokens,
    pub(crate) audit: audit::AuditWriter,
    /// Cancelled when serving stops, so long-polls answer at once instead of holding shutdown.
    pub(crate) closing: CancellationToken,
    /// Terminates HTTPS when the config has `[tls]`; plain HTTP (loopback only) without.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The deny-list, read by every create and every desired-state answer.
    pub(crate) revocations: DenyList,
    /// Each site's session tunnel, while its agent holds one open.
    pub(crate) tunnels: tunnel::Tunnels,
    /// Whether this replica leads (runs the background loops), and how it keeps up with others.
    pub(crate) replicas: Replicas,
    /// This replica's id and address among its peers, for sessions relayed between them.
    pub(crate) peers: relay::Peers,
    /// Wakes the federated jobs' driver.
    pub(crate) federated: crate::wake::Wake,
    /// The queue's scheduler on this replica.
    pub(crate) queue: crate::queue::Queue,
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
        let auth = tokens::Tokens::new(&config);
        let revocations = DenyList::new(store.revocations().await?);
        let tls = match &config.tls {
            Some(tls) => {
                Some(tls::server_config(tls).map_err(|problems| ConfigError { problems })?)
            }
            None => None,
        };
        let peers = relay::Peers::new(&config).map_err(|problems| ConfigError { problems })?;
        let metrics = Metrics::new();
        metrics.leader.set(i64::from(replicas.is_leader()));
        let key =
            audit::checkpoint_key(&config.audit).map_err(|p| ConfigError { problems: vec![p] })?;
        let audit = audit::AuditWriter::new(&config.audit, key);
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                config,
                store,
                templates,
                issuers,
                sites,
                metrics,
                auth,
                audit,
                closing: CancellationToken::new(),
                tls: tls.map(tokio_rustls::TlsAcceptor::from),
                revocations,
                replicas,
                tunnels: tunnel::Tunnels::default(),
                peers,
                federated: Default::default(),
                queue: Default::default(),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}
