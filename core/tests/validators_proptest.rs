//! Property tests of the validators bad input meets first: plain identifiers, resource bounds,
//! visa verification and the workspace state machine. Case counts stay at proptest's default so
//! the suite is quick in debug builds.

use std::sync::LazyLock;

use base64::Engine as _;
use basho_core::visa::mint::{Issuer, Visa};
use basho_core::visa::{self, TrustedIssuers, VisaError};
use basho_core::workspace::{MAX_CPUS, MAX_GPUS, MAX_MEMORY_MIB};
use basho_core::{Ident, IdentError, Resources, State};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The identifier rule of docs/design.md section 4, as a regex for generators.
const IDENT_RE: &str = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
const ISS: &str = "https://dac.prop.invalid";

static ISSUER: LazyLock<Issuer> = LazyLock::new(|| Issuer::generate(ISS));
static TRUSTED: LazyLock<TrustedIssuers> = LazyLock::new(|| {
    let mut t = TrustedIssuers::new();
    t.add_json(ISS, &ISSUER.jwks_json()).unwrap();
    t
});

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, spelled out character by character.
fn matches_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let body = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !chars.is_empty()
        && chars.len() <= 64
        && chars[0].is_ascii_alphanumeric()
        && chars[1..].iter().all(body)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Strings that sit near the rule's edges: path tricks, separators, look-alikes, control bytes.
