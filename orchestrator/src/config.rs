//! The orchestrator config (`orchestrator.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use basho_core::Ident;
use basho_core::visa::IssuerRef;
use serde::{Deserialize, Serialize};

/// The whole orchestrator config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve the API on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database (`basho.db`).
    pub data_dir: PathBuf,
    /// Store URL: `postgres://…` selects the PostgreSQL store (several replicas may share it);
    /// anything else is SQLite (`sqlite::memory:` for tests). Defaults to the file under
    /// `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// Directory of workspace templates (`<name>.toml`).
    pub templates_dir: PathBuf,
    /// Bearer tokens of the platform.
    #[serde(default)]
    pub platform_tokens: Vec<String>,
    /// One token per site agent.
    #[serde(default)]
    pub agents: Vec<AgentAuth>,
    /// Issuers whose visas are accepted.
    #[serde(default)]
    pub trusted_issuers: Vec<IssuerRef>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// The certificate and key the API is served with over HTTPS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP instead, allowed only when `listen` is a loopback address (development,
    /// tests, `basho dev`).
    #[serde(default)]
    pub plain_http_on_loopback: bool,
    /// How the other replicas on the same PostgreSQL database reach this one, so a session
    /// opened on any replica reaches the site's tunnel wherever it is held.
    #[serde(default)]
    pub replica: Option<ReplicaConfig>,
    /// Where Prometheus scrapes: `/metrics` on the API needs a platform, admin or auditor token;
    /// `listen` also serves it without one on a separate plain-HTTP listener (a scrape network).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Signed checkpoints of the audit chain.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The GA4GH TES endpoint.
    #[serde(default)]
    pub tes: TesConfig,
    /// Federated jobs.
    #[serde(default)]
    pub federated: FederatedConfig,
    /// The queue and fair share.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
}

/// The `[scheduler]` table: how long workspaces wait and how recent use weighs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long a workspace waits in the queue when its request sets no `max_queue_s`.
    #[serde(default = "default_max_queue_s")]
    pub max_queue_s: u64,
    /// Fair share's half-life: use this long ago weighs half as much as use now.
    #[serde(default = "default_half_life_s")]
    pub half_life_s: u64,
    /// How many core-seconds one GPU-second counts as in fair share.
    #[serde(default = "default_gpu_weight")]
    pub gpu_weight: f64,
}

fn default_max_queue_s() -> u64 {
    basho_core::queue::DEFAULT_QUEUE_S
}

fn default_half_life_s() -> u64 {
    7 * 24 * 3600
}

fn default_gpu_weight() -> f64 {
    8.0
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_queue_s: default_max_queue_s(),
            half_life_s: default_half_life_s(),
            gpu_weight: default_gpu_weight(),
        }
    }
}

/// The `[federated]` table: where federated jobs' steps come from and where they aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedConfig {
    /// The workspace template whose resources and longest duration steps take when they name
    /// none; its image and command are the step's instead.
    #[serde(default = "default_tes_template")]
    pub template: basho_core::Ident,
    /// Where a job that names no aggregation site aggregates; none: the first of its sites.
    #[serde(default)]
    pub aggregation_site: Option<basho_core::Ident>,
}

impl Default for FederatedConfig {
    fn default() -> Self {
        Self {
            template: default_tes_template(),
            aggregation_site: None,
        }
    }
}

/// The `[tes]` table: how tasks at `/ga4gh/tes/v1` become batch workspaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TesConfig {
    /// The workspace template whose resources and longest duration tasks take when they name
    /// none; its image and command are the task's executor's instead.
    #[serde(default = "default_tes_template")]
    pub template: basho_core::Ident,
    /// The project of a task without a `basho_project` tag; none: the tag is required.
    #[serde(default)]
    pub project: Option<basho_core::Ident>,
    /// Who runs this service, as service-info names them.
    #[serde(default = "default_organization_name")]
    pub organization_name: String,
    /// Their web address (or another URI), as service-info names it.
    #[serde(default = "default_organization_url")]
    pub organization_url: String,
}

impl Default for TesConfig {
    fn default() -> Self {
        Self {
            template: default_tes_template(),
            project: None,
            organization_name: default_organization_name(),
            organization_url: default_organization_url(),
        }
    }
}

fn default_organization_name() -> String {
    "basho".into()
}

fn default_organization_url() -> String {
    "urn:basho:tes".into()
}

