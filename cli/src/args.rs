//! The command line, as clap derive structs; `main.rs` parses it and hands it to [`crate::run`].

use std::path::PathBuf;
use std::time::Duration;

use basho_core::{Ident, State};
use clap::{Args, Parser, Subcommand};

use crate::client::DEFAULT_ADDR;
use crate::output::Output;
use basho_core::duration::parse_duration;

/// basho: isolated workspaces for approved projects on federated supercomputers.
#[derive(Debug, Parser)]
#[command(name = "basho", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show and delete workspaces.
    #[command(alias = "ws")]
    Workspace(WorkspaceArgs),
    /// The sites, their datasets and capacity.
    Site(SiteArgs),
    /// A dataset's releases at a site: what consent withdrawals made, and who mounts which.
    Dataset(DatasetArgs),
    /// Revoke access by dataset, subject, project or visa: the workspaces it covers stop.
    Revoke(crate::revoke::RevokeArgs),
    /// Run the whole system in one process: orchestrator, three site agents on the local Docker
    /// engine, synthetic datasets and a dev visa issuer.
    Dev(DevArgs),
    /// Read and verify the orchestrator's hash-chained audit log (auditor or admin token).
    Audit(AuditArgs),
    /// Check a Slurm job script template, or print the script a site would submit.
    Template(crate::template::TemplateArgs),
    /// A project's metered use, in total, by site and by workspace.
    Usage(crate::usage::UsageArgs),
    /// Set or show a project's budget in core-hours and GPU-hours.
    Quota(crate::usage::QuotaArgs),
    /// Run a command in your running workspace (researcher token): its output, its exit code.
    Exec(crate::session::ExecArgs),
    /// An interactive shell in your running workspace (researcher token).
    Shell(crate::session::ShellArgs),
    /// Reach a port on your workspace's own loopback (Jupyter, RStudio, code-server).
    PortForward(crate::session::PortForwardArgs),
    /// The results airlock: ask for files to leave, review, download what was approved.
    Results(crate::results::ResultsArgs),
    /// Federated jobs: one question answered across several sites, only released partials
    /// aggregated.
    Federated(crate::federated::FederatedArgs),
}

/// Where the orchestrator is, how to authenticate, how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Orchestrator address.
    #[arg(long, env = "BASHO_ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// Bearer token (the platform's, for `basho dev`: `basho dev token --role platform`).
    #[arg(long, env = "BASHO_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM bundle an https:// orchestrator's certificate must chain to (default: the bundled
    /// web PKI roots). Plain http:// is accepted only to this machine.
    #[arg(long, env = "BASHO_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `table` for people, `json` for the API's answer exactly as sent.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

impl ClientArgs {
    /// A client of the orchestrator these arguments name.
    pub fn connect(&self) -> Result<crate::client::Client, crate::client::ApiError> {
        crate::client::Client::with_ca(&self.addr, self.token.clone(), self.ca_file.as_deref())
    }
}

/// `basho workspace ...`.
#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: WorkspaceCmd,
}

/// Workspace verbs.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCmd {
    /// Ask for a workspace for an approved project, passing the DAC's visas.
    Create(CreateArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one workspace.
    Show {
        /// Workspace id (`ws-...`).
        id: String,
    },
    /// Stop and remove a workspace.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
}

/// `basho workspace create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The approved project.
    #[arg(long)]
    pub project: Ident,
    /// Workspace template (`shell`, ...).
    #[arg(long)]
    pub template: Ident,
    /// A GA4GH visa JWT; repeat for several.
    #[arg(long = "visa", value_name = "JWT")]
    pub visas: Vec<String>,
    /// A file of visa JWTs, one per line (`-` reads stdin); repeatable.
    #[arg(long = "visa-file", value_name = "FILE")]
    pub visa_files: Vec<PathBuf>,
    /// A dataset to mount; repeat for several. Default: every dataset the visas grant.
    #[arg(long = "dataset", value_name = "ID")]
    pub datasets: Vec<Ident>,
    /// CPU cores (with --memory-mib). Default: the template's.
    #[arg(long, requires = "memory_mib")]
    pub cpus: Option<u32>,
    /// Memory in MiB (with --cpus).
    #[arg(long, requires = "cpus")]
    pub memory_mib: Option<u64>,
    /// GPUs (with --cpus and --memory-mib).
    #[arg(long, requires = "cpus")]
    pub gpus: Option<u32>,
    /// Lifetime: seconds or with a unit (`2h`, `90m`). Default: the template's.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Pin the workspace to a site.
    #[arg(long)]
    pub site: Option<Ident>,
    /// How long it may wait in the queue when no site has the compute free (`2h`, up to 7d);
    /// `0` refuses it at once instead. Default: the orchestrator's (24h).
    #[arg(long, value_parser = parse_duration)]
    pub max_queue: Option<Duration>,
    /// Idempotency key; the default is a fresh UUID, reused when the CLI retries the request.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the workspace runs (or fails).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub timeout: Duration,
}

