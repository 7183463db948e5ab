//! The `basho-agent` binary: parses flags, sets up logging and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[path = "main/consent.rs"]
mod consent_cmd;

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
    /// Prints the site's session key (made when missing): the key researchers' command lines
    /// pin, to give them (`basho site trust SITE --key KEY`) or to confirm its fingerprint.
    SessionKey {
        /// The site config.
        #[arg(long, short, env = "BASHO_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Makes a break-glass approver's key: `<dir>/<name>.pem` (0600, kept by the approver) and
    /// `<dir>/<name>.jwks.json` (for the site config's `[[sessions.approvers]]`).
    ApproverKey {
        /// The approver's name, the `issuer` the site config gives it.
        #[arg(long)]
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Signs a break-glass approval and prints it: an administrator enters one workspace, for
    /// one stated reason, once (`basho exec --break-glass REASON --approval FILE`).
    Approve {
        /// The approver's key (`approver-key`).
        #[arg(long)]
        key: PathBuf,
        /// The approver's name, as the site config gives it.
        #[arg(long)]
        name: String,
        /// The workspace (`ws-...`).
        #[arg(long)]
        workspace: String,
        /// Who is let in (for the site's record).
        #[arg(long)]
        who: String,
        /// The reason, exactly as the administrator will give it to --break-glass.
        #[arg(long)]
        reason: String,
        /// How long the approval may be used: seconds or with a unit (`30m`), at most 24 h.
        #[arg(long, default_value = "1h", value_parser = basho_core::duration::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Records a consent withdrawal and waits for the running agent to make the dataset's next
    /// release without those participants (new workspaces mount it). Exit 75 when the agent did
    /// not apply it in time: it stays recorded and is applied when the agent runs.
    Withdraw {
        /// The site config.
        #[arg(long, short, env = "BASHO_AGENT_CONFIG")]
        config: PathBuf,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// A pseudonymous participant ID (repeatable).
        #[arg(long = "participant")]
        participants: Vec<String>,
        /// A file of participant IDs, one per line (`#` comments and blank lines skipped).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Why, for the site's record.
        #[arg(long)]
        reason: String,
        /// How long to wait for the agent, seconds.
        #[arg(long, default_value_t = 120)]
        wait_s: u64,
    },
    /// Lists a dataset's releases: which is current, what each removed (counts, never IDs).
    Releases {
        /// The site config.
        #[arg(long, short, env = "BASHO_AGENT_CONFIG")]
        config: PathBuf,
        /// The dataset.
        #[arg(long)]
        dataset: String,
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
        Command::SessionKey { config } => session_key(&config),
        Command::ApproverKey { name, dir } => approver_key(&name, &dir),
        Command::Approve {
            key,
            name,
            workspace,
            who,
            reason,
            ttl,
        } => approve(&key, &name, &workspace, &who, &reason, ttl),
        Command::Withdraw {
            config,
            dataset,
            participants,
            file,
            reason,
            wait_s,
        } => consent_cmd::withdraw(&config, &dataset, participants, file, &reason, wait_s),
        Command::Releases { config, dataset } => consent_cmd::releases(&config, &dataset),
    }
}

pub(crate) fn fail(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::from(1)
}

fn session_key(path: &std::path::Path) -> ExitCode {
    let config = match basho_agent::load_config(path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match basho_agent::session_key(&config) {
        Ok(key) => {
            println!(
                "site {}: session key {} {}\nresearchers pin it with: basho site trust {} --key {}",
                config.site,
                basho_core::e2e::encode_key(&key.public),
                basho_core::e2e::fingerprint(&key.public),
                config.site,
                basho_core::e2e::encode_key(&key.public)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn approver_key(name: &str, dir: &std::path::Path) -> ExitCode {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let issuer = basho_core::visa::mint::Issuer::generate(name);
    let (pem, jwks) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.jwks.json")),
    );
    let saved = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pem)
        .and_then(|mut f| f.write_all(issuer.ec_pem().as_bytes()));
    if let Err(e) = saved {
        return fail(format!("cannot write {}: {e}", pem.display()));
    }
    if let Err(e) = std::fs::write(&jwks, issuer.jwks_json()) {
        return fail(format!("cannot write {}: {e}", jwks.display()));
    }
    println!(
        "approver {name}: key {} (keep it with the approver), public keys {}\n\
         add to the site config:\n\n[[sessions.approvers]]\nissuer = {name:?}\njwks_file = {:?}",
        pem.display(),
        jwks.display(),
        jwks.display().to_string()
    );
    ExitCode::SUCCESS
}

fn approve(
    key: &std::path::Path,
    name: &str,
    workspace: &str,
    who: &str,
    reason: &str,
    ttl: std::time::Duration,
) -> ExitCode {
    use basho_core::proof::{APPROVAL_TYP, MAX_APPROVAL_S, approval_claims};
    let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    if ttl_s == 0 || ttl_s > MAX_APPROVAL_S {
        return fail(format!("--ttl must be between 1 s and {MAX_APPROVAL_S} s"));
    }
    if reason.trim().is_empty() || who.trim().is_empty() {
        return fail("--reason and --who must say something");
    }
    let pem = match std::fs::read_to_string(key) {
        Ok(p) => format!("{}\n", p.trim()),
        Err(e) => return fail(format!("cannot read {}: {e}", key.display())),
    };
    let issuer = match basho_core::visa::mint::Issuer::from_ec_pem(name, &pem) {
        Ok(i) => i,
        Err(e) => return fail(format!("{}: {e}", key.display())),
    };
    let now = chrono::Utc::now().timestamp();
    let claims = approval_claims(name, who, workspace, reason.trim(), now, ttl_s);
    println!("{}", issuer.sign_claims(&claims, Some(APPROVAL_TYP)));
    ExitCode::SUCCESS
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
                "{}: ok: site {} on {backend}, orchestrator {}, {} dataset(s), {} image(s), {} trusted issuer(s), workspaces run as {}, sessions {}",
                path.display(),
                c.site,
                c.orchestrator.url,
                c.datasets.len(),
                c.images.len(),
                c.trusted_issuers.len(),
                c.isolation.user,
                match c.sessions.proof {
                    basho_agent::session::proof::ProofPolicy::None =>
                        "on the orchestrator's word (proof = \"none\")".to_owned(),
                    basho_agent::session::proof::ProofPolicy::Required => format!(
                        "proved by {} identity provider(s) or {} approver(s)",
                        c.sessions.identity_issuers.len(),
                        c.sessions.approvers.len()
                    ),
                },
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
