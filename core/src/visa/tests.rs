//! Each refusal reason of visa verification, with visas minted by a generated issuer.

use std::sync::LazyLock;

use jsonwebtoken::Algorithm;

use super::mint::{Issuer, Visa};
use super::*;

const ISS: &str = "https://dac.test";

static ISSUER: LazyLock<Issuer> = LazyLock::new(|| Issuer::generate(ISS).with_rsa());

fn trusted() -> TrustedIssuers {
    let mut t = TrustedIssuers::new();
    t.add_json(ISS, &ISSUER.jwks_json()).unwrap();
    t
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn check(v: &Visa) -> Result<Grant, VisaError> {
    verify(&ISSUER.sign(v), &trusted(), now())
}

#[test]
fn accepts_es256_and_rs256() {
    let g = check(&Visa::new("alice", "JGAD000101")).unwrap();
    assert_eq!(g.sub, "alice");
    assert_eq!(g.value, default_grant_url("JGAD000101"));
    assert_eq!(g.iss, ISS);
    assert_eq!(g.by, "dac");
    let g = check(&Visa::new("alice", "JGAD000102").alg(Algorithm::RS256)).unwrap();
    assert_eq!(g.value, default_grant_url("JGAD000102"));
}

#[test]
fn refuses_each_reason() {
    let base = || Visa::new("alice", "JGAD000101");
    let cases: Vec<(Visa, &str)> = vec![
        (
            Visa {
                typ: Some("JWT".into()),
                ..base()
            },
            "visa_wrong_typ",
        ),
        (
            Visa {
                typ: None,
                ..base()
            },
            "visa_wrong_typ",
        ),
        (
            Visa {
                alg: Algorithm::HS256,
                ..base()
            },
            "visa_algorithm",
        ),
        (
            Visa {
                iss: Some("https://evil.test".into()),
                ..base()
            },
            "visa_untrusted_issuer",
        ),
        (
            Visa {
                kid: Some("nope".into()),
                ..base()
            },
            "visa_unknown_key",
        ),
        (
            Visa {
                kid: Some("rsa-1".into()),
                ..base()
            },
            "visa_unknown_key",
        ),
        (base().expires_in(-5), "visa_expired"),
        (
            Visa {
                iat_in: 3600,
                ..base()
            },
            "visa_not_yet_valid",
        ),
        (
            Visa {
                visa_type: "AffiliationAndRole".into(),
                ..base()
            },
            "visa_wrong_type",
        ),
        (Visa { by: None, ..base() }, "visa_missing_claim"),
        (
            Visa {
                conditions: true,
                ..base()
            },
            "visa_conditions",
        ),
    ];
    for (visa, code) in cases {
        let err = check(&visa).expect_err(code);
        assert_eq!(err.code(), code, "{visa:?}: {err}");
    }
}

#[test]
fn refuses_forged_and_malformed() {
    let jwt = ISSUER.mint("alice", "JGAD000101");
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    // A payload swapped for another subject keeps the old signature.
    let other = ISSUER.mint("mallory", "JGAD000101");
    parts[1] = other.split('.').nth(1).unwrap().to_owned();
    let forged = parts.join(".");
    let other_sig = format!(
        "{}.{}",
        jwt.rsplit_once('.').unwrap().0,
        other.rsplit('.').next().unwrap()
    );
    for bad in [forged, other_sig] {
        assert_eq!(
            verify(&bad, &trusted(), now()).unwrap_err().code(),
            "visa_bad_signature"
        );
    }
    // Signed by a key the issuer never published.
    let stranger = Issuer::generate(ISS);
    let err = verify(&stranger.mint("alice", "JGAD000101"), &trusted(), now()).unwrap_err();
    assert_eq!(err.code(), "visa_bad_signature");
    for junk in [
        "",
        "e30.e30.AAAA",
        "a.b",
        "not a jwt",
        &"x".repeat(MAX_VISA_LEN + 1),
    ] {
        assert_eq!(
            verify(junk, &trusted(), now()).unwrap_err().code(),
            "visa_malformed",
            "{junk:.20}"
        );
    }
}

#[test]
fn unsigned_alg_none_is_refused() {
    let jwt = ISSUER.mint("alice", "JGAD000101");
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = b64(r#"{"typ":"vnd.ga4gh.visa+jwt","alg":"none","kid":"ec-1"}"#);
    let unsigned = format!("{header}.{}.", jwt.split('.').nth(1).unwrap());
    assert!(verify(&unsigned, &trusted(), now()).is_err());
}

#[test]
fn all_visas_of_a_request_name_one_subject() {
    let t = trusted();
    let a = ISSUER.mint("alice", "JGAD000101");
    let b = ISSUER.mint("bob", "JGAD000102");
    let (i, err) = verify_all(&[a.clone(), b], &t, now()).unwrap_err();
    assert_eq!((i, err.code()), (1, "visa_subject_mismatch"));
    let grants = verify_all(&[a, ISSUER.mint("alice", "JGAD000102")], &t, now()).unwrap();
    assert_eq!(grants.len(), 2);
}

#[test]
fn jwks_must_hold_usable_keys() {
    let mut t = TrustedIssuers::new();
    assert!(t.add_json(ISS, "{").is_err());
    assert!(t.add_json(ISS, r#"{"keys": []}"#).is_err());
    assert!(t.add_json(ISS, &ISSUER.jwks_json()).is_ok());
}

/// Signs `header` and `claims` as given with the issuer's ES256 key.
fn sign_raw(header: serde_json::Value, claims: serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let key = jsonwebtoken::EncodingKey::from_ec_pem(ISSUER.ec_pem().as_bytes()).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{message}.{sig}")
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "iss": ISS, "sub": "alice", "iat": now() - 10, "exp": now() + 3600, "jti": "j-1",
        "ga4gh_visa_v1": {"type": CONTROLLED_ACCESS_GRANTS, "asserted": now() - 100,
            "value": default_grant_url("JGAD000101"), "source": "https://dac.test", "by": "dac"},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn raw_signing_matches_the_minter() {
    let header = serde_json::json!({"typ": VISA_TYP, "alg": "ES256", "kid": "ec-1"});
    let g = verify(
        &sign_raw(header, claims(serde_json::json!({}))),
        &trusted(),
        now(),
    )
    .unwrap();
    assert_eq!(g.jti, "j-1");
}

#[test]
fn refuses_a_future_nbf() {
    let header = serde_json::json!({"typ": VISA_TYP, "alg": "ES256", "kid": "ec-1"});
    let later = sign_raw(
        header.clone(),
        claims(serde_json::json!({"nbf": now() + 3600})),
    );
    assert_eq!(
        verify(&later, &trusted(), now()).unwrap_err().code(),
        "visa_not_yet_valid"
    );
    let odd = sign_raw(header.clone(), claims(serde_json::json!({"nbf": "soon"})));
    assert_eq!(
        verify(&odd, &trusted(), now()).unwrap_err().code(),
        "visa_missing_claim"
    );
    let past = sign_raw(header, claims(serde_json::json!({"nbf": now() - 5})));
    assert!(verify(&past, &trusted(), now()).is_ok());
}

#[test]
fn refuses_any_critical_header_extension() {
    let header = serde_json::json!({"typ": VISA_TYP, "alg": "ES256", "kid": "ec-1", "crit": ["exp-x"], "exp-x": 1});
    let jwt = sign_raw(header, claims(serde_json::json!({})));
    assert_eq!(
        verify(&jwt, &trusted(), now()).unwrap_err().code(),
        "visa_malformed"
    );
}
