//! basho-cli: the `basho` command. Client commands talk to the orchestrator's REST API
//! (`workspace`, `site`, `audit`); `basho dev` runs the whole system in one process.

pub mod args;
pub mod audit;
pub mod client;
pub mod dataset;
pub mod dev;
pub mod error;
pub mod federated;
pub mod output;
pub mod pins;
pub mod proof;
pub mod results;
pub mod revoke;
pub mod session;
pub mod site;
pub mod template;
pub mod usage;
pub mod wait;
pub mod workspace;

pub use args::Cli;
pub use error::Error;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        args::Command::Workspace(a) => workspace::run(a).await,
        args::Command::Site(a) => site::run(a).await,
        args::Command::Dataset(a) => dataset::run(a).await,
        args::Command::Federated(a) => federated::run(a).await,
        args::Command::Revoke(a) => revoke::run(a).await,
        args::Command::Dev(a) => dev::command(a).await,
        args::Command::Audit(a) => audit::run(a).await,
        args::Command::Template(a) => Ok(template::run(a)?),
        args::Command::Usage(a) => usage::usage(a).await,
        args::Command::Quota(a) => usage::quota(a).await,
        args::Command::Exec(a) => session::exec(a).await,
        args::Command::Shell(a) => session::shell(a).await,
        args::Command::PortForward(a) => session::port_forward(a).await,
        args::Command::Results(a) => results::run(a).await,
    }
}
