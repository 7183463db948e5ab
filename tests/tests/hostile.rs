//! Hostile input against a running federation (orchestrator and three Docker sites over real
//! HTTP): forged and bent visas, path-like and look-alike identifiers, absurd resources, malformed
//! and oversized JSON, tokens used where they do not belong. Every attack must end in a 4xx with
//! the contract's error body and its expected code, start no container and leave no record.
//! Attacks that need a feature the orchestrator may not have yet (revocations, researcher tokens)
//! run when the feature answers and are reported as skipped otherwise; when the audit log is
//! readable, every authenticated refusal must add an entry to it. `docs/security.md` keeps the
//! figures this test prints.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_core::visa::mint::Visa;
use basho_tests::federation::Federation;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One attack: a raw request and the refusal it must meet.
struct Attack {
    name: &'static str,
    category: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// Another answer that is as right (a researcher may be told 403 or 404).
    or: Option<(u16, &'static str)>,
    /// The project this attack would have created a workspace for, if any.
    project: Option<String>,
}

/// Attacks that are not refused today, with the answer they get and where the fix belongs.
/// Each is still sent and counted as not refused; once it is refused the test fails until its
/// line here is removed, so a fix cannot go unnoticed.
const KNOWN_BUGS: &[(&str, &str)] = &[(
    "nbf an hour ahead",
    "accepted with 201 and launched: basho_core::visa::verify never reads `nbf` (core/src/visa.rs \
     turns off jsonwebtoken's nbf check and grant_from_claims reads only iat and exp); a visa \
     whose nbf lies beyond now + LEEWAY_S must be refused as visa_not_yet_valid, which also \
     covers the agents",
)];

/// Refusals that leave no audit entry today, and where the entry belongs. Like [`KNOWN_BUGS`],
/// an entry here that starts being audited fails the test until it is removed.
const AUDIT_GAPS: &[(&str, &str)] = &[(
    "researcher token reading someone else's workspace",
    "answered 404 like a missing workspace (so ids cannot be probed) but not audited: \
     orchestrator/src/api/workspaces.rs `show` should add an entry when a researcher asks for a \
     workspace that is not theirs",
)];

fn known(list: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    list.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// The answer to one request: status and JSON body (`Value::Null` when not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.body(body).send().await.expect("orchestrator answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn json(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, Some(token), &[], bytes).await
    }
}

/// A feature another part of the API provides, probed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Feature {
    Revocations,
    ResearcherTokens,
}

impl Feature {
    fn name(self) -> &'static str {
        match self {
            Feature::Revocations => "revocations (POST /v1/revocations)",
            Feature::ResearcherTokens => "researcher tokens",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What the attacks are built from: the federation's issuer keys and a valid request template.
struct Kit<'a> {
    fed: &'a Federation,
    prefix: String,
    ec: EncodingKey,
}

impl Kit<'_> {
    fn project(&self, n: usize) -> String {
        format!("{}-{n:02}", self.prefix)
    }

    fn visa(&self, v: &Visa) -> String {
        self.fed.issuer.sign(v)
    }

    fn good_visa(&self) -> String {
        self.fed.issuer.mint("alice", "JGAD000101")
    }

    /// A visa signed with the trusted issuer's ES256 key over any header and claims.
    fn hand_signed(&self, header: Header, claims: Value) -> String {
        jsonwebtoken::encode(&header, &claims, &self.ec).expect("signing")
    }

    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.fed.issuer.name(), "sub": "alice", "iat": now - 10, "exp": now + 3600,
            "jti": format!("jti-{}", basho_tests::unique("h")),
            "ga4gh_visa_v1": {"type": "ControlledAccessGrants", "asserted": now - 100,
                "value": basho_core::visa::default_grant_url("JGAD000101"),
                "source": "https://dac.test.invalid/JGAC000001", "by": "dac"},
        })
    }

    fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(basho_core::visa::VISA_TYP.to_owned());
        h.kid = Some("ec-1".to_owned());
        h
    }

    /// A valid create body for project `n`, as JSON to bend.
    fn body(&self, n: usize) -> Value {
        json!({
            "project": self.project(n),
            "template": "shell",
            "visas": [self.good_visa()],
            "datasets": ["JGAD000101"],
            "resources": {"cpus": 1, "memory_mib": 128, "gpus": 0},
            "duration_s": 600,
        })
    }
}

/// Builds the attack table; `n` numbers the projects so each attack has its own.
struct Table<'a> {
    kit: &'a Kit<'a>,
    platform: String,
    attacks: Vec<Attack>,
}

