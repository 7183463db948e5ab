//! The hash-chained audit log: what one entry holds, how its hash is computed, and how a whole
//! log is checked. Pure functions only; the orchestrator stores the entries and the CLI verifies
//! what `GET /v1/audit` returns.
//!
//! Each entry's `hash` is the SHA-256 (lowercase hex) of a canonical JSON serialization of the
//! entry without its hash: a fixed-field struct serialized by serde_json in declaration order
//! (`seq, at_ms, actor, action, target, detail, prev_hash`), with every object inside `detail`
//! re-built with its keys sorted, and `at` as Unix milliseconds (what the store keeps). The first
//! entry's `prev_hash` is [`GENESIS`]. Entries never hold secrets: no bearer tokens and no visa
//! JWTs, only a visa's `jti` and `iss`.
//!
//! What the chain proves: an altered, deleted, inserted or reordered row breaks it at that row.
//! Deleting the newest rows leaves a shorter intact chain; compare the entry count with an earlier
//! verification (or a copy of the last hash kept elsewhere) to notice that.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod checkpoint;
use serde_json::Value;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored and as `GET /v1/audit` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// When it happened (whole milliseconds).
    pub at: DateTime<Utc>,
    /// Who did it: `platform`, `admin:<token id>`, `agent:<site>`, `researcher:<sub>`,
    /// `orchestrator` (the expiry loop and other background work) or `anonymous`.
    pub actor: String,
    /// What happened, snake_case: `workspace_create`, `workspace_refused`, `workspace_placed`,
    /// `workspace_state`, `workspace_delete`, `agent_register`, `revocation`, `auth_failed`,
    /// `token_create`, `token_revoke`.
    pub action: String,
    /// What it happened to: a workspace id, a site, a token id, a route.
    pub target: String,
    /// Details; never a secret, a token or a visa JWT.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// [`entry_hash`] of this entry.
    pub hash: String,
}

/// The fields an entry's hash covers, in the order they are serialized.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: i64,
    at_ms: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: Value,
    prev_hash: &'a str,
}

/// `v` with every object's keys in sorted order, whatever map type serde_json was built with.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The hash of `entry` chained to `prev_hash`; `entry.hash` and `entry.prev_hash` are ignored.
pub fn entry_hash(prev_hash: &str, entry: &AuditEntry) -> String {
    let h = Hashed {
        seq: entry.seq,
        at_ms: entry.at.timestamp_millis(),
        actor: &entry.actor,
        action: &entry.action,
        target: &entry.target,
        detail: canonical(&entry.detail),
        prev_hash,
    };
    let bytes = serde_json::to_vec(&h).expect("a JSON value and strings serialize");
    crate::digest::sha256_hex(&bytes)
}

/// Builds the next entry after `prev` (or the first, when `prev` is `None`), hash included.
pub fn next_entry(
    prev: Option<(i64, &str)>,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    detail: Value,
) -> AuditEntry {
    let (seq, prev_hash) = prev.map_or((1, GENESIS), |(s, h)| (s + 1, h));
    let at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
    let mut e = AuditEntry {
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    e.hash = entry_hash(prev_hash, &e);
    e
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct Broken {
    /// The first entry that does not check out (for a deleted row: the seq that is missing).
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a whole log, oldest first, starting at seq 1; answers how many entries it holds, or the
/// first broken entry: an altered row (its hash does not match its content), a deleted or
/// reordered row (a gap in `seq`, or a `prev_hash` that is not the previous entry's hash).
pub fn verify_chain(entries: &[AuditEntry]) -> Result<usize, Broken> {
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        let (want_seq, want_prev) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash.as_str()));
        if e.seq != want_seq {
            let reason = if e.seq > want_seq {
                format!(
                    "entry {want_seq} is missing or out of place (entry {} comes next); rows were \
                     deleted or reordered",
                    e.seq
                )
            } else {
                format!(
                    "entry {} appears after entry {}; rows were reordered or duplicated",
                    e.seq,
                    want_seq - 1
                )
            };
            return Err(Broken {
                seq: want_seq,
                reason,
            });
        }
        if e.prev_hash != want_prev {
            return Err(Broken {
                seq: e.seq,
                reason: "its prev_hash is not the previous entry's hash; an earlier row was \
                         altered, replaced or deleted"
                    .to_owned(),
            });
        }
        if entry_hash(&e.prev_hash, e) != e.hash {
            return Err(Broken {
                seq: e.seq,
                reason: "its content does not match its hash; the row was altered".to_owned(),
            });
        }
        prev = Some(e);
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = next_entry(
                prev,
                Utc::now(),
                "platform",
                "workspace_create",
                &format!("ws-{i}"),
                json!({"project": "P-0001", "visas": [{"iss": "https://dac", "jti": format!("j{i}")}]}),
            );
            out.push(e);
        }
        out
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    #[test]
    fn hash_is_deterministic_and_covers_every_field() {
        let e = chain(1).remove(0);
        assert_eq!(entry_hash(GENESIS, &e), e.hash);
        assert_eq!(e.hash.len(), 64);
        let mut other = e.clone();
        other.actor = "admin:tok-1".into();
        assert_ne!(entry_hash(GENESIS, &other), e.hash);
        let mut other = e.clone();
        other.at += chrono::TimeDelta::milliseconds(1);
        assert_ne!(entry_hash(GENESIS, &other), e.hash);
        assert_ne!(entry_hash(&"1".repeat(64), &e), e.hash);
    }

    #[test]
    fn key_order_in_detail_does_not_matter() {
        let mut a = chain(1).remove(0);
        a.detail = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}}"#).unwrap();
        let mut b = a.clone();
        b.detail = serde_json::from_str(r#"{"a": {"x": 3, "y": 2}, "b": 1}"#).unwrap();
        assert_eq!(entry_hash(GENESIS, &a), entry_hash(GENESIS, &b));
    }

    #[test]
    fn an_altered_entry_is_named() {
        let mut c = chain(5);
        c[2].detail = json!({"project": "P-9999"});
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 3);
        assert!(b.reason.contains("altered"), "{}", b.reason);
    }

    #[test]
    fn an_altered_entry_with_a_recomputed_hash_breaks_the_next() {
        let mut c = chain(5);
        c[2].target = "ws-forged".into();
        c[2].hash = entry_hash(&c[2].prev_hash, &c[2]);
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 4);
        assert!(b.reason.contains("prev_hash"), "{}", b.reason);
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 2);
        assert!(b.reason.contains("missing"), "{}", b.reason);
        let mut c = chain(3);
        c.remove(0);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 1);
    }

    #[test]
    fn a_deleted_entry_with_renumbered_successors_is_named() {
        let mut c = chain(5);
        c.remove(1);
        for (i, e) in c.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 2);
    }

    #[test]
    fn reordered_entries_are_named() {
        let mut c = chain(5);
        c.swap(2, 3);
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 3);
        assert!(b.reason.contains("missing"), "{}", b.reason);
        let mut c = chain(3);
        c.push(c[1].clone());
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 4);
        assert!(b.reason.contains("reordered"), "{}", b.reason);
    }

    #[test]
    fn a_wrong_genesis_is_named() {
        let mut c = chain(2);
        c[0].prev_hash = "f".repeat(64);
        c[0].hash = entry_hash(&c[0].prev_hash, &c[0]);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 1);
    }
}
