//! What a site checks before it opens a session, so that a compromised orchestrator cannot open
//! one: the researcher's OpenID Connect identity token, signed by an identity provider the site
//! trusts, naming the workspace's owner and bound to this one session by its `nonce`; or, for an
//! administrator entering someone else's workspace, a break-glass approval signed by a key the
//! site trusts. The orchestrator passes the proof on; only the site verifies it. Pure: the
//! caller passes the clock and remembers which proofs were used.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::visa::{LEEWAY_S, TrustedIssuers, VisaError, signed_claims};

/// The JWT `typ` header of a break-glass approval.
pub const APPROVAL_TYP: &str = "basho-approval+jwt";
/// The longest-lived break-glass approval a site accepts.
pub const MAX_APPROVAL_S: i64 = 24 * 3600;

/// The proof a client sends with a session's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proof {
    /// An OpenID Connect ID token whose `nonce` is [`session_nonce`] of the workspace and
    /// `seed`.
    IdToken {
        /// The compact JWT.
        token: String,
        /// The random value the client chose for this session.
        seed: String,
    },
    /// A break-glass approval ([`APPROVAL_TYP`]) signed by a site approver.
    Approval {
        /// The compact JWT.
        token: String,
    },
}

/// The `nonce` an identity token carries to open one session in `workspace`: the client picks a
/// fresh `seed` per session and asks the identity provider for a token with this nonce, so the
/// token opens that session in that workspace and nothing else.
pub fn session_nonce(workspace: &str, seed: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"basho-session-v1\n");
    h.update(workspace.as_bytes());
    h.update(b"\n");
    h.update(seed.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// A fresh random seed for [`session_nonce`].
pub fn fresh_seed() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// The PKCE `code_challenge` (method `S256`, RFC 7636) of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An identity provider whose tokens open sessions at a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityIssuer {
    /// The provider's `iss`.
    pub issuer: String,
    /// Path of its JWKS document (its `jwks_uri`, saved at the site). Read again when a token
    /// names a key it lacks, so the provider's key rotation needs no restart.
    pub jwks_file: std::path::PathBuf,
    /// The `aud` the token must carry: the client id basho's command line uses at the provider.
    pub audience: String,
    /// The claim that names the researcher as the visas' `sub` does.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// What a valid proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// Whose proof: the researcher (identity token) or the approved administrator.
    pub who: String,
    /// The issuer that signed it.
    pub issuer: String,
    /// The token's single use: no other session opens with it until `expires`.
    pub once: String,
    /// When the token expires (Unix seconds).
    pub expires: i64,
    /// Whether this is a break-glass approval.
    pub break_glass: bool,
}

impl std::fmt::Display for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.break_glass {
            write!(
                f,
                "break-glass approval for {} signed by {}",
                self.who, self.issuer
            )
        } else {
            write!(f, "identity token of {} from {}", self.who, self.issuer)
        }
    }
}

/// Why a proof was refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofError(pub String);

fn refused(what: &str, e: VisaError) -> ProofError {
    let why = match e {
        VisaError::Malformed(m) => format!("is not a well-formed JWT: {m}"),
        VisaError::Algorithm(a) => format!("is signed with {a}; only ES256 and RS256 are accepted"),
        VisaError::UntrustedIssuer(i) => {
            format!("comes from {i:?}, which this site does not trust")
        }
        VisaError::MissingKid => "names no signing key (kid)".into(),
        VisaError::UnknownKey { iss, kid } => {
            format!("is signed with key {kid:?}, which the site's JWKS for {iss:?} lacks")
        }
        VisaError::KeyMismatch(kid) => format!("does not fit key {kid:?}"),
        VisaError::BadSignature(iss) => format!("has a signature that does not verify ({iss})"),
        other => other.to_string(),
    };
    ProofError(format!("the {what} {why}"))
}

/// Whether `e` says a key was missing: the caller may reread its JWKS files and try again.
pub fn unknown_key(e: &VisaError) -> bool {
    matches!(e, VisaError::UnknownKey { .. })
}

fn int(c: &Value, name: &str) -> Option<i64> {
    c.get(name).and_then(Value::as_i64)
}

fn text<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks `exp`, `iat` and `nbf` of `c` at `now`; `max_age_s` bounds how old `iat` may be.
fn fresh(c: &Value, what: &str, now: i64, max_age_s: i64) -> Result<(i64, i64), ProofError> {
    let (Some(iat), Some(exp)) = (int(c, "iat"), int(c, "exp")) else {
        return Err(ProofError(format!("the {what} lacks iat or exp")));
    };
    if exp <= now {
        return Err(ProofError(format!(
            "the {what} expired at {exp} (Unix seconds); get a fresh one"
        )));
    }
    if iat > now + LEEWAY_S || int(c, "nbf").is_some_and(|nbf| nbf > now + LEEWAY_S) {
        return Err(ProofError(format!(
            "the {what} is not valid yet; check the issuer's clock"
        )));
    }
    if now - iat > max_age_s {
        return Err(ProofError(format!(
            "the {what} was issued {}s ago, more than the site's {max_age_s}s; get a fresh one",
            now - iat
        )));
    }
    Ok((iat, exp))
}

