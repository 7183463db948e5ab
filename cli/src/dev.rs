//! `basho dev`: the whole system in one process for a laptop or a CI box (orchestrator on SQLite,
//! three site agents on the local Docker engine, synthetic datasets, a dev visa issuer), and its
//! helpers `basho dev visa` and `basho dev token`.

use std::path::{Path, PathBuf};

use basho_core::visa::IssuerRef;

use crate::args::{DevArgs, DevCmd};

pub mod data;
pub mod image;
pub mod issuer;
mod run;
pub mod secrets;
pub mod sites;
pub mod templates;

pub use run::{DEFAULT_LISTEN, DevHandle, DevOptions, SHUTDOWN_GRACE, run_dev, run_until_signal};

/// Why `basho dev` (or a helper) failed. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file or directory under the data dir could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A helper needs something `basho dev` makes on its first start.
    #[error(
        "no {what} at {path}; start `basho dev --data-dir {data_dir}` once first (or pass the \
         --data-dir it runs with)",
        data_dir = data_dir_of(path).display()
    )]
    NotInitialised {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A saved file is unreadable.
    #[error("{path} is unusable ({reason}); remove it to have it made again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Flags or files named on the command line are wrong; every problem is listed.
    #[error("{0}")]
    Config(String),
    /// `basho dev token` was asked for a role it does not make.
    #[error(
        "there is no dev token for role {0:?}; use platform, admin, auditor, researcher or \
         output_checker (the last two with --subject); each dev agent's token is in its site \
         directory"
    )]
    Role(String),
    /// The API address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another `basho dev` running? pick another \
         address with --listen"
    )]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The local Docker engine does not answer.
    #[error(
        "cannot reach the local Docker engine ({0}); start it (scripts/setup does) or set \
         DOCKER_HOST"
    )]
    Docker(String),
    /// The demo image cannot be made.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The orchestrator refused to start.
    #[error("the orchestrator cannot start: {0}")]
    Orchestrator(#[from] basho_orchestrator::Error),
    /// Signal handlers cannot be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(std::io::Error),
    /// A component failed while running; the rest were stopped.
    #[error("{}", .0.join("; "))]
    Failed(Vec<String>),
}

impl DevError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DevError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The data dir a path under `<data-dir>/<one level>/` belongs to, for messages.
fn data_dir_of(path: &Path) -> &Path {
    path.parent()
        .and_then(|p| {
            if p.ends_with("issuer") {
                p.parent()
            } else {
                Some(p)
            }
        })
        .unwrap_or(path)
}

/// Where `basho dev` keeps everything under its data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data dir.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The platform token.
    pub fn platform_token(&self) -> PathBuf {
        self.root.join("platform-token")
    }

    /// The orchestrator's SQLite directory.
    pub fn orchestrator(&self) -> PathBuf {
        self.root.join("orchestrator")
    }

    /// Parent of the synthetic datasets.
    pub fn datasets(&self) -> PathBuf {
        self.root.join("datasets")
    }

    /// A site agent's directory (state, work, results, token).
    pub fn site(&self, site: &str) -> PathBuf {
        self.root.join("sites").join(site)
    }

    /// A site agent's token.
    pub fn agent_token(&self, site: &str) -> PathBuf {
        self.site(site).join("agent-token")
    }

    /// The dev issuer's key and JWKS.
    pub fn issuer(&self) -> issuer::IssuerFiles {
        issuer::IssuerFiles::under(&self.root)
    }
}

/// Checks that every extra trusted issuer's file holds a usable JWKS and makes its path absolute;
/// reports every problem at once.
pub fn check_trusted_issuers(issuers: &[IssuerRef]) -> Result<Vec<IssuerRef>, DevError> {
    let mut refs = Vec::new();
    let mut problems = Vec::new();
    for IssuerRef {
        issuer: iss,
        jwks_file: file,
    } in issuers
    {
        let checked = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                basho_core::visa::TrustedIssuers::new()
                    .add_json(iss, &json)
                    .map(|_| ())
            })
            .and_then(|_| std::fs::canonicalize(file).map_err(|e| e.to_string()));
        match checked {
            Ok(abs) => refs.push(IssuerRef {
                issuer: iss.clone(),
                jwks_file: abs,
            }),
            Err(e) => problems.push(format!("--trusted-issuer {iss}={}: {e}", file.display())),
        }
    }
    if problems.is_empty() {
        Ok(refs)
    } else {
        Err(DevError::Config(problems.join("\n")))
    }
}

