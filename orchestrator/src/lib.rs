//! basho-orchestrator: the REST API, the store, placement and visa checks.

pub mod config;
