//! Starting and stopping the in-process system: the orchestrator on SQLite serving the API, one
//! agent task per demo site on the local Docker engine, all under one cancellation tree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basho_core::visa::IssuerRef;
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::{AgentAuth, Config, Limits};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::data::FEDERATION;
use super::issuer::DEV_ISSUER;
use super::sites::{Common, host_capacity, site_config};
use super::{DevError, Layout, check_trusted_issuers, data, image, secrets, templates};

/// Where `basho dev` listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// How long the orchestrator and the agents get to finish once shutdown starts. A little over
/// the orchestrator's own drain limit, so it is never cut short while draining.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(12);

/// What `basho dev` runs with.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where everything is kept; created when absent. Relative paths are made absolute.
    pub data_dir: PathBuf,
    /// Address the API listens on (port 0: any free port, see [`DevHandle::addr`]).
    pub listen: SocketAddr,
    /// The platform token; default: generated once and kept in `<data-dir>/platform-token`.
    pub token: Option<String>,
    /// Issuers trusted besides the dev issuer, by the orchestrator and every agent.
    pub trusted_issuers: Vec<IssuerRef>,
    /// Workspace templates directory; default: the repository's, or the built-in `shell`.
    pub templates: Option<PathBuf>,
}

impl DevOptions {
    /// The defaults, with `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN,
            token: None,
            trusted_issuers: Vec::new(),
            templates: None,
        }
    }
}

/// The running system. Dropping it does not stop anything: cancel the token given to
/// [`run_dev`], then [`DevHandle::wait`].
#[derive(Debug)]
pub struct DevHandle {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// The API's base URL (`http://127.0.0.1:<port>`), for `BASHO_ADDR`.
    pub api_url: String,
    /// The platform token, for `BASHO_TOKEN`.
    pub platform_token: String,
    /// The data dir, absolute.
    pub data_dir: PathBuf,
    /// The templates directory the orchestrator loaded.
    pub templates_dir: PathBuf,
    /// The demo image's ID, as every site's allow-list pins it.
    pub image_id: String,
    /// The site names, in start order.
    pub sites: Vec<String>,
    stop: CancellationToken,
    tracker: TaskTracker,
    failures: Arc<Mutex<Vec<String>>>,
}

impl DevHandle {
    /// Resolves when the system is stopping: the caller's token was cancelled, or a component
    /// failed and took the others down.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// Stops everything (the same as cancelling the caller's token, for this system only).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for shutdown to be asked for, then for the orchestrator and the agents to finish,
    /// at most [`SHUTDOWN_GRACE`]. Workspaces' containers are left running: the agents re-adopt
    /// them on the next start with the same data dir. Fails when a component failed.
    pub async fn wait(self) -> Result<(), DevError> {
        self.stop.cancelled().await;
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "components still running after the grace period; leaving them"
            );
        }
        let failures = std::mem::take(&mut *self.failures.lock().expect("failures lock"));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DevError::Failed(failures))
        }
    }

    /// What `basho dev` prints once it runs: where the API is, the token, and a walk-through.
    pub fn banner(&self) -> String {
        let basho = basho_command();
        let dd = if self.data_dir == default_data_dir_abs() {
            String::new()
        } else {
            format!(
                " --data-dir {}",
                shell_word(&self.data_dir.display().to_string())
            )
        };
        let sites: Vec<String> = FEDERATION
            .iter()
            .map(|s| {
                let ids: Vec<&str> = s.datasets.iter().map(|d| d.id).collect();
                format!("{} ({})", s.name, ids.join(", "))
            })
            .collect();
        format!(
            "\nbasho dev is running\n\
             \x20 API:            {api}\n\
             \x20 platform token: {token}\n\
             \x20 data dir:       {data}\n\
             \x20 sites:          {sites}\n\
             \n\
             Try it from another shell:\n\
             \x20 export BASHO_ADDR={api}\n\
             \x20 export BASHO_TOKEN={token}\n\
             \x20 V1=$({basho} dev visa{dd} --dataset JGAD000101 --subject alice@example.org)\n\
             \x20 V2=$({basho} dev visa{dd} --dataset JGAD000102 --subject alice@example.org)\n\
             \x20 {basho} workspace create --project P-0001 --template shell --visa \"$V1\" --visa \"$V2\" --wait\n\
             \x20 docker exec -it \"$(docker ps -q --filter label=io.basho.project=P-0001 | head -n1)\" \
             sh -c 'ls /data; head -n3 /data/JGAD000101/records.csv'\n\
             \x20 {basho} workspace list\n\
             \x20 {basho} site list\n\
             \n\
             Work inside it as alice (the site checks her identity token, which the dev issuer makes):\n\
             \x20 export BASHO_TOKEN=$({basho} dev token{dd} --role researcher --subject alice@example.org)\n\
             \x20 export BASHO_ID_TOKEN_COMMAND='{basho} dev id-token{dd} --subject alice@example.org'\n\
             \x20 {basho} shell <the workspace id from workspace list>\n\
             \n\
             Ctrl-C stops basho dev; workspaces keep running and are re-adopted on the next start.\n",
            api = self.api_url,
            token = self.platform_token,
            data = self.data_dir.display(),
            sites = sites.join(", "),
        )
    }
}

