//! Workspace templates (`templates/workspaces/<name>.toml`): the image, the command and default
//! resources a kind of workspace runs with. The orchestrator loads and validates them at start-up.

use serde::{Deserialize, Serialize};

use crate::{Ident, Resources};

/// One workspace template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Template name; must equal the file's stem.
    pub name: Ident,
    /// One line for people choosing a template.
    pub description: String,
    /// Image name; each site maps it to a pinned image through its allow-list.
    pub image: String,
    /// The command the container runs (no shell unless the command names one).
    pub command: Vec<String>,
    /// Resources when the request names none.
    pub resources: Resources,
    /// The longest lifetime this template allows, in seconds; the default duration too.
    pub max_duration_s: u64,
}

/// Why a template is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The TOML does not parse or has unknown fields.
    #[error("template {file}: {message}")]
    Parse {
        /// File name.
        file: String,
        /// Parser's message.
        message: String,
    },
    /// The file is valid TOML but breaks a rule.
    #[error("template {name}: {message}")]
    Invalid {
        /// Template name.
        name: String,
        /// Which rule and how to fix it.
        message: String,
    },
}

impl Template {
    /// Checks the rules a parsed template must also meet; `stem` is its file name without `.toml`.
    pub fn validate(&self, stem: &str) -> Result<(), TemplateError> {
        let bad = |message: String| TemplateError::Invalid {
            name: self.name.to_string(),
            message,
        };
        if self.name.as_str() != stem {
            return Err(bad(format!(
                "name {:?} differs from its file name {stem:?}.toml",
                self.name.as_str()
            )));
        }
        if self.image.is_empty() || self.image.chars().any(|c| c.is_whitespace()) {
            return Err(bad("image must be a non-empty name without spaces".into()));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(bad("command must name a program".into()));
        }
        self.resources.validate().map_err(bad)?;
        if self.max_duration_s == 0 || self.max_duration_s > crate::workspace::MAX_DURATION_S {
            return Err(bad(format!(
                "max_duration_s must be 1 to {}",
                crate::workspace::MAX_DURATION_S
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL: &str = r#"
name = "shell"
description = "a shell"
image = "basho/demo"
command = ["sh"]
max_duration_s = 3600
[resources]
cpus = 1
memory_mib = 256
"#;

    #[test]
    fn parses_and_validates() {
        let t: Template = toml_like(SHELL);
        t.validate("shell").unwrap();
        assert!(t.validate("other").is_err());
    }

    #[test]
    fn refuses_bad_rules() {
        let mut t: Template = toml_like(SHELL);
        t.command.clear();
        assert!(t.validate("shell").is_err());
        let mut t: Template = toml_like(SHELL);
        t.max_duration_s = 0;
        assert!(t.validate("shell").is_err());
    }

    fn toml_like(s: &str) -> Template {
        toml::from_str(s).unwrap()
    }
}
