//! Sessions through any replica. A site's agent keeps its tunnel open to one replica, which
//! records itself as the site's holder in the store; a replica asked for a session on a site
//! whose tunnel it does not hold dials the holder's `[replica] advertise_url` with the same
//! request and the caller's own bearer token, and pipes the WebSocket both ways. The holder
//! authorizes and audits the session as if it had been asked directly; the relaying replica has
//! authenticated the caller first, so anonymous traffic is never relayed. A relayed request
//! carries [`RELAYED`] and is never relayed again.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{self, WebSocket};
use axum::http::{HeaderValue, StatusCode, Uri};
use basho_core::ErrorBody;
use futures::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The header of a relayed session request: the relaying replica's id.
pub const RELAYED: &str = "x-basho-relayed";

/// How long dialling a peer may take, connect and handshake together.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to answer our Close with its own.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Reads what a client still sends, and drops it, until its Close answers ours (or
/// [`CLOSE_GRACE`] passes). A socket dropped with bytes unread is reset, and a client whose
/// credit meets the reset fails before it reads the `Exit` already sent to it.
pub(crate) async fn until_closed(rx: &mut futures::stream::SplitStream<WebSocket>) {
    let answered = async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, ws::Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, answered).await;
}

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket to a peer replica.
pub type PeerSocket = WebSocketStream<Box<dyn Io>>;

/// This replica among its peers.
pub struct Peers {
    /// New each time the process starts: a holder row of an earlier run is never taken for ours.
    id: String,
    /// How peers reach this replica; without it this replica records no tunnel holders.
    advertise_url: Option<String>,
    /// Trust for the peers' certificates, when there is any to have.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("id", &self.id)
            .field("advertise_url", &self.advertise_url)
            .finish_non_exhaustive()
    }
}

/// Why a session could not be relayed.
#[derive(Debug)]
pub enum RelayError {
    /// The holder could not be reached (network, TLS, a refused URL).
    Unreachable(String),
    /// The holder answered the upgrade with an error, passed on to the caller as it is.
    Answered {
        /// Its status.
        status: StatusCode,
        /// Its error body.
        body: ErrorBody,
    },
}

