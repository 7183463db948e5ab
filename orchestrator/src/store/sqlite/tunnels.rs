//! [`TunnelStore`] on SQLite: one replica, so the holders live in memory.

use async_trait::async_trait;
use basho_core::Ident;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::tunnels::{TunnelHolder, TunnelStore};

#[async_trait]
impl TunnelStore for SqliteStore {
    async fn hold_tunnel(&self, h: &TunnelHolder) -> Result<(), StoreError> {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.site.clone(), h.clone());
        Ok(())
    }

    async fn tunnel_holder(&self, site: &Ident) -> Result<Option<TunnelHolder>, StoreError> {
        Ok(self
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(site)
            .cloned())
    }

    async fn release_tunnel(&self, site: &Ident, replica: &str) -> Result<bool, StoreError> {
        let mut holders = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        if holders.get(site).is_some_and(|h| h.replica == replica) {
            holders.remove(site);
            return Ok(true);
        }
        Ok(false)
    }
}
