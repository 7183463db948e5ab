//! A session opened through either of two replicas reaches the site's agent: the agent's tunnel
//! is held by replica a, a researcher's session asked of replica b is relayed to a, which
//! authorizes and audits it once. A relayed request is not relayed again, a bad token is refused
//! by b itself, and once the tunnel closes b answers `site_unreachable`. Needs the server
//! `scripts/postgres-up` starts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basho_core::tunnel::{Exit, Frame, Kind, Ready, SessionSpec};
use basho_core::visa::mint::Issuer;
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::ReplicaConfig;
use basho_orchestrator::store::postgres::testdb::TestDatabase;
use basho_orchestrator::store::{AuditStore as _, PostgresStore, Role, TunnelStore as _};
use basho_orchestrator::tokens::{NewToken, create};
use common::*;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A replica on 127.0.0.1:<ephemeral>, advertising that address to its peer.
async fn replica(config: &basho_orchestrator::Config) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = config.clone();
    config.replica = Some(ReplicaConfig {
        advertise_url: base.clone(),
        ca_file: None,
    });
    let o = Orchestrator::open(config).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(o.serve(listener, stop.clone()));
    (base, stop)
}

/// What the stand-in site's airlock holds: one table.
const TABLE: &[u8] = b"age_band,count\n40-49,25\n";

use basho_core::digest::sha256_hex;

/// The stand-in desk's answers to an airlock `Call`.
fn desk(session: u32, payload: &[u8]) -> Vec<Frame> {
    use basho_core::release::{Answer, Call, Compared, Intake, Taken};
    match serde_json::from_slice::<Call>(payload).unwrap() {
        Call::Intake { files, .. } => {
            let taken = files
                .iter()
                .map(|name| Taken {
                    name: name.clone(),
                    size: TABLE.len() as u64,
                    sha256: sha256_hex(TABLE),
                    checked: basho_core::airlock::check_file(
                        name,
                        TABLE,
                        &Default::default(),
                        &Default::default(),
                    )
                    .unwrap(),
                })
                .collect();
            let intake = Intake {
                files: taken,
                compared: Compared::default(),
            };
            vec![Frame::json(session, Kind::Answer, &Answer::Intake(intake))]
        }
        Call::Fetch { .. } => vec![
            Frame::json(
                session,
                Kind::Answer,
                &Answer::Fetch {
                    size: TABLE.len() as u64,
                },
            ),
            Frame::new(session, Kind::Stdout, TABLE.to_vec()),
            Frame::json(
                session,
                Kind::Exit,
                &Exit {
                    code: Some(0),
                    ..Exit::default()
                },
            ),
        ],
    }
}

/// Holds tohoku's tunnel on `base`: answers `Open` with `Ready`, echoes `Stdin` as `Stdout` and
/// then exits 0, answers airlock calls from [`desk`]; records the kinds it received.
async fn stand_in_agent(base: String, seen: Arc<Mutex<Vec<Kind>>>) {
    let url = format!("{}/v1/agent/tunnel", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", agent_token("tohoku")).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(b) = msg else { continue };
        let f = Frame::decode(&b).unwrap();
        seen.lock().unwrap().push(f.kind);
        let answers = match f.kind {
            Kind::Open => vec![Frame::json(f.session, Kind::Ready, &Ready::default())],
            Kind::Call => desk(f.session, &f.payload),
            Kind::Stdin => vec![
                Frame::new(f.session, Kind::Stdout, f.payload),
                Frame::json(
                    f.session,
                    Kind::Exit,
                    &Exit {
                        code: Some(0),
                        ..Exit::default()
                    },
                ),
            ],
            _ => continue,
        };
        for a in answers {
            if sink.send(Message::Binary(a.encode().into())).await.is_err() {
                return;
            }
        }
    }
}

/// Opens a session on `base`; an HTTP answer instead of an upgrade comes back as its status and
/// body.
async fn session(
    base: &str,
    id: &str,
    token: &str,
    relayed: bool,
) -> Result<Client, (StatusCode, Value)> {
    let spec = SessionSpec {
        cols: 80,
        rows: 24,
        ..SessionSpec::exec(["cat"])
    };
    let url = reqwest::Url::parse_with_params(
        &format!(
            "{}/v1/workspaces/{id}/session",
            base.replace("http://", "ws://")
        ),
        [("spec", serde_json::to_string(&spec).unwrap())],
    )
    .unwrap();
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    if relayed {
        req.headers_mut()
            .insert("x-basho-relayed", "another-replica".parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(res)) => Err((
            StatusCode::from_u16(res.status().as_u16()).unwrap(),
            serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap(),
        )),
        Err(e) => panic!("session request failed: {e}"),
    }
}