/// What marks an identity token used: its issuer and nonce.
pub fn once_key(iss: &str, claims: &Value) -> String {
    format!("{iss}\n{}", text(claims, "nonce").unwrap_or_default())
}

/// Checks an identity token that opens a session in `workspace`, owned by `owner`, at `now`;
/// `claims` are its issuer and claims as [`signed`] verified them against `issuer`'s keys.
pub fn check_id_token(
    claims: (String, Value),
    issuer: &IdentityIssuer,
    workspace: &str,
    owner: &str,
    seed: &str,
    now: i64,
    max_age_s: i64,
) -> Result<Proven, ProofError> {
    const WHAT: &str = "identity token";
    let (iss, c) = claims;
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == issuer.audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&issuer.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(ProofError(format!(
            "the {WHAT} is not meant for this site: its aud lacks {:?} (set the command line's \
             client id to it)",
            issuer.audience
        )));
    }
    let (_, exp) = fresh(&c, WHAT, now, max_age_s)?;
    let nonce = text(&c, "nonce").unwrap_or_default();
    if nonce.is_empty() || nonce != session_nonce(workspace, seed) {
        return Err(ProofError(format!(
            "the {WHAT} was not issued for this session in {workspace} (its nonce differs)"
        )));
    }
    let who = text(&c, &issuer.subject_claim).ok_or_else(|| {
        ProofError(format!(
            "the {WHAT} lacks the {} claim",
            issuer.subject_claim
        ))
    })?;
    if who != owner {
        return Err(ProofError(format!(
            "the {WHAT} names {who:?}, but {workspace} belongs to {owner:?}; only its owner \
             opens sessions in it"
        )));
    }
    Ok(Proven {
        who: who.to_owned(),
        once: once_key(&iss, &c),
        issuer: iss,
        expires: exp,
        break_glass: false,
    })
}

/// The signature layer of [`check_id_token`] and [`check_approval`]: the issuer and claims of
/// `jwt` signed by one of `trusted`.
pub fn signed(
    jwt: &str,
    trusted: &TrustedIssuers,
    what: &str,
) -> Result<(String, Value), (bool, ProofError)> {
    signed_claims(jwt, trusted, true).map_err(|e| (unknown_key(&e), refused(what, e)))
}

/// Verifies a break-glass approval for a session in `workspace` with `reason`, at `now`.
pub fn check_approval(
    jwt: &str,
    claims: (String, Value),
    workspace: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Proven, ProofError> {
    const WHAT: &str = "break-glass approval";
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| ProofError(e.to_string()))?;
    if header.typ.as_deref() != Some(APPROVAL_TYP) {
        return Err(ProofError(format!(
            "the {WHAT} has typ {:?}, not {APPROVAL_TYP:?}",
            header.typ
        )));
    }
    let (iss, c) = claims;
    let (_, exp) = fresh(&c, WHAT, now, MAX_APPROVAL_S)?;
    if exp - int(&c, "iat").unwrap_or(exp) > MAX_APPROVAL_S {
        return Err(ProofError(format!(
            "the {WHAT} lasts longer than {MAX_APPROVAL_S}s; sign a shorter one"
        )));
    }
    if text(&c, "workspace") != Some(workspace) {
        return Err(ProofError(format!(
            "the {WHAT} is for another workspace, not {workspace}"
        )));
    }
    let reason = reason.map(str::trim).unwrap_or_default();
    if reason.is_empty() || text(&c, "reason").map(str::trim) != Some(reason) {
        return Err(ProofError(format!(
            "the {WHAT} was signed for another reason; give the reason it names"
        )));
    }
    let (Some(who), Some(jti)) = (text(&c, "sub"), text(&c, "jti")) else {
        return Err(ProofError(format!("the {WHAT} lacks sub or jti")));
    };
    Ok(Proven {
        who: who.to_owned(),
        once: format!("{iss}\n{jti}"),
        issuer: iss,
        expires: exp,
        break_glass: true,
    })
}

/// The claims of a break-glass approval letting `who` into `workspace` for `reason` until
/// `now + ttl_s`, to sign with [`crate::visa::mint::Issuer::sign_claims`] and [`APPROVAL_TYP`].
pub fn approval_claims(
    approver: &str,
    who: &str,
    workspace: &str,
    reason: &str,
    now: i64,
    ttl_s: i64,
) -> Value {
    serde_json::json!({
        "iss": approver,
        "sub": who,
        "workspace": workspace,
        "reason": reason,
        "iat": now,
        "exp": now + ttl_s,
        "jti": fresh_seed(),
    })
}

#[cfg(test)]
mod tests;
