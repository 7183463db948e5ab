//! `basho-orchestrator serve --config orchestrator.toml`: parses flags, sets up logging and runs
//! the orchestrator library until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use basho_orchestrator::{Error, Orchestrator, load_config};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_CONFIG: the configuration is unusable.
const EX_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "basho-orchestrator", version, about = "basho's orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST API and run the background loops.
    Serve {
        /// The config file (TOML); BASHO_LISTEN, BASHO_DATA_DIR and BASHO_DATABASE override it.
        #[arg(long, env = "BASHO_CONFIG")]
        config: PathBuf,
    },
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}

async fn serve(config: PathBuf) -> Result<(), Error> {
    let config = load_config(&config)?;
    let listen = config.listen;
    let orchestrator = Orchestrator::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(Error::Serve)?;
    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    orchestrator.serve(listener, token).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = basho_core::logging::init("info") {
        eprintln!("error: logging: {e}");
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Config(e)) => {
            eprintln!("basho-orchestrator: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("basho-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}