async fn next(ws: &mut Client, kind: Kind) -> Frame {
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

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: not in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let res = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{status} {v}");
    v
}

/// A stand-in agent holding tohoku's tunnel on `base`, once the store names `base` its holder:
/// the kinds of frame it received, and its task.
async fn agent_on(
    base: &str,
    store: &PostgresStore,
) -> (Arc<Mutex<Vec<Kind>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<Kind>>> = Arc::default();
    let tohoku = "tohoku".parse().unwrap();
    let task = tokio::spawn(stand_in_agent(base.to_owned(), seen.clone()));
    wait_until("the replica holds tohoku's tunnel", async || {
        store
            .tunnel_holder(&tohoku)
            .await
            .unwrap()
            .is_some_and(|h| h.url == base)
    })
    .await;
    (seen, task)
}

/// A fresh database, a directory, an issuer and a config on them.
async fn fresh() -> (
    TestDatabase,
    tempfile::TempDir,
    Issuer,
    basho_orchestrator::Config,
) {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let mut config = config(dir.path(), &issuer);
    config.database = Some(db.url.clone());
    (db, dir, issuer, config)
}

/// A researcher's token and a workspace of theirs running at tohoku, through `base`.
async fn running_at_tohoku(base: &str, issuer: &Issuer, store: &PostgresStore) -> (String, String) {
    let researcher = NewToken {
        role: Role::Researcher,
        subject: Some("r-1".into()),
        site: None,
        name: None,
        ttl: None,
    };
    let alice = create(store, researcher, "test").await.unwrap().1;
    let http = reqwest::Client::new();
    let agent = agent_token("tohoku");
    let mut reg = registration("tohoku", &["JGAD000101"], 64, 1 << 20);
    reg["features"] = json!(["airlock"]);
    post(&http, format!("{base}/v1/agent/register"), &agent, reg).await;
    let ws = post(
        &http,
        format!("{base}/v1/workspaces"),
        PLATFORM,
        json!({"project": "P-1", "template": "shell", "duration_s": 3600,
            "visas": [issuer.mint("r-1", "JGAD000101")]}),
    )
    .await;
    let id = ws["id"].as_str().unwrap().to_owned();
    post(
        &http,
        format!("{base}/v1/agent/observations"),
        &agent,
        json!({"site": "tohoku", "observations": [
            {"workspace": id, "state": "running", "at": chrono::Utc::now()}]}),
    )
    .await;
    (id, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_whose_start_cannot_be_audited_does_not_open() {
    let (db, _dir, issuer, config) = fresh().await;
    let (a, stop) = replica(&config).await;
    let store = PostgresStore::open_with(&db.url, 2).await.unwrap();
    let (id, alice) = running_at_tohoku(&a, &issuer, &store).await;
    let (seen, agent_task) = agent_on(&a, &store).await;
    // The audit table takes no session start (a full disk, a broken database).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_session_audit() RETURNS trigger AS $$ BEGIN \
           IF NEW.action = 'session_started' THEN RAISE EXCEPTION 'no space left'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_session_audit BEFORE INSERT ON audit FOR EACH ROW \
           EXECUTE FUNCTION refuse_session_audit();",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let (status, body) = session(&a, &id, &alice, false)
        .await
        .expect_err("no session opens");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable");
    // The site had started it; it was told to end it at once.
    wait_until("the agent is told to close", async || {
        seen.lock().unwrap().contains(&Kind::Close)
    })
    .await;
    assert_eq!(seen.lock().unwrap().first(), Some(&Kind::Open));
    stop.cancel();
    agent_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_through_either_replica_reaches_the_site() {
    let (db, _dir, issuer, config) = fresh().await;
    let (a, stop_a) = replica(&config).await;
    let (b, stop_b) = replica(&config).await;
    let store = PostgresStore::open_with(&db.url, 2).await.unwrap();
    let (id, alice) = running_at_tohoku(&a, &issuer, &store).await;

    // The agent's tunnel goes to a, which records itself as the holder.
    let (seen, agent_task) = agent_on(&a, &store).await;

    // Through b: the session reaches the agent and its frames come back.
    let mut s = session(&b, &id, &alice, false)
        .await
        .expect("b relays the session");
    next(&mut s, Kind::Ready).await;
    s.send(Message::Binary(
        Frame::new(0, Kind::Stdin, b"hello".to_vec())
            .encode()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut s, Kind::Stdout).await.payload, b"hello");
    let exit: Exit = next(&mut s, Kind::Exit).await.parse().unwrap();
    assert_eq!(exit.code, Some(0));
    drop(s);
    assert_eq!(seen.lock().unwrap().first(), Some(&Kind::Open));

    // One audit entry for the start and one for the end, written by the holder.
    let count = async |action: &str| {
        store
            .audit_page(0, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action == action && e.target == id)
            .count()
    };
    wait_until("the session's end is audited", async || {
        count("session_ended").await == 1
    })
    .await;
    assert_eq!(count("session_started").await, 1);

    // A request that was relayed already is not relayed again.
    let opens = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|k| **k == Kind::Open)
            .count()
    };
    let (status, v) = session(&b, &id, &alice, true).await.err().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "site_unreachable", "{v}");
    assert_eq!(opens(), 1);

    // A bad token is refused by b, never relayed.
    let (status, v) = session(&b, &id, "not-a-token", false).await.err().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(opens(), 1);

    // The tunnel closes: the row goes, and b has nowhere to relay to.
    agent_task.abort();
    wait_until("a's holder row is cleared", async || {
        let tohoku = "tohoku".parse().unwrap();
        store.tunnel_holder(&tohoku).await.unwrap().is_none()
    })
    .await;
    let (status, v) = session(&b, &id, &alice, false).await.err().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "site_unreachable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no replica holds one"),
        "{v}"
    );
    assert_eq!(count("session_started").await, 1);
    stop_a.cancel();
    stop_b.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_requests_and_downloads_through_either_replica_reach_the_site() {
    let (db, _dir, issuer, config) = fresh().await;
    let (a, stop_a) = replica(&config).await;
    let (b, stop_b) = replica(&config).await;
    let store = PostgresStore::open_with(&db.url, 2).await.unwrap();
    let (seen, agent_task) = agent_on(&a, &store).await;
    let (id, alice) = running_at_tohoku(&a, &issuer, &store).await;
    let http = reqwest::Client::new();
    let send = async |method: reqwest::Method,
                      url: String,
                      token: &str,
                      body: Option<Value>,
                      relayed: bool| {
        let mut req = http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if relayed {
            req = req.header("x-basho-relayed", "another-replica");
        }
        req.send().await.unwrap()
    };
    let ask = json!({"files": ["t.csv"], "justification": "counts"});
    // b learns of the site (and that it serves the airlock) from a's announcement.
    wait_until("b knows tohoku", async || {
        let sites: Value = send(
            reqwest::Method::GET,
            format!("{b}/v1/sites"),
            PLATFORM,
            None,
            false,
        )
        .await
        .json()
        .await
        .unwrap();
        sites
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["name"] == "tohoku"))
    })
    .await;

    // Asked of b, which holds no tunnel: a takes it to the site.
    let res = send(
        reqwest::Method::POST,
        format!("{b}/v1/workspaces/{id}/release-requests"),
        &alice,
        Some(ask.clone()),
        false,
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["files"][0]["sha256"], sha256_hex(TABLE));
    assert!(seen.lock().unwrap().contains(&Kind::Call));
    let rr = r["id"].as_str().unwrap().to_owned();
    // A relayed request is not relayed again.
    let res = send(
        reqwest::Method::POST,
        format!("{b}/v1/workspaces/{id}/release-requests"),
        &alice,
        Some(ask),
        true,
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    for checker in ["carol", "dave"] {
        let new = NewToken {
            role: Role::OutputChecker,
            subject: Some(checker.into()),
            site: None,
            name: None,
            ttl: None,
        };
        let token = create(&store, new, "test").await.unwrap().1;
        let res = send(
            reqwest::Method::POST,
            format!("{b}/v1/release-requests/{rr}/reviews"),
            &token,
            Some(json!({"verdict": "approve"})),
            false,
        )
        .await;
        assert!(res.status().is_success());
    }
    // Downloaded through b: the bytes come from the site through a, with the reviewed digest.
    let res = send(
        reqwest::Method::GET,
        format!("{b}/v1/release-requests/{rr}/files/t.csv"),
        &alice,
        None,
        false,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-basho-sha256"], sha256_hex(TABLE).as_str());
    assert_eq!(res.bytes().await.unwrap(), TABLE);
    let res = send(
        reqwest::Method::GET,
        format!("{a}/v1/release-requests/{rr}"),
        &alice,
        None,
        false,
    )
    .await;
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["state"], "released");
    // Each step is audited once, by the replica that did it.
    let entries = store.audit_page(0, 1000).await.unwrap();
    let requested = entries
        .iter()
        .filter(|e| e.action == "release_requested")
        .count();
    assert_eq!(requested, 1);
    agent_task.abort();
    stop_a.cancel();
    stop_b.cancel();
}
