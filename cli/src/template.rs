//! `basho template validate|render`: check a Slurm job script template, and print exactly the
//! script a Slurm site's agent would submit for a workspace, without a cluster or an orchestrator.
//!
//! Exit codes: 0 the template is valid / the script was printed; 1 the template (or the script it
//! renders) is refused, or a file cannot be read; 2 bad arguments (clap's own); 64 the site
//! config or workspace file is unusable (not a Slurm site, a dataset or image it does not hold).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::fake::FakeBackend;
use basho_agent::backend::slurm::script;
use basho_agent::backend::{DatasetMount, LaunchSpec};
use basho_agent::catalog::Catalog;
use basho_agent::config::{BackendConfig, Runtime, SiteConfig};
use basho_agent::reconcile::hostdirs::{HostDirs, Ownership, Prepared};
use basho_agent::reconcile::{Approved, Executor};
use basho_core::protocol::Assignment;
use basho_core::template::Template;
use basho_core::visa::TrustedIssuers;
use basho_core::workspace::Workspace;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

/// `basho template ...`.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// The verb.
    #[command(subcommand)]
    pub cmd: TemplateCmd,
}

/// Template verbs.
#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Check a Slurm job script template: it must parse, render for an example workspace and
    /// pass the script checks. Prints `ok` (exit 0) or the problem (exit 1).
    Validate {
        /// The template file (minijinja).
        file: PathBuf,
        /// Check for this runtime only (default: apptainer, docker and podman).
        #[arg(long, value_enum)]
        runtime: Option<RuntimeArg>,
    },
    /// Print the sbatch script a Slurm site would submit for a workspace.
    Render {
        /// The site config (`[backend] kind = "slurm"`).
        #[arg(long)]
        site: PathBuf,
        /// The workspace, as `basho workspace show --output json` prints it.
        #[arg(long)]
        workspace: PathBuf,
        /// The workspace template file the workspace names, for its image and command
        /// (default: `templates/workspaces/<template>.toml`).
        #[arg(long)]
        workspace_template: Option<PathBuf>,
        /// A job script template to use instead of the site's (to try a copy before installing).
        #[arg(long)]
        template: Option<PathBuf>,
        /// The moment of submission, which sets `--time` (default: now).
        #[arg(long)]
        now: Option<DateTime<Utc>>,
    },
}

/// A runtime on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Apptainer.
    Apptainer,
    /// Docker.
    Docker,
    /// Podman.
    Podman,
}

impl From<RuntimeArg> for Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Apptainer => Runtime::Apptainer,
            RuntimeArg::Docker => Runtime::Docker,
            RuntimeArg::Podman => Runtime::Podman,
        }
    }
}

/// Why a template command failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The site config or the workspace cannot be rendered for (exit 64).
    #[error("{0}")]
    Config(String),
    /// The template, or the script it renders, is refused.
    #[error("{0}")]
    Refused(#[from] script::ScriptError),
}

impl TemplateError {
    /// 64 for an unusable site config or workspace, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TemplateError::Config(_) => 64,
            _ => 1,
        }
    }
}

