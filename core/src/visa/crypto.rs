//! The cryptography visas are signed and checked with: jsonwebtoken's RustCrypto provider, except
//! that ES256 signatures are verified with ring, whose P-256 is written in assembly and checks a
//! signature in about a quarter of the time. Every create checks its visas and every launch at a
//! site checks them again, so this is most of what placing a workspace costs.

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    verifier_factory: verifier,
    ..rust_crypto::DEFAULT_PROVIDER.clone()
});

/// Makes [`PROVIDER`] the process's jsonwebtoken provider, unless something in the process used
/// jsonwebtoken first (a test signing its own tokens, say): that one then stays, and is correct,
/// only slower. jsonwebtoken keeps the first provider set, so a second call only finds it set.
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *alg != Algorithm::ES256 {
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    }
    // An uncompressed SEC1 point, as a JWK's x and y make; ring checks it is on the curve.
    let point = key.try_get_as_bytes()?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    Ok(Box::new(Es256(UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_FIXED,
        point.to_vec(),
    ))))
}

/// An ES256 public key: signatures are `r || s`, 64 bytes, over SHA-256 of the message.
struct Es256(UnparsedPublicKey<Vec<u8>>);

impl signature::Verifier<Vec<u8>> for Es256 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        self.0.verify(msg, sig).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (jsonwebtoken::EncodingKey, DecodingKey) {
        let issuer = super::super::mint::Issuer::generate("https://iss.test");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&issuer.jwks_json()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(issuer.ec_pem().as_bytes()).unwrap();
        (encoding, decoding)
    }

    /// ring accepts what RustCrypto signs, and refuses a changed message or signature just as
    /// RustCrypto does.
    #[test]
    fn ring_checks_es256_as_rust_crypto_does() {
        let (enc, dec) = keys();
        let signer =
            (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &enc).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::ES256);
        let msg = b"header.payload".to_vec();
        let sig = signer.try_sign(&msg).unwrap();
        let ours = verifier(&Algorithm::ES256, &dec).unwrap();
        let theirs =
            (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, &dec).unwrap();
        let mut bad_sig = sig.clone();
        bad_sig[10] ^= 1;
        for (m, s, ok) in [
            (&msg[..], &sig, true),
            (&b"header.payloaD"[..], &sig, false),
            (&msg[..], &bad_sig, false),
            (&msg[..], &sig[..63].to_vec(), false),
        ] {
            assert_eq!(ours.verify(m, s).is_ok(), ok, "ring on {m:?}");
            assert_eq!(theirs.verify(m, s).is_ok(), ok, "RustCrypto on {m:?}");
        }
    }

    /// Once installed, jsonwebtoken's own checks (those `verify` makes) go through ring: a
    /// 65-byte key that is no curve point is refused by the check, where RustCrypto would have
    /// refused it as a key. (The provider is per process; nextest runs each test in its own.)
    #[test]
    fn install_routes_es256_through_ring() {
        install();
        let bogus = DecodingKey::from_ec_der(&[4u8; 65]);
        let sig = "A".repeat(86);
        assert!(!jsonwebtoken::crypto::verify(&sig, b"m", &bogus, Algorithm::ES256).unwrap());
        assert!(
            (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, &bogus).is_err()
        );
    }

    /// A key that is not an uncompressed P-256 point is refused before any signature is read.
    #[test]
    fn a_key_that_is_no_point_is_refused() {
        let secret = DecodingKey::from_secret(b"not a point");
        assert!(verifier(&Algorithm::ES256, &secret).is_err());
    }
}
