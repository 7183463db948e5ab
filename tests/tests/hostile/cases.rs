//! The attack table: every attack that needs nothing beyond the core API, grouped by what it
//! bends (visas, identifiers, resources and duration, JSON, tokens).

use std::collections::BTreeMap;

use basho_core::visa::mint::Visa;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use super::kit::{Kit, Table, b64, raw_with, replace};

/// Every attack that needs nothing beyond the core API.
pub fn attacks<'a>(
    kit: &'a Kit<'a>,
    platform: &str,
    agents: &BTreeMap<String, String>,
) -> Table<'a> {
    let mut t = Table {
        kit,
        platform: platform.to_owned(),
        attacks: Vec::new(),
    };
    let fed = kit.fed;

    // ---- visas: signatures, algorithms, keys ----
    let good = kit.good_visa();
    let parts: Vec<&str> = good.split('.').collect();
    let none_header = b64(br#"{"alg":"none","typ":"vnd.ga4gh.visa+jwt","kid":"ec-1"}"#);
    t.create_visas(
        "alg none, signature dropped",
        403,
        "visa_malformed",
        vec![format!("{none_header}.{}.", parts[1])],
    );
    t.create_visas(
        "valid header, signature stripped",
        403,
        "visa_bad_signature",
        vec![format!("{}.{}.", parts[0], parts[1])],
    );
    t.create_visas(
        "HS256 keyed with the issuer's public JWKS",
        403,
        "visa_algorithm",
        vec![kit.visa(&Visa::new("alice", "JGAD000101").alg(Algorithm::HS256))],
    );
    t.create_visas(
        "RS256 header naming the EC key",
        403,
        "visa_unknown_key",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101").alg(Algorithm::RS256);
            v.kid = Some("ec-1".into());
            v
        })],
    );
    t.create_visas(
        "signed by a stranger under the trusted issuer's name",
        403,
        "visa_bad_signature",
        vec![
            basho_core::visa::mint::Issuer::generate(fed.issuer.name()).mint("alice", "JGAD000101"),
        ],
    );
    let other = kit.visa(&Visa::new("mallory", "JGAD000102"));
    let other_payload = other.split('.').nth(1).unwrap();
    t.create_visas(
        "payload swapped under a valid signature",
        403,
        "visa_bad_signature",
        vec![format!("{}.{other_payload}.{}", parts[0], parts[2])],
    );
    t.create_visas(
        "typ JWT instead of the visa typ",
        403,
        "visa_wrong_typ",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.typ = Some("JWT".into());
            v
        })],
    );
    t.create_visas(
        "no typ header",
        403,
        "visa_wrong_typ",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.typ = None;
            v
        })],
    );
    t.create_visas(
        "kid not in the JWKS",
        403,
        "visa_unknown_key",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.kid = Some("rotated-away".into());
            v
        })],
    );
    t.create_visas(
        "no kid header",
        403,
        "visa_unknown_key",
        vec![kit.hand_signed(
            Header {
                kid: None,
                ..kit.header()
            },
            kit.claims(),
        )],
    );
    t.create_visas(
        "not a JWT at all",
        403,
        "visa_malformed",
        vec!["garbage".into()],
    );
    t.create_visas(
        "a 20 kB visa",
        403,
        "visa_malformed",
        vec![format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2])],
    );

    // ---- visas: claims ----
    t.create_visas(
        "expired visa",
        403,
        "visa_expired",
        vec![kit.visa(&Visa::new("alice", "JGAD000101").expires_in(-30))],
    );
    t.create_visas(
        "iat an hour ahead (not yet valid)",
        403,
        "visa_not_yet_valid",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101").expires_in(7200);
            v.iat_in = 3600;
            v
        })],
    );
    t.create_visas(
        "iat ten years ahead",
        403,
        "visa_not_yet_valid",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101").expires_in(20 * 365 * 86400);
            v.iat_in = 10 * 365 * 86400;
            v
        })],
    );
    t.create_visas(
        "nbf an hour ahead",
        403,
        "visa_not_yet_valid",
        vec![kit.hand_signed(kit.header(), {
            let mut c = kit.claims();
            c["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
            c
        })],
    );
    t.create_visas(
        "iss of an untrusted issuer, signed with the trusted key",
        403,
        "visa_untrusted_issuer",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.iss = Some("https://evil.example".into());
            v
        })],
    );
    t.create_visas(
        "no iss claim",
        403,
        "visa_missing_claim",
        vec![kit.hand_signed(kit.header(), {
            let mut c = kit.claims();
            c.as_object_mut().unwrap().remove("iss");
            c
        })],
    );
    t.create_visas(
        "exp as a string",
        403,
        "visa_missing_claim",
        vec![kit.hand_signed(kit.header(), {
            let mut c = kit.claims();
            c["exp"] = json!("tomorrow");
            c
        })],
    );
    t.create_visas(
        "conditions present",
        403,
        "visa_conditions",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.conditions = true;
            v
        })],
    );
    t.create_visas(
        "by missing",
        403,
        "visa_missing_claim",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.by = None;
            v
        })],
    );
    t.create_visas(
        "visa type other than ControlledAccessGrants",
        403,
        "visa_wrong_type",
        vec![kit.visa(&{
            let mut v = Visa::new("alice", "JGAD000101");
            v.visa_type = "AffiliationAndRole".into();
            v
        })],
    );
    t.create_visas(
        "a different sub among the visas",
        403,
        "visa_subject_mismatch",
        vec![
            kit.good_visa(),
            kit.visa(&Visa::new("mallory", "JGAD000102")),
        ],
    );
    t.create(
        "visa for another dataset than the one asked",
        "visa",
        403,
        "dataset_not_granted",
        |b| b["visas"] = json!([kit.visa(&Visa::new("alice", "JGAD000102"))]),
    );
    t.create_visas("no visa", 422, "invalid_request", vec![]);
    t.create_visas(
        "65 visas",
        422,
        "invalid_request",
        vec![kit.good_visa(); 65],
    );

    let stranger = basho_core::visa::mint::Issuer::generate("https://evil.example");
    let stranger_key = EncodingKey::from_ec_pem(stranger.ec_pem().as_bytes()).unwrap();
    t.create_visas(
        "jku and an embedded key pointing at the attacker's JWKS",
        403,
        "visa_bad_signature",
        vec![
            jsonwebtoken::encode(
                &Header {
                    jku: Some("https://evil.example/jwks.json".into()),
                    jwk: serde_json::from_str(&stranger.jwks_json()).ok().and_then(
                        |v: serde_json::Value| serde_json::from_value(v["keys"][0].clone()).ok(),
                    ),
                    ..kit.header()
                },
                &kit.claims(),
                &stranger_key,
            )
            .unwrap(),
        ],
    );
    t.create_visas(
        "crit header naming an extension nobody understands",
        403,
        "visa_malformed",
        vec![kit.hand_signed(
            Header {
                crit: Some(vec!["x-basho-unknown".into()]),
                ..kit.header()
            },
            kit.claims(),
        )],
    );
    t.create_visas(
        "a JWT of four segments",
        403,
        "visa_malformed",
        vec![format!("{good}.{}", parts[2])],
    );
    t.create(
        "grant URL with a query string",
        "visa",
        403,
        "dataset_not_granted",
        |b| {
            let mut v = Visa::new("alice", "x");
            v.value = format!(
                "{}?also=JGAD000102",
                basho_core::visa::default_grant_url("JGAD000101")
            );
            b["visas"] = json!([kit.visa(&v)]);
        },
    );
    t.create(
        "dataset named in another case than its grant",
        "visa",
        409,
        "no_site_holds_datasets",
        |b| b["datasets"] = json!(["jgad000101"]),
    );

    // ---- identifiers ----
    t.create(
        "dataset ../JGAD000101",
        "identifier",
        422,
        "invalid_request",
        |b| b["datasets"] = json!(["../JGAD000101"]),
    );
    t.create(
        "template ../../etc/passwd",
        "identifier",
        422,
        "invalid_request",
        |b| b["template"] = json!("../../etc/passwd"),
    );
    t.create(
        "template with a slash",
        "identifier",
        422,
        "invalid_request",
        |b| b["template"] = json!("shell/../../x"),
    );
    t.create(
        "project with a slash",
        "identifier",
        422,
        "invalid_request",
        |b| b["project"] = json!("P/0001"),
    );
    t.create("site ..", "identifier", 422, "invalid_request", |b| {
        b["site"] = json!("..")
    });
    t.create(
        "dataset with an escaped NUL",
        "identifier",
        422,
        "invalid_request",
        |b| b["datasets"] = json!(["JGAD\u{0}000101"]),
    );
    t.create_raw(
        "raw NUL byte inside a string",
        "identifier",
        400,
        "invalid_json",
        raw_with(kit, "template", "\"sh\0ell\""),
    );
    t.create(
        "dataset with fullwidth look-alike letters",
        "identifier",
        422,
        "invalid_request",
        |b| b["datasets"] = json!(["\u{FF2A}GAD000101"]),
    );
    t.create(
        "template with a Cyrillic look-alike letter",
        "identifier",
        422,
        "invalid_request",
        |b| b["template"] = json!("sh\u{0435}ll"),
    );
    t.create(
        "project with a zero-width space",
        "identifier",
        422,
        "invalid_request",
        |b| {
            let p = format!("{}\u{200B}", b["project"].as_str().unwrap());
            b["project"] = json!(p);
        },
    );
    t.create(
        "dataset name of 10 kB",
        "identifier",
        422,
        "invalid_request",
        |b| b["datasets"] = json!(["J".repeat(10 * 1024)]),
    );
    t.create(
        "template name of 10 kB",
        "identifier",
        422,
        "invalid_request",
        |b| b["template"] = json!("s".repeat(10 * 1024)),
    );
    t.create(
        "dataset starting with -",
        "identifier",
        422,
        "invalid_request",
        |b| b["datasets"] = json!(["-rf"]),
    );
    t.create(
        "project with a newline",
        "identifier",
        422,
        "invalid_request",
        |b| b["project"] = json!("P-1\nX-Injected: 1"),
    );
    t.create(
        "unknown template",
        "identifier",
        422,
        "unknown_template",
        |b| b["template"] = json!("jupyter-root"),
    );

    // ---- resources and duration ----
    let res = |raw: &str| raw_with(kit, "resources", raw);
    t.create_raw(
        "negative cpus",
        "resources",
        422,
        "invalid_request",
        res(r#"{"cpus": -1, "memory_mib": 128}"#),
    );
    t.create_raw(
        "zero cpus",
        "resources",
        422,
        "invalid_resources",
        res(r#"{"cpus": 0, "memory_mib": 128}"#),
    );
    t.create_raw(
        "NaN memory",
        "resources",
        400,
        "invalid_json",
        res(r#"{"cpus": 1, "memory_mib": NaN}"#),
    );
    t.create_raw(
        "memory 1e400",
        "resources",
        400,
        "invalid_json",
        res(r#"{"cpus": 1, "memory_mib": 1e400}"#),
    );
    t.create_raw(
        "fractional cpus",
        "resources",
        422,
        "invalid_request",
        res(r#"{"cpus": 1.5, "memory_mib": 128}"#),
    );
    t.create_raw(
        "cpus past u32",
        "resources",
        422,
        "invalid_request",
        res(r#"{"cpus": 4294967296, "memory_mib": 128}"#),
    );
    t.create_raw(
        "cpus as a string",
        "resources",
        422,
        "invalid_request",
        res(r#"{"cpus": "1", "memory_mib": 128}"#),
    );
    t.create_raw(
        "memory u64::MAX",
        "resources",
        422,
        "invalid_resources",
        res(r#"{"cpus": 1, "memory_mib": 18446744073709551615}"#),
    );
    t.create_raw(
        "memory below 16 MiB",
        "resources",
        422,
        "invalid_resources",
        res(r#"{"cpus": 1, "memory_mib": 15}"#),
    );
    t.create_raw(
        "1000 GPUs",
        "resources",
        422,
        "invalid_resources",
        res(r#"{"cpus": 1, "memory_mib": 128, "gpus": 1000}"#),
    );
    t.create_raw(
        "negative GPUs",
        "resources",
        422,
        "invalid_request",
        res(r#"{"cpus": 1, "memory_mib": 128, "gpus": -1}"#),
    );
    t.create_raw(
        "more cpus than any site",
        "resources",
        409,
        "insufficient_capacity",
        res(r#"{"cpus": 1024, "memory_mib": 128}"#),
    );
    let dur = |raw: &str| raw_with(kit, "duration_s", raw);
    t.create_raw(
        "duration_s past u64",
        "duration",
        422,
        "invalid_request",
        dur("18446744073709551616"),
    );
    t.create_raw(
        "duration_s u64::MAX",
        "duration",
        422,
        "invalid_duration",
        dur("18446744073709551615"),
    );
    t.create_raw(
        "duration_s negative",
        "duration",
        422,
        "invalid_request",
        dur("-1"),
    );
    t.create_raw(
        "duration_s zero",
        "duration",
        422,
        "invalid_duration",
        dur("0"),
    );
    t.create_raw(
        "duration_s 1e30",
        "duration",
        422,
        "invalid_request",
        dur("1e30"),
    );

    // ---- JSON shape and size ----
    let depth = 10_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    t.create_raw(
        "datasets nested 10,000 arrays deep",
        "json",
        422,
        "invalid_request",
        raw_with(kit, "datasets", &nested),
    );
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    t.create_raw(
        "resources nested 10,000 objects deep",
        "json",
        422,
        "invalid_request",
        raw_with(kit, "resources", &objects),
    );
    t.create_raw(
        "the whole body nested 10,000 arrays deep",
        "json",
        422,
        "invalid_request",
        nested.clone().into_bytes(),
    );
    let deep_claims = format!(
        "{{\"iss\":\"{}\",\"x\":{}{}}}",
        fed.issuer.name(),
        "[".repeat(5000),
        "]".repeat(5000)
    );
    t.create_visas(
        "visa payload nested 5,000 arrays deep",
        403,
        "visa_malformed",
        vec![format!(
            "{}.{}.{}",
            parts[0],
            b64(deep_claims.as_bytes()),
            parts[2]
        )],
    );
    let mut big = kit.body(0);
    big["project"] = json!("{P}");
    big["visas"] = json!(vec![kit.good_visa(); 64]);
    big["padding_visas"] = json!(vec!["x".repeat(16 * 1024); 20]);
    t.create_raw(
        "a body over the 256 kB cap",
        "json",
        413,
        "body_too_large",
        big.to_string().into_bytes(),
    );
    let mut dup = raw_with(kit, "template", "\"shell\"");
    dup.truncate(dup.len() - 1);
    dup.extend_from_slice(b", \"template\": \"../evil\"}");
    t.create_raw("template given twice", "json", 422, "invalid_request", dup);
    t.create(
        "host path smuggled in an unknown field",
        "json",
        422,
        "invalid_request",
        |b| b["mounts"] = json!([{"host_path": "/", "target": "/host"}]),
    );
    t.create_raw(
        "truncated JSON",
        "json",
        400,
        "invalid_json",
        b"{\"project\": \"{P}\", \"template\":".to_vec(),
    );
    t.create_raw(
        "invalid UTF-8 inside the template",
        "json",
        400,
        "invalid_json",
        replace(
            &raw_with(kit, "template", "\"shell\""),
            b"\"shell\"",
            b"\"sh\xff\xfeell\"",
        ),
    );
    t.create_raw(
        "a JSON array instead of an object",
        "json",
        422,
        "invalid_request",
        {
            let b = kit.body(0).to_string();
            format!("[{b}]").into_bytes()
        },
    );

    // ---- tokens ----
    let body = kit.body(0).to_string().into_bytes();
    t.request(
        "no token",
        "auth",
        Method::POST,
        "/v1/workspaces".into(),
        None,
        body.clone(),
        401,
        "unauthenticated",
    );
    t.request(
        "unknown token",
        "auth",
        Method::POST,
        "/v1/workspaces".into(),
        Some("platform-guess".into()),
        body.clone(),
        401,
        "unauthenticated",
    );
    let tohoku = fed.site("tohoku");
    let ncbn = fed.site("ncbn");
    let tohoku_token = agents[&tohoku].clone();
    t.request(
        "agent token creating a workspace",
        "auth",
        Method::POST,
        "/v1/workspaces".into(),
        Some(tohoku_token.clone()),
        body.clone(),
        403,
        "forbidden",
    );
    t.request(
        "agent token listing workspaces",
        "auth",
        Method::GET,
        "/v1/workspaces".into(),
        Some(tohoku_token.clone()),
        vec![],
        403,
        "forbidden",
    );
    let reg = json!({
        "site": ncbn, "backend": "docker", "version": "evil",
        "datasets": [{"id": "JGAD000101", "grant_url": basho_core::visa::default_grant_url("JGAD000101")}],
        "capacity": {"cpus": 1024, "memory_mib": 1048576, "gpus": 0},
        "images": ["basho/demo"],
    });
    t.request(
        "agent token registering another site",
        "auth",
        Method::POST,
        "/v1/agent/register".into(),
        Some(tohoku_token.clone()),
        reg.to_string().into_bytes(),
        403,
        "forbidden",
    );
    t.request(
        "agent token polling another site's desired state",
        "auth",
        Method::GET,
        format!("/v1/agent/desired?site={ncbn}"),
        Some(tohoku_token.clone()),
        vec![],
        403,
        "forbidden",
    );
    let obs = json!({"site": ncbn, "observations": []});
    t.request(
        "agent token reporting for another site",
        "auth",
        Method::POST,
        "/v1/agent/observations".into(),
        Some(tohoku_token.clone()),
        obs.to_string().into_bytes(),
        403,
        "forbidden",
    );
    t.request(
        "platform token on the agent API",
        "auth",
        Method::GET,
        format!("/v1/agent/desired?site={tohoku}"),
        Some(platform.to_owned()),
        vec![],
        403,
        "forbidden",
    );
    t.request(
        "list filter with a path-like project",
        "identifier",
        Method::GET,
        "/v1/workspaces?project=..%2F..%2Fetc".into(),
        Some(platform.to_owned()),
        vec![],
        422,
        "invalid_request",
    );
    t.request(
        "workspace id with path traversal",
        "identifier",
        Method::GET,
        "/v1/workspaces/..%2F..%2Fetc%2Fpasswd".into(),
        Some(platform.to_owned()),
        vec![],
        404,
        "not_found",
    );
    let n = t.next();
    t.create_raw(
        "idempotency key of 1000 characters",
        "json",
        422,
        "invalid_request",
        kit.body(n).to_string().into_bytes(),
    );
    t.attacks.last_mut().unwrap().headers = vec![("idempotency-key", "k".repeat(1000))];
    t.request(
        "list filter given twice",
        "identifier",
        Method::GET,
        "/v1/workspaces?project=P-1&project=P-2".into(),
        Some(platform.to_owned()),
        vec![],
        422,
        "invalid_request",
    );
    t.create_visas(
        "empty sub",
        403,
        "visa_missing_claim",
        vec![kit.visa(&Visa::new("", "JGAD000101"))],
    );
    t.create(
        "grant URL with ../, datasets left to the visas",
        "visa",
        403,
        "dataset_not_granted",
        |b| {
            let mut v = Visa::new("alice", "x");
            v.value = basho_core::visa::default_grant_url("../JGAD000101");
            b["visas"] = json!([kit.visa(&v)]);
            b.as_object_mut().unwrap().remove("datasets");
        },
    );
    t
}