impl Table<'_> {
    fn next(&self) -> usize {
        self.attacks.len() + 1
    }

    /// A create whose otherwise valid body `bend` changes.
    fn create(
        &mut self,
        name: &'static str,
        category: &'static str,
        status: u16,
        code: &'static str,
        bend: impl FnOnce(&mut Value),
    ) {
        let n = self.next();
        let mut body = self.kit.body(n);
        bend(&mut body);
        self.create_raw(name, category, status, code, body.to_string().into_bytes());
    }

    /// A create with the visas replaced by `visas`.
    fn create_visas(
        &mut self,
        name: &'static str,
        status: u16,
        code: &'static str,
        visas: Vec<String>,
    ) {
        self.create(name, "visa", status, code, |b| b["visas"] = json!(visas));
    }

    /// A create whose body is `raw`, with `{P}` standing for the attack's project.
    fn create_raw(
        &mut self,
        name: &'static str,
        category: &'static str,
        status: u16,
        code: &'static str,
        raw: Vec<u8>,
    ) {
        let project = self.kit.project(self.next());
        let raw = replace(&raw, b"{P}", project.as_bytes());
        self.attacks.push(Attack {
            name,
            category,
            method: Method::POST,
            path: "/v1/workspaces".into(),
            token: Some(self.platform.clone()),
            headers: vec![],
            body: raw,
            status,
            code,
            or: None,
            project: Some(project),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        name: &'static str,
        category: &'static str,
        method: Method,
        path: String,
        token: Option<String>,
        body: Vec<u8>,
        status: u16,
        code: &'static str,
    ) {
        self.attacks.push(Attack {
            name,
            category,
            method,
            path,
            token,
            headers: vec![],
            body,
            status,
            code,
            or: None,
            project: None,
        });
    }
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// A create body as text around raw JSON for one field, so the field can be invalid JSON.
fn raw_with(kit: &Kit<'_>, field: &str, raw_value: &str) -> Vec<u8> {
    let mut body = kit.body(0);
    body[field] = json!("@@RAW@@");
    body["project"] = json!("{P}");
    body.to_string()
        .replace("\"@@RAW@@\"", raw_value)
        .into_bytes()
}

/// Every attack that needs nothing beyond the core API.
fn attacks<'a>(kit: &'a Kit<'a>, platform: &str, agents: &BTreeMap<String, String>) -> Table<'a> {
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
    t
}

/// A token of `role` made with `basho-orchestrator token create` on the federation's store, or
/// why none could be made (the binary or the command is not there).
fn stored_token(fed: &Federation, role: &str, subject: Option<&str>) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target dir")?;
    let bin = dir.join("basho-orchestrator");
    if !bin.exists() {
        return Err(format!("{} is not built", bin.display()));
    }
    let config = fed.dir.path().join("orchestrator-hostile.toml");
    let text = toml::to_string(fed.config()).map_err(|e| e.to_string())?;
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["token", "create", "--config"])
        .arg(&config)
        .args(["--role", role]);
    if let Some(s) = subject {
        cmd.args(["--subject", s]);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`basho-orchestrator token create` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The token is the one long hex word of the output, whatever surrounds it.
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() >= 32)
        .map(str::to_owned)
        .ok_or_else(|| "no token in the output of `token create`".to_owned())
}

/// Reads the audit log after `after`, or `None` when it cannot be read.
async fn audit_after(client: &Client, token: &str, after: i64) -> Option<Vec<Value>> {
    let a = client
        .json(
            Method::GET,
            &format!("/v1/audit?after={after}"),
            token,
            None,
        )
        .await;
    if a.status != StatusCode::OK {
        return None;
    }
    let entries = a.body.get("entries").or(Some(&a.body))?.as_array()?.clone();
    Some(entries)
}

fn last_seq(entries: &[Value], after: i64) -> i64 {
    entries
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .unwrap_or(after)
}

/// Whether an attack of this kind must leave an audit entry: refused creates
/// (`workspace_refused`) and refused tokens (`auth_failed`).
fn must_audit(a: &Attack) -> bool {
    a.project.is_some() || a.category == "auth"
}

