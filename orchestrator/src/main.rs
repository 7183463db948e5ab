//! `basho-orchestrator serve --config orchestrator.toml`: parses flags, sets up logging and runs
//! the orchestrator library until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use basho_orchestrator::{Error, Orchestrator, load_config};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_CONFIG: the configuration is unusable.
const EX_CONFIG: u8 = 64;
/// The command line is wrong (the code clap exits with too).
const EX_USAGE: u8 = 2;

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
    /// Create, list and revoke API tokens kept in the orchestrator's database.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once (only its SHA-256 is kept).
    Create {
        /// The config file naming the database.
        #[arg(long, env = "BASHO_CONFIG")]
        config: PathBuf,
        /// platform, admin, auditor, researcher or agent.
        #[arg(long)]
        role: String,
        /// The researcher's visa `sub` (researcher tokens).
        #[arg(long)]
        subject: Option<String>,
        /// The agent's site (agent tokens).
        #[arg(long)]
        site: Option<String>,
        /// A note saying whom the token is for.
        #[arg(long)]
        name: Option<String>,
        /// How long it lives (`90d`, `12h`, `3600`): 60 s to three years. Default: 90 days for
        /// platform and agent tokens, 12 hours for admin, auditor and researcher tokens.
        #[arg(long, value_parser = basho_core::duration::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List tokens: id, role, subject or site, created, expires, revoked, name (never the token).
    List {
        /// The config file naming the database.
        #[arg(long, env = "BASHO_CONFIG")]
        config: PathBuf,
    },
    /// Revoke a token by id.
    Revoke {
        /// The config file naming the database.
        #[arg(long, env = "BASHO_CONFIG")]
        config: PathBuf,
        /// The token's id (`tok-...`).
        id: String,
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

/// Whoever runs the `token` commands on the orchestrator's host, as named in the audit log.
const OPERATOR: &str = "operator";

async fn token(command: TokenCommand) -> Result<ExitCode, Error> {
    use basho_orchestrator::store::Role;
    use basho_orchestrator::tokens::{self, NewToken, TokenError};
    let usage = |e: String| {
        eprintln!("basho-orchestrator: {e}");
        Ok(ExitCode::from(EX_USAGE))
    };
    match command {
        TokenCommand::Create {
            config,
            role,
            subject,
            site,
            name,
            ttl,
        } => {
            let Some(role) = Role::parse(&role) else {
                return usage(format!(
                    "unknown role {role:?}; use platform, admin, auditor, researcher or agent"
                ));
            };
            let site = match site.map(|s| basho_core::Ident::parse(&s)).transpose() {
                Ok(s) => s,
                Err(e) => return usage(format!("--site: {e}")),
            };
            let store = tokens::open_store(&config).await?;
            let new = NewToken {
                role,
                subject,
                site,
                name,
                ttl,
            };
            match tokens::create(&*store, new, OPERATOR).await {
                Ok((rec, secret)) => {
                    println!("id:      {}", rec.id);
                    println!("role:    {}", rec.role);
                    if let Some(e) = rec.expires_at {
                        println!("expires: {}", e.to_rfc3339());
                    }
                    println!("token:   {secret}");
                    eprintln!("the token is shown only now; store it safely");
                    Ok(ExitCode::SUCCESS)
                }
                Err(TokenError::Usage(m)) => usage(m),
                Err(TokenError::Store(e)) => Err(e.into()),
                Err(e @ TokenError::NotFound(_)) => usage(e.to_string()),
            }
        }
        TokenCommand::List { config } => {
            let store = tokens::open_store(&config).await?;
            println!("ID\tROLE\tSUBJECT/SITE\tCREATED\tEXPIRES\tREVOKED\tNAME");
            for t in store.tokens().await? {
                println!("{}", tokens::list_line(&t));
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { config, id } => {
            let store = tokens::open_store(&config).await?;
            match tokens::revoke(&*store, &id, OPERATOR).await {
                Ok(rec) => {
                    println!("revoked {}", rec.id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(TokenError::Store(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("basho-orchestrator: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = basho_core::logging::init("info") {
        eprintln!("error: logging: {e}");
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Serve { config } => serve(config).await.map(|()| ExitCode::SUCCESS),
        Command::Token { command } => token(command).await,
    };
    match result {
        Ok(code) => code,
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
