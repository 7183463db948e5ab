//! Reading the site config: TOML from a file, then the `BASHO_*` environment overrides, then what
//! the config only points at (the token file, the issuers' JWKS files).

use std::path::{Path, PathBuf};

use basho_core::visa::TrustedIssuers;

use super::{Isolation, SiteConfig};

/// Overrides `orchestrator.token` (and wins over `orchestrator.token_file`).
pub const ENV_TOKEN: &str = "BASHO_AGENT_TOKEN";
/// Overrides `orchestrator.url`.
pub const ENV_ORCHESTRATOR_URL: &str = "BASHO_ORCHESTRATOR_URL";

/// Why a site config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read site config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the site config's shape.
    #[error("site config {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// No token anywhere.
    #[error(
        "no agent token: set {ENV_TOKEN}, orchestrator.token_file or orchestrator.token in the site config"
    )]
    NoToken,
    /// The token file could not be read.
    #[error("cannot read the agent token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file holds nothing.
    #[error("agent token file {0} is empty; write the site's token into it")]
    EmptyToken(PathBuf),
    /// A trusted issuer's JWKS file could not be read or holds no usable key.
    #[error("trusted issuer {issuer:?}: cannot use JWKS file {path}: {message}")]
    Jwks {
        /// The issuer.
        issuer: String,
        /// Its JWKS file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `isolation.user` is not a numeric, non-root `uid:gid`.
    #[error("isolation.user {user:?} {why}")]
    User {
        /// The configured value.
        user: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Reads `path`, parses it and applies the `BASHO_*` environment overrides.
pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut config = parse(&text, path)?;
    config.apply_env(|k| std::env::var(k).ok());
    Ok(config)
}

/// Parses TOML text; `origin` only names the file in errors.
pub fn parse(text: &str, origin: &Path) -> Result<SiteConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

impl SiteConfig {
    /// Applies `BASHO_AGENT_TOKEN` and `BASHO_ORCHESTRATOR_URL` as `lookup` finds them, so tests
    /// can pass their own environment.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(token) = lookup(ENV_TOKEN).filter(|t| !t.trim().is_empty()) {
            self.orchestrator.token = Some(token);
            self.orchestrator.token_file = None;
        }
        if let Some(url) = lookup(ENV_ORCHESTRATOR_URL).filter(|u| !u.trim().is_empty()) {
            self.orchestrator.url = url;
        }
    }

    /// The agent token: `orchestrator.token` when set, else the content of `token_file`.
    pub fn token(&self) -> Result<String, ConfigError> {
        if let Some(t) = self.orchestrator.token.as_deref() {
            let t = t.trim();
            return if t.is_empty() {
                Err(ConfigError::NoToken)
            } else {
                Ok(t.to_owned())
            };
        }
        let path = self
            .orchestrator
            .token_file
            .as_ref()
            .ok_or(ConfigError::NoToken)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let t = text.trim();
        if t.is_empty() {
            return Err(ConfigError::EmptyToken(path.clone()));
        }
        Ok(t.to_owned())
    }

    /// The site's trusted issuers with their keys, read from the JWKS files.
    pub fn load_trusted_issuers(&self) -> Result<TrustedIssuers, Vec<ConfigError>> {
        load_issuers(
            self.trusted_issuers
                .iter()
                .map(|r| (r.issuer.as_str(), r.jwks_file.as_path())),
        )
    }
}

/// Issuers with their keys, each read from its JWKS file; every file's problem when any fails.
pub fn load_issuers<'a>(
    refs: impl IntoIterator<Item = (&'a str, &'a std::path::Path)>,
) -> Result<TrustedIssuers, Vec<ConfigError>> {
    let mut trusted = TrustedIssuers::new();
    let mut problems = Vec::new();
    for (issuer, path) in refs {
        let jwks_error = |message: String| ConfigError::Jwks {
            issuer: issuer.to_owned(),
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(json) => {
                if let Err(e) = trusted.add_json(issuer, &json) {
                    problems.push(jwks_error(e));
                }
            }
            Err(e) => problems.push(jwks_error(e.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(trusted)
    } else {
        Err(problems)
    }
}

impl Isolation {
    /// The numeric `(uid, gid)` of `user`; refuses names, malformed values and root.
    pub fn ids(&self) -> Result<(u32, u32), ConfigError> {
        let bad = |why| ConfigError::User {
            user: self.user.clone(),
            why,
        };
        let (uid, gid) = self
            .user
            .split_once(':')
            .ok_or_else(|| bad("must be numeric uid:gid, like 65534:65534"))?;
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("must be numeric uid:gid, like 65534:65534"));
            }
            s.parse::<u32>()
                .map_err(|_| bad("holds an id too large for a uid or gid"))
        };
        let (uid, gid) = (number(uid)?, number(gid)?);
        if uid == 0 {
            return Err(bad(
                "is root; workspaces never run as root, pick an unprivileged uid",
            ));
        }
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MINIMAL: &str = r#"
        site = "sim"
        [orchestrator]
        url = "http://127.0.0.1:8080"
        token = "from-file"
        [capacity]
        cpus = 4
        memory_mib = 4096
        [backend]
        kind = "fake"
        [paths]
        state_dir = "/var/lib/basho"
        work_root = "/srv/work"
        results_root = "/srv/results"
    "#;

    #[test]
    fn env_overrides_token_and_url() {
        let mut c = parse(MINIMAL, Path::new("site.toml")).unwrap();
        let env = HashMap::from([
            (ENV_TOKEN, "from-env".to_owned()),
            (ENV_ORCHESTRATOR_URL, "https://o.example".to_owned()),
        ]);
        c.apply_env(|k| env.get(k).cloned());
        assert_eq!(c.token().unwrap(), "from-env");
        assert_eq!(c.orchestrator.url, "https://o.example");
    }

    #[test]
    fn token_from_file_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = parse(MINIMAL, Path::new("site.toml")).unwrap();
        c.orchestrator.token = None;
        assert!(matches!(c.token(), Err(ConfigError::NoToken)));
        let file = dir.path().join("token");
        c.orchestrator.token_file = Some(file.clone());
        assert!(matches!(c.token(), Err(ConfigError::TokenFile { .. })));
        std::fs::write(&file, "  \n").unwrap();
        assert!(matches!(c.token(), Err(ConfigError::EmptyToken(_))));
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(c.token().unwrap(), "s3cret");
    }

    #[test]
    fn bad_toml_names_the_file() {
        let err = parse("site = ", Path::new("bad.toml")).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn user_ids() {
        let user = |u: &str| Isolation {
            user: u.into(),
            ..Isolation::default()
        };
        assert_eq!(user("1000:100").ids().unwrap(), (1000, 100));
        for bad in ["0:0", "root", "nobody:nogroup", "1000", ":1", "1:", "-1:1"] {
            assert!(user(bad).ids().is_err(), "{bad}");
        }
    }
}