/// Starts the whole system and returns once the API is listening and every agent has been
/// started. Everything stops when `shutdown` is cancelled (or when a component fails); then
/// [`DevHandle::wait`] waits for it. Safe to run again on the same data dir: nothing made on a
/// previous start is made again.
pub async fn run_dev(opts: DevOptions, shutdown: CancellationToken) -> Result<DevHandle, DevError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| DevError::io(&opts.data_dir, e))?;
    let root =
        std::fs::canonicalize(&opts.data_dir).map_err(|e| DevError::io(&opts.data_dir, e))?;
    let layout = Layout::new(&root);

    let extra_issuers = check_trusted_issuers(&opts.trusted_issuers)?;
    if extra_issuers.iter().any(|r| r.issuer == DEV_ISSUER) {
        return Err(DevError::Config(format!(
            "--trusted-issuer {DEV_ISSUER} is the dev issuer, which is always trusted; drop it"
        )));
    }

    if !opts.listen.ip().is_loopback() {
        return Err(DevError::Config(format!(
            "--listen {} is not a loopback address; basho dev serves plain HTTP, so it listens \
             on 127.0.0.1 or ::1 only (serve other hosts with basho-orchestrator and [tls])",
            opts.listen
        )));
    }
    // Bind first: a busy port fails the start before any slow work.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DevError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DevError::Listen {
        addr: opts.listen,
        source,
    })?;
    let api_url = format!("http://{}", dial_addr(addr));

    let token_path = layout.platform_token();
    let platform_token = match opts.token {
        Some(t) => {
            secrets::save(&token_path, &t).map_err(|e| DevError::io(&token_path, e))?;
            t
        }
        None => secrets::load_or_create(&token_path).map_err(|e| DevError::io(&token_path, e))?,
    };
    let issuer_files = layout.issuer();
    issuer_files.load_or_create()?;
    let mut trusted = vec![issuer_files.issuer_ref()];
    trusted.extend(extra_issuers);
    let templates_dir = templates::resolve(opts.templates.as_deref(), &root)?;

    for site in &FEDERATION {
        for d in site.datasets {
            let (dir, created) = data::ensure(&layout.datasets(), d)
                .map_err(|e| DevError::io(&layout.datasets(), e))?;
            if created {
                progress(&format!(
                    "wrote synthetic dataset {} ({} records) to {}",
                    d.id,
                    d.records,
                    dir.display()
                ));
            }
        }
    }

    progress("checking the demo image on the local Docker engine");
    let docker = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| DevError::Docker(e.to_string()))?
        .negotiate_version()
        .await
        .map_err(|e| DevError::Docker(e.to_string()))?;
    let image_id = image::ensure_demo_image(&docker).await?;
    progress(&format!(
        "demo image {} is {image_id}",
        image::DEMO_IMAGE_NAME
    ));

    let common = Common {
        api_url: api_url.clone(),
        image: (image::DEMO_IMAGE_NAME.to_owned(), image_id.clone()),
        trusted_issuers: trusted.clone(),
        capacity: host_capacity(),
    };
    let mut agents = Vec::new();
    let mut site_configs = Vec::new();
    let mut problems = Vec::new();
    for site in &FEDERATION {
        let path = layout.agent_token(site.name);
        let token = secrets::load_or_create(&path).map_err(|e| DevError::io(&path, e))?;
        let config = site_config(&layout, site, token.clone(), &common)?;
        problems.extend(
            basho_agent::check_config(&config)
                .into_iter()
                .map(|p| format!("site {}: {p}", site.name)),
        );
        agents.push(AgentAuth {
            site: config.site.clone(),
            token,
        });
        site_configs.push(config);
    }
    if !problems.is_empty() {
        return Err(DevError::Config(problems.join("\n")));
    }

    let config = Config {
        listen: addr,
        data_dir: layout.orchestrator(),
        database: None,
        templates_dir: templates_dir.clone(),
        platform_tokens: vec![platform_token.clone()],
        agents,
        trusted_issuers: trusted,
        limits: Limits::default(),
        // One machine, loopback only (checked by the orchestrator): no certificate to manage.
        tls: None,
        plain_http_on_loopback: true,
        replica: None,
        metrics: Default::default(),
        audit: Default::default(),
        tes: Default::default(),
        federated: Default::default(),
        scheduler: Default::default(),
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| DevError::io(&config.data_dir, e))?;
    let orchestrator = Orchestrator::open(config).await?;

    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let guard = Guard {
        stop: stop.clone(),
        failures: failures.clone(),
    };
    {
        let guard = guard.clone();
        tracker.spawn(
            async move {
                let result = orchestrator.serve(listener, guard.stop.clone()).await;
                guard.finished("the orchestrator", result.err());
            }
            .instrument(tracing::info_span!("orchestrator")),
        );
    }
    let mut sites = Vec::new();
    for config in site_configs {
        let name = config.site.to_string();
        sites.push(name.clone());
        let guard = guard.clone();
        let span = tracing::info_span!("agent", site = %name);
        tracker.spawn(
            async move {
                let result = basho_agent::run(config, guard.stop.clone()).await;
                guard.finished(&format!("the {name} agent"), result.err());
            }
            .instrument(span),
        );
    }
    tracker.close();
    Ok(DevHandle {
        addr,
        api_url,
        platform_token,
        data_dir: root,
        templates_dir,
        image_id,
        sites,
        stop,
        tracker,
        failures,
    })
}

