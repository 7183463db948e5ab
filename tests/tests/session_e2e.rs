//! Sessions sealed end to end between `basho` and the site's agent, on real Docker: a tap on the
//! connection between `basho` and the orchestrator (where a compromised orchestrator would sit)
//! sees a sealed session's output nowhere, and sees a session in clear (which only a site that
//! allows it opens) in full, so the tap is known to work. A key other than the pinned one stops
//! the session before anything is sent.

use std::sync::{Arc, Mutex};

use basho_cli::session::{Opened, pump};
use basho_core::tunnel::SessionSpec;
use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{self, text, token};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A TCP relay to `upstream` that keeps every byte the server sent back.
async fn tap(upstream: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (addr, seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs an opened session of `cat FILE` to its end; what it printed.
async fn output_of(session: Opened) -> Vec<u8> {
    let mut out = Vec::new();
    let (_keep, resizes) = mpsc::unbounded_channel();
    let ended = pump(
        session,
        tokio::io::empty(),
        &mut out,
        tokio::io::sink(),
        resizes,
        basho_cli::session::Signals::none(),
    )
    .await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrators_side_sees_only_ciphertext_and_a_swapped_key_stops_the_session() {
    // Sessions in clear are allowed here, to show the tap would see them.
    let Some(fed) = Federation::start_with(|_, c| {
        c.sessions.encryption = basho_agent::session::seal::Encryption::Optional;
    })
    .await
    else {
        return;
    };
    let ws = fed.create_running("P-0161", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let container = fed.containers(&id).await.remove(0);
    let secret = format!("participant-{}", basho_tests::unique("secret"));
    let write = format!("echo {secret} > /work/secret.txt");
    let (code, out) = basho_tests::exec(&fed.docker, &container, &["sh", "-c", &write]).await;
    assert_eq!(code, 0, "{out}");
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let upstream = fed.api.base.trim_start_matches("http://").to_owned();
    let (tapped, seen) = tap(upstream).await;

    // `basho exec` through the tap: the researcher reads the file, the tap never sees it.
    let mut c = sessions::basho(&fed, &alice);
    c.env("BASHO_ADDR", &tapped)
        .args(["exec", &id, "--", "cat", "/work/secret.txt"]);
    let out = sessions::run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), secret);
    assert!(
        text(&out.stderr).contains("pinned site"),
        "the first session pins the site's key: {}",
        text(&out.stderr)
    );
    let sealed_bytes = seen.lock().unwrap().len();
    assert!(sealed_bytes > 0, "the tap carried the session");
    assert!(
        !contains(&seen.lock().unwrap(), secret.as_bytes()),
        "a sealed session's output crossed the orchestrator's side in clear"
    );

    // The same file in a session in clear, through the same tap: there it is.
    let mut client = fed.client(&alice);
    client.addr = tapped.clone();
    let spec = SessionSpec {
        proof: Some(fed.id_proof("alice", &id, "clear")),
        ..SessionSpec::exec(["cat", "/work/secret.txt"])
    };
    let (socket, ready) = basho_cli::session::open(&client, &id, &spec).await.unwrap();
    assert!(ready.handshake.is_none());
    let out = output_of(Opened::clear(socket, ready)).await;
    assert_eq!(text(&out).trim(), secret);
    assert!(
        contains(&seen.lock().unwrap(), secret.as_bytes()),
        "the tap sees a session in clear, so it would have seen the sealed one"
    );

    // The orchestrator reports a key other than the pinned one (it would read the session
    // with its own): nothing is sent, and basho says what to check.
    let site = fed.site("tohoku");
    let pinned = fed
        .pins()
        .get(&site)
        .unwrap()
        .expect("pinned by the first session");
    fed.pins().pin(&site, &[9; 32]).unwrap();
    let mut c = sessions::basho(&fed, &alice);
    c.args(["exec", &id, "--", "cat", "/work/secret.txt"]);
    let out = sessions::run(c).await;
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not the one pinned") && err.contains("basho site trust"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains(&secret));
    // Trusting the site's real key again (as its admin would confirm it) lets sessions in.
    fed.pins().pin(&site, &pinned).unwrap();
    let mut c = sessions::basho(&fed, &alice);
    c.args(["exec", &id, "--", "cat", "/work/secret.txt"]);
    let out = sessions::run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Each session's audit entry says it was sealed, or not.
    let admin = token(&fed, Role::Admin, None).await;
    let started: Vec<bool> = sessions::audit(&fed, &admin, &id)
        .await
        .iter()
        .filter(|e| e["action"] == "session_started")
        .map(|e| e["detail"]["encrypted"] == true)
        .collect();
    assert_eq!(started, [true, false, true], "{started:?}");
    fed.shutdown().await;
}
