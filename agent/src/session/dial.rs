//! Opening a WebSocket to the orchestrator under the same trust rules as the HTTP client
//! ([`TlsPolicy`]): `wss://` verified against the configured CA bundle or the bundled web PKI
//! roots on rustls (ring), `ws://` only where plain HTTP is allowed. The agent's tunnel and the
//! `basho` CLI's sessions both dial through here.

use std::sync::Arc;

use reqwest::Url;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::TlsPolicy;

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected WebSocket.
pub type Socket = WebSocketStream<Box<dyn Io>>;

/// Why dialling failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The URL or the policy refuses the connection.
    #[error("{0}")]
    Refused(String),
    /// The network or the TLS handshake failed.
    #[error("cannot reach the orchestrator at {url}: {why}")]
    Transport {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
    /// The orchestrator answered the upgrade with an HTTP error.
    #[error("the orchestrator answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The answer's body (the contract's error JSON).
        body: String,
    },
}

/// Opens a WebSocket to `base` joined with `path_and_query`, with `token` as bearer.
pub async fn dial(
    base: &str,
    path_and_query: &str,
    token: &str,
    policy: &TlsPolicy,
) -> Result<Socket, DialError> {
    let base = Url::parse(base).map_err(|e| DialError::Refused(format!("bad URL {base}: {e}")))?;
    policy.check_url(&base).map_err(DialError::Refused)?;
    let url = base
        .join(path_and_query.trim_start_matches('/'))
        .map_err(|e| DialError::Refused(e.to_string()))?;
    let tls = url.scheme() == "https";
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut ws_url = url.clone();
    let _ = ws_url.set_scheme(if tls { "wss" } else { "ws" });
    let transport = |why: String| DialError::Transport {
        url: base.to_string(),
        why,
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| DialError::Refused(e.to_string()))?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| DialError::Refused("the token is not a valid header value".into()))?,
    );
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| transport("connect timed out".into()))?
    .map_err(|e| transport(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let config = client_config(policy).map_err(DialError::Refused)?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| DialError::Refused(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| transport(format!("TLS: {e}")))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    match tokio_tungstenite::client_async(request, io).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(DialError::Status {
            status: res.status().as_u16(),
            body: String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        }),
        Err(e) => Err(transport(e.to_string())),
    }
}

fn client_config(policy: &TlsPolicy) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &policy.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