#[derive(Default)]
struct Tally {
    tried: usize,
    refused: usize,
    audited: usize,
    by_category: BTreeMap<&'static str, (usize, usize)>,
    failures: Vec<String>,
    known: Vec<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_and_leaves_nothing_behind() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let client = Client {
        base: fed.api.base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let platform = fed.config().platform_tokens[0].clone();
    let agents: BTreeMap<String, String> = fed
        .config()
        .agents
        .iter()
        .map(|a| (a.site.to_string(), a.token.clone()))
        .collect();
    let kit = Kit {
        fed: &fed,
        prefix: basho_tests::unique("H"),
        ec: EncodingKey::from_ec_pem(fed.issuer.ec_pem().as_bytes()).unwrap(),
    };

    // The control: the body every attack bends is valid, and its workspace belongs to alice.
    let control_project = format!("{}-control", kit.prefix);
    let mut control = kit.body(0);
    control["project"] = json!(control_project);
    let created = client
        .json(Method::POST, "/v1/workspaces", &platform, Some(control))
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "control: {}",
        created.body
    );
    let control_id = created.body["id"].as_str().unwrap().to_owned();
    fed.api
        .wait_state(&control_id, "running", Duration::from_secs(60))
        .await;

    let mut table = attacks(&kit, &platform, &agents);
    let mut skipped: Vec<(&'static str, Feature, String)> = Vec::new();

    // Revoked jti replay: revoke a visa by its jti, then present it.
    let jti = format!("revoked-{}", kit.prefix);
    let revoked_visa = kit.visa(&{
        let mut v = Visa::new("alice", "JGAD000101");
        v.jti = Some(jti.clone());
        v
    });
    let revoke = client
        .json(
            Method::POST,
            "/v1/revocations",
            &platform,
            Some(json!({"visa_jti": jti, "reason": "dac-revoked"})),
        )
        .await;
    if revoke.status == StatusCode::NOT_FOUND && revoke.body["error"]["code"] == "not_found" {
        skipped.push((
            "replayed revoked jti",
            Feature::Revocations,
            "POST /v1/revocations answers 404".into(),
        ));
    } else {
        assert!(
            revoke.status.is_success(),
            "revocation by jti: {} {}",
            revoke.status,
            revoke.body
        );
        table.create_visas(
            "replayed revoked jti",
            403,
            "visa_revoked",
            vec![revoked_visa],
        );
    }

    // A researcher token reading another researcher's workspace.
    match stored_token(&fed, "researcher", Some("mallory")) {
        Ok(mallory) => {
            table.request(
                "researcher token reading someone else's workspace",
                "auth",
                Method::GET,
                format!("/v1/workspaces/{control_id}"),
                Some(mallory.clone()),
                vec![],
                404,
                "not_found",
            );
            table.attacks.last_mut().unwrap().or = Some((403, "forbidden"));
            table.request(
                "researcher token deleting someone else's workspace",
                "auth",
                Method::DELETE,
                format!("/v1/workspaces/{control_id}"),
                Some(mallory.clone()),
                vec![],
                403,
                "forbidden",
            );
            table.attacks.last_mut().unwrap().or = Some((404, "not_found"));
            let n = table.next();
            let body = kit.body(n).to_string().into_bytes();
            table.request(
                "researcher token creating a workspace",
                "auth",
                Method::POST,
                "/v1/workspaces".into(),
                Some(mallory),
                body,
                403,
                "forbidden",
            );
            table.attacks.last_mut().unwrap().project = Some(kit.project(n));
        }
        Err(why) => skipped.push((
            "researcher token reading someone else's workspace",
            Feature::ResearcherTokens,
            why,
        )),
    }

    // The audit log, when there is one and this test can get a token that reads it.
    let auditor = match client.json(Method::GET, "/v1/audit", &platform, None).await {
        a if a.status == StatusCode::NOT_FOUND => Err("GET /v1/audit answers 404".to_owned()),
        a if a.status == StatusCode::OK => Ok(platform.clone()),
        _ => stored_token(&fed, "auditor", None),
    };
    let mut seq = 0;
    let auditor = match auditor {
        Ok(t) => match audit_after(&client, &t, 0).await {
            Some(entries) => {
                seq = last_seq(&entries, 0);
                Some(t)
            }
            None => {
                println!("audit: skipped, the auditor token cannot read GET /v1/audit");
                None
            }
        },
        Err(why) => {
            println!("audit: skipped, {why}");
            None
        }
    };

    let mut tally = Tally::default();
    for a in &table.attacks {
        let got = client
            .send(
                a.method.clone(),
                &a.path,
                a.token.as_deref(),
                &a.headers,
                a.body.clone(),
            )
            .await;
        tally.tried += 1;
        let cat = tally.by_category.entry(a.category).or_default();
        cat.0 += 1;
        let code = got.body["error"]["code"].as_str().unwrap_or_default();
        let message = got.body["error"]["message"].as_str().unwrap_or_default();
        let expected = |(status, c): (u16, &str)| got.status.as_u16() == status && code == c;
        let refused = got.status.is_client_error() && !message.is_empty();
        let ok = refused && (expected((a.status, a.code)) || a.or.is_some_and(expected));
        if ok {
            tally.refused += 1;
            cat.1 += 1;
        }
        match (ok, known(KNOWN_BUGS, a.name)) {
            (true, None) => {}
            (true, Some(_)) => tally.failures.push(format!(
                "{}: refused now; remove it from KNOWN_BUGS",
                a.name
            )),
            (false, Some(why)) => {
                println!("KNOWN BUG: {}: {why}", a.name);
                tally.known.push(a.name);
                // Whatever it created is removed, so the checks below judge the other attacks.
                if let Some(id) = got.body["id"].as_str() {
                    fed.api.delete(id).await;
                    basho_tests::wait_for(
                        "the known bug's workspace stopped",
                        Duration::from_secs(60),
                        || async {
                            (fed.api.workspace(id).await["state"] == "stopped").then_some(())
                        },
                    )
                    .await;
                }
            }
            (false, None) => tally.failures.push(format!(
                "{}: expected {} {}, got {} {}",
                a.name, a.status, a.code, got.status, got.body
            )),
        }
        if let Some(t) = &auditor {
            let entries = audit_after(&client, t, seq).await.unwrap_or_default();
            seq = last_seq(&entries, seq);
            let text = Value::Array(entries).to_string();
            let noted = ["refused", "failed", "forbidden", code]
                .iter()
                .any(|w| !w.is_empty() && text.contains(w));
            let gap = known(AUDIT_GAPS, a.name);
            if noted {
                tally.audited += 1;
            }
            match (noted, gap) {
                (true, Some(_)) => tally.failures.push(format!(
                    "{}: audited now; remove it from AUDIT_GAPS",
                    a.name
                )),
                (false, Some(why)) => println!("AUDIT GAP: {}: {why}", a.name),
                (false, None) if ok && must_audit(a) => tally
                    .failures
                    .push(format!("{}: refused without an audit entry", a.name)),
                _ => {}
            }
        }
    }

    for (name, feature, why) in &skipped {
        println!("skipped: {name}: {} not available ({why})", feature.name());
    }
    for (cat, (tried, refused)) in &tally.by_category {
        println!("hostile: {cat}: {tried} tried, {refused} refused");
    }
    if auditor.is_some() {
        println!("hostile: {} refusals audited", tally.audited);
    }
    println!(
        "hostile: {} attacks tried, {} refused",
        tally.tried, tally.refused
    );

    // Nothing started, nothing stored: give the agents time to act on anything that got through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for a in &table.attacks {
        let Some(project) = &a.project else { continue };
        if tally.known.contains(&a.name) {
            continue;
        }
        let listed = client
            .json(
                Method::GET,
                &format!("/v1/workspaces?project={project}"),
                &platform,
                None,
            )
            .await;
        if listed.body != json!([]) {
            tally
                .failures
                .push(format!("{}: left a workspace: {}", a.name, listed.body));
        }
        let containers =
            basho_tests::containers_labelled(&fed.docker, basho_core::LABEL_PROJECT, project).await;
        if !containers.is_empty() {
            tally
                .failures
                .push(format!("{}: started containers {containers:?}", a.name));
        }
    }
    let all = client
        .json(Method::GET, "/v1/workspaces", &platform, None)
        .await;
    let ids: Vec<&str> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            // A known bug's workspace was deleted above; it must have stopped.
            let known_project = table.attacks.iter().any(|a| {
                tally.known.contains(&a.name) && a.project.as_deref() == w["project"].as_str()
            });
            !(known_project && w["state"] == "stopped")
        })
        .filter_map(|w| w["id"].as_str())
        .collect();
    if ids != vec![control_id.as_str()] {
        tally.failures.push(format!(
            "workspaces other than the control exist: {}",
            all.body
        ));
    }
    let mut containers = Vec::new();
    for name in ["tohoku", "ncbn", "bbj"] {
        containers.extend(
            basho_tests::containers_labelled(&fed.docker, basho_core::LABEL_SITE, &fed.site(name))
                .await,
        );
    }
    let control_containers = fed.containers(&control_id).await;
    if containers != control_containers {
        tally.failures.push(format!(
            "containers other than the control's exist: {containers:?} (control: {control_containers:?})"
        ));
    }

    let (status, _) = fed.api.delete(&control_id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fed.shutdown().await;
    assert!(
        tally.failures.is_empty(),
        "{} of {} attacks were not handled as expected:\n  {}",
        tally.failures.len(),
        tally.tried,
        tally.failures.join("\n  ")
    );
    assert!(tally.tried >= 45, "the suite tries at least 45 attacks");
}
