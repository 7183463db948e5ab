//! Tokens `basho dev` generates once and keeps under the data dir (mode 0600), so a restart with
//! the same data dir keeps the platform's and the agents' credentials.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;

/// A fresh random token: 32 bytes from the OS, hex.
pub fn generate_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    basho_core::digest::hex(&b)
}

/// Reads the token saved at `path`, or generates and saves one.
pub fn load_or_create(path: &Path) -> std::io::Result<String> {
    match read(path)? {
        Some(t) => Ok(t),
        None => {
            let t = generate_token();
            save(path, &t)?;
            Ok(t)
        }
    }
}

/// The token saved at `path`, `None` when there is none (or the file is empty).
pub fn read(path: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Saves a secret readable by its owner only (0600), replacing what was there.
pub fn save(path: &Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.trim_end().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/platform-token");
        assert_eq!(read(&path).unwrap(), None);
        let a = load_or_create(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(&path).unwrap(), a);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(generate_token(), a);
    }

    #[test]
    fn save_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        save(&path, "one").unwrap();
        save(&path, "two").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("two"));
    }
}