/// Records how a component ended; one that ends before shutdown takes the others down with it,
/// since the federation is useless without it.
#[derive(Clone)]
struct Guard {
    stop: CancellationToken,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Guard {
    fn finished(&self, what: &str, error: Option<impl std::fmt::Display>) {
        let failure = match error {
            Some(e) => Some(format!("{what} failed: {e}")),
            None if !self.stop.is_cancelled() => Some(format!("{what} stopped by itself")),
            None => None,
        };
        if let Some(f) = failure {
            tracing::error!(component = what, "{f}; stopping basho dev");
            self.failures.lock().expect("failures lock").push(f);
            self.stop.cancel();
        }
    }
}

/// Runs `basho dev` until SIGINT or SIGTERM (or a component fails), then stops it.
pub async fn run_until_signal(opts: DevOptions) -> Result<(), DevError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DevError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DevError::Signal)?;
    let shutdown = CancellationToken::new();
    let handle = tokio::select! {
        h = run_dev(opts, shutdown.clone()) => h?,
        _ = interrupt.recv() => return Ok(()),
        _ = terminate.recv() => return Ok(()),
    };
    print!("{}", handle.banner());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        () = handle.stopping() => {}
    }
    progress("stopping; workspaces keep running and are re-adopted on the next start");
    shutdown.cancel();
    handle.wait().await?;
    progress("stopped");
    Ok(())
}

fn progress(line: &str) {
    eprintln!("basho dev: {line}");
}

/// Where agents and clients dial: a wildcard listen address is reached on loopback.
fn dial_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn default_data_dir_abs() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|d| std::fs::canonicalize(d.join(".basho")).ok())
        .unwrap_or_default()
}

/// `basho` when that is what PATH runs, else this executable's path.
fn basho_command() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "basho".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("basho")).is_ok_and(|p| p == me))
    });
    if on_path || !is_named_basho(&me) {
        "basho".into()
    } else {
        shell_word(&me.display().to_string())
    }
}

fn is_named_basho(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "basho")
}

/// Quotes a word for a POSIX shell when it needs quoting.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listen_address_off_loopback_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for listen in ["0.0.0.0:0", "[::]:0"] {
            let mut opts = DevOptions::new(dir.path());
            opts.listen = listen.parse().unwrap();
            let err = run_dev(opts, CancellationToken::new()).await.unwrap_err();
            assert!(
                matches!(&err, DevError::Config(m) if m.contains("not a loopback address")),
                "{listen}: {err}"
            );
        }
    }

    #[test]
    fn wildcard_listen_addresses_are_dialled_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(dial_addr(a), "127.0.0.1:8080".parse().unwrap());
        let a: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(dial_addr(a), "[::1]:9".parse().unwrap());
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(dial_addr(a), a);
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/tmp/x.y"), "/tmp/x.y");
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
