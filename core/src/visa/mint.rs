//! Minting visas: the dev issuer of `basho dev` and the issuers tests generate for themselves.
//! Real visas come from a DAC's issuer; this exists so the whole flow runs on one machine.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use super::{CONTROLLED_ACCESS_GRANTS, VISA_TYP, default_grant_url};

const EC_KID: &str = "ec-1";
const RSA_KID: &str = "rsa-1";

/// A visa issuer holding an ES256 key and, optionally, an RS256 key.
pub struct Issuer {
    iss: String,
    ec_pem: String,
    ec: EncodingKey,
    ec_jwk: Value,
    rsa: Option<(EncodingKey, Value)>,
}

/// The claims and header of one visa to mint; fields are public so tests can bend any of them.
#[derive(Debug, Clone)]
pub struct Visa {
    /// Researcher.
    pub sub: String,
    /// Grant URL (`ga4gh_visa_v1.value`).
    pub value: String,
    /// ES256 or RS256 (or anything else, to test refusals).
    pub alg: Algorithm,
    /// Header `typ`.
    pub typ: Option<String>,
    /// Header `kid`; defaults to the key of `alg`.
    pub kid: Option<String>,
    /// Overrides the `iss` claim.
    pub iss: Option<String>,
    /// Seconds from now to `exp`.
    pub exp_in: i64,
    /// Seconds from now to `iat` (negative: in the past).
    pub iat_in: i64,
    /// `ga4gh_visa_v1.type`.
    pub visa_type: String,
    /// `ga4gh_visa_v1.by`; `None` leaves it out.
    pub by: Option<String>,
    /// Adds a `conditions` claim.
    pub conditions: bool,
    /// `jti`; a fresh random one when `None`.
    pub jti: Option<String>,
}

impl Visa {
    /// A valid one-hour ES256 grant of `dataset` (default grant URL) to `sub`.
    pub fn new(sub: &str, dataset: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            value: default_grant_url(dataset),
            alg: Algorithm::ES256,
            typ: Some(VISA_TYP.to_owned()),
            kid: None,
            iss: None,
            exp_in: 3600,
            iat_in: -10,
            visa_type: CONTROLLED_ACCESS_GRANTS.to_owned(),
            by: Some("dac".to_owned()),
            conditions: false,
            jti: None,
        }
    }

    /// Builder: the lifetime in seconds.
    pub fn expires_in(mut self, s: i64) -> Self {
        self.exp_in = s;
        self
    }

    /// Builder: the signing algorithm.
    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }
}

/// Why an issuer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The PEM is not a P-256 PKCS#8 key.
    #[error("issuer key does not load: {0}")]
    Key(String),
}

impl Issuer {
    /// A new issuer with a fresh P-256 key.
    pub fn generate(iss: &str) -> Self {
        let secret = p256::SecretKey::random(&mut OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a fresh P-256 key encodes")
            .to_string();
        Self::from_ec_pem(iss, &pem).expect("a fresh P-256 key loads")
    }

    /// Loads an issuer from its saved P-256 PKCS#8 PEM.
    pub fn from_ec_pem(iss: &str, pem: &str) -> Result<Self, MintError> {
        use p256::pkcs8::DecodePrivateKey;
        let secret =
            p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| MintError::Key(e.to_string()))?;
        let mut jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())
            .map_err(|e| MintError::Key(e.to_string()))?;
        jwk["kid"] = json!(EC_KID);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        let ec =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| MintError::Key(e.to_string()))?;
        Ok(Self {
            iss: iss.to_owned(),
            ec_pem: pem.to_owned(),
            ec,
            ec_jwk: jwk,
            rsa: None,
        })
    }

    /// Adds a fresh 2048-bit RS256 key.
    pub fn with_rsa(mut self) -> Self {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation");
        let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, LineEnding::LF)
            .expect("a fresh RSA key encodes");
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "RSA", "kid": RSA_KID, "alg": "RS256", "use": "sig",
            "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be())});
        let enc = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a fresh RSA key loads");
        self.rsa = Some((enc, jwk));
        self
    }

    /// The issuer name (`iss`).
    pub fn name(&self) -> &str {
        &self.iss
    }

    /// The ES256 private key, PKCS#8 PEM, for saving.
    pub fn ec_pem(&self) -> &str {
        &self.ec_pem
    }

    /// The public keys as a JWKS document.
    pub fn jwks_json(&self) -> String {
        let mut keys = vec![self.ec_jwk.clone()];
        if let Some((_, jwk)) = &self.rsa {
            keys.push(jwk.clone());
        }
        json!({ "keys": keys }).to_string()
    }

    /// Signs `claims` with the ES256 key, header `typ` as given: approvals, identity tokens.
    pub fn sign_claims(&self, claims: &Value, typ: Option<&str>) -> String {
        super::crypto::install();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(EC_KID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.ec).expect("ES256 signing")
    }

    /// A valid one-hour ES256 visa granting `dataset` to `sub`.
    pub fn mint(&self, sub: &str, dataset: &str) -> String {
        self.sign(&Visa::new(sub, dataset))
    }

    /// Signs `visa` as given (also when that makes it invalid: tests rely on it).
    pub fn sign(&self, visa: &Visa) -> String {
        super::crypto::install();
        let now = chrono::Utc::now().timestamp();
        // HMAC keyed with the public JWKS: the classic algorithm-confusion forgery, for tests.
        let hmac;
        let (key, default_kid) = match visa.alg {
            Algorithm::RS256 => {
                let (k, _) = self
                    .rsa
                    .as_ref()
                    .expect("issuer has no RSA key: call with_rsa");
                (k, RSA_KID)
            }
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                hmac = EncodingKey::from_secret(self.jwks_json().as_bytes());
                (&hmac, EC_KID)
            }
            _ => (&self.ec, EC_KID),
        };
        let mut header = Header::new(visa.alg);
        header.typ = visa.typ.clone();
        header.kid = Some(visa.kid.clone().unwrap_or_else(|| default_kid.to_owned()));
        let mut inner = json!({
            "type": visa.visa_type,
            "asserted": now - 100,
            "value": visa.value,
            "source": "https://ddbj.nig.ac.jp/jga/dac/JGAC000001",
        });
        if let Some(by) = &visa.by {
            inner["by"] = json!(by);
        }
        if visa.conditions {
            inner["conditions"] = json!([[{"type": "AffiliationAndRole", "value": "const:faculty@example.org", "by": "so"}]]);
        }
        let claims = json!({
            "iss": visa.iss.clone().unwrap_or_else(|| self.iss.clone()),
            "sub": visa.sub,
            "iat": now + visa.iat_in,
            "exp": now + visa.exp_in,
            "jti": visa.jti.clone().unwrap_or_else(random_jti),
            "ga4gh_visa_v1": inner,
        });
        jsonwebtoken::encode(&header, &claims, key).expect("signing a visa")
    }
}

fn random_jti() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