fn default_tes_template() -> basho_core::Ident {
    basho_core::Ident::parse("batch").expect("a plain identifier")
}

/// The `[audit]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs
    /// checkpoints of the chain's head; none, no checkpoints.
    #[serde(default)]
    pub checkpoint_key_file: Option<PathBuf>,
    /// A checkpoint after this many new entries...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or once this many seconds have passed since the last one and the chain has grown.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_s: u64,
}

fn default_checkpoint_every() -> u64 {
    100
}

fn default_checkpoint_interval() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_key_file: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval_s: default_checkpoint_interval(),
        }
    }
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate listener serving only `/metrics`, without a token.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// This replica as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// The base URL peers dial to relay a session here, e.g. `https://orch-0.internal:8443`;
    /// plain `http://` only to a loopback address.
    pub advertise_url: String,
    /// The CA bundle (PEM) that peers' certificates are verified against; by default the
    /// certificates in `[tls] cert_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The orchestrator's TLS identity (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate, followed by any intermediates it needs.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A site agent's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAuth {
    /// Site name.
    pub site: Ident,
    /// Its bearer token.
    pub token: String,
}

/// Request and timing limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Longest long-poll an agent may ask for, seconds.
    #[serde(default = "default_poll")]
    pub long_poll_max_s: u64,
    /// A site not heard from for this long has its workspaces shown `unknown`, seconds.
    #[serde(default = "default_silent")]
    pub agent_silent_s: u64,
    /// How long a project may run past its exhausted quota before its workspaces are stopped,
    /// seconds.
    #[serde(default = "default_quota_grace")]
    pub quota_grace_s: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_body() -> usize {
    256 * 1024
}
fn default_poll() -> u64 {
    30
}
fn default_silent() -> u64 {
    90
}
fn default_quota_grace() -> u64 {
    300
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_body(),
            long_poll_max_s: default_poll(),
            agent_silent_s: default_silent(),
            quota_grace_s: default_quota_grace(),
        }
    }
}

/// Why the config is unusable: every problem found, so one edit can fix them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem, each naming the field and how to fix it.
    pub problems: Vec<String>,
}

/// Environment variables that override the config file.
pub const ENV_LISTEN: &str = "BASHO_LISTEN";
/// Overrides `data_dir`.
pub const ENV_DATA_DIR: &str = "BASHO_DATA_DIR";
/// Overrides `database`.
pub const ENV_DATABASE: &str = "BASHO_DATABASE";
/// Overrides `[replica] advertise_url`.
pub const ENV_ADVERTISE_URL: &str = "BASHO_ADVERTISE_URL";

/// Reads `path` (TOML) and applies `BASHO_LISTEN`, `BASHO_DATA_DIR`, `BASHO_DATABASE` and
/// `BASHO_ADVERTISE_URL`.
/// Answers the config with the problems the overrides had; a file that does not parse is an
/// error at once.
pub fn read_config(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let one = |p: String| ConfigError { problems: vec![p] };
    let text = std::fs::read_to_string(path).map_err(|e| {
        one(format!(
            "{}: {e}; pass an existing file to --config",
            path.display()
        ))
    })?;
    let mut config: Config =
        toml::from_str(&text).map_err(|e| one(format!("{}: {e}", path.display())))?;
    let problems = config.apply_env(|k| std::env::var(k).ok());
    Ok((config, problems))
}

/// [`read_config`], then [`Config::validate`], reporting every problem at once.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let (config, mut problems) = read_config(path)?;
    problems.extend(config.validate());
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

impl Config {
    /// A config for tests and embedding: in-memory store, the given templates directory, one
    /// platform token.
    pub fn for_tests(templates_dir: impl Into<PathBuf>, platform_token: &str) -> Self {
        Self {
            listen: default_listen(),
            data_dir: std::env::temp_dir(),
            database: Some("sqlite::memory:".to_owned()),
            templates_dir: templates_dir.into(),
            platform_tokens: vec![platform_token.to_owned()],
            agents: Vec::new(),
            trusted_issuers: Vec::new(),
            limits: Limits::default(),
            tls: None,
            plain_http_on_loopback: true,
            replica: None,
            metrics: Default::default(),
            audit: Default::default(),
            tes: Default::default(),
            federated: Default::default(),
            scheduler: Default::default(),
        }
    }

