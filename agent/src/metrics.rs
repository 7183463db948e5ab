//! The agent's Prometheus metrics: one [`Metrics`] struct per agent, served on `/metrics` when the
//! site config has a `[metrics]` table. Labels are bounded (backend, operation, error kind,
//! workspace state); never a workspace id.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]` in the site config: where to serve `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9464`. Plain HTTP without a token: keep it on
    /// loopback or a network only the site's Prometheus reaches.
    pub listen: SocketAddr,
}
