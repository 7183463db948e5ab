//! GA4GH Passport v1.2 visa verification: `ControlledAccessGrants` visas signed with ES256 or RS256
//! by a trusted issuer whose keys come from a JWKS file. Pure: the caller passes the clock.

use std::collections::BTreeMap;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

pub mod crypto;
pub mod mint;

/// The JWT `typ` header every visa carries.
pub const VISA_TYP: &str = "vnd.ga4gh.visa+jwt";
/// The only visa type basho accepts.
pub const CONTROLLED_ACCESS_GRANTS: &str = "ControlledAccessGrants";
/// A dataset's grant URL unless the site catalog names another.
pub const DEFAULT_GRANT_PREFIX: &str = "https://ddbj.nig.ac.jp/search/entry/jga-dataset/";
/// Clock skew tolerated for `iat`.
pub const LEEWAY_S: i64 = 60;
/// A visa longer than this is refused before any parsing.
pub const MAX_VISA_LEN: usize = 16 * 1024;

/// The grant URL of `dataset` when its catalog names none.
pub fn default_grant_url(dataset: &str) -> String {
    format!("{DEFAULT_GRANT_PREFIX}{dataset}")
}

/// Issuers whose visas are trusted, each with its signing keys.
#[derive(Debug, Clone, Default)]
pub struct TrustedIssuers {
    issuers: BTreeMap<String, JwkSet>,
}

impl TrustedIssuers {
    /// No issuer trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `issuer` with the keys of a JWKS document.
    pub fn add_json(&mut self, issuer: &str, jwks_json: &str) -> Result<(), String> {
        let set: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| format!("JWKS for {issuer} does not parse: {e}"))?;
        if set.keys.is_empty() {
            return Err(format!("JWKS for {issuer} holds no key"));
        }
        for key in &set.keys {
            DecodingKey::from_jwk(key)
                .map_err(|e| format!("JWKS for {issuer} holds an unusable key: {e}"))?;
        }
        self.issuers.insert(issuer.to_owned(), set);
        Ok(())
    }

    /// The trusted issuer names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Whether no issuer is trusted.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }
}

/// What a verified visa grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Issuer.
    pub iss: String,
    /// The researcher.
    pub sub: String,
    /// Visa id, for audit and revocation.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The grant URL of the dataset.
    pub value: String,
    /// Who asserted it (`dac`, `so`, ...).
    pub by: String,
    /// The organisation that made the grant (`ga4gh_visa_v1.source`, the DAC), when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Why a visa is refused. Every variant names the problem and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisaError {
    /// Not a compact JWS, or its parts do not decode.
    #[error("visa is not a well-formed JWT: {0}")]
    Malformed(String),
    /// The `typ` header is not `vnd.ga4gh.visa+jwt`.
    #[error("visa header typ is {0:?}; a GA4GH visa carries typ {VISA_TYP:?}")]
    WrongTyp(Option<String>),
    /// Signed with an algorithm other than ES256 or RS256.
    #[error("visa is signed with {0}; only ES256 and RS256 are accepted")]
    Algorithm(String),
    /// The issuer is not in the trusted list.
    #[error("visa issuer {0:?} is not trusted here; ask the site to trust its JWKS")]
    UntrustedIssuer(String),
    /// The header has no `kid`.
    #[error("visa header has no kid; the issuer must name its signing key")]
    MissingKid,
    /// No key with that `kid` in the issuer's JWKS.
    #[error("issuer {iss:?} has no key {kid:?}; its JWKS may be out of date")]
    UnknownKey {
        /// Issuer.
        iss: String,
        /// Key id.
        kid: String,
    },
    /// The key named by `kid` is not of the kind the header's `alg` needs.
    #[error("key {0:?} does not match the visa's algorithm")]
    KeyMismatch(String),
    /// The signature does not verify.
    #[error("visa signature does not verify against issuer {0:?}")]
    BadSignature(String),
    /// Past `exp`.
    #[error("visa expired at {0} (Unix seconds); ask the DAC's issuer for a fresh one")]
    Expired(i64),
    /// `iat` in the future.
    #[error("visa issued in the future (iat {0}); check the issuer's clock")]
    IssuedInFuture(i64),
    /// `nbf` in the future.
    #[error("visa is not valid before {0} (Unix seconds, nbf); use it from then on")]
    NotBefore(i64),
    /// A required claim is missing or of the wrong type.
    #[error("visa lacks the {0} claim")]
    MissingClaim(&'static str),
    /// `ga4gh_visa_v1.type` is not ControlledAccessGrants.
    #[error("visa type is {0:?}; only {CONTROLLED_ACCESS_GRANTS} grants data access")]
    NotControlledAccessGrants(String),
    /// `ga4gh_visa_v1.conditions` present: basho evaluates none, so it must refuse.
    #[error(
        "visa carries conditions, which basho does not evaluate; ask for an unconditional grant"
    )]
    Conditions,
    /// Visas of one request name different subjects.
    #[error(
        "visas name different subjects ({0:?} and {1:?}); send one researcher's visas per request"
    )]
    SubjectMismatch(String, String),
}