/// `basho workspace list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this project's.
    #[arg(long)]
    pub project: Option<Ident>,
    /// Only workspaces in this state.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<State>,
    /// Only this site's.
    #[arg(long)]
    pub site: Option<Ident>,
}

/// `basho workspace delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Workspace id (`ws-...`).
    pub id: String,
    /// Wait until it has ended.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub timeout: Duration,
}

/// `basho site ...`.
#[derive(Debug, Args)]
pub struct SiteArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: SiteCmd,
}

/// Site verbs.
#[derive(Debug, Subcommand)]
pub enum SiteCmd {
    /// List the sites.
    #[command(alias = "ls")]
    List,
    /// Show the session key the orchestrator reports for a site, and the one pinned here.
    Key {
        /// The site.
        site: String,
    },
    /// Pin a site's session key after checking it with the site's admin
    /// (`basho-agent session-key` prints it), replacing any key pinned before.
    Trust {
        /// The site.
        site: String,
        /// The key, base64.
        #[arg(long)]
        key: String,
    },
    /// Forget the key pinned for a site; the next session there pins the one the orchestrator
    /// reports.
    Forget {
        /// The site.
        site: String,
    },
}

/// `basho dataset ...`.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: DatasetCmd,
}

/// Dataset verbs.
#[derive(Debug, Subcommand)]
pub enum DatasetCmd {
    /// Each release of a dataset at a site (platform, admin or auditor token): its number,
    /// digest, rows, participants, and how many running workspaces still mount it.
    Releases {
        /// The dataset ID.
        dataset: String,
        /// The site that holds it.
        #[arg(long)]
        site: String,
    },
}

/// `basho audit ...`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: AuditCmd,
}

/// Audit verbs.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the whole chain; names the first entry altered or deleted (exit 1). With the
    /// checkpoint key, also every signed checkpoint in it and in the sites' own audit logs: a
    /// chain rewritten or cut after a checkpoint fails.
    Verify {
        /// The public key checkpoints are signed with (Ed25519, PEM:
        /// `openssl pkey -in key.pem -pubout`).
        #[arg(long, value_name = "PEM")]
        checkpoint_key: Option<std::path::PathBuf>,
        /// A site's own audit log (`<state_dir>/audit.jsonl`, copied from the site); repeat for
        /// several sites.
        #[arg(long = "site-audit", value_name = "FILE")]
        site_audits: Vec<std::path::PathBuf>,
    },
    /// List entries, oldest first.
    #[command(alias = "ls")]
    List {
        /// Only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Is any workspace still reading data of a consent withdrawal's participants? Prints yes
    /// or no and which workspaces (on an older release, or holding copies); exits 1 on yes.
    Withdrawal {
        /// The withdrawal's id (`wd-...`, as `basho-agent withdraw` printed it).
        id: String,
    },
    /// What left each workspace: session bytes (exec, port-forwards) beside the files released
    /// through the airlock.
    Egress {
        /// Only this workspace.
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// `basho dev [visa|token]`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where `basho dev` keeps everything: database, tokens, issuer key, datasets, site dirs.
    #[arg(long, default_value = "./.basho", global = true)]
    pub data_dir: PathBuf,
    /// Address the API listens on; loopback only, as `basho dev` serves plain HTTP.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The platform token; default: generated once and kept in `<data-dir>/platform-token`.
    #[arg(long)]
    pub token: Option<String>,
    /// Also trust this visa issuer (`ISS=JWKS_FILE`), in the orchestrator and every agent.
    #[arg(long = "trusted-issuer", value_name = "ISS=JWKS_FILE", value_parser = parse_trusted_issuer)]
    pub trusted_issuers: Vec<(String, PathBuf)>,
    /// Workspace templates directory; default: `templates/workspaces` of this repository, or
    /// the built-in `shell` template.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// A helper instead of running the system.
    #[command(subcommand)]
    pub cmd: Option<DevCmd>,
}

/// `basho dev` helpers.
#[derive(Debug, Subcommand)]
pub enum DevCmd {
    /// Print a visa JWT minted by the dev issuer.
    Visa {
        /// The dataset it grants.
        #[arg(long)]
        dataset: Ident,
        /// The researcher (`sub`).
        #[arg(long)]
        subject: String,
        /// Lifetime: seconds or with a unit (`1h`).
        #[arg(long, value_parser = parse_duration, default_value = "3600")]
        expires_in: Duration,
    },
    /// Print an identity token for one session (BASHO_ID_TOKEN_COMMAND): the dev issuer
    /// stands in for the platform's identity provider, which the dev sites trust.
    IdToken {
        /// The researcher (`sub`), as their visas name them.
        #[arg(long)]
        subject: String,
        /// The nonce `basho exec` asks for (it sets BASHO_SESSION_NONCE for the command).
        #[arg(long, env = "BASHO_SESSION_NONCE")]
        nonce: String,
    },
    /// Withdraw participants' consent at a dev site: its agent makes the dataset's next
    /// release without their rows, new workspaces mount it and running ones move to it.
    Withdraw {
        /// The dev site (tohoku, ncbn or bbj).
        #[arg(long)]
        site: String,
        /// The dataset.
        #[arg(long)]
        dataset: Ident,
        /// A participant's pseudonymous ID, its `record_id` in the demo data (repeatable).
        #[arg(long = "participant", required = true)]
        participants: Vec<String>,
        /// Why, for the site's record.
        #[arg(long)]
        reason: String,
        /// How long to wait for `basho dev` to apply it, seconds.
        #[arg(long, default_value_t = 60)]
        wait_s: u64,
    },
    /// Print a dev token for a role.
    Token {
        /// platform (the token `basho dev` uses), admin, auditor, researcher or output_checker.
        #[arg(long)]
        role: String,
        /// The researcher's visa `sub` (researcher tokens), or the checker's own name
        /// (output_checker tokens).
        #[arg(long)]
        subject: Option<String>,
    },
}

/// Parses a workspace state name.
pub fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {s:?}; one of {}", names.join(", "))
    })
}

