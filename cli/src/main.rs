//! The `basho` binary: parses flags, sets up logging to stderr and runs the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = basho_cli::Cli::parse();
    let is_dev = matches!(&cli.command, basho_cli::args::Command::Dev(d) if d.cmd.is_none());
    if let Err(e) = basho_core::logging::init(if is_dev { "info" } else { "warn" }) {
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
    let result = runtime.block_on(basho_cli::run(cli));
    // A session's read of a terminal's stdin must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
