//! The hostile suite's parts: an attack as a raw request, a client that sends raw bodies, and
//! the kit the attack table is built from (the federation's issuer keys, a valid request to bend).

use basho_core::visa::mint::Visa;
use basho_tests::federation::Federation;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One attack: a raw request and the refusal it must meet.
pub struct Attack {
    pub name: &'static str,
    pub category: &'static str,
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    pub code: &'static str,
    /// Another answer that is as right (a researcher may be told 403 or 404).
    pub or: Option<(u16, &'static str)>,
    /// The project this attack would have created a workspace for, if any.
    pub project: Option<String>,
}

/// The answer to one request: status and JSON body (`Value::Null` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub async fn send(
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

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, Some(token), &[], bytes).await
    }
}

pub fn b64(bytes: &[u8]) -> String {
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
pub struct Kit<'a> {
    pub fed: &'a Federation,
    pub prefix: String,
    pub ec: EncodingKey,
}

impl Kit<'_> {
    pub fn project(&self, n: usize) -> String {
        format!("{}-{n:02}", self.prefix)
    }

    pub fn visa(&self, v: &Visa) -> String {
        self.fed.issuer.sign(v)
    }

    pub fn good_visa(&self) -> String {
        self.fed.issuer.mint("alice", "JGAD000101")
    }

    /// A visa signed with the trusted issuer's ES256 key over any header and claims.
    pub fn hand_signed(&self, header: Header, claims: Value) -> String {
        jsonwebtoken::encode(&header, &claims, &self.ec).expect("signing")
    }

    pub fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.fed.issuer.name(), "sub": "alice", "iat": now - 10, "exp": now + 3600,
            "jti": format!("jti-{}", basho_tests::unique("h")),
            "ga4gh_visa_v1": {"type": "ControlledAccessGrants", "asserted": now - 100,
                "value": basho_core::visa::default_grant_url("JGAD000101"),
                "source": "https://dac.test.invalid/JGAC000001", "by": "dac"},
        })
    }

    pub fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(basho_core::visa::VISA_TYP.to_owned());
        h.kid = Some("ec-1".to_owned());
        h
    }

    /// A valid create body for project `n`, as JSON to bend.
    pub fn body(&self, n: usize) -> Value {
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
pub struct Table<'a> {
    pub kit: &'a Kit<'a>,
    pub platform: String,
    pub attacks: Vec<Attack>,
}

impl Table<'_> {
    pub fn next(&self) -> usize {
        self.attacks.len() + 1
    }

    /// A create whose otherwise valid body `bend` changes.
    pub fn create(
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
    pub fn create_visas(
        &mut self,
        name: &'static str,
        status: u16,
        code: &'static str,
        visas: Vec<String>,
    ) {
        self.create(name, "visa", status, code, |b| b["visas"] = json!(visas));
    }

    /// A create whose body is `raw`, with `{P}` standing for the attack's project.
    pub fn create_raw(
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
    pub fn request(
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

pub fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
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
pub fn raw_with(kit: &Kit<'_>, field: &str, raw_value: &str) -> Vec<u8> {
    let mut body = kit.body(0);
    body[field] = json!("@@RAW@@");
    body["project"] = json!("{P}");
    body.to_string()
        .replace("\"@@RAW@@\"", raw_value)
        .into_bytes()
}
