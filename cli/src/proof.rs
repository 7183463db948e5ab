//! The proof a session carries to the site ([`basho_core::proof`]): the researcher's identity
//! token, asked of the site's OpenID Connect provider for this one session (its `nonce` binds
//! it), or an administrator's break-glass approval from a file. Sites check it themselves; the
//! orchestrator only passes it on.
//!
//! The token comes from `BASHO_ID_TOKEN_COMMAND` when set (a command that prints one for the
//! nonce in `BASHO_SESSION_NONCE`, as credential helpers do), otherwise from the provider at
//! `BASHO_OIDC_ISSUER` by the authorization-code flow with PKCE and a loopback redirect: basho
//! prints the address to open, the browser signs in and comes back to basho.

use std::path::PathBuf;
use std::time::Duration;

use basho_core::proof::{Proof, fresh_seed, pkce_challenge, session_nonce};
use clap::Args;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::error::Error;

/// How long basho waits for the browser to come back from the provider.
const SIGN_IN_WAIT: Duration = Duration::from_secs(300);

/// Where a session's proof comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct ProofArgs {
    /// The OpenID Connect provider the sites trust to prove who you are (its issuer URL).
    #[arg(long, env = "BASHO_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// basho's client id at that provider: the audience the sites expect.
    #[arg(long, env = "BASHO_OIDC_CLIENT_ID", default_value = "basho")]
    pub oidc_client_id: String,
    /// basho's client secret at that provider, for providers that do not take public clients
    /// (sent as `client_secret_post`; on a shared machine, prefer a provider that needs none).
    #[arg(long, env = "BASHO_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// A command (run by `sh -c`) that prints an identity token whose nonce is
    /// `$BASHO_SESSION_NONCE`; used instead of the sign-in flow.
    #[arg(long, env = "BASHO_ID_TOKEN_COMMAND")]
    pub id_token_command: Option<String>,
    /// With --break-glass: a file holding the approval a site approver signed
    /// (`basho-agent approve`).
    #[arg(long, value_name = "FILE")]
    pub approval: Option<PathBuf>,
}

fn failed(why: impl std::fmt::Display) -> Error {
    Error::Session(format!("cannot prove who you are to the site: {why}"))
}

impl ProofArgs {
    /// The proof for sessions in `workspace` whose handshake key has `seed`
    /// ([`crate::session::Sealing::seed`]); `None` when nothing is configured (a site that
    /// requires proof then says so).
    pub async fn obtain(&self, workspace: &str, seed: &str) -> Result<Option<Proof>, Error> {
        if let Some(path) = &self.approval {
            let token = std::fs::read_to_string(path).map_err(|source| Error::Input {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(Some(Proof::Approval {
                token: token.trim().to_owned(),
            }));
        }
        let seed = seed.to_owned();
        let nonce = session_nonce(workspace, &seed);
        let token = if let Some(cmd) = &self.id_token_command {
            command_token(cmd, workspace, &nonce).await?
        } else if let Some(issuer) = &self.oidc_issuer {
            let client = Client {
                id: &self.oidc_client_id,
                secret: self.oidc_client_secret.as_deref(),
            };
            sign_in(issuer, client, &nonce).await?
        } else {
            return Ok(None);
        };
        Ok(Some(Proof::IdToken { token, seed }))
    }
}

async fn command_token(cmd: &str, workspace: &str, nonce: &str) -> Result<String, Error> {
    let out = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .env("BASHO_SESSION_NONCE", nonce)
        .env("BASHO_WORKSPACE", workspace)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| failed(format!("BASHO_ID_TOKEN_COMMAND did not run: {e}")))?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || token.is_empty() {
        return Err(failed(format!(
            "BASHO_ID_TOKEN_COMMAND ended with {} and printed {} bytes",
            out.status,
            token.len()
        )));
    }
    Ok(token)
}

/// basho as the provider knows it.
#[derive(Clone, Copy)]
struct Client<'a> {
    id: &'a str,
    secret: Option<&'a str>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

/// The authorization-code flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252): the
/// ID token the provider issues for `nonce`.
async fn sign_in(issuer: &str, client: Client<'_>, nonce: &str) -> Result<String, Error> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(failed)?;
    let issuer = issuer.trim_end_matches('/');
    let discovery = http.get(format!("{issuer}/.well-known/openid-configuration"));
    let meta: Discovery = answer(discovery, "the provider's discovery document").await?;
    if meta.issuer.trim_end_matches('/') != issuer {
        return Err(failed(format!(
            "the provider at {issuer} calls itself {}; set BASHO_OIDC_ISSUER to that",
            meta.issuer
        )));
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| {
            failed(format!(
                "cannot listen on the loopback for the sign-in: {e}"
            ))
        })?;
    let port = listener.local_addr().map_err(failed)?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let state = fresh_seed();
    let verifier = format!("{}{}", fresh_seed(), fresh_seed());
    let mut url = reqwest::Url::parse(&meta.authorization_endpoint)
        .map_err(|e| failed(format!("the provider's authorization endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client.id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid")
        .append_pair("state", &state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    eprintln!("basho: sign in to open the session: {url}");
    eprintln!(
        "basho: waiting for the sign-in (up to {} minutes; Ctrl-C ends)",
        SIGN_IN_WAIT.as_secs() / 60
    );
    let query = tokio::time::timeout(SIGN_IN_WAIT, callback(&listener))
        .await
        .map_err(|_| failed("no sign-in came back within five minutes"))??;
    let back = reqwest::Url::parse(&format!("http://127.0.0.1/callback?{query}"))
        .map_err(|e| failed(format!("the sign-in came back malformed: {e}")))?;
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(e) = param("error") {
        let detail = param("error_description").unwrap_or_default();
        return Err(failed(format!("the provider said {e} {detail}")));
    }
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(failed(
            "the sign-in came back with another state; try again",
        ));
    }
    let code = param("code").ok_or_else(|| failed("the sign-in came back without a code"))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", client.id),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(secret) = client.secret {
        form.push(("client_secret", secret));
    }
    let token = http.post(&meta.token_endpoint).form(&form);
    let answer: TokenResponse = answer(token, "the provider's token endpoint").await?;
    answer
        .id_token
        .ok_or_else(|| failed("the provider answered without an id_token"))
}

/// The JSON `request` answers, or what went wrong with `what`.
async fn answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, Error> {
    let bad = |e: reqwest::Error| failed(format!("{what}: {e}"));
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(bad)?
        .json()
        .await
        .map_err(bad)
}

/// The query of the first `GET /callback` the browser makes to `listener`; anything else it
/// asks for (a favicon) gets 404.
async fn callback(listener: &tokio::net::TcpListener) -> Result<String, Error> {
    loop {
        let (mut conn, _) = listener.accept().await.map_err(failed)?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let body = "Signed in: return to the terminal, basho goes on there.\n";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        return Ok(query.to_owned());
    }
}
