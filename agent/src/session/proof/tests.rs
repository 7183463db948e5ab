use basho_core::proof::{APPROVAL_TYP, approval_claims, fresh_seed, session_nonce};
use basho_core::tunnel::{SessionKind, SessionSpec};
use basho_core::visa::mint::Issuer;
use serde_json::json;

use super::*;
use crate::config::Paths;
use crate::reconcile::hostdirs::Ownership;
use crate::revocations::{Grants, record_grants};
use crate::session::SessionsConfig;

const IDP: &str = "https://idp.test";

struct Site {
    _root: tempfile::TempDir,
    idp: Issuer,
    approver: Issuer,
    gate: Gate,
    now: i64,
}

/// A site trusting [`IDP`] (audience `basho-cli`) and approver `site-admin`, where `ws-1`
/// was launched for alice.
fn site(policy: ProofPolicy) -> Site {
    let root = tempfile::tempdir().unwrap();
    let idp = Issuer::generate(IDP);
    let approver = Issuer::generate("site-admin");
    std::fs::write(root.path().join("idp.json"), idp.jwks_json()).unwrap();
    std::fs::write(root.path().join("admin.json"), approver.jwks_json()).unwrap();
    let dirs = HostDirs::new(Paths::under(root.path()), Ownership::WorldWritable);
    let grants = Grants {
        project: crate::fixtures::id("P-0001"),
        owner: "alice".into(),
        datasets: Vec::new(),
        visas: Vec::new(),
    };
    record_grants(&dirs.state_dir("ws-1"), &grants).unwrap();
    let config = SessionsConfig {
        proof: policy,
        identity_issuers: vec![IdentityIssuer {
            issuer: IDP.into(),
            jwks_file: root.path().join("idp.json"),
            audience: "basho-cli".into(),
            subject_claim: "sub".into(),
        }],
        approvers: vec![IssuerRef {
            issuer: "site-admin".into(),
            jwks_file: root.path().join("admin.json"),
        }],
        ..SessionsConfig::default()
    };
    let gate = Gate::load(&config, dirs).unwrap();
    Site {
        _root: root,
        idp,
        approver,
        gate,
        now: chrono::Utc::now().timestamp(),
    }
}

fn open(ws: &str, proof: Option<Proof>, break_glass: Option<&str>) -> Open {
    Open {
        workspace: ws.into(),
        spec: SessionSpec {
            break_glass: break_glass.map(str::to_owned),
            proof,
            ..SessionSpec::exec(["id"])
        },
        actor: "researcher:alice".into(),
    }
}

impl Site {
    /// Why the gate refuses `o`; it must.
    fn refused(&self, o: &Open) -> Refusal {
        self.gate.check(o, self.now).unwrap_err()
    }

    /// What the gate proved of `o`; it must open it.
    fn proven(&self, o: &Open) -> Proven {
        self.gate.check(o, self.now).unwrap().unwrap()
    }

    fn id_token(&self, sub: &str, ws: &str) -> Proof {
        let seed = fresh_seed();
        let claims = json!({"iss": IDP, "sub": sub, "aud": "basho-cli", "iat": self.now,
            "exp": self.now + 300, "nonce": session_nonce(ws, &seed)});
        Proof::IdToken {
            token: self.idp.sign_claims(&claims, Some("JWT")),
            seed,
        }
    }
}

#[test]
fn a_forged_open_without_proof_is_refused() {
    let s = site(ProofPolicy::Required);
    let r = s.refused(&open("ws-1", None, None));
    assert_eq!(r.code, "proof_required");
    assert!(r.message.contains("BASHO_OIDC_ISSUER"), "{}", r.message);
    // A site that trusts the orchestrator opens it, and says it proved nothing.
    let s = site(ProofPolicy::None);
    assert_eq!(s.gate.check(&open("ws-1", None, None), s.now), Ok(None));
}

#[test]
fn the_owners_token_opens_one_session_only() {
    let s = site(ProofPolicy::Required);
    let proof = s.id_token("alice", "ws-1");
    let p = s.proven(&open("ws-1", Some(proof.clone()), None));
    assert_eq!(p.who, "alice");
    // Replayed: refused, though every claim still holds.
    let r = s.refused(&open("ws-1", Some(proof), None));
    assert_eq!(r.code, "proof_refused");
    assert!(
        r.message.contains("opened a session already"),
        "{}",
        r.message
    );
}

