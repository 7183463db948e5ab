//! Serving the API over HTTPS: the rustls server config built from the PEM files the config
//! names, and an accept loop that terminates TLS on the listener and serves the same router.
//!
//! Only TLS 1.2 and 1.3 on the ring provider; no client certificates (agents and the platform
//! authenticate with bearer tokens inside the encrypted channel).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument as _, debug, warn};

use crate::config::TlsConfig;

/// A client that connects but does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server config from `tls`'s PEM files. Every problem found is returned, each naming
/// the file and how to fix it.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, Vec<String>> {
    let mut problems = Vec::new();
    let cert_file = tls.cert_file.display();
    let key_file = tls.key_file.display();
    let certs = match CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
    {
        Ok(certs) if certs.is_empty() => {
            problems.push(format!(
                "tls.cert_file {cert_file}: no PEM certificate in it; point it at the server \
                 certificate (then its intermediates)"
            ));
            None
        }
        Ok(certs) => Some(certs),
        Err(e) => {
            problems.push(format!(
                "tls.cert_file {cert_file}: {e}; point it at a readable PEM certificate chain"
            ));
            None
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&tls.key_file) {
        Ok(key) => Some(key),
        Err(e) => {
            problems.push(format!(
                "tls.key_file {key_file}: {e}; point it at the certificate's readable PEM private \
                 key (PKCS#8, PKCS#1 or SEC1)"
            ));
            None
        }
    };
    let (Some(certs), Some(key)) = (certs, key) else {
        return Err(problems);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![format!("TLS set-up failed: {e}")])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            vec![format!(
                "tls.cert_file {cert_file} and tls.key_file {key_file} do not make a usable \
                 identity: {e}; check that the key belongs to the certificate"
            )]
        })?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener`, completes the TLS handshake and serves `router` on each,
/// until `signal` completes; then stops accepting and waits for open connections to finish their
/// in-flight requests (the caller bounds that wait).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    acceptor: TlsAcceptor,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning, as axum does.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(
            async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!("TLS handshake timed out");
                            return;
                        }
                    };
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("https_connection", %peer)),
        );
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write_identity(dir: &Path) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls = TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        };
        std::fs::write(&tls.cert_file, cert.pem()).unwrap();
        std::fs::write(&tls.key_file, key.serialize_pem()).unwrap();
        tls
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let tls = write_identity(dir.path());
        server_config(&tls).unwrap();
    }

    #[test]
    fn missing_files_are_both_reported() {
        let tls = TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        };
        let problems = server_config(&tls).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("tls.cert_file /nonexistent/cert.pem"));
        assert!(problems[1].contains("tls.key_file /nonexistent/key.pem"));
    }

    #[test]
    fn files_without_pem_and_a_foreign_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = write_identity(dir.path());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let problems = server_config(&TlsConfig {
            cert_file: junk.clone(),
            key_file: junk,
        })
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("no PEM certificate"), "{problems:?}");

        let other = write_identity(&{
            let d = dir.path().join("other");
            std::fs::create_dir(&d).unwrap();
            d
        });
        let problems = server_config(&TlsConfig {
            cert_file: tls.cert_file,
            key_file: other.key_file,
        })
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("key belongs"), "{problems:?}");
    }
}
