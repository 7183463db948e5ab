//! basho-agent: the site agent. It dials out to the orchestrator, registers the site's inventory,
//! long-polls for desired workspaces and reconciles them with its backend.

pub mod backend;
pub mod config;
