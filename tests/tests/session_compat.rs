//! Signals against agents old and new, with no Docker: a stand-in agent holds the site's tunnel.
//! An agent whose `Ready` does not list `signal` (one that predates the frame, and would close
//! its whole tunnel on it) never receives a `Signal`: the orchestrator answers the client with a
//! `Refused` frame and the session goes on. An agent that lists it receives the signal, and the
//! session's audit entry names it. A client whose credit crosses its session's end still reads
//! its `Exit`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use basho_cli::args::ClientArgs;
use basho_cli::output::Output as Format;
use basho_core::Ident;
use basho_core::tunnel::{Exit, FEATURE_SIGNAL, Frame, Kind, Ready, Refusal, SessionSpec};
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::config::{AgentAuth, Config};
use basho_orchestrator::store::Role;
use basho_orchestrator::tokens::{NewToken, create, open_store};
use basho_tests::api::Api;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

const ISSUER: &str = "https://dac.compat.example";
const PLATFORM: &str = "compat-platform-token";
const AGENT: &str = "compat-agent-token";

/// What the stand-in agent received, by session: the frame kinds and the signal names.
type Seen = Arc<Mutex<Vec<(u32, Kind, Vec<u8>)>>>;

/// Holds the site's tunnel: answers `Open` with a `Ready` listing `signal` from the second
/// session on (the first plays an agent that predates signals), and `Close` with an `Exit`.
async fn stand_in_agent(base: String, seen: Seen) {
    let url = format!("{}/v1/agent/tunnel", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the tunnel opens");
    let (mut sink, mut stream) = ws.split();
    let mut opened = 0;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(b) = msg else { continue };
        let f = Frame::decode(&b).expect("the orchestrator sends only known frames");
        seen.lock()
            .unwrap()
            .push((f.session, f.kind, f.payload.clone()));
        let answer = match f.kind {
            Kind::Open => {
                opened += 1;
                if opened == 1 {
                    Frame::new(f.session, Kind::Ready, Vec::new())
                } else {
                    let r = Ready {
                        features: vec![FEATURE_SIGNAL.into()],
                        recording: None,
                        proven: None,
                        handshake: None,
                    };
                    Frame::json(f.session, Kind::Ready, &r)
                }
            }
            Kind::Close => Frame::json(
                f.session,
                Kind::Exit,
                &Exit {
                    reason: Some("closed".into()),
                    ..Exit::default()
                },
            ),
            _ => continue,
        };
        if sink
            .send(Message::Binary(answer.encode().into()))
            .await
            .is_err()
        {
            break;
        }
    }
}

async fn next(ws: &mut basho_agent::session::dial::Socket, kind: Kind) -> Frame {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = Frame::decode(&b).unwrap();
                    if f.kind == kind {
                        return f;
                    }
                    assert_eq!(f.kind, Kind::Credit, "expected {kind:?}");
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended before a {kind:?} frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame within 20 s")
}