/// `basho dev visa`: a visa minted by the data dir's dev issuer.
pub fn visa(
    data_dir: &Path,
    dataset: &str,
    subject: &str,
    expires_in: std::time::Duration,
) -> Result<String, DevError> {
    if subject.trim().is_empty() {
        return Err(DevError::Config(
            "--subject is empty; name the researcher (a visa's sub)".into(),
        ));
    }
    if expires_in.is_zero() {
        return Err(DevError::Config(
            "--expires-in is zero; give a lifetime such as 3600 or 1h".into(),
        ));
    }
    let issuer = Layout::new(data_dir).issuer().load()?;
    Ok(issuer::mint(&issuer, dataset, subject, expires_in))
}

/// `basho dev token`: the dev token of a role. The platform's is the one `basho dev` keeps in
/// its data dir; any other role gets a new token stored in the dev orchestrator's database
/// (which may be serving meanwhile), shown only now.
pub async fn token(
    data_dir: &Path,
    role: &str,
    subject: Option<String>,
) -> Result<String, DevError> {
    use basho_core::Role;
    use basho_orchestrator::tokens::{self, NewToken, TokenError};
    let parsed = Role::parse(role).filter(|r| *r != Role::Agent);
    let Some(parsed) = parsed else {
        return Err(DevError::Role(role.to_owned()));
    };
    if parsed == Role::Platform && subject.is_none() {
        return platform_token(data_dir);
    }
    let dir = Layout::new(data_dir).orchestrator();
    if !dir.join("basho.db").exists() {
        return Err(DevError::NotInitialised {
            what: "orchestrator database",
            path: dir,
        });
    }
    let store = basho_orchestrator::store::SqliteStore::open(None, &dir)
        .await
        .map_err(basho_orchestrator::Error::from)?;
    let new = NewToken {
        role: parsed,
        subject,
        site: None,
        name: Some("basho dev token".into()),
        ttl: None,
    };
    match tokens::create(&store, new, "operator").await {
        Ok((_, secret)) => Ok(secret),
        Err(TokenError::Store(e)) => Err(basho_orchestrator::Error::from(e).into()),
        Err(e) => Err(DevError::Config(e.to_string())),
    }
}

fn platform_token(data_dir: &Path) -> Result<String, DevError> {
    let path = Layout::new(data_dir).platform_token();
    match secrets::read(&path).map_err(|e| DevError::io(&path, e))? {
        Some(t) => Ok(t),
        None => Err(DevError::NotInitialised {
            what: "platform token",
            path,
        }),
    }
}

/// Records a withdrawal at dev site `site` and waits for the running `basho dev` to apply it;
/// what it did, a line each.
async fn withdraw(
    data_dir: &Path,
    site: &str,
    dataset: &basho_core::Ident,
    participants: &[String],
    reason: &str,
    wait_s: u64,
) -> Result<Vec<String>, DevError> {
    let layout = Layout::new(data_dir);
    let Some(demo) = data::FEDERATION.iter().find(|s| s.name == site) else {
        let names: Vec<&str> = data::FEDERATION.iter().map(|s| s.name).collect();
        return Err(DevError::Config(format!(
            "no dev site {site:?}; one of {}",
            names.join(", ")
        )));
    };
    if !demo.datasets.iter().any(|d| d.id == dataset.as_str()) {
        let held: Vec<&str> = demo.datasets.iter().map(|d| d.id).collect();
        return Err(DevError::Config(format!(
            "site {site} does not hold {dataset}; it holds {}",
            held.join(", ")
        )));
    }
    let state = basho_agent::config::Paths::under(&layout.site(site)).state_dir;
    let catalog = basho_agent::catalog::Catalog::default().with_dataset(
        dataset.clone(),
        &layout.datasets().join(dataset.as_str()),
        None,
        &[],
    );
    let spool = basho_agent::consent::desk::Spool::new(&state.join("releases"));
    let request = spool
        .record(&catalog, dataset, participants, reason, chrono::Utc::now())
        .map_err(|e| DevError::Config(e.to_string()))?;
    println!(
        "recorded withdrawal {} at {site}; waiting up to {wait_s} s for basho dev to apply it",
        request.id
    );
    let id = request.id.clone();
    let answer = tokio::task::spawn_blocking(move || {
        spool.wait(&id, std::time::Duration::from_secs(wait_s), |t| {
            println!(
                "still waiting after {} s (is basho dev running?)",
                t.as_secs()
            );
        })
    })
    .await
    .map_err(|e| DevError::Config(e.to_string()))?;
    match answer {
        Some(a) => a.summary().map_err(DevError::Config),
        None => Err(DevError::Config(format!(
            "not applied in {wait_s} s: it stays recorded and is applied when basho dev runs"
        ))),
    }
}