impl VisaError {
    /// The API error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            VisaError::Malformed(_) => "visa_malformed",
            VisaError::WrongTyp(_) => "visa_wrong_typ",
            VisaError::Algorithm(_) => "visa_algorithm",
            VisaError::UntrustedIssuer(_) => "visa_untrusted_issuer",
            VisaError::MissingKid | VisaError::UnknownKey { .. } | VisaError::KeyMismatch(_) => {
                "visa_unknown_key"
            }
            VisaError::BadSignature(_) => "visa_bad_signature",
            VisaError::Expired(_) => "visa_expired",
            VisaError::IssuedInFuture(_) | VisaError::NotBefore(_) => "visa_not_yet_valid",
            VisaError::MissingClaim(_) => "visa_missing_claim",
            VisaError::NotControlledAccessGrants(_) => "visa_wrong_type",
            VisaError::Conditions => "visa_conditions",
            VisaError::SubjectMismatch(..) => "visa_subject_mismatch",
        }
    }
}

/// Verifies one visa at time `now` (Unix seconds).
pub fn verify(jwt: &str, trusted: &TrustedIssuers, now: i64) -> Result<Grant, VisaError> {
    let header = header_of(jwt)?;
    if header.typ.as_deref() != Some(VISA_TYP) {
        return Err(VisaError::WrongTyp(header.typ));
    }
    let (iss, claims) = signed_with(jwt, header, trusted, false)?;
    grant_from_claims(&claims, iss, now)
}

/// The header of a compact JWS no longer than [`MAX_VISA_LEN`].
fn header_of(jwt: &str) -> Result<jsonwebtoken::Header, VisaError> {
    if jwt.len() > MAX_VISA_LEN {
        return Err(VisaError::Malformed(format!(
            "longer than {MAX_VISA_LEN} bytes"
        )));
    }
    jsonwebtoken::decode_header(jwt).map_err(|e| VisaError::Malformed(e.to_string()))
}

/// The issuer and claims of a compact JWS signed (ES256 or RS256) by one of `trusted`, the
/// signature checked and nothing else: visas and identity tokens check their own claims. With
/// `sole_key`, a header without `kid` is checked against the issuer's key when it has only one
/// (as some identity providers sign); visas always name their key.
pub fn signed_claims(
    jwt: &str,
    trusted: &TrustedIssuers,
    sole_key: bool,
) -> Result<(String, serde_json::Value), VisaError> {
    signed_with(jwt, header_of(jwt)?, trusted, sole_key)
}

fn signed_with(
    jwt: &str,
    header: jsonwebtoken::Header,
    trusted: &TrustedIssuers,
    sole_key: bool,
) -> Result<(String, serde_json::Value), VisaError> {
    crypto::install();
    refuse_critical_extensions(jwt)?;
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
        return Err(VisaError::Algorithm(format!("{:?}", header.alg)));
    }
    // The issuer picks the key set, so read it before the signature is checked; nothing else from
    // the unverified payload is trusted.
    let iss = unverified_claim(jwt, "iss")?;
    let set = trusted
        .issuers
        .get(&iss)
        .ok_or_else(|| VisaError::UntrustedIssuer(iss.clone()))?;
    let (kid, jwk) = match header.kid {
        Some(kid) => {
            let jwk = set.find(&kid).ok_or_else(|| VisaError::UnknownKey {
                iss: iss.clone(),
                kid: kid.clone(),
            })?;
            (kid, jwk)
        }
        None if sole_key && set.keys.len() == 1 => (String::new(), &set.keys[0]),
        None => return Err(VisaError::MissingKid),
    };
    let fits = matches!(
        (&jwk.algorithm, header.alg),
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            | (AlgorithmParameters::RSA(_), Algorithm::RS256)
    );
    let declared_ok = jwk
        .common
        .key_algorithm
        .is_none_or(|a| format!("{a:?}") == format!("{:?}", header.alg));
    if !fits || !declared_ok {
        return Err(VisaError::KeyMismatch(kid));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| VisaError::KeyMismatch(kid.clone()))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).map_err(|e| {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                VisaError::BadSignature(iss.clone())
            }
            _ => VisaError::Malformed(e.to_string()),
        }
    })?;
    Ok((iss, data.claims))
}