#[test]
fn another_subject_workspace_or_unlaunched_workspace_is_refused() {
    let s = site(ProofPolicy::Required);
    let r = s.refused(&open("ws-1", Some(s.id_token("mallory", "ws-1")), None));
    assert!(r.message.contains("belongs to \"alice\""), "{}", r.message);
    let r = s.refused(&open("ws-1", Some(s.id_token("alice", "ws-2")), None));
    assert!(r.message.contains("nonce"), "{}", r.message);
    let r = s.refused(&open("ws-2", Some(s.id_token("alice", "ws-2")), None));
    assert!(
        r.message.contains("no record of who owns ws-2"),
        "{}",
        r.message
    );
    // An approval key is not an identity provider.
    let forged = Proof::IdToken {
        token: s
            .approver
            .sign_claims(&json!({"iss": IDP, "sub": "alice"}), Some("JWT")),
        seed: "x".into(),
    };
    let r = s.refused(&open("ws-1", Some(forged), None));
    assert!(r.message.contains("does not verify"), "{}", r.message);
}

#[test]
fn a_signed_approval_lets_an_administrator_in_once() {
    let s = site(ProofPolicy::Required);
    let claims = approval_claims("site-admin", "dave", "ws-1", "incident 7", s.now, 600);
    let token = s.approver.sign_claims(&claims, Some(APPROVAL_TYP));
    let approval = Proof::Approval { token };
    let p = s.proven(&open("ws-1", Some(approval.clone()), Some("incident 7")));
    assert!(p.break_glass);
    assert_eq!(p.who, "dave");
    let r = s.refused(&open("ws-1", Some(approval), Some("incident 7")));
    assert!(
        r.message.contains("opened a session already"),
        "{}",
        r.message
    );
    // The identity provider cannot sign approvals.
    let token = s.idp.sign_claims(&claims, Some(APPROVAL_TYP));
    let r = s.refused(&open(
        "ws-1",
        Some(Proof::Approval { token }),
        Some("incident 7"),
    ));
    assert!(r.message.contains("does not verify"), "{}", r.message);
}

#[test]
fn a_rotated_provider_key_is_read_from_the_jwks_file() {
    let s = site(ProofPolicy::Required);
    // The provider rotates to a new key, "ec-2"; the site's JWKS file is refreshed.
    let rotated = Issuer::generate(IDP);
    let jwks = rotated.jwks_json().replace("\"ec-1\"", "\"ec-2\"");
    std::fs::write(s._root.path().join("idp.json"), jwks).unwrap();
    let seed = fresh_seed();
    let claims = json!({"iss": IDP, "sub": "alice", "aud": "basho-cli", "iat": s.now,
        "exp": s.now + 300, "nonce": session_nonce("ws-1", &seed)});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-2".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(rotated.ec_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let proof = || {
        Some(Proof::IdToken {
            token: token.clone(),
            seed: seed.clone(),
        })
    };
    // Keys were read just now: the unknown key is refused until ten seconds have passed.
    let r = s.refused(&open("ws-1", proof(), None));
    assert!(r.message.contains("lacks"), "{}", r.message);
    s.gate.keys.lock().unwrap().loaded = Instant::now() - RELOAD_EVERY;
    let p = s.proven(&open("ws-1", proof(), None));
    assert_eq!(p.who, "alice");
}

#[test]
fn a_port_forwards_proof_opens_more_connections_to_that_port_only() {
    let s = site(ProofPolicy::Required);
    let forward = |port: u16, proof: &Proof| {
        let mut o = open("ws-1", Some(proof.clone()), None);
        o.spec.kind = SessionKind::Forward;
        o.spec.port = port;
        s.gate.check(&o, s.now)
    };
    let proof = s.id_token("alice", "ws-1");
    assert!(forward(8888, &proof).is_ok());
    assert!(forward(8888, &proof).is_ok());
    let r = forward(22, &proof).unwrap_err();
    assert!(
        r.message.contains("opened a session already"),
        "{}",
        r.message
    );
    let r = s.refused(&open("ws-1", Some(proof), None));
    assert!(
        r.message.contains("opened a session already"),
        "{}",
        r.message
    );
}
