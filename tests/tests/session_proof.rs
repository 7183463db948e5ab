//! Sessions proved at the site with a real OpenID Connect provider (`oidc-provider-mock` from
//! PyPI, installed by `scripts/oidc-provider`): `basho exec` signs in by the authorization-code
//! flow, the test standing in for the researcher's browser, and the site checks the token
//! itself. The provider's tokens of another person, a replayed token and no token at all open
//! nothing, whatever the orchestrator allows.

use std::process::Stdio;
use std::time::Duration;

use basho_cli::session::Sealing;
use basho_core::proof::{IdentityIssuer, Proof, session_nonce};
use basho_core::tunnel::SessionSpec;
use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{text, token};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const CLIENT_ID: &str = "basho-cli";

/// The provider process, killed when dropped.
struct Provider {
    issuer: String,
    _child: Child,
}

/// Starts the provider on a free port, or `None` (failing under CI) when it is not installed.
async fn provider(dir: &std::path::Path) -> Option<(Provider, std::path::PathBuf)> {
    let bin = std::env::var("BASHO_OIDC_MOCK").unwrap_or_else(|_| {
        "/var/lib/basho-tools/oidc-provider-mock-0.3.4/bin/oidc-provider-mock".into()
    });
    if !std::path::Path::new(&bin).exists() {
        basho_test_util::unavailable(&format!("no {bin}: run scripts/oidc-provider"));
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the provider starts");
    let issuer = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // The site's admin saves the provider's JWKS where the site config names it.
    let mut jwks = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{issuer}/jwks")).send().await
            && r.status().is_success()
        {
            jwks = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file = dir.join("provider-jwks.json");
    std::fs::write(&file, jwks.expect("the provider answers within 10 s")).unwrap();
    Some((
        Provider {
            issuer,
            _child: child,
        },
        file,
    ))
}

/// The researcher's browser: signs in at `url` as `subject` and follows the provider's redirect
/// back to wherever it points (basho's loopback). The redirect's address.
async fn browser(url: &str, subject: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(url)
        .form(&[("sub", subject)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the provider signs in: {}", r.status());
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    if back.starts_with("http://127.0.0.1:1/") {
        return back;
    }
    let r = http.get(&back).send().await.unwrap();
    assert!(r.status().is_success(), "basho takes the sign-in back");
    back
}

/// `basho exec id -- argv` with alice's bearer token, signing in at the provider as `subject`.
async fn exec_signing_in_as(
    fed: &Federation,
    p: &Provider,
    bearer: &str,
    id: &str,
    subject: &str,
    argv: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(basho_tests::binary("basho"));
    cmd.env("BASHO_ADDR", &fed.api.base)
        .env("BASHO_TOKEN", bearer)
        .env("BASHO_OIDC_ISSUER", &p.issuer)
        .env("BASHO_OIDC_CLIENT_ID", CLIENT_ID)
        // The provider takes no public clients; any secret will do for it.
        .env("BASHO_OIDC_CLIENT_SECRET", "not-secret")
        .env_remove("BASHO_ID_TOKEN_COMMAND")
        .args(["exec", id, "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(u) = line.strip_prefix("basho: sign in to open the session: ") {
                return u.to_owned();
            }
        }
        panic!("basho asked for no sign-in: {seen}")
    })
    .await
    .expect("basho asks for a sign-in within 30 s");
    browser(&url, subject).await;
    let rest = tokio::spawn(async move {
        let mut s = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("basho ends within 60 s")
        .unwrap();
    out.stderr = rest.await.unwrap().into_bytes();
    out
}

/// An identity token for sessions in `id` sealed with the key of `seed`, got from the provider
/// by the test itself.
async fn token_for(p: &Provider, id: &str, subject: &str, seed: &str) -> Proof {
    let seed = seed.to_owned();
    let mut url = reqwest::Url::parse(&format!("{}/oauth2/authorize", p.issuer)).unwrap();
    let redirect = "http://127.0.0.1:1/callback";
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid")
        .append_pair("state", "s")
        .append_pair("nonce", &session_nonce(id, &seed));
    let back = reqwest::Url::parse(&browser(url.as_str(), subject).await).unwrap();
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/oauth2/token", p.issuer))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", CLIENT_ID),
            ("client_secret", "not-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Proof::IdToken {
        token: answer["id_token"].as_str().expect("an id_token").to_owned(),
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opens_only_with_the_owners_token_from_the_sites_provider() {
    let dir = tempfile::tempdir().unwrap();
    let Some((p, jwks)) = provider(dir.path()).await else {
        return;
    };
    let issuer = p.issuer.clone();
    let Some(fed) = Federation::start_with(move |_, cfg| {
        cfg.sessions.identity_issuers.push(IdentityIssuer {
            issuer: issuer.clone(),
            jwks_file: jwks.clone(),
            audience: CLIENT_ID.into(),
            subject_claim: "sub".into(),
        });
    })
    .await
    else {
        return;
    };
    let ws = fed.create_running("P-0151", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;

    // Alice signs in at the provider; the site checks her token and runs the command.
    let out = exec_signing_in_as(
        &fed,
        &p,
        &alice,
        &id,
        "alice",
        &["head", "-c", "8", "/data/JGAD000101/records.csv"],
    )
    .await;
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 8);

    // Alice's bearer token, but the provider signed mallory in: the site refuses, though the
    // orchestrator let the request through.
    let out = exec_signing_in_as(&fed, &p, &alice, &id, "mallory", &["true"]).await;
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("proof_refused") && err.contains("belongs to \"alice\""),
        "{err}"
    );

    // No proof at all, as a compromised orchestrator would send: refused.
    let client = fed.client(&alice);
    let spec = |proof: Option<Proof>| SessionSpec {
        break_glass: None,
        proof,
        ..SessionSpec::exec(["true"])
    };
    let sealing = Sealing::prepare(&client, &id, &fed.pins()).await.unwrap();
    let e = sealing
        .open(&client, &id, &spec(None))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("proof_required"), "{e}");
    // Nor does a session in clear, which the orchestrator could read, open at all.
    let proof = token_for(&p, &id, "alice", &sealing.seed()).await;
    let e = basho_cli::session::open(&client, &id, &spec(Some(proof.clone())))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("encryption_required"), "{e}");

    // A token the provider issued for one session opens it, and only it: replayed, refused.
    let opened = sealing
        .open(&client, &id, &spec(Some(proof.clone())))
        .await
        .expect("the first use opens the session");
    assert!(opened.sealed());
    assert!(
        opened
            .ready
            .proven
            .as_deref()
            .is_some_and(|w| w == format!("identity token of alice from {}", p.issuer)),
        "{:?}",
        opened.ready
    );
    drop(opened);
    let e = sealing
        .open(&client, &id, &spec(Some(proof.clone())))
        .await
        .err()
        .expect("a replay is refused");
    assert!(e.to_string().contains("opened a session already"), "{e}");
    // Copied into a handshake of another key (as whoever saw it would), it opens nothing.
    let thief = Sealing::prepare(&client, &id, &fed.pins()).await.unwrap();
    let e = thief
        .open(&client, &id, &spec(Some(proof)))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("another session's key"), "{e}");

    // A token for another workspace of hers opens nothing here.
    let other = token_for(&p, "ws-other", "alice", &sealing.seed()).await;
    let e = sealing
        .open(&client, &id, &spec(Some(other)))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("nonce differs"), "{e}");
}