/// The JSON object in segment `index` of a compact JWS (0: header, 1: payload), unverified.
pub(crate) fn segment(jwt: &str, index: usize, name: &str) -> Result<serde_json::Value, VisaError> {
    let part = jwt
        .split('.')
        .nth(index)
        .ok_or_else(|| VisaError::Malformed(format!("no {name}")))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| VisaError::Malformed(format!("{name}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| VisaError::Malformed(format!("{name}: {e}")))
}

/// RFC 7515 section 4.1.11: a JWS whose `crit` header lists extensions the recipient does not
/// understand must be refused. basho understands none, so any `crit` is refused.
fn refuse_critical_extensions(jwt: &str) -> Result<(), VisaError> {
    if segment(jwt, 0, "header")?.get("crit").is_some() {
        return Err(VisaError::Malformed(
            "the header's crit lists extensions basho does not understand (RFC 7515 4.1.11)".into(),
        ));
    }
    Ok(())
}

/// String claim `name` of a JWT, unverified: for choosing a key, or refusing early what
/// verification would refuse anyway.
pub fn unverified_claim(jwt: &str, name: &'static str) -> Result<String, VisaError> {
    let claims = segment(jwt, 1, "payload")?;
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or(VisaError::MissingClaim(name))
}

fn grant_from_claims(c: &serde_json::Value, iss: String, now: i64) -> Result<Grant, VisaError> {
    let string = |v: &serde_json::Value, name: &'static str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(VisaError::MissingClaim(name))
    };
    let int = |name: &'static str| {
        c.get(name)
            .and_then(|x| x.as_i64())
            .ok_or(VisaError::MissingClaim(name))
    };
    let sub = string(c, "sub")?;
    let jti = string(c, "jti")?;
    let iat = int("iat")?;
    let exp = int("exp")?;
    if exp <= now {
        return Err(VisaError::Expired(exp));
    }
    if iat > now + LEEWAY_S {
        return Err(VisaError::IssuedInFuture(iat));
    }
    match c.get("nbf") {
        None => {}
        Some(v) => match v.as_i64() {
            Some(nbf) if nbf > now + LEEWAY_S => return Err(VisaError::NotBefore(nbf)),
            Some(_) => {}
            None => return Err(VisaError::MissingClaim("nbf (as a number)")),
        },
    }
    let visa = c
        .get("ga4gh_visa_v1")
        .filter(|v| v.is_object())
        .ok_or(VisaError::MissingClaim("ga4gh_visa_v1"))?;
    let kind = string(visa, "type").map_err(|_| VisaError::MissingClaim("ga4gh_visa_v1.type"))?;
    if kind != CONTROLLED_ACCESS_GRANTS {
        return Err(VisaError::NotControlledAccessGrants(kind));
    }
    if visa.get("conditions").is_some_and(|v| !v.is_null()) {
        return Err(VisaError::Conditions);
    }
    let value =
        string(visa, "value").map_err(|_| VisaError::MissingClaim("ga4gh_visa_v1.value"))?;
    let by = string(visa, "by").map_err(|_| VisaError::MissingClaim("ga4gh_visa_v1.by"))?;
    let source = string(visa, "source").ok();
    Ok(Grant {
        iss,
        sub,
        jti,
        iat,
        exp,
        value,
        by,
        source,
    })
}

/// Verifies every visa of a request and checks they name one subject. On failure, returns the
/// index of the first bad visa with its reason.
pub fn verify_all(
    visas: &[String],
    trusted: &TrustedIssuers,
    now: i64,
) -> Result<Vec<Grant>, (usize, VisaError)> {
    let mut grants: Vec<Grant> = Vec::with_capacity(visas.len());
    for (i, jwt) in visas.iter().enumerate() {
        let g = verify(jwt, trusted, now).map_err(|e| (i, e))?;
        if let Some(first) = grants.first()
            && first.sub != g.sub
        {
            return Err((i, VisaError::SubjectMismatch(first.sub.clone(), g.sub)));
        }
        grants.push(g);
    }
    Ok(grants)
}

#[cfg(test)]
mod tests;

/// A trusted issuer as configs name it: the `iss` value and the JWKS file holding its public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerRef {
    /// The issuer's `iss`.
    pub issuer: String,
    /// Path of its JWKS document.
    pub jwks_file: std::path::PathBuf,
}
