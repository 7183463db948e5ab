use serde_json::json;

use super::*;
use crate::visa::mint::Issuer;

const IDP: &str = "https://idp.test";
const WS: &str = "ws-0001";
const NOW: i64 = 1_900_000_000;

fn trusting(key: &Issuer) -> TrustedIssuers {
    let mut trusted = TrustedIssuers::new();
    trusted.add_json(key.name(), &key.jwks_json()).unwrap();
    trusted
}

fn id_claims(sub: &str, seed: &str) -> Value {
    json!({"iss": IDP, "sub": sub, "aud": "basho-cli", "iat": NOW - 10, "exp": NOW + 300,
           "nonce": session_nonce(WS, seed)})
}

fn check(claims: &Value, key: &Issuer, seed: &str) -> Result<Proven, ProofError> {
    let cfg = IdentityIssuer {
        issuer: IDP.into(),
        jwks_file: "/unused".into(),
        audience: "basho-cli".into(),
        subject_claim: "sub".into(),
    };
    let jwt = key.sign_claims(claims, Some("JWT"));
    let c = signed(&jwt, &trusting(key), "identity token").map_err(|(_, e)| e)?;
    check_id_token(c, &cfg, WS, "alice", seed, NOW, 600)
}

#[test]
fn an_owners_token_for_this_session_opens_it() {
    let key = Issuer::generate(IDP);
    let p = check(&id_claims("alice", "s1"), &key, "s1").unwrap();
    assert_eq!(p.who, "alice");
    assert_eq!(p.issuer, IDP);
    assert_eq!(p.expires, NOW + 300);
    assert!(!p.break_glass);
    assert_eq!(p.to_string(), format!("identity token of alice from {IDP}"));
    // The audience may be a list.
    let mut c = id_claims("alice", "s1");
    c["aud"] = json!(["other", "basho-cli"]);
    assert!(check(&c, &key, "s1").is_ok());
}

#[test]
fn a_token_for_another_person_session_or_site_is_refused() {
    let key = Issuer::generate(IDP);
    let e = check(&id_claims("mallory", "s1"), &key, "s1").unwrap_err();
    assert!(e.0.contains("belongs to \"alice\""), "{e}");
    // Bound to another seed (another session) or another workspace.
    let e = check(&id_claims("alice", "s1"), &key, "s2").unwrap_err();
    assert!(e.0.contains("nonce differs"), "{e}");
    let mut c = id_claims("alice", "s1");
    c["nonce"] = json!(session_nonce("ws-0002", "s1"));
    assert!(check(&c, &key, "s1").unwrap_err().0.contains("nonce"));
    c.as_object_mut().unwrap().remove("nonce");
    assert!(check(&c, &key, "s1").unwrap_err().0.contains("nonce"));
    let mut c = id_claims("alice", "s1");
    c["aud"] = json!("another-client");
    assert!(check(&c, &key, "s1").unwrap_err().0.contains("aud lacks"));
}

#[test]
fn stale_early_or_unsigned_tokens_are_refused() {
    let key = Issuer::generate(IDP);
    let mut c = id_claims("alice", "s1");
    c["exp"] = json!(NOW - 1);
    assert!(check(&c, &key, "s1").unwrap_err().0.contains("expired"));
    let mut c = id_claims("alice", "s1");
    c["iat"] = json!(NOW - 601);
    assert!(
        check(&c, &key, "s1")
            .unwrap_err()
            .0
            .contains("more than the site's 600s")
    );
    let mut c = id_claims("alice", "s1");
    c["iat"] = json!(NOW + 3600);
    assert!(
        check(&c, &key, "s1")
            .unwrap_err()
            .0
            .contains("not valid yet")
    );
    // Signed by a key the site does not hold under that issuer.
    let trusted = trusting(&key);
    let forger = Issuer::generate(IDP);
    let jwt = forger.sign_claims(&id_claims("alice", "s1"), Some("JWT"));
    let (retry, e) = signed(&jwt, &trusted, "identity token").unwrap_err();
    assert!(!retry);
    assert!(e.0.contains("signature that does not verify"), "{e}");
    let other = Issuer::generate("https://elsewhere.test");
    let mut c = id_claims("alice", "s1");
    c["iss"] = json!(other.name());
    let jwt = other.sign_claims(&c, Some("JWT"));
    let (_, e) = signed(&jwt, &trusted, "identity token").unwrap_err();
    assert!(e.0.contains("does not trust"), "{e}");
}

