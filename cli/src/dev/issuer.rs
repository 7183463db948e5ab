//! The dev visa issuer: a P-256 key made once per data dir (`issuer/ec.pem`, 0600) with its JWKS
//! (`issuer/jwks.json`), trusted by the orchestrator and every agent of `basho dev`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use basho_core::proof::IdentityIssuer;
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::{Issuer, Visa};

use super::{DevError, secrets};

/// The `iss` of the dev issuer's visas.
pub const DEV_ISSUER: &str = "https://dev.basho.invalid/issuer";

/// The client id (`aud`) of the dev identity tokens.
pub const DEV_AUDIENCE: &str = "basho";

/// Where the dev issuer's files live under a data dir.
#[derive(Debug, Clone)]
pub struct IssuerFiles {
    /// The private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// The public keys, JWKS.
    pub jwks: PathBuf,
}

impl IssuerFiles {
    /// The files under `data_dir/issuer/`.
    pub fn under(data_dir: &Path) -> Self {
        let dir = data_dir.join("issuer");
        Self {
            key: dir.join("ec.pem"),
            jwks: dir.join("jwks.json"),
        }
    }

    /// How configs name this issuer.
    pub fn issuer_ref(&self) -> IssuerRef {
        IssuerRef {
            issuer: DEV_ISSUER.to_owned(),
            jwks_file: self.jwks.clone(),
        }
    }

    /// How the dev sites name the issuer as their identity provider.
    pub fn identity_issuer(&self) -> IdentityIssuer {
        IdentityIssuer {
            issuer: DEV_ISSUER.to_owned(),
            jwks_file: self.jwks.clone(),
            audience: DEV_AUDIENCE.to_owned(),
            subject_claim: "sub".to_owned(),
        }
    }

    /// Loads the issuer, making its key first if there is none; rewrites the JWKS from the key
    /// so the two never disagree.
    pub fn load_or_create(&self) -> Result<Issuer, DevError> {
        let issuer = if self.key.exists() {
            self.load()?
        } else {
            let issuer = Issuer::generate(DEV_ISSUER);
            secrets::save(&self.key, issuer.ec_pem()).map_err(|e| DevError::io(&self.key, e))?;
            issuer
        };
        fs::write(&self.jwks, issuer.jwks_json()).map_err(|e| DevError::io(&self.jwks, e))?;
        fs::set_permissions(&self.jwks, fs::Permissions::from_mode(0o644))
            .map_err(|e| DevError::io(&self.jwks, e))?;
        Ok(issuer)
    }

    /// Loads the saved issuer; says how to make one when there is none.
    pub fn load(&self) -> Result<Issuer, DevError> {
        let pem = match fs::read_to_string(&self.key) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DevError::NotInitialised {
                    what: "dev issuer key",
                    path: self.key.clone(),
                });
            }
            Err(e) => return Err(DevError::io(&self.key, e)),
        };
        // The PEM parser is strict about what follows the end line.
        let pem = format!("{}\n", pem.trim());
        Issuer::from_ec_pem(DEV_ISSUER, &pem).map_err(|e| DevError::Corrupt {
            path: self.key.clone(),
            reason: e.to_string(),
        })
    }
}

/// A visa granting `dataset` to `subject` for `expires_in`.
pub fn mint(issuer: &Issuer, dataset: &str, subject: &str, expires_in: Duration) -> String {
    let secs = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX / 2);
    issuer.sign(&Visa::new(subject, dataset).expires_in(secs))
}

/// A five-minute identity token naming `subject` for the session whose nonce is `nonce`.
pub fn id_token(issuer: &Issuer, subject: &str, nonce: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"iss": DEV_ISSUER, "sub": subject, "aud": DEV_AUDIENCE,
        "iat": now, "exp": now + 300, "nonce": nonce});
    issuer.sign_claims(&claims, Some("JWT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use basho_core::visa::{TrustedIssuers, default_grant_url, verify};

    #[test]
    fn saved_issuer_round_trips_and_its_visas_verify_against_the_saved_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let files = IssuerFiles::under(dir.path());
        assert!(matches!(files.load(), Err(DevError::NotInitialised { .. })));
        let first = files.load_or_create().unwrap();
        let mode = fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = files.load_or_create().unwrap();
        assert_eq!(first.ec_pem(), again.ec_pem(), "the key is made once");

        let loaded = files.load().unwrap();
        let jwt = mint(&loaded, "JGAD000101", "alice", Duration::from_secs(600));
        let mut trusted = TrustedIssuers::new();
        trusted
            .add_json(DEV_ISSUER, &fs::read_to_string(&files.jwks).unwrap())
            .unwrap();
        let now = chrono::Utc::now().timestamp();
        let grant = verify(&jwt, &trusted, now).unwrap();
        assert_eq!(grant.sub, "alice");
        assert_eq!(grant.iss, DEV_ISSUER);
        assert_eq!(grant.value, default_grant_url("JGAD000101"));
        assert!((grant.exp - now - 600).abs() <= 5, "exp follows expires_in");
    }

    #[test]
    fn a_corrupt_key_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let files = IssuerFiles::under(dir.path());
        fs::create_dir_all(files.key.parent().unwrap()).unwrap();
        fs::write(&files.key, "not a key").unwrap();
        let Err(e) = files.load() else {
            panic!("a corrupt key must not load")
        };
        assert!(e.to_string().contains("ec.pem"), "{e}");
    }
}
