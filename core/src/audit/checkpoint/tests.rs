use chrono::Utc;
use serde_json::json;

use super::*;
use crate::audit::next_entry;

/// A test-only Ed25519 key pair (`openssl genpkey -algorithm ed25519`).
pub const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIE/C02TX4+e9sTGw6Q/iTP7tKQeo/hPAlP3HMeKQvVnZ
-----END PRIVATE KEY-----
";
/// Its public half.
pub const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEARiRmG2gNT2cMHGiJg3bDS0rkjAWXW2vJkmm/9LrO1HM=
-----END PUBLIC KEY-----
";

fn chain(n: i64) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    for i in 0..n {
        let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
        out.push(next_entry(
            prev,
            Utc::now(),
            "platform",
            "x",
            &format!("t{i}"),
            json!({}),
        ));
    }
    out
}

#[test]
fn a_checkpoint_catches_a_cut_tail_and_a_rewrite_and_cannot_be_forged() {
    let enc = EncodingKey::from_ed_pem(KEY.as_bytes()).unwrap();
    let dec = DecodingKey::from_ed_pem(PUBLIC.as_bytes()).unwrap();
    let log = chain(5);
    let cp = Checkpoint {
        seq: 4,
        hash: log[3].hash.clone(),
        iat: 1_900_000_000,
    };
    let jws = sign(&cp, &enc);
    assert_eq!(verify(&jws, &dec), Ok(cp.clone()));
    assert_eq!(holds(&log, &cp), Ok(()));
    // The newest two rows deleted: the chain still verifies, the checkpoint does not hold.
    let cut = &log[..3];
    assert_eq!(crate::audit::verify_chain(cut), Ok(3));
    assert!(holds(cut, &cp).unwrap_err().contains("its tail was cut"));
    // Rewritten from entry 2 on with every hash recomputed: consistent, but not what was signed.
    let mut rewritten: Vec<AuditEntry> = log[..1].to_vec();
    for i in 1..5 {
        let prev = rewritten.last().map(|e| (e.seq, e.hash.as_str()));
        rewritten.push(next_entry(
            prev,
            Utc::now(),
            "platform",
            "x",
            &format!("forged{i}"),
            json!({}),
        ));
    }
    assert_eq!(crate::audit::verify_chain(&rewritten), Ok(5));
    assert!(holds(&rewritten, &cp).unwrap_err().contains("rewritten"));
    // A checkpoint of the rewrite, signed with another key, does not verify.
    let other = EncodingKey::from_ed_pem(
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKIZo3xzGOMkCSCDKUytjGFwESj2/ZoWlXWMGRBCGeAT\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let forged = sign(
        &Checkpoint {
            hash: rewritten[3].hash.clone(),
            ..cp
        },
        &other,
    );
    assert!(
        verify(&forged, &dec)
            .unwrap_err()
            .contains("does not verify")
    );
}
