//! The roles an API token can carry (docs/design.md section 4).

use serde::{Deserialize, Serialize};

/// What a token may do (docs/design.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Create, list, show and delete workspaces; sites; revocations; usage.
    Platform,
    /// Everything the platform may, and the audit log.
    Admin,
    /// Only the audit log.
    Auditor,
    /// The agent of one site: `/v1/agent/*` for that site.
    Agent,
    /// A visa `sub`: reads its own workspaces only.
    Researcher,
    /// Reviews release requests of the results airlock (never their own workspaces').
    OutputChecker,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Platform,
        Role::Admin,
        Role::Auditor,
        Role::Agent,
        Role::Researcher,
        Role::OutputChecker,
    ];

    /// The name used in the database, on the command line and in audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Agent => "agent",
            Role::Researcher => "researcher",
            Role::OutputChecker => "output_checker",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