#[test]
fn approvals_are_bound_to_workspace_reason_and_lifetime() {
    let approver = Issuer::generate("site-admin");
    let trusted = trusting(&approver);
    let verify = |claims: &Value, typ: &str, ws: &str, reason: Option<&str>| {
        let jwt = approver.sign_claims(claims, Some(typ));
        let c = signed(&jwt, &trusted, "break-glass approval").map_err(|(_, e)| e)?;
        check_approval(&jwt, c, ws, reason, NOW)
    };
    let ok = approval_claims("site-admin", "dave", WS, "incident 42", NOW, 3600);
    let p = verify(&ok, APPROVAL_TYP, WS, Some(" incident 42 ")).unwrap();
    assert!(p.break_glass);
    assert_eq!(p.who, "dave");
    assert!(p.to_string().contains("signed by site-admin"));
    let e = verify(&ok, APPROVAL_TYP, "ws-0002", Some("incident 42")).unwrap_err();
    assert!(e.0.contains("another workspace"), "{e}");
    let e = verify(&ok, APPROVAL_TYP, WS, Some("curiosity")).unwrap_err();
    assert!(e.0.contains("another reason"), "{e}");
    assert!(verify(&ok, APPROVAL_TYP, WS, None).is_err());
    // A visa or identity token from the same key is not an approval.
    let e = verify(&ok, "JWT", WS, Some("incident 42")).unwrap_err();
    assert!(e.0.contains("typ"), "{e}");
    let long = approval_claims("site-admin", "dave", WS, "r", NOW, MAX_APPROVAL_S + 60);
    let e = verify(&long, APPROVAL_TYP, WS, Some("r")).unwrap_err();
    assert!(e.0.contains("lasts longer"), "{e}");
    let stale = approval_claims("site-admin", "dave", WS, "r", NOW - 7200, 3600);
    assert!(
        verify(&stale, APPROVAL_TYP, WS, Some("r"))
            .unwrap_err()
            .0
            .contains("expired")
    );
}

#[test]
fn nonces_differ_per_workspace_and_seed() {
    let a = session_nonce(WS, "x");
    assert_eq!(a, session_nonce(WS, "x"));
    assert_ne!(a, session_nonce("ws-0002", "x"));
    assert_ne!(a, session_nonce(WS, "y"));
    assert_ne!(fresh_seed(), fresh_seed());
    let spec: crate::tunnel::SessionSpec = serde_json::from_value(json!({"kind": "exec",
        "proof": {"kind": "id_token", "token": "t", "seed": "s"}}))
    .unwrap();
    assert_eq!(
        spec.proof,
        Some(Proof::IdToken {
            token: "t".into(),
            seed: "s".into()
        })
    );
}

#[test]
fn pkce_challenge_is_rfc_7636s() {
    // RFC 7636, appendix B.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn a_token_without_kid_is_checked_against_a_sole_key_only() {
    let key = Issuer::generate(IDP);
    let claims = id_claims("alice", "s1");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = None;
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.ec_pem().as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    assert!(signed(&jwt, &trusting(&key), "identity token").is_ok());
    // With two keys the site cannot tell which one signed.
    let two = Issuer::from_ec_pem(IDP, key.ec_pem()).unwrap().with_rsa();
    let (_, e) = signed(&jwt, &trusting(&two), "identity token").unwrap_err();
    assert!(e.0.contains("names no signing key"), "{e}");
    // Visas must always name theirs.
    assert!(matches!(
        crate::visa::signed_claims(&jwt, &trusting(&key), false),
        Err(VisaError::MissingKid)
    ));
}