/// Runs `basho dev` or one of its helpers.
pub async fn command(args: DevArgs) -> Result<(), crate::Error> {
    match args.cmd {
        Some(DevCmd::Visa {
            dataset,
            subject,
            expires_in,
        }) => {
            println!(
                "{}",
                visa(&args.data_dir, dataset.as_str(), &subject, expires_in)?
            );
            Ok(())
        }
        Some(DevCmd::IdToken { subject, nonce }) => {
            let issuer = Layout::new(&args.data_dir).issuer().load()?;
            println!("{}", issuer::id_token(&issuer, &subject, &nonce));
            Ok(())
        }
        Some(DevCmd::Withdraw {
            site,
            dataset,
            participants,
            reason,
            wait_s,
        }) => {
            let lines = withdraw(
                &args.data_dir,
                &site,
                &dataset,
                &participants,
                &reason,
                wait_s,
            )
            .await?;
            lines.iter().for_each(|l| println!("{l}"));
            Ok(())
        }
        Some(DevCmd::Token { role, subject }) => {
            println!("{}", token(&args.data_dir, &role, subject).await?);
            Ok(())
        }
        None => {
            let opts = DevOptions {
                data_dir: args.data_dir,
                listen: args.listen,
                token: args.token,
                trusted_issuers: args
                    .trusted_issuers
                    .into_iter()
                    .map(|(issuer, jwks_file)| IssuerRef { issuer, jwks_file })
                    .collect(),
                templates: args.templates,
            };
            Ok(run_until_signal(opts).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn helpers_say_how_to_initialise_a_fresh_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let e = visa(dir.path(), "JGAD000101", "alice", Duration::from_secs(60)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no dev issuer key"), "{msg}");
        assert!(
            msg.contains(&format!("basho dev --data-dir {}", dir.path().display())),
            "{msg}"
        );
        let e = platform_token(dir.path()).unwrap_err();
        assert!(e.to_string().contains("no platform token"), "{e}");
    }

    #[tokio::test]
    async fn tokens_of_each_role() {
        let dir = tempfile::tempdir().unwrap();
        let e = token(dir.path(), "platform", None).await.unwrap_err();
        assert!(e.to_string().contains("no platform token"), "{e}");
        let e = token(dir.path(), "auditor", None).await.unwrap_err();
        assert!(e.to_string().contains("no orchestrator database"), "{e}");
        secrets::save(&Layout::new(dir.path()).platform_token(), "tok").unwrap();
        assert_eq!(token(dir.path(), "platform", None).await.unwrap(), "tok");
        let orchestrator = Layout::new(dir.path()).orchestrator();
        basho_orchestrator::store::SqliteStore::open(None, &orchestrator)
            .await
            .unwrap();
        let r = token(dir.path(), "researcher", Some("alice".into()))
            .await
            .unwrap();
        assert_eq!(r.len(), 64);
        let a = token(dir.path(), "auditor", None).await.unwrap();
        assert_ne!(a, r);
        let c = token(dir.path(), "output_checker", Some("carol".into()))
            .await
            .unwrap();
        assert_eq!(c.len(), 64);
        let e = token(dir.path(), "output_checker", None).await.unwrap_err();
        assert!(e.to_string().contains("--subject"), "{e}");
        let e = token(dir.path(), "researcher", None).await.unwrap_err();
        assert!(e.to_string().contains("--subject"), "{e}");
        for bad in ["agent", "root"] {
            let e = token(dir.path(), bad, None).await.unwrap_err();
            assert!(e.to_string().contains("no dev token for role"), "{e}");
        }
    }

    #[test]
    fn visa_helper_mints_with_the_saved_key() {
        let dir = tempfile::tempdir().unwrap();
        Layout::new(dir.path()).issuer().load_or_create().unwrap();
        let jwt = visa(dir.path(), "JGAD000301", "bob", Duration::from_secs(60)).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        assert!(visa(dir.path(), "JGAD000301", " ", Duration::from_secs(60)).is_err());
        assert!(visa(dir.path(), "JGAD000301", "bob", Duration::ZERO).is_err());
    }

    #[test]
    fn trusted_issuer_files_are_checked_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        let issuer = basho_core::visa::mint::Issuer::generate("https://dac.test");
        std::fs::write(&good, issuer.jwks_json()).unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{}").unwrap();
        let r = |iss: &str, file: &Path| IssuerRef {
            issuer: iss.into(),
            jwks_file: file.to_owned(),
        };
        let refs = check_trusted_issuers(&[r("https://dac.test", &good)]).unwrap();
        assert_eq!(refs[0].jwks_file, std::fs::canonicalize(&good).unwrap());
        let e = check_trusted_issuers(&[
            r("https://a", &bad),
            r("https://b", &dir.path().join("missing.json")),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("https://a=") && e.contains("https://b="), "{e}");
    }
}
