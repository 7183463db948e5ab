//! The sites' session keys this command line trusts ([`basho_core::e2e`]), pinned as ssh pins
//! host keys: the first key a site shows is kept, and a session to a site whose key then
//! differs does not open, since an orchestrator that swapped the key could read it.
//!
//! The file is `$BASHO_KNOWN_SITES`, else `$XDG_CONFIG_HOME/basho/known_sites`, else
//! `~/.config/basho/known_sites`: one `SITE KEY` per line (the key in base64, as
//! `basho-agent session-key` prints it), `#` for comments.

use std::path::{Path, PathBuf};

use basho_core::e2e::{encode_key, fingerprint, parse_key};

use crate::error::Error;

/// What checking a site's key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// The key was pinned already.
    Known,
    /// The site had no key pinned; this one is now.
    New,
}

/// The pin file.
#[derive(Debug, Clone)]
pub struct Pins {
    path: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Input {
        path: path.display().to_string(),
        source,
    }
}

impl Pins {
    /// The file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Pins {
        Pins { path: path.into() }
    }

    /// The user's file (see the module docs).
    pub fn user() -> Result<Pins, Error> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = var("BASHO_KNOWN_SITES") {
            return Ok(Pins::at(p));
        }
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| {
                Error::Usage(
                    "no place for the sites' pinned keys: set BASHO_KNOWN_SITES or HOME".into(),
                )
            })?;
        Ok(Pins::at(config.join("basho").join("known_sites")))
    }

    /// Where the pins are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lines(&self) -> Result<Vec<String>, Error> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Ok(t.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&self.path, e)),
        }
    }

    /// The key pinned for `site`.
    pub fn get(&self, site: &str) -> Result<Option<[u8; 32]>, Error> {
        for (n, line) in self.lines()?.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.split_whitespace();
            if it.next() != Some(site) {
                continue;
            }
            let key = it.next().unwrap_or_default();
            return parse_key(key).map(Some).map_err(|e| {
                Error::Usage(format!(
                    "{} line {}: {e}; correct or delete the line",
                    self.path.display(),
                    n + 1
                ))
            });
        }
        Ok(None)
    }

    /// Pins `key` for `site`, replacing any key pinned before.
    pub fn pin(&self, site: &str, key: &[u8; 32]) -> Result<(), Error> {
        let mut lines = self.without(site)?;
        lines.push(format!("{site} {}", encode_key(key)));
        self.write(&lines)
    }

    /// Forgets `site`'s key; whether one was pinned.
    pub fn forget(&self, site: &str) -> Result<bool, Error> {
        let before = self.lines()?.len();
        let lines = self.without(site)?;
        let had = lines.len() != before;
        if had {
            self.write(&lines)?;
        }
        Ok(had)
    }

    fn without(&self, site: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .lines()?
            .into_iter()
            .filter(|l| l.split_whitespace().next() != Some(site))
            .collect())
    }

    fn write(&self, lines: &[String]) -> Result<(), Error> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))
    }

    /// Checks `key`, as the orchestrator reports it for `site`, against the pin; pins it when
    /// the site has none yet.
    pub fn check(&self, site: &str, key: &[u8; 32]) -> Result<Pinned, Error> {
        match self.get(site)? {
            Some(pinned) if pinned == *key => Ok(Pinned::Known),
            Some(pinned) => Err(Error::Session(format!(
                "site {site}'s session key is not the one pinned in {}: pinned {}, the \
                 orchestrator now reports {}. Either the site changed its key, or something \
                 between you and the site wants to read your session. Ask the site's admin for \
                 its key (basho-agent session-key prints it); if it is the new one, run \
                 `basho site trust {site} --key KEY`",
                self.path.display(),
                fingerprint(&pinned),
                fingerprint(key)
            ))),
            None => {
                self.pin(site, key)?;
                Ok(Pinned::New)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_is_pinned_and_a_different_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::at(dir.path().join("cfg/known_sites"));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(pins.check("tohoku", &a).unwrap(), Pinned::New);
        assert_eq!(pins.check("tohoku", &a).unwrap(), Pinned::Known);
        assert_eq!(pins.check("osaka", &b).unwrap(), Pinned::New);
        let e = pins.check("tohoku", &b).unwrap_err().to_string();
        assert!(
            e.contains(&fingerprint(&a)) && e.contains(&fingerprint(&b)),
            "{e}"
        );
        assert!(e.contains("basho site trust tohoku --key"), "{e}");
        // Trusting the new key replaces the old one and leaves the other sites alone.
        pins.pin("tohoku", &b).unwrap();
        assert_eq!(pins.check("tohoku", &b).unwrap(), Pinned::Known);
        assert_eq!(pins.get("osaka").unwrap(), Some(b));
        assert!(pins.forget("tohoku").unwrap());
        assert!(!pins.forget("tohoku").unwrap());
        assert_eq!(pins.get("tohoku").unwrap(), None);
        assert_eq!(pins.get("osaka").unwrap(), Some(b));
    }

    #[test]
    fn a_damaged_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_sites");
        std::fs::write(&path, "# pins\n\nosaka AAAA\n").unwrap();
        let e = Pins::at(&path).get("osaka").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert_eq!(Pins::at(&path).get("tohoku").unwrap(), None);
    }
}