impl Peers {
    /// From the config's `[replica]` section: peers' certificates are verified against its
    /// `ca_file`, else the certificates in `[tls] cert_file`; without the section, peers are
    /// dialled over plain loopback HTTP only.
    pub fn new(config: &Config) -> Result<Self, Vec<String>> {
        let replica = config.replica.as_ref();
        // Only a configured replica dials its peers, so only it needs (and checks) their trust.
        let ca = replica.and_then(|r| match (&r.ca_file, &config.tls) {
            (Some(f), _) => Some(("replica.ca_file", f)),
            (None, Some(t)) => Some(("tls.cert_file", &t.cert_file)),
            (None, None) => None,
        });
        let tls = match ca {
            Some((field, file)) => Some(client_config(field, file).map_err(|e| vec![e])?),
            None => None,
        };
        Ok(Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            advertise_url: replica.map(|r| r.advertise_url.trim_end_matches('/').to_owned()),
            tls,
        })
    }

    /// This process's replica id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How peers reach this replica, if they can.
    pub fn advertise_url(&self) -> Option<&str> {
        self.advertise_url.as_deref()
    }

    /// Opens the session at `base` (a holder's advertise URL) with the caller's `path_and_query`
    /// and `authorization`, marked as relayed by this replica.
    pub async fn dial(
        &self,
        base: &str,
        path_and_query: &str,
        authorization: &HeaderValue,
    ) -> Result<PeerSocket, RelayError> {
        let unreachable = |why: String| RelayError::Unreachable(format!("{base}: {why}"));
        crate::config::check_advertise_url(base).map_err(unreachable)?;
        let uri: Uri = base.parse().map_err(|e| unreachable(format!("{e}")))?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let ws_url = format!(
            "{}://{authority}{path_and_query}",
            if tls { "wss" } else { "ws" }
        );
        let mut request = ws_url
            .into_client_request()
            .map_err(|e| unreachable(e.to_string()))?;
        request
            .headers_mut()
            .insert("authorization", authorization.clone());
        request.headers_mut().insert(
            RELAYED,
            HeaderValue::from_str(&self.id).expect("a uuid is a header value"),
        );
        let connect = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if tls {
                let config = self.tls.clone().ok_or_else(|| {
                    unreachable(
                        "no CA to verify it with; set [replica] ca_file or [tls] cert_file".into(),
                    )
                })?;
                let name =
                    ServerName::try_from(host.clone()).map_err(|e| unreachable(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                Box::new(stream)
            } else {
                Box::new(tcp)
            };
            match tokio_tungstenite::client_async(request, io).await {
                Ok((ws, _)) => Ok(ws),
                Err(tungstenite::Error::Http(res)) => Err(answered(
                    res.status().as_u16(),
                    res.body().as_deref().unwrap_or_default(),
                )),
                Err(e) => Err(unreachable(e.to_string())),
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
    }
}

impl Peers {
    /// Sends a plain HTTP request (an airlock call the holder must make at its site) to `base`
    /// with the caller's `path_and_query`, `authorization` and JSON `body`, marked as relayed;
    /// the holder's answer, whatever its status, comes back as it is.
    pub async fn forward(
        &self,
        base: &str,
        method: reqwest::Method,
        path_and_query: &str,
        authorization: &HeaderValue,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, RelayError> {
        let unreachable = |why: String| RelayError::Unreachable(format!("{base}: {why}"));
        crate::config::check_advertise_url(base).map_err(unreachable)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(DIAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if base.starts_with("https://") {
            let config = self.tls.clone().ok_or_else(|| {
                unreachable(
                    "no CA to verify it with; set [replica] ca_file or [tls] cert_file".into(),
                )
            })?;
            builder = builder.use_preconfigured_tls((*config).clone());
        }
        let client = builder.build().map_err(|e| unreachable(e.to_string()))?;
        let mut req = client
            .request(method, format!("{base}{path_and_query}"))
            .header("authorization", authorization.clone())
            .header(RELAYED, &self.id);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        req.send().await.map_err(|e| unreachable(e.to_string()))
    }
}

/// The holder's error answer as the caller's.
fn answered(status: u16, body: &[u8]) -> RelayError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => RelayError::Answered { status, body },
        Err(_) => RelayError::Unreachable(format!(
            "it answered {status} with no error body; check that the advertise URL names a \
             basho orchestrator"
        )),
    }
}

fn client_config(field: &str, file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let problem = |e: String| {
        format!(
            "{field} {}: {e}; point it at a readable PEM bundle of the CA that signs the \
             replicas' certificates",
            file.display()
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|c| c.collect::<Result<_, _>>())
        .map_err(|e| problem(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| problem(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Carries messages between the caller and the holder until either side ends or `closing` is
/// cancelled (this replica shuts down), then closes both.
pub async fn pipe(client: WebSocket, peer: PeerSocket, closing: CancellationToken) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut peer_tx, mut peer_rx) = peer.split();
    let up = async {
        while let Some(Ok(m)) = client_rx.next().await {
            let m = match m {
                ws::Message::Binary(b) => Message::Binary(b),
                ws::Message::Text(t) => Message::Text(t.as_str().into()),
                ws::Message::Close(_) => break,
                ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
            };
            if peer_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = peer_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = peer_rx.next().await {
            let m = match m {
                Message::Binary(b) => ws::Message::Binary(b),
                Message::Text(t) => ws::Message::Text(t.as_str().into()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if client_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Whichever side ends first ends the other; a holder that ended first has its client's
    // Close awaited, so what the client sent meanwhile cannot reset it.
    let holder_ended = tokio::select! {
        () = up => false,
        () = down => true,
        () = closing.cancelled() => false,
    };
    if holder_ended {
        until_closed(&mut client_rx).await;
    }
}
