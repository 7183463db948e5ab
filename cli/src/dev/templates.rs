//! Which workspace templates `basho dev` serves: `--templates DIR`, else the repository's
//! `templates/workspaces`, else the built-in `shell` and `batch` templates written under the data
//! dir.

use std::fs;
use std::path::{Path, PathBuf};

use super::DevError;

/// The `shell` template, built in so `basho dev` works from an installed binary too.
pub const BUILTIN_SHELL: &str = include_str!("../../../templates/workspaces/shell.toml");

/// The `batch` template GA4GH TES tasks use, built in for the same reason.
pub const BUILTIN_BATCH: &str = include_str!("../../../templates/workspaces/batch.toml");

/// Every built-in template: its file name and text.
const BUILTIN: [(&str, &str); 2] = [("shell.toml", BUILTIN_SHELL), ("batch.toml", BUILTIN_BATCH)];

const REPO_TEMPLATES: &str = "templates/workspaces";

/// Picks the templates directory (absolute).
pub fn resolve(explicit: Option<&Path>, data_dir: &Path) -> Result<PathBuf, DevError> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    resolve_from(explicit, cwd.as_deref(), exe.as_deref(), data_dir)
}

/// [`resolve`] with the current dir and executable passed in, for tests.
pub fn resolve_from(
    explicit: Option<&Path>,
    cwd: Option<&Path>,
    exe: Option<&Path>,
    data_dir: &Path,
) -> Result<PathBuf, DevError> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            return Err(DevError::Config(format!(
                "--templates {} is not a directory; point it at a directory of <name>.toml templates",
                dir.display()
            )));
        }
        return fs::canonicalize(dir).map_err(|e| DevError::io(dir, e));
    }
    // The current dir first, then the repository a `target/*/basho` binary was built in.
    let candidates = cwd
        .into_iter()
        .chain(exe.into_iter().flat_map(|e| e.ancestors().skip(1)));
    for base in candidates {
        let dir = base.join(REPO_TEMPLATES);
        if dir.join("shell.toml").is_file() {
            return fs::canonicalize(&dir).map_err(|e| DevError::io(&dir, e));
        }
    }
    let dir = data_dir.join("templates");
    fs::create_dir_all(&dir).map_err(|e| DevError::io(&dir, e))?;
    for (name, text) in BUILTIN {
        let file = dir.join(name);
        if !file.exists() {
            fs::write(&file, text).map_err(|e| DevError::io(&file, e))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_are_valid() {
        for (file, text) in BUILTIN {
            let t: basho_core::template::Template = toml::from_str(text).unwrap();
            t.validate(file.trim_end_matches(".toml")).unwrap();
            assert_eq!(t.image, "basho/demo");
        }
    }

    #[test]
    fn explicit_then_repo_then_builtin() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let repo = tmp.path().join("repo");
        fs::create_dir_all(repo.join(REPO_TEMPLATES)).unwrap();
        fs::write(repo.join(REPO_TEMPLATES).join("shell.toml"), BUILTIN_SHELL).unwrap();
        let exe = repo.join("target/debug/basho");
        let nowhere = tmp.path().join("nowhere");
        fs::create_dir_all(&nowhere).unwrap();

        let found = resolve_from(None, Some(&nowhere), Some(&exe), &data).unwrap();
        assert_eq!(found, fs::canonicalize(repo.join(REPO_TEMPLATES)).unwrap());
        let found = resolve_from(None, Some(&repo), None, &data).unwrap();
        assert_eq!(found, fs::canonicalize(repo.join(REPO_TEMPLATES)).unwrap());

        let builtin = resolve_from(None, Some(&nowhere), None, &data).unwrap();
        assert_eq!(builtin, data.join("templates"));
        for (file, text) in BUILTIN {
            assert_eq!(fs::read_to_string(builtin.join(file)).unwrap(), text);
        }

        let explicit = resolve_from(Some(&nowhere), Some(&repo), None, &data).unwrap();
        assert_eq!(explicit, fs::canonicalize(&nowhere).unwrap());
        assert!(resolve_from(Some(&tmp.path().join("missing")), None, None, &data).is_err());
    }
}