/// Parses `ISS=JWKS_FILE`.
pub fn parse_trusted_issuer(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((iss, file)) if !iss.is_empty() && !file.is_empty() => {
            Ok((iss.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "{s:?} is not ISS=JWKS_FILE (e.g. https://dac.example.org=./dac.jwks.json)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("basho").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_reads_every_flag() {
        let cli = parse(&[
            "workspace",
            "create",
            "--project",
            "P-0001",
            "--template",
            "shell",
            "--visa",
            "a.b.c",
            "--visa",
            "d.e.f",
            "--dataset",
            "JGAD000101",
            "--cpus",
            "2",
            "--memory-mib",
            "512",
            "--duration",
            "2h",
            "--site",
            "tohoku",
            "--wait",
            "--timeout",
            "30s",
            "--output",
            "json",
            "--addr",
            "http://x:1",
        ])
        .unwrap();
        let Command::Workspace(w) = cli.command else {
            panic!("not workspace")
        };
        assert_eq!(w.client.addr, "http://x:1");
        assert_eq!(w.client.output, Output::Json);
        let WorkspaceCmd::Create(c) = w.cmd else {
            panic!("not create")
        };
        assert_eq!(c.visas, ["a.b.c", "d.e.f"]);
        assert_eq!(c.duration, Some(Duration::from_secs(7200)));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!((c.cpus, c.memory_mib, c.gpus), (Some(2), Some(512), None));
        assert!(c.wait);
    }

    #[test]
    fn create_refuses_bad_identifiers_and_half_resources() {
        let base = ["workspace", "create", "--template", "shell", "--visa", "x"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&["--project", "P-0001"]).is_ok());
        assert!(with(&["--project", "../etc"]).is_err());
        assert!(with(&["--project", "P", "--cpus", "2"]).is_err());
        assert!(with(&["--project", "P", "--duration", "2x"]).is_err());
    }

    #[test]
    fn list_filters_validate_states() {
        assert!(parse(&["workspace", "list", "--state", "running"]).is_ok());
        let e = parse(&["workspace", "list", "--state", "gone"]).unwrap_err();
        assert!(e.to_string().contains("one of pending"), "{e}");
    }

    #[test]
    fn dev_helpers_take_the_data_dir_after_the_verb() {
        let cli = parse(&[
            "dev",
            "visa",
            "--dataset",
            "JGAD000101",
            "--subject",
            "alice",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Command::Dev(d) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(d.data_dir, PathBuf::from("/tmp/x"));
        assert!(
            matches!(d.cmd, Some(DevCmd::Visa { expires_in, .. }) if expires_in.as_secs() == 3600)
        );
    }

    #[test]
    fn trusted_issuers_split_at_the_first_equals() {
        assert_eq!(
            parse_trusted_issuer("https://dac.example.org=/etc/dac.json"),
            Ok((
                "https://dac.example.org".into(),
                PathBuf::from("/etc/dac.json")
            ))
        );
        assert!(parse_trusted_issuer("no-equals").is_err());
        assert!(parse_trusted_issuer("=file").is_err());
    }
}