fn read(path: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Runs a template verb, printing to stdout.
pub fn run(args: TemplateArgs) -> Result<(), TemplateError> {
    match args.cmd {
        TemplateCmd::Validate { file, runtime } => {
            let text = read(&file)?;
            match runtime {
                Some(r) => script::validate_for(&text, r.into())?,
                None => script::validate(&text)?,
            }
            println!("ok");
            Ok(())
        }
        TemplateCmd::Render {
            site,
            workspace,
            workspace_template,
            template,
            now,
        } => {
            let out = render(
                &site,
                &workspace,
                workspace_template.as_deref(),
                template.as_deref(),
                now.unwrap_or_else(Utc::now),
            )?;
            print!("{out}");
            Ok(())
        }
    }
}

/// The script for `basho template render`.
pub fn render(
    site: &Path,
    workspace: &Path,
    workspace_template: Option<&Path>,
    template: Option<&Path>,
    now: DateTime<Utc>,
) -> Result<String, TemplateError> {
    let config =
        basho_agent::config::load(site).map_err(|e| TemplateError::Config(e.to_string()))?;
    let BackendConfig::Slurm(slurm) = &config.backend else {
        return Err(TemplateError::Config(format!(
            "{} is a {} site; only Slurm sites have job scripts",
            site.display(),
            config.backend.kind()
        )));
    };
    let ws: Workspace = serde_json::from_str(&read(workspace)?).map_err(|e| {
        TemplateError::Config(format!(
            "{} is not a workspace as `basho workspace show --output json` prints it: {e}",
            workspace.display()
        ))
    })?;
    let wt_path = workspace_template.map_or_else(
        || PathBuf::from(format!("templates/workspaces/{}.toml", ws.template)),
        Path::to_path_buf,
    );
    let wt: Template = toml::from_str(&read(&wt_path)?).map_err(|e| {
        TemplateError::Config(format!(
            "{} is not a workspace template: {}",
            wt_path.display(),
            e.to_string().trim_end()
        ))
    })?;
    let spec = launch_spec(&config, &ws, &wt).map_err(TemplateError::Config)?;
    let text = match template {
        Some(p) => read(p)?,
        None => script::template_text(slurm)?.into_owned(),
    };
    Ok(script::render(&text, slurm, &spec, now)?)
}

/// The launch spec the site's agent would build for `ws`, through the agent's own
/// [`Executor::spec`] so the two cannot drift apart. What the agent gets from elsewhere is filled
/// in here as it would be:
/// - image and command come from the workspace template (the orchestrator copies them into the
///   assignment);
/// - datasets and the image are resolved through the site's catalog and allow-list;
/// - the expiry is the workspace's (the agent may end it earlier, at the first visa expiry; no
///   visas are checked here);
/// - the host directories are where `HostDirs::prepare` puts them; they need not exist.
pub fn launch_spec(
    config: &SiteConfig,
    ws: &Workspace,
    wt: &Template,
) -> Result<LaunchSpec, String> {
    if ws.site != config.site {
        return Err(format!(
            "workspace {} is placed at site {}, but the config is site {}",
            ws.id, ws.site, config.site
        ));
    }
    let catalog = Catalog::from_config(config);
    let image = catalog
        .image(&wt.image)
        .map_err(|e| e.to_string())?
        .to_owned();
    let datasets = ws
        .datasets
        .iter()
        .map(|id| {
            catalog.dataset(id).map(|d| {
                let (release, host_path) = catalog.current_release(id, d);
                DatasetMount {
                    id: id.clone(),
                    host_path,
                    release,
                    claim: d.claim.clone(),
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let assignment = Assignment {
        id: ws.id.clone(),
        project: ws.project.clone(),
        owner: ws.owner.clone(),
        template: ws.template.clone(),
        image: wt.image.clone(),
        command: wt.command.clone(),
        datasets: ws.datasets.clone(),
        resources: ws.resources,
        expires_at: ws.expires_at,
        visas: Vec::new(),
        launch: None,
    };
    let approved = Approved {
        workspace: basho_core::WorkspaceId::parse(&ws.id).map_err(|e| e.to_string())?,
        image,
        datasets,
        expires_at: ws.expires_at,
        grants: Vec::new(),
    };
    let dirs = HostDirs::new(config.paths.clone(), Ownership::AlreadyOwned);
    // The same paths `HostDirs::prepare` creates (cli/tests/template.rs checks they agree).
    let prepared = Prepared {
        work_dir: config.paths.work_dir(&ws.id, &ws.project),
        results_dir: config.paths.results_root.join(&ws.id),
        workspace_json: dirs.state_dir(&ws.id).join("workspace.json"),
    };
    // The backend is never called: `spec` only assembles the launch spec.
    let executor = Executor::new(
        config.site.clone(),
        Arc::new(FakeBackend::new(config.site.clone(), Duration::ZERO, 0.0)),
        TrustedIssuers::new(),
        catalog,
        dirs,
        config.isolation.clone(),
    );
    Ok(executor.spec(&assignment, approved, prepared))
}