fn tricky_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        IDENT_RE.prop_map(|s| s),
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just("\0".to_owned()),
        Just(" ".to_owned()),
        Just("\n".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("\u{0430}".to_owned()), // Cyrillic a
        Just("\u{FF0F}".to_owned()), // fullwidth solidus
        Just("\u{2024}".to_owned()), // one dot leader
        Just("\u{200B}".to_owned()), // zero-width space
        Just("\u{0301}".to_owned()), // combining accent
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Arbitrary JSON, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Claims shaped like a visa's, each field possibly missing or of the wrong type.
fn visa_like_claims() -> impl Strategy<Value = Value> {
    let field = |good: Value| {
        prop_oneof![
            3 => Just(Some(good)),
            1 => Just(None),
            1 => arb_json().prop_map(Some),
        ]
    };
    let t = now();
    (
        field(json!(ISS)),
        field(json!("alice")),
        field(json!("jti-1")),
        field(json!(t - 10)),
        field(json!(t + 3600)),
        field(
            json!({"type": "ControlledAccessGrants", "value": "https://x/JGAD000101",
            "by": "dac", "asserted": t, "source": "https://x/dac"}),
        ),
    )
        .prop_map(|(iss, sub, jti, iat, exp, v)| {
            let mut m = serde_json::Map::new();
            for (k, val) in [
                ("iss", iss),
                ("sub", sub),
                ("jti", jti),
                ("iat", iat),
                ("exp", exp),
                ("ga4gh_visa_v1", v),
            ] {
                if let Some(val) = val {
                    m.insert(k.to_owned(), val);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #[test]
    fn every_rule_conforming_string_is_accepted_and_round_trips(s in IDENT_RE) {
        let id = Ident::parse(&s).unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
        prop_assert_eq!(id.to_string(), s.clone());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<Ident>(&json).unwrap(), id);
    }

    #[test]
    fn accepted_exactly_when_the_rule_matches(s in tricky_string()) {
        let parsed = Ident::parse(&s);
        prop_assert_eq!(parsed.is_ok(), matches_rule(&s), "{:?} -> {:?}", s, parsed);
        prop_assert_eq!(basho_core::id::validate(&s).is_ok(), matches_rule(&s));
        // Through serde as well: the API parses identifiers while deserializing.
        let via_json = serde_json::from_value::<Ident>(Value::String(s.clone()));
        prop_assert_eq!(via_json.is_ok(), matches_rule(&s));
        if let Err(e) = parsed {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_unicode_never_panics_and_never_passes_non_ascii(s in "\\PC{0,80}") {
        let r = Ident::parse(&s);
        if r.is_ok() {
            prop_assert!(s.is_ascii());
            prop_assert!(matches_rule(&s));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let s = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(Ident::parse(&s).is_ok(), matches_rule(&s));
        // Raw bytes as a JSON string body: never a panic, and never accepted unless the rule holds.
        let mut doc = b"\"".to_vec();
        doc.extend_from_slice(&bytes);
        doc.push(b'"');
        if let Ok(id) = serde_json::from_slice::<Ident>(&doc) {
            prop_assert!(matches_rule(id.as_str()));
        }
    }

    #[test]
    fn too_long_is_refused_with_its_length(s in "[A-Za-z0-9]{65,300}") {
        prop_assert_eq!(Ident::parse(&s), Err(IdentError::TooLong(s.len())));
    }

    #[test]
    fn resources_accept_exactly_the_documented_ranges(
        cpus in prop_oneof![Just(0u32), Just(1), Just(MAX_CPUS), Just(MAX_CPUS + 1), Just(u32::MAX), any::<u32>()],
        memory_mib in prop_oneof![Just(0u64), Just(15), Just(16), Just(MAX_MEMORY_MIB), Just(MAX_MEMORY_MIB + 1), Just(u64::MAX), any::<u64>()],
        gpus in prop_oneof![Just(0u32), Just(MAX_GPUS), Just(MAX_GPUS + 1), Just(u32::MAX), any::<u32>()],
    ) {
        let r = Resources { cpus, memory_mib, gpus };
        let in_range = (1..=MAX_CPUS).contains(&cpus)
            && (16..=MAX_MEMORY_MIB).contains(&memory_mib)
            && gpus <= MAX_GPUS;
        let got = r.validate();
        prop_assert_eq!(got.is_ok(), in_range, "{:?} -> {:?}", r, got);
        if let Err(msg) = got {
            // The message names the first field out of range.
            let field = if !(1..=MAX_CPUS).contains(&cpus) { "cpus" }
                else if !(16..=MAX_MEMORY_MIB).contains(&memory_mib) { "memory_mib" }
                else { "gpus" };
            prop_assert!(msg.contains(field), "{}", msg);
        }
    }

    #[test]
    fn resources_from_arbitrary_json_never_panic(v in arb_json()) {
        if let Ok(r) = serde_json::from_value::<Resources>(v) {
            let _ = r.validate();
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_strings(s in "\\PC{0,200}") {
        prop_assert!(visa::verify(&s, &TRUSTED, now()).is_err());
    }

    #[test]
    fn verify_never_panics_on_three_arbitrary_segments(
        a in "[A-Za-z0-9_=-]{0,60}", b in "[A-Za-z0-9_=-]{0,60}", c in "[A-Za-z0-9_=-]{0,60}",
    ) {
        let jwt = format!("{a}.{b}.{c}");
        prop_assert!(visa::verify(&jwt, &TRUSTED, now()).is_err());
    }

    #[test]
    fn arbitrary_payloads_under_a_valid_header_are_refused(
        claims in prop_oneof![arb_json(), visa_like_claims()],
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        // The header is what a real visa of the trusted issuer carries; the signature is not its.
        let header = b64(br#"{"alg":"ES256","typ":"vnd.ga4gh.visa+jwt","kid":"ec-1"}"#);
        let jwt = format!("{header}.{}.{}", b64(claims.to_string().as_bytes()), b64(&sig));
        let err = visa::verify(&jwt, &TRUSTED, now()).unwrap_err();
        prop_assert!(!err.code().is_empty());
        prop_assert!(!err.to_string().is_empty());
    }

    #[test]
    fn arbitrary_header_json_is_refused(
        header in arb_json(),
        claims in visa_like_claims(),
    ) {
        let jwt = format!("{}.{}.{}", b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes()), b64(b"sig"));
        prop_assert!(visa::verify(&jwt, &TRUSTED, now()).is_err());
    }

    #[test]
    fn bent_signed_visas_are_refused_for_the_right_reason(
        exp_in in -100_000i64..100_000,
        iat_in in -100_000i64..100_000,
        by in proptest::option::of("[a-z]{1,5}"),
        conditions in any::<bool>(),
    ) {
        let mut v = Visa::new("alice", "JGAD000101");
        v.exp_in = exp_in;
        v.iat_in = iat_in;
        v.by = by.clone();
        v.conditions = conditions;
        let jwt = ISSUER.sign(&v);
        let got = visa::verify(&jwt, &TRUSTED, now());
        // Checked in the verifier's order: expiry, then iat, then the visa object.
        let expect = if exp_in <= 1 {
            // Within a second of the edge either answer is right; only the class matters.
            None
        } else if iat_in > visa::LEEWAY_S + 1 {
            Some("visa_not_yet_valid")
        } else if iat_in > visa::LEEWAY_S - 1 {
            None
        } else if conditions {
            Some("visa_conditions")
        } else if by.is_none() {
            Some("visa_missing_claim")
        } else {
            Some("ok")
        };
        match (expect, &got) {
            (Some("ok"), Ok(g)) => {
                prop_assert_eq!(&g.sub, "alice");
                prop_assert_eq!(Some(g.by.clone()), by);
            }
            (Some(code), Err(e)) => prop_assert_eq!(e.code(), code, "{}", e),
            (None, _) => {
                if exp_in <= -1 {
                    prop_assert!(matches!(got, Err(VisaError::Expired(_))));
                }
            }
            (Some(code), other) => prop_assert!(false, "expected {}, got {:?}", code, other),
        }
    }

    #[test]
    fn terminal_states_never_move_and_no_state_moves_to_itself(
        from in proptest::sample::select(State::ALL.to_vec()),
        to in proptest::sample::select(State::ALL.to_vec()),
    ) {
        if from.is_terminal() {
            prop_assert!(!from.can_transition_to(to), "{} -> {}", from, to);
        }
        if from == to {
            prop_assert!(!from.can_transition_to(to));
        }
        // Nothing returns to pending or queued, and only they move to placed.
        if to == State::Pending || to == State::Queued {
            prop_assert!(!from.can_transition_to(to));
        }
        if to == State::Placed {
            let waiting = from == State::Pending || from == State::Queued;
            prop_assert_eq!(from.can_transition_to(to), waiting);
        }
        // A queued workspace holds no compute and reaches no site.
        prop_assert_eq!(from.holds_compute(), !from.is_terminal() && from != State::Queued);
        // A terminal state has no container; a live one wants one.
        prop_assert!(!(from.is_terminal() && from.wants_container()));
        prop_assert_eq!(State::parse(from.as_str()), Some(from));
    }

    #[test]
    fn any_walk_ends_for_good(path in proptest::collection::vec(proptest::sample::select(State::ALL.to_vec()), 1..30)) {
        // Follow only the allowed moves; once terminal, the walk can go nowhere.
        let mut at = State::Pending;
        for next in path {
            if at.can_transition_to(next) {
                at = next;
            }
            if at.is_terminal() {
                prop_assert!(State::ALL.iter().all(|&s| !at.can_transition_to(s)));
            }
        }
    }
}

#[test]
fn the_reference_rule_agrees_with_known_cases() {
    // Guards the reference predicate itself, so the properties above cannot pass vacuously.
    for ok in ["a", "JGAD000101", "P-0001", "a.b_c-d", &"x".repeat(64)] {
        assert!(matches_rule(ok), "{ok}");
    }
    for bad in [
        "",
        ".a",
        "-a",
        "_a",
        "a/b",
        "..",
        "a\0",
        "\u{0430}bc",
        &"x".repeat(65),
    ] {
        assert!(!matches_rule(bad), "{bad:?}");
    }
}
