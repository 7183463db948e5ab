//! The check a release passes before it is made current: no withdrawn ID anywhere in it, as a
//! whole token, in a file's name or its bytes (a bgzipped VCF by its sample list).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use aho_corasick::AhoCorasick;

use super::filter::{self, Kind};

/// Whether `b` may be part of an ID: an ID found inside a longer token (`P2` in `P20`) is not it.
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// Finds withdrawn IDs as whole tokens.
pub struct Matcher(AhoCorasick);

impl Matcher {
    /// A matcher of `ids`; `None` when there are none.
    pub fn new(ids: &BTreeSet<String>) -> io::Result<Option<Matcher>> {
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(Matcher(
            AhoCorasick::new(ids).map_err(io::Error::other)?,
        )))
    }

    /// The first place in `hay` one of the IDs starts as a whole token, if any.
    pub fn find(&self, hay: &[u8]) -> Option<usize> {
        whole_token(&self.0, hay)
    }
}

/// The first place in `hay` a whole-token match of one of `ids` starts, if any.
fn whole_token(ac: &AhoCorasick, hay: &[u8]) -> Option<usize> {
    ac.find_overlapping_iter(hay)
        .find(|m| {
            let before = m.start().checked_sub(1).map(|i| hay[i]);
            let after = hay.get(m.end()).copied();
            !before.is_some_and(token_byte) && !after.is_some_and(token_byte)
        })
        .map(|m| m.start())
}

/// Where in the release under `root` a withdrawn ID still is (a file, and a byte offset or the
/// name), never the ID itself; `None` when nowhere.
pub fn find(root: &Path, withdrawn: &BTreeSet<String>) -> io::Result<Option<String>> {
    let Some(m) = Matcher::new(withdrawn)? else {
        return Ok(None);
    };
    for rel in filter::files(root)? {
        let name = rel.to_string_lossy();
        if m.find(name.as_bytes()).is_some() {
            return Ok(Some(format!("in the name of {name}")));
        }
        let path = root.join(&rel);
        if name.ends_with(".gz") {
            if filter::kind(&name) == Kind::Vcf {
                let samples = filter::vcf_samples(&path).map_err(|e| match e {
                    filter::Error::Io(e) => e,
                    filter::Error::Tool(why) => io::Error::other(why),
                })?;
                if samples.iter().any(|s| withdrawn.contains(s)) {
                    return Ok(Some(format!("a sample of {name}")));
                }
            }
            continue;
        }
        let bytes = std::fs::read(&path)?;
        if let Some(at) = m.find(&bytes) {
            return Ok(Some(format!("{name}, byte {at}")));
        }
    }
    Ok(None)
}