    /// Applies the `BASHO_*` overrides read through `var`; returns the problems found.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(v) = var(ENV_LISTEN) {
            match v.parse() {
                Ok(addr) => self.listen = addr,
                Err(e) => problems.push(format!(
                    "{ENV_LISTEN}={v:?}: {e}; use an address like 127.0.0.1:8080"
                )),
            }
        }
        if let Some(v) = var(ENV_DATA_DIR) {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var(ENV_DATABASE) {
            self.database = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = var(ENV_ADVERTISE_URL) {
            match (&mut self.replica, v.is_empty()) {
                (_, true) => self.replica = None,
                (Some(r), false) => r.advertise_url = v,
                (None, false) => {
                    self.replica = Some(ReplicaConfig {
                        advertise_url: v,
                        ca_file: None,
                    })
                }
            }
        }
        problems
    }

    /// Checks the rules serde cannot; returns every problem found.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(m) = self.metrics.listen
            && m.port() != 0
            && m == self.listen
        {
            problems.push(format!(
                "metrics.listen {m} is the API's own address; give the tokenless listener its own \
                 port, or remove it to scrape the API's /metrics with a token"
            ));
        }
        let q = &self.scheduler;
        if q.max_queue_s > basho_core::queue::MAX_QUEUE_S {
            problems.push(format!(
                "scheduler.max_queue_s is {}; set at most {} (7 days), or 0 to refuse requests no \
                 site can start at once",
                q.max_queue_s,
                basho_core::queue::MAX_QUEUE_S
            ));
        }
        if q.half_life_s == 0 {
            problems.push("scheduler.half_life_s is 0; set at least 1 second".to_owned());
        }
        if !(q.gpu_weight.is_finite() && q.gpu_weight >= 0.0) {
            problems.push(format!(
                "scheduler.gpu_weight is {}; set a number of core-seconds of 0 or more",
                q.gpu_weight
            ));
        }
        if self.platform_tokens.is_empty() {
            problems.push(
                "platform_tokens is empty; add at least one token so the platform can call the API"
                    .to_owned(),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, t) in self.platform_tokens.iter().enumerate() {
            if t.trim().is_empty() || t.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "platform_tokens[{i}] is empty or contains whitespace; use a random string"
                ));
            }
            seen.push(t);
        }
        let mut sites: Vec<&Ident> = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            if sites.contains(&&a.site) {
                problems.push(format!(
                    "agents[{i}]: site {} is listed twice; give each site one entry",
                    a.site
                ));
            }
            sites.push(&a.site);
            if a.token.trim().is_empty() || a.token.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "agents[{i}] ({}): token is empty or contains whitespace; use a random string",
                    a.site
                ));
            }
            if seen.contains(&a.token.as_str()) {
                problems.push(format!(
                    "agents[{i}] ({}): token is also used by another principal; give every \
                     agent and the platform its own token",
                    a.site
                ));
            }
            seen.push(&a.token);
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            problems.push(format!(
                "limits.max_body_bytes is {}; allow at least 1024",
                l.max_body_bytes
            ));
        }
        if l.long_poll_max_s == 0 || l.long_poll_max_s > 300 {
            problems.push(format!(
                "limits.long_poll_max_s is {}; use 1 to 300",
                l.long_poll_max_s
            ));
        }
        if l.agent_silent_s == 0 {
            problems.push("limits.agent_silent_s is 0; use at least 1".to_owned());
        }
        match (&self.tls, self.plain_http_on_loopback) {
            (None, false) => problems.push(
                "no TLS: set [tls] cert_file/key_file, or plain_http_on_loopback = true for a \
                 loopback-only development setup"
                    .to_owned(),
            ),
            (None, true) if !self.listen.ip().is_loopback() => problems.push(format!(
                "plain_http_on_loopback is set but listen is {}, not a loopback address; set \
                 [tls] cert_file/key_file to serve other hosts, or listen on 127.0.0.1",
                self.listen
            )),
            _ => {}
        }
        if let Some(r) = &self.replica
            && let Err(why) = check_advertise_url(&r.advertise_url)
        {
            problems.push(format!(
                "replica.advertise_url {:?}: {why}",
                r.advertise_url
            ));
        }
        for (i, t) in self.trusted_issuers.iter().enumerate() {
            if t.issuer.is_empty() {
                problems.push(format!(
                    "trusted_issuers[{i}].issuer is empty; name the visas' iss"
                ));
            }
        }
        problems
    }
}

