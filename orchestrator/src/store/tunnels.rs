//! Which replica holds each site's session tunnel, so that a replica without it can relay a
//! researcher's session to the one with it ([`crate::relay`]).

use async_trait::async_trait;
use basho_core::Ident;
use chrono::{DateTime, Utc};

use super::StoreError;

/// The replica a site's agent keeps its tunnel open to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelHolder {
    /// The site.
    pub site: Ident,
    /// How the other replicas reach the holder (its `[replica] advertise_url`).
    pub url: String,
    /// The holder's replica id, new each time a process starts.
    pub replica: String,
    /// When the tunnel came up.
    pub since: DateTime<Utc>,
}

/// The holders of the sites' tunnels.
#[async_trait]
pub trait TunnelStore: Send + Sync + 'static {
    /// Records `holder` as the site's holder, replacing any other.
    async fn hold_tunnel(&self, holder: &TunnelHolder) -> Result<(), StoreError>;

    /// The site's holder, if a replica recorded one.
    async fn tunnel_holder(&self, site: &Ident) -> Result<Option<TunnelHolder>, StoreError>;

    /// Forgets the site's holder if it is still `replica`; true when it was.
    async fn release_tunnel(&self, site: &Ident, replica: &str) -> Result<bool, StoreError>;
}
