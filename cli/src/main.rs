//! The `basho` binary: parses flags, sets up logging to stderr and runs the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = basho_cli::Cli::parse();
    let is_dev = matches!(&cli.command, basho_cli::args::Command::Dev(d) if d.cmd.is_none());
    if let Err(e) = init_tracing(if is_dev { "info" } else { "warn" }) {
        eprintln!("error: logging: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(basho_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs to stderr, filtered by `BASHO_LOG` (or `RUST_LOG`); JSON when stderr is not a terminal.
fn init_tracing(default: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BASHO_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter)?)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.try_init().map_err(|e| anyhow::anyhow!(e))?;
    } else {
        builder.json().try_init().map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}
