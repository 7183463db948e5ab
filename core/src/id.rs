//! Plain identifiers: project, template, site and dataset IDs end up in paths, labels, job names and
//! Slurm accounts, so anything outside `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` is refused, never cleaned.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest identifier accepted.
pub const MAX_IDENT_LEN: usize = 64;

/// Why a string is not a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// The string is empty.
    #[error("identifier is empty; use 1 to {MAX_IDENT_LEN} characters from A-Z a-z 0-9 . _ -")]
    Empty,
    /// The string is longer than [`MAX_IDENT_LEN`].
    #[error("identifier is {0} characters long; the limit is {MAX_IDENT_LEN}")]
    TooLong(usize),
    /// The first character is not a letter or digit.
    #[error("identifier {0:?} must start with a letter or digit")]
    BadStart(String),
    /// A character outside the allowed set.
    #[error("identifier {0:?} contains {1:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar(String, char),
}

/// A validated plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
pub struct Ident(String);

impl Ident {
    /// Validates `s` as a plain identifier.
    pub fn parse(s: &str) -> Result<Self, IdentError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The identifier as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `s` against the identifier rule without allocating.
pub fn validate(s: &str) -> Result<(), IdentError> {
    let first = s.chars().next().ok_or(IdentError::Empty)?;
    if s.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong(s.len()));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(IdentError::BadStart(s.to_owned()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdentError::BadChar(s.to_owned(), c));
    }
    Ok(())
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ident::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A workspace's id: a plain identifier (it becomes container, job and pod names, host paths and
/// labels), checked once where the site takes an assignment, so no backend checks it again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(Ident);

impl WorkspaceId {
    /// Validates `s` as a workspace id.
    pub fn parse(s: &str) -> Result<Self, IdentError> {
        Ident::parse(s).map(Self)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for WorkspaceId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for WorkspaceId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for WorkspaceId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<WorkspaceId> for String {
    fn eq(&self, other: &WorkspaceId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<String> for WorkspaceId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in [
            "JGAD000101",
            "P-0001",
            "shell",
            "a",
            "a.b_c-d",
            &"x".repeat(64),
        ] {
            assert!(Ident::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(Ident::parse(""), Err(IdentError::Empty));
        assert_eq!(Ident::parse(&"x".repeat(65)), Err(IdentError::TooLong(65)));
        assert!(matches!(Ident::parse("../x"), Err(IdentError::BadStart(_))));
        assert!(matches!(Ident::parse("/etc"), Err(IdentError::BadStart(_))));
        assert!(matches!(
            Ident::parse(".hidden"),
            Err(IdentError::BadStart(_))
        ));
        assert!(matches!(
            Ident::parse("a/b"),
            Err(IdentError::BadChar(_, '/'))
        ));
        assert!(matches!(
            Ident::parse("a b"),
            Err(IdentError::BadChar(_, ' '))
        ));
        assert!(matches!(Ident::parse("é"), Err(IdentError::BadStart(_))));
        assert!(matches!(
            Ident::parse("aé"),
            Err(IdentError::BadChar(_, 'é'))
        ));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<Ident>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<WorkspaceId>("\"../etc\"").is_err());
        let id: WorkspaceId = serde_json::from_str("\"ws-1\"").unwrap();
        assert_eq!((&*id, id.to_string()), ("ws-1", "ws-1".to_owned()));
        assert_eq!(
            serde_json::from_str::<Ident>("\"JGAD000101\"")
                .unwrap()
                .as_str(),
            "JGAD000101"
        );
    }
}
