//! HTTPS: the orchestrator serves its API over TLS with the configured certificate; clients that
//! trust its CA get answers, others fail the handshake, plain HTTP to the TLS port gets nothing,
//! and shutdown stays graceful. Certificates are made at test time.

mod common;

use std::time::Duration;

use basho_orchestrator::config::TlsConfig;
use basho_orchestrator::{Error, Orchestrator};
use common::Harness;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = server.signed_by(&key, &ca).unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// An orchestrator serving HTTPS with `pki`'s certificate on 127.0.0.1:0.
struct Served {
    port: u16,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<Result<(), Error>>,
    harness: Harness,
    _dir: tempfile::TempDir,
}

async fn serve_tls(pki: &Pki) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsConfig {
        cert_file: dir.path().join("server.crt"),
        key_file: dir.path().join("server.key"),
    };
    std::fs::write(&tls.cert_file, &pki.cert).unwrap();
    std::fs::write(&tls.key_file, &pki.key).unwrap();
    let harness = Harness::with(|c| {
        c.tls = Some(tls);
        c.plain_http_on_loopback = false;
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let done = tokio::spawn(harness.orchestrator.clone().serve(listener, stop.clone()));
    Served {
        port,
        stop,
        done,
        harness,
        _dir: dir,
    }
}

/// A client that trusts only `ca_pem`.
fn client_trusting(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn clients_trusting_the_ca_get_answers_others_fail_the_handshake() {
    let ours = pki("ours");
    let served = serve_tls(&ours).await;
    let port = served.port;

    let trusting = client_trusting(&ours.ca);
    for host in ["localhost", "127.0.0.1"] {
        let res = trusting
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(res.status(), 200, "{host}");
    }

    let other = pki("other");
    let err = client_trusting(&other.ca)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );

    // Plain HTTP to the TLS port: the server sees no ClientHello and closes the connection.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(res.is_err(), "plain HTTP was answered: {res:?}");

    // The server still works after the failed handshakes.
    let res = trusting
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    served.stop.cancel();
    served.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let ours = pki("ours");
    let served = serve_tls(&ours).await;
    let client = client_trusting(&ours.ca);
    let url = format!("https://localhost:{}/healthz", served.port);
    // The pooled keep-alive connection stays open after this answer.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    served.stop.cancel();
    // Graceful: the idle connection is closed at once, well before the grace period runs out.
    tokio::time::timeout(basho_orchestrator::SHUTDOWN_GRACE / 2, served.done)
        .await
        .expect("serve returns once idle connections are closed")
        .unwrap()
        .unwrap();
    let fresh = client_trusting(&ours.ca);
    assert!(fresh.get(&url).send().await.is_err());
}

#[tokio::test]
async fn a_waiting_long_poll_over_https_answers_at_shutdown() {
    let ours = pki("ours");
    let served = serve_tls(&ours).await;
    served
        .harness
        .register("bbj", &["JGAD000301"], 4, 4096)
        .await;
    let client = client_trusting(&ours.ca);
    let base = format!("https://localhost:{}", served.port);
    let token = common::agent_token("bbj");
    let d: serde_json::Value = client
        .get(format!("{base}/v1/agent/desired?site=bbj"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let poll = tokio::spawn(async move {
        client
            .get(format!(
                "{base}/v1/agent/desired?site=bbj&after={}&wait_s=30",
                d["revision"]
            ))
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long-poll did not wait");
    served.stop.cancel();
    tokio::time::timeout(basho_orchestrator::SHUTDOWN_GRACE / 2, served.done)
        .await
        .expect("serve returns once the long-poll has answered")
        .unwrap()
        .unwrap();
    assert_eq!(poll.await.unwrap().unwrap(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn unusable_certificate_files_are_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM\n").unwrap();
    let issuer = basho_core::visa::mint::Issuer::generate(common::ISSUER);
    let mut config = common::config(dir.path(), &issuer);
    config.plain_http_on_loopback = false;
    config.tls = Some(TlsConfig {
        cert_file: junk,
        key_file: dir.path().join("missing.key"),
    });
    let err = Orchestrator::open(config).await.unwrap_err();
    let Error::Config(e) = err else {
        panic!("not a config error: {err}");
    };
    assert_eq!(e.problems.len(), 2, "{:?}", e.problems);
    assert!(e.problems[0].contains("tls.cert_file"), "{:?}", e.problems);
    assert!(e.problems[1].contains("tls.key_file"), "{:?}", e.problems);
}