fn signal(name: &str) -> Message {
    Message::Binary(
        Frame::new(0, Kind::Signal, name.as_bytes().to_vec())
            .encode()
            .into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_only_agents_that_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER).with_rsa();
    let jwks_file = dir.path().join("issuer.jwks.json");
    std::fs::write(&jwks_file, issuer.jwks_json()).unwrap();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
    let mut config = Config::for_tests(templates, PLATFORM);
    config.data_dir = dir.path().join("orchestrator");
    config.database = None;
    config.agents.push(AgentAuth {
        site: Ident::parse("tohoku").unwrap(),
        token: AGENT.into(),
    });
    config.trusted_issuers.push(IssuerRef {
        issuer: ISSUER.into(),
        jwks_file,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let orch = basho_orchestrator::Orchestrator::open(config.clone())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(orch.serve(listener, stop.clone()));

    // The site, a workspace on it, running.
    let agent = Api::new(base.clone(), AGENT);
    let (s, v) = agent
        .call(
            Method::POST,
            "/v1/agent/register",
            Some(&json!({
                "site": "tohoku", "backend": "fake", "version": "old",
                "datasets": [{"id": "JGAD000101",
                    "grant_url": basho_core::visa::default_grant_url("JGAD000101")}],
                "capacity": {"cpus": 4, "memory_mib": 8192, "gpus": 0},
                "images": ["basho/demo"],
            })),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let platform = Api::new(base.clone(), PLATFORM);
    let (s, ws) = platform
        .create(&json!({"project": "P-0301", "template": "shell",
            "visas": [issuer.mint("r-1", "JGAD000101")], "datasets": ["JGAD000101"]}))
        .await;
    assert!(s.is_success(), "{ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    let (s, v) = agent
        .call(
            Method::POST,
            "/v1/agent/observations",
            Some(&json!({"site": "tohoku", "observations": [
                {"workspace": id, "state": "running", "at": chrono::Utc::now()}]})),
        )
        .await;
    assert!(s.is_success(), "{v}");

    let seen: Seen = Arc::default();
    tokio::spawn(stand_in_agent(base.clone(), seen.clone()));
    let config_file = dir.path().join("orchestrator.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    let store = open_store(&config_file).await.unwrap();
    let new = NewToken {
        role: Role::Researcher,
        subject: Some("r-1".into()),
        site: None,
        name: None,
        ttl: None,
    };
    let alice = create(&*store, new, "test").await.unwrap().1;
    let admin = NewToken {
        role: Role::Admin,
        subject: None,
        site: None,
        name: None,
        ttl: None,
    };
    let admin = create(&*store, admin, "test").await.unwrap().1;
    let client = ClientArgs {
        addr: base.clone(),
        token: Some(alice),
        ca_file: None,
        output: Format::Table,
    };
    let spec = SessionSpec::exec(["sleep", "60"]);
    let open = || async {
        basho_tests::wait_for("the session to open", Duration::from_secs(20), || async {
            basho_cli::session::open(&client, &id, &spec).await.ok()
        })
        .await
    };

    // An agent that predates signals: the orchestrator refuses for it, the session goes on.
    let (mut old, ready) = open().await;
    assert!(!ready.signals());
    old.send(signal("TERM")).await.unwrap();
    let r: Refusal = next(&mut old, Kind::Refused).await.parse().unwrap();
    assert_eq!(r.code, "unsupported");
    assert!(r.message.contains("SIGTERM"), "{}", r.message);
    old.send(signal("STOP")).await.unwrap();
    let r: Refusal = next(&mut old, Kind::Refused).await.parse().unwrap();
    assert_eq!(r.code, "invalid_signal");
    old.send(Message::Binary(
        Frame::new(0, Kind::Close, Vec::new()).encode().into(),
    ))
    .await
    .unwrap();
    next(&mut old, Kind::Exit).await;

    // A current agent gets the signal, by name.
    let (mut new, ready) = open().await;
    assert!(ready.signals());
    new.send(signal("sigusr1")).await.unwrap();
    basho_tests::wait_for(
        "the agent to see the signal",
        Duration::from_secs(10),
        || async {
            let seen = seen.lock().unwrap();
            seen.iter()
                .any(|(_, k, p)| *k == Kind::Signal && p == b"USR1")
                .then_some(())
        },
    )
    .await;
    new.send(Message::Binary(
        Frame::new(0, Kind::Close, Vec::new()).encode().into(),
    ))
    .await
    .unwrap();
    next(&mut new, Kind::Exit).await;

    // Only the second session's agent saw a Signal frame.
    let seen = seen.lock().unwrap().clone();
    let first = seen.iter().find(|(_, k, _)| *k == Kind::Open).unwrap().0;
    assert!(
        !seen
            .iter()
            .any(|(s, k, _)| *s == first && *k == Kind::Signal),
        "{seen:?}"
    );

    // The audit entries name what was forwarded (written as each session's relay ends).
    let api = Api::new(base.clone(), admin);
    let signals =
        basho_tests::wait_for("both sessions audited", Duration::from_secs(10), || async {
            let (_, log) = api.call(Method::GET, "/v1/audit", None).await;
            let signals: Vec<_> = log["entries"]
                .as_array()?
                .iter()
                .filter(|e| e["action"] == "session_ended" && e["target"] == id.as_str())
                .map(|e| e["detail"]["signals"].clone())
                .collect();
            (signals.len() == 2).then_some(signals)
        })
        .await;
    assert_eq!(signals, [json!([]), json!(["USR1"])]);

    // A client still returning credit as its session ends: the orchestrator reads it until the
    // client answers its Close, so the client's writes are not met by a reset and its `Exit`
    // is still there to read.
    let (mut late, _) = open().await;
    late.send(Message::Binary(
        Frame::new(0, Kind::Close, Vec::new()).encode().into(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        late.send(Message::Binary(Frame::credit(0, 4096).encode().into()))
            .await
            .unwrap_or_else(|e| panic!("credit {i} after the session ended: {e}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    next(&mut late, Kind::Exit).await;
    // Reading on answers the orchestrator's Close, which ends the socket.
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = late.next().await {}
    });
    ended
        .await
        .expect("the socket ends once its Close is answered");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
