//! The `basho-agent` binary: parses flags, sets up logging and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Exit code for a config that cannot be used (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// basho's site agent: dials out to the orchestrator and runs the site's workspaces.
#[derive(Parser)]
#[command(name = "basho-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the agent until SIGINT or SIGTERM; workspaces keep running after it stops.
    Run {
        /// The site config.
        #[arg(long, short, env = "BASHO_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Reports every problem of a site config at once; exit 64 when there is any.
    CheckConfig {
        /// The site config.
        #[arg(long, short, env = "BASHO_AGENT_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = basho_core::logging::init("info") {
        eprintln!("error: logging: {e}");
        return ExitCode::from(1);
    }
    match cli.command {
        Command::CheckConfig { config } => check(&config),
        Command::Run { config } => run(&config),
    }
}

/// The config's problems, or the config.
fn load_checked(path: &std::path::Path) -> Result<basho_agent::config::SiteConfig, Vec<String>> {
    let config = basho_agent::load_config(path).map_err(|e| vec![e.to_string()])?;
    let problems = basho_agent::check_config(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn report(path: &std::path::Path, problems: &[String]) -> ExitCode {
    eprintln!("{}: {} problem(s):", path.display(), problems.len());
    for p in problems {
        eprintln!("  - {p}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_checked(path) {
        Err(problems) => report(path, &problems),
        Ok(c) => {
            let backend = c.backend.kind();
            println!(
                "{}: ok: site {} on {backend}, orchestrator {}, {} dataset(s), {} image(s), {} trusted issuer(s), workspaces run as {}",
                path.display(),
                c.site,
                c.orchestrator.url,
                c.datasets.len(),
                c.images.len(),
                c.trusted_issuers.len(),
                c.isolation.user,
            );
            ExitCode::SUCCESS
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load_checked(path) {
        Ok(c) => c,
        Err(problems) => return report(path, &problems),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(
            async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested; workspaces keep running");
                signals.cancel();
            }
            .instrument(tracing::info_span!("signals")),
        );
        match basho_agent::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "agent stopped");
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
