//! Fixtures for the API tests: an orchestrator on in-memory SQLite behind its real router, a
//! visa issuer it trusts, agent tokens for the demo sites, and helpers to call the API.
//! With `BASHO_TEST_STORE=postgres` the same tests run on a fresh PostgreSQL database each (the
//! server `scripts/postgres-up` starts).

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::{AgentAuth, Config};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The platform's token in every test config.
pub const PLATFORM: &str = "platform-test-token";
/// The issuer name the orchestrator trusts.
pub const ISSUER: &str = "https://dac.test.example";
/// The demo federation: site and the datasets it holds.
pub const DEMO: [(&str, &[&str]); 3] = [
    ("tohoku", &["JGAD000101", "JGAD000102"]),
    ("ncbn", &["JGAD000201"]),
    ("bbj", &["JGAD000301"]),
];

/// The agent token of `site`.
pub fn agent_token(site: &str) -> String {
    format!("{site}-agent-token")
}

/// One orchestrator under test.
pub struct Harness {
    pub orchestrator: Orchestrator,
    pub router: axum::Router,
    pub issuer: Issuer,
    pub config: Config,
    _dir: tempfile::TempDir,
    _db: Option<basho_orchestrator::store::postgres::testdb::TestDatabase>,
}

/// A test config: repository templates, one trusted issuer (its JWKS in `dir`), demo agents.
pub fn config(dir: &std::path::Path, issuer: &Issuer) -> Config {
    let jwks = dir.join("issuer.jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
    let mut c = Config::for_tests(templates, PLATFORM);
    c.data_dir = dir.to_owned();
    c.trusted_issuers.push(IssuerRef {
        issuer: ISSUER.into(),
        jwks_file: jwks,
    });
    for (site, _) in DEMO {
        c.agents.push(AgentAuth {
            site: site.parse().unwrap(),
            token: agent_token(site),
        });
    }
    c
}

impl Harness {
    /// An orchestrator with the default test config.
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// An orchestrator whose test config `edit` adjusts.
    pub async fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::generate(ISSUER).with_rsa();
        let mut config = config(dir.path(), &issuer);
        edit(&mut config);
        // Tests that chose their own store keep it.
        let db = match std::env::var("BASHO_TEST_STORE").as_deref() {
            Ok("postgres") if config.database.as_deref() == Some("sqlite::memory:") => {
                let db = basho_orchestrator::store::postgres::testdb::TestDatabase::create().await;
                config.database = Some(db.url.clone());
                Some(db)
            }
            _ => None,
        };
        let orchestrator = Orchestrator::open(config.clone()).await.unwrap();
        Self {
            router: orchestrator.router(),
            orchestrator,
            issuer,
            config,
            _dir: dir,
            _db: db,
        }
    }

    /// Sends one request through the router; answers the status and the body as JSON (or as a
    /// JSON string when it is not JSON).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// A JSON request with `token`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, Some(token), &[], bytes).await
    }

    /// A platform GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, PLATFORM, None).await
    }

    /// One site as `GET /v1/sites` shows it; panics when it is not listed.
    pub async fn site(&self, name: &str) -> Value {
        let (_, sites) = self.get("/v1/sites").await;
        sites
            .as_array()
            .expect("sites are a list")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("site {name} not listed: {sites}"))
            .clone()
    }

    /// `POST /v1/workspaces` with the platform token.
    pub async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/workspaces", PLATFORM, Some(body))
            .await
    }

    /// Registers `site` (its agent token) holding `datasets` under their default grant URLs.
    pub async fn register(&self, site: &str, datasets: &[&str], cpus: u32, memory_mib: u64) {
        self.register_as(site, registration(site, datasets, cpus, memory_mib))
            .await;
    }

    /// Registers `site` with this registration body.
    pub async fn register_as(&self, site: &str, body: Value) {
        let (status, answer) = self
            .call(
                Method::POST,
                "/v1/agent/register",
                &agent_token(site),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    /// Registers the three demo sites with 16 CPUs and 64 GiB each.
    pub async fn register_demo(&self) {
        for (site, datasets) in DEMO {
            self.register(site, datasets, 16, 65536).await;
        }
    }

    /// A valid visa granting `dataset` to `sub`.
    pub fn visa(&self, sub: &str, dataset: &str) -> String {
        self.issuer.mint(sub, dataset)
    }

    /// A valid create body for `datasets`, one visa each, for researcher `r-1`.
    pub fn body(&self, datasets: &[&str]) -> Value {
        let visas: Vec<String> = datasets.iter().map(|d| self.visa("r-1", d)).collect();
        json!({"project": "P-0001", "template": "shell", "visas": visas, "datasets": datasets})
    }

    /// Every workspace the API lists.
    pub async fn workspaces(&self) -> Vec<Value> {
        let (status, v) = self.get("/v1/workspaces").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v.as_array().unwrap().clone()
    }

    /// One workspace's state.
    pub async fn state(&self, id: &str) -> String {
        let (status, v) = self.get(&format!("/v1/workspaces/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["state"].as_str().unwrap().to_owned()
    }

    /// Posts observations for `site`: (workspace, state, message).
    pub async fn observe(
        &self,
        site: &str,
        obs: &[(&str, &str, Option<&str>)],
    ) -> (StatusCode, Value) {
        let now = chrono::Utc::now();
        let list: Vec<Value> = obs
            .iter()
            .map(|(w, s, m)| {
                let mut o = json!({"workspace": w, "state": s, "at": now});
                if let Some(m) = m {
                    o["message"] = json!(m);
                }
                o
            })
            .collect();
        self.call(
            Method::POST,
            "/v1/agent/observations",
            &agent_token(site),
            Some(json!({"site": site, "observations": list})),
        )
        .await
    }
}

impl Harness {
    /// Reports `task`'s workspace at `site` as ended with `state` (`stopped` or `failed`) and
    /// `message`, its site having taken `taken` of its outputs (digests of their names) and
    /// found `missing` absent, as an agent does.
    pub async fn end_task(
        &self,
        site: &str,
        task: &str,
        (state, message): (&str, &str),
        taken: &[&str],
        missing: &[&str],
    ) -> (StatusCode, Value) {
        let files: Vec<Value> = taken
            .iter()
            .map(|name| {
                json!({"name": name, "size": name.len(),
                    "sha256": basho_core::digest::sha256_hex(name.as_bytes()),
                    "checked": {"file_type": "txt", "refused": false, "findings": [], "omitted": 0}})
            })
            .collect();
        let o = json!({"workspace": task, "state": state, "message": message,
            "at": chrono::Utc::now(),
            "outputs": {"intake": {"files": files, "compared": {"tables": 1, "rows": 5, "skipped": 0}},
                        "missing": missing}});
        self.call(
            Method::POST,
            "/v1/agent/observations",
            &agent_token(site),
            Some(json!({"site": site, "observations": [o]})),
        )
        .await
    }
}

/// A registration body for `site`.
pub fn registration(site: &str, datasets: &[&str], cpus: u32, memory_mib: u64) -> Value {
    let entries: Vec<Value> = datasets
        .iter()
        .map(|d| json!({"id": d, "grant_url": basho_core::visa::default_grant_url(d)}))
        .collect();
    json!({
        "site": site, "backend": "fake", "version": "test",
        "datasets": entries,
        "capacity": {"cpus": cpus, "memory_mib": memory_mib, "gpus": 0},
        "images": ["basho/demo"],
    })
}

/// Asserts an error answer: status, code, and the contract's body shape.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without message: {}", got.1);
}

pub async fn refused(h: &Harness, body: Value, status: StatusCode, code: &str) -> String {
    let got = h.create(body).await;
    assert_error(&got, status, code);
    assert!(
        h.workspaces().await.is_empty(),
        "a refused create left a workspace"
    );
    got.1["error"]["message"].as_str().unwrap().to_owned()
}

/// A stored token of `role` (for `subject`, a researcher's) minted in `store`: its secret.
pub async fn token(
    store: &basho_orchestrator::store::SqliteStore,
    role: basho_orchestrator::store::Role,
    subject: Option<&str>,
) -> String {
    let new = basho_orchestrator::tokens::NewToken {
        role,
        subject: subject.map(str::to_owned),
        site: None,
        name: Some("test".into()),
        ttl: None,
    };
    basho_orchestrator::tokens::create(store, new, "operator")
        .await
        .unwrap()
        .1
}