/// Whether `url` is an absolute `https://` URL, or `http://` to a loopback address (the rule the
/// CLI applies to `--addr`).
pub fn check_advertise_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{e}; use a URL like https://orch-0.internal:8443"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err("no host; use a URL like https://orch-0.internal:8443".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(
            "plain http only to a loopback address; use https:// so peers verify this replica"
                .into(),
        ),
        _ => Err("not an http(s) URL; use a URL like https://orch-0.internal:8443".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let mut c = Config::for_tests("/nonexistent", "platform-token");
        c.platform_tokens.clear();
        c.limits.long_poll_max_s = 0;
        c.agents = vec![
            AgentAuth {
                site: Ident::parse("a").unwrap(),
                token: "t1".into(),
            },
            AgentAuth {
                site: Ident::parse("a").unwrap(),
                token: "t1".into(),
            },
        ];
        let problems = c.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("platform_tokens")));
        assert!(problems.iter().any(|p| p.contains("listed twice")));
        assert!(problems.iter().any(|p| p.contains("its own token")));
        assert!(problems.iter().any(|p| p.contains("long_poll_max_s")));
    }

    #[test]
    fn plain_http_needs_the_opt_in_and_a_loopback_listen() {
        let mut c = Config::for_tests("/t", "p");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.listen = "[::1]:8080".parse().unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());

        c.plain_http_on_loopback = false;
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("set [tls] cert_file/key_file, or plain_http_on_loopback = true"),
            "{problems:?}"
        );

        c.plain_http_on_loopback = true;
        for listen in ["0.0.0.0:8080", "10.0.0.5:8080", "[::]:8080"] {
            c.listen = listen.parse().unwrap();
            let problems = c.validate();
            assert_eq!(problems.len(), 1, "{listen}: {problems:?}");
            assert!(
                problems[0].contains("not a loopback address"),
                "{problems:?}"
            );
        }

        // With a certificate, any address; the files themselves are checked at open.
        c.tls = Some(TlsConfig {
            cert_file: "/etc/basho/tls/orchestrator.crt".into(),
            key_file: "/etc/basho/tls/orchestrator.key".into(),
        });
        c.plain_http_on_loopback = false;
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn tls_fields_parse() {
        let c: Config = toml::from_str(
            r#"
            data_dir = "/d"
            templates_dir = "/t"
            platform_tokens = ["p"]
            [tls]
            cert_file = "/c.pem"
            key_file = "/k.pem"
            "#,
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().cert_file, PathBuf::from("/c.pem"));
        assert!(!c.plain_http_on_loopback);
        assert!(
            toml::from_str::<Config>(
                "data_dir = \"/d\"\ntemplates_dir = \"/t\"\n[tls]\ncert_file = \"/c\"\n"
            )
            .is_err(),
            "key_file is required"
        );
    }

    #[test]
    fn advertise_urls_are_https_or_loopback() {
        for ok in [
            "https://orch-0.internal:8443",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            assert_eq!(check_advertise_url(ok), Ok(()), "{ok}");
        }
        for bad in ["http://10.0.0.5:8080", "orch-0:8443", "ftp://orch-0", "/v1"] {
            assert!(check_advertise_url(bad).is_err(), "{bad}");
        }
        let mut c = Config::for_tests("/t", "p");
        assert!(
            c.apply_env(|k| (k == ENV_ADVERTISE_URL).then(|| "http://10.1.1.1".into()))
                .is_empty()
        );
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("replica.advertise_url"),
            "{problems:?}"
        );
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::for_tests("/t", "p");
        let problems = c.apply_env(|k| match k {
            ENV_LISTEN => Some("0.0.0.0:9000".into()),
            ENV_DATA_DIR => Some("/data".into()),
            ENV_DATABASE => Some("sqlite:///x.db".into()),
            _ => None,
        });
        assert!(problems.is_empty());
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert_eq!(c.database.as_deref(), Some("sqlite:///x.db"));
        assert_eq!(
            c.apply_env(|k| (k == ENV_LISTEN).then(|| "nope".to_owned()))
                .len(),
            1
        );
    }

    #[test]
    fn loads_the_example_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orchestrator.toml");
        // The example's paths do not exist here, but it must parse and pass validation.
        let text = std::fs::read_to_string(path).unwrap();
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }
}
