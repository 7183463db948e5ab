//! Workspace templates: every `*.toml` in `templates_dir`, parsed and validated at start-up.
//! One bad file stops start-up, and every bad file is named at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use basho_core::template::Template;

/// Why the templates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    /// The directory cannot be read.
    #[error(
        "templates_dir {path}: {source}; point templates_dir at a directory of <name>.toml files"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Some files are invalid; each entry names one file and its problem.
    #[error("invalid templates: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The directory holds no template.
    #[error("templates_dir {0} holds no *.toml template; add one such as shell.toml")]
    Empty(PathBuf),
}

/// The loaded templates by name.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
}

impl Templates {
    /// Loads and validates every `*.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TemplatesError> {
        let entries = std::fs::read_dir(dir).map_err(|source| TemplatesError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut by_name = BTreeMap::new();
        let mut problems = Vec::new();
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            match load_one(&path, &stem) {
                Ok(t) => {
                    by_name.insert(stem, t);
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(TemplatesError::Invalid(problems));
        }
        if by_name.is_empty() {
            return Err(TemplatesError::Empty(dir.to_owned()));
        }
        Ok(Self { by_name })
    }

    /// Templates given directly (tests).
    pub fn from_templates(templates: impl IntoIterator<Item = Template>) -> Self {
        Self {
            by_name: templates
                .into_iter()
                .map(|t| (t.name.to_string(), t))
                .collect(),
        }
    }

    /// The template called `name`.
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.by_name.get(name)
    }

    /// Every template name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

fn load_one(path: &Path, stem: &str) -> Result<Template, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let t: Template =
        toml::from_str(&text).map_err(|e| format!("{file}: {}", e.message().trim_end()))?;
    t.validate(stem).map_err(|e| format!("{file}: {e}"))?;
    Ok(t)
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
    fn loads_the_repository_templates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
        let t = Templates::load(&dir).unwrap();
        let shell = t.get("shell").expect("shell.toml is in the repository");
        assert_eq!(shell.name.as_str(), "shell");
        assert!(t.names().contains(&"shell"));
    }

    #[test]
    fn names_every_bad_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shell.toml"), SHELL).unwrap();
        std::fs::write(dir.path().join("other.toml"), SHELL).unwrap();
        std::fs::write(dir.path().join("broken.toml"), "name = ").unwrap();
        std::fs::write(
            dir.path().join("extra.toml"),
            format!(
                "{}\nsurprise = 1\n",
                SHELL.replace("\"shell\"", "\"extra\"")
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a template").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        let TemplatesError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err}")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        let all = err.to_string();
        assert!(all.contains("other.toml"), "{all}");
        assert!(all.contains("differs from its file name"), "{all}");
        assert!(all.contains("broken.toml"), "{all}");
        assert!(
            all.contains("extra.toml") && all.contains("surprise"),
            "{all}"
        );
    }

    #[test]
    fn refuses_an_empty_or_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Templates::load(dir.path()),
            Err(TemplatesError::Empty(_))
        ));
        assert!(matches!(
            Templates::load(&dir.path().join("nope")),
            Err(TemplatesError::Dir { .. })
        ));
    }
}
