//! Signed checkpoints of the audit chain: the orchestrator signs (Ed25519) the seq and hash of
//! its newest entry every so often and hands the checkpoint to every site, which keeps it in its
//! own journal. A later rewrite of the chain (every hash recomputed) or a cut tail no longer
//! matches what the sites hold, and a forged checkpoint does not verify without the key.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuditEntry;

/// The JWT `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "basho-checkpoint+jwt";

/// What a checkpoint says: the chain held entry `seq` with `hash` at `iat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The newest entry's seq.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
}

/// `cp` signed with the orchestrator's Ed25519 key, as a compact JWS.
pub fn sign(cp: &Checkpoint, key: &EncodingKey) -> String {
    crate::visa::crypto::install();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(CHECKPOINT_TYP.to_owned());
    jsonwebtoken::encode(&header, cp, key).expect("an Ed25519 key signs")
}

/// The checkpoint in `jws`, its signature checked against `key`.
pub fn verify(jws: &str, key: &DecodingKey) -> Result<Checkpoint, String> {
    crate::visa::crypto::install();
    let header = jsonwebtoken::decode_header(jws).map_err(|e| format!("not a JWS: {e}"))?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err(format!(
            "not a checkpoint (alg {:?}, typ {:?})",
            header.alg, header.typ
        ));
    }
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Checkpoint>(jws, key, &v)
        .map(|d| d.claims)
        .map_err(|e| format!("its signature does not verify with the checkpoint key: {e}"))
}

/// Whether `chain` (the whole log, oldest first) still holds what `cp` saw.
pub fn holds(chain: &[AuditEntry], cp: &Checkpoint) -> Result<(), String> {
    let newest = chain.last().map_or(0, |e| e.seq);
    let Some(e) = usize::try_from(cp.seq - 1).ok().and_then(|i| chain.get(i)) else {
        return Err(format!(
            "a checkpoint signed at {} covers entry {}, but the chain ends at entry {newest}: \
             its tail was cut",
            cp.iat, cp.seq
        ));
    };
    if e.seq != cp.seq || e.hash != cp.hash {
        return Err(format!(
            "entry {} is not the one a checkpoint signed at {} saw: the chain was rewritten",
            cp.seq, cp.iat
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
