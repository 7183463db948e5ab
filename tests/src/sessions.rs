//! Helpers for tests that drive `basho` sessions against a [`Federation`]: stored tokens, the
//! `basho` command pointed at the federation, and the audit log of one workspace.

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use basho_orchestrator::store::Role;
use basho_orchestrator::tokens::{NewToken, create, open_store};
use reqwest::Method;
use tokio::process::{Child, Command};

use crate::federation::Federation;

/// The researcher each stored token of [`token`] names, so [`basho`] can prove them to sites.
static SUBJECTS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

/// A stored token for `role` (and `subject`), made in the federation's own store.
pub async fn token(fed: &Federation, role: Role, subject: Option<&str>) -> String {
    let config = fed.dir.path().join("orchestrator-tokens.toml");
    std::fs::write(&config, toml::to_string(fed.config()).unwrap()).unwrap();
    let store = open_store(&config).await.expect("store opens");
    let new = NewToken {
        role,
        subject: subject.map(str::to_owned),
        site: None,
        name: None,
        ttl: None,
    };
    let token = create(&*store, new, "test").await.expect("token").1;
    if let Some(sub) = subject {
        SUBJECTS
            .lock()
            .unwrap()
            .insert(token.clone(), sub.to_owned());
    }
    token
}

/// The environment that lets `basho` with `token` prove its researcher to the federation's
/// sites (`BASHO_ID_TOKEN_COMMAND`, for a researcher's token) and pin their keys in the
/// federation's own file.
fn prove(c: &mut Command, fed: &Federation, token: &str) {
    c.env("BASHO_KNOWN_SITES", fed.pins().path());
    if let Some(sub) = SUBJECTS.lock().unwrap().get(token) {
        c.env("BASHO_ID_TOKEN_COMMAND", fed.id_token_command(sub));
    }
}

/// The `basho` client speaking to the federation with `token`, its stdin closed.
pub fn basho(fed: &Federation, token: &str) -> Command {
    let mut c = Command::new(crate::binary("basho"));
    c.env("BASHO_ADDR", &fed.api.base)
        .env("BASHO_TOKEN", token)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    prove(&mut c, fed, token);
    c
}

/// `basho shell id` under `script`, which gives it a pseudo-terminal; its stdin and stdout piped.
pub fn shell(fed: &Federation, token: &str, id: &str) -> Child {
    let shell = format!("{} shell {id}", crate::binary("basho").display());
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &shell, "/dev/null"])
        .env("BASHO_ADDR", &fed.api.base)
        .env("BASHO_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    prove(&mut cmd, fed, token);
    cmd.spawn().unwrap()
}

/// Runs `c` to its end (60 s at most) and returns what it wrote.
pub async fn run(mut c: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("basho finishes within 60 s")
        .expect("basho runs")
}

/// `b` as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Serves `root` inside workspace `id` with `httpd` on the container's loopback port 8000 (through
/// `basho exec`) and forwards a free local port to it (`basho port-forward`): the local port and
/// both clients, which end when dropped.
pub fn serve_and_forward(
    fed: &Federation,
    token: &str,
    id: &str,
    root: &str,
) -> (u16, Child, Child) {
    let mut httpd = basho(fed, token);
    httpd.args([
        "exec",
        id,
        "--",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:8000",
        "-h",
        root,
    ]);
    let httpd = httpd.spawn().unwrap();
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pf = basho(fed, token);
    pf.args(["port-forward", id, &format!("{local}:8000")])
        .stdout(Stdio::piped());
    let pf = pf.spawn().unwrap();
    (local, httpd, pf)
}

/// Every audit entry about `id`, read page by page with `admin`'s token.
pub async fn audit(fed: &Federation, admin: &str, id: &str) -> Vec<serde_json::Value> {
    let api = crate::api::Api::new(fed.api.base.clone(), admin);
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (s, v) = api
            .call(Method::GET, &format!("/v1/audit?after={after}"), None)
            .await;
        assert!(s.is_success(), "audit: {v}");
        all.extend(v["entries"].as_array().cloned().unwrap_or_default());
        match v["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    all.into_iter().filter(|e| e["target"] == id).collect()
}
