//! Opening a session: sealed end to end with the workspace's site ([`basho_core::e2e`]), whose
//! key the orchestrator reports and `known_sites` pins ([`crate::pins`]), or in clear where a
//! site allows it; and the frames of an opened session, their data sealed and opened in order.

use basho_agent::client::TlsPolicy;
use basho_agent::session::dial::{self, DialError, Socket};
use basho_core::e2e::{Channel, Hello, Initiator, KeyPair, Opener, Sealer, fingerprint, parse_key};
use basho_core::tunnel::{Exit, Frame, Kind, Ready, SessionSpec};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::args::ClientArgs;
use crate::client::Client;
use crate::error::Error;
use crate::pins::{Pinned, Pins};
use crate::proof::ProofArgs;

fn base(client: &ClientArgs) -> String {
    let a = client.addr.trim().trim_end_matches('/');
    if a.contains("://") {
        format!("{a}/")
    } else {
        format!("http://{a}/")
    }
}

/// A session the command line opened: its socket, what the site said, and the keys that seal
/// its data (none for a session in clear).
pub struct Opened {
    /// The WebSocket to the orchestrator.
    pub ws: Socket,
    /// What the `Ready` said.
    pub ready: Ready,
    pub(super) sealer: Option<Sealer>,
    pub(super) opener: Option<Opener>,
}

impl Opened {
    /// A session whose frames go in clear (only to sites that allow it).
    pub fn clear(ws: Socket, ready: Ready) -> Opened {
        Opened {
            ws,
            ready,
            sealer: None,
            opener: None,
        }
    }

    fn sealed_with(ws: Socket, ready: Ready, channel: Channel) -> Opened {
        let (sealer, opener) = channel.split();
        Opened {
            ws,
            ready,
            sealer: Some(sealer),
            opener: Some(opener),
        }
    }

    /// Whether its data is sealed end to end.
    pub fn sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Sends one frame of `kind`, its payload sealed when the kind carries data.
    pub async fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Error> {
        let payload = if basho_core::e2e::sealed(kind) {
            seal(&mut self.sealer, payload)
        } else {
            payload.to_vec()
        };
        self.ws
            .send(Message::Binary(
                Frame::new(0, kind, payload).encode().into(),
            ))
            .await
            .map_err(|e| Error::Session(format!("the session's connection failed: {e}")))
    }

    /// The next frame, its data opened; none when the connection ends.
    pub async fn recv(&mut self) -> Option<Result<Frame, Error>> {
        let mut f = next_frame(&mut self.ws).await?;
        Some(unseal(&mut self.opener, &mut f).map(|()| f))
    }
}

/// Opens `f`'s payload in place when its kind carries data in an encrypted session.
pub(super) fn unseal(opener: &mut Option<Opener>, f: &mut Frame) -> Result<(), Error> {
    if basho_core::e2e::sealed(f.kind)
        && let Some(o) = opener.as_mut()
    {
        f.payload = o
            .open(&f.payload)
            .map_err(|e| Error::Session(e.to_string()))?;
    }
    Ok(())
}

/// What sessions in one workspace are sealed with: its site's pinned key and this command's
/// own key, whose [`seed`](Sealing::seed) the identity token's nonce carries.
pub struct Sealing {
    site: String,
    site_key: [u8; 32],
    keys: KeyPair,
}

impl Sealing {
    /// Learns `workspace`'s site and its session key from the orchestrator and checks the key
    /// against `pins`, pinning it when the site has none yet.
    pub async fn prepare(
        client: &ClientArgs,
        workspace: &str,
        pins: &Pins,
    ) -> Result<Sealing, Error> {
        // Like every other failure to open a session, exit 255.
        let failed = |e: crate::client::ApiError| {
            Error::Session(format!("cannot open a session in {workspace}: {e}"))
        };
        let api = Client::with_ca(
            &client.addr,
            client.token.clone(),
            client.ca_file.as_deref(),
        )
        .map_err(failed)?;
        let ws: serde_json::Value = api
            .get_workspace(workspace)
            .await
            .and_then(|a| a.parse(&api, "a workspace"))
            .map_err(failed)?;
        let site = ws["site"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::Session(format!(
                    "workspace {workspace} is at no site yet; a session opens once it runs"
                ))
            })?
            .to_owned();
        let answer: serde_json::Value = api
            .site_session_key(&site)
            .await
            .and_then(|a| a.parse(&api, "a site's session key"))
            .map_err(failed)?;
        let site_key = parse_key(answer["key"].as_str().unwrap_or_default())
            .map_err(|e| Error::Session(format!("site {site}'s session key: {e}")))?;
        if pins.check(&site, &site_key)? == Pinned::New {
            eprintln!(
                "basho: pinned site {site}'s session key {} in {} (first session there); its \
                 admin can confirm it with `basho-agent session-key`",
                fingerprint(&site_key),
                pins.path().display()
            );
        }
        Ok(Sealing {
            site,
            site_key,
            keys: KeyPair::generate(),
        })
    }

    /// The seed of the identity token's nonce: the token opens only sessions this command's
    /// key completes.
    pub fn seed(&self) -> String {
        basho_core::e2e::seed(&self.keys.public)
    }

    /// The site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Opens a session sealed for the site: `spec` (with its proof) travels inside the
    /// handshake, and the session opens only when the site's answer completes it.
    pub async fn open(
        &self,
        client: &ClientArgs,
        workspace: &str,
        spec: &SessionSpec,
    ) -> Result<Opened, Error> {
        let mut outer = spec.clone();
        outer.proof = None;
        outer.handshake = None;
        let hello = Hello {
            workspace: workspace.to_owned(),
            spec: outer.clone(),
            proof: spec.proof.clone(),
        };
        let (init, first) = Initiator::start(&self.keys, &self.site_key, &hello)
            .map_err(|e| Error::Session(e.to_string()))?;
        outer.handshake = Some(first);
        let (ws, ready) = open(client, workspace, &outer).await?;
        let answer = ready.handshake.as_deref().ok_or_else(|| {
            Error::Session(format!(
                "the session opened without site {}'s answer to its handshake, so it was not \
                 the site that answered; nothing was sent",
                self.site
            ))
        })?;
        let channel = init
            .finish(answer)
            .map_err(|e| Error::Session(format!("site {}: {e}; nothing was sent", self.site)))?;
        Ok(Opened::sealed_with(ws, ready, channel))
    }
}

/// Opens a sealed session in `workspace` with a proof from `proof`: the common path of every
/// command.
pub async fn connect(
    client: &ClientArgs,
    workspace: &str,
    spec: &SessionSpec,
    proof: &ProofArgs,
) -> Result<Opened, Error> {
    let sealing = Sealing::prepare(client, workspace, &Pins::user()?).await?;
    let mut spec = spec.clone();
    spec.proof = proof.obtain(workspace, &sealing.seed()).await?;
    sealing.open(client, workspace, &spec).await
}

/// Opens a session as the spec says, in clear: the socket and what the `Ready` said (an older
/// orchestrator's says nothing, so no signals). Sites refuse it unless they allow sessions in
/// clear; [`Sealing::open`] seals one.
pub async fn open(
    client: &ClientArgs,
    workspace: &str,
    spec: &SessionSpec,
) -> Result<(Socket, Ready), Error> {
    let token = client.token.clone().unwrap_or_default();
    let policy = TlsPolicy {
        ca_file: client.ca_file.clone(),
        plain_http_on_loopback: true,
    };
    let mut url = reqwest::Url::parse("http://x/").expect("static URL");
    url.set_path(&format!("v1/workspaces/{workspace}/session"));
    url.query_pairs_mut()
        .append_pair("spec", &serde_json::to_string(spec).expect("serializes"));
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let mut ws = dial::dial(&base(client), &path, &token, &policy)
        .await
        .map_err(|e| match e {
            DialError::Status { status, body } => {
                let msg = serde_json::from_str::<basho_core::ErrorBody>(&body)
                    .map(|b| format!("{} ({})", b.error.message, b.error.code))
                    .unwrap_or(body);
                Error::Session(format!(
                    "the orchestrator refused the session ({status}): {msg}"
                ))
            }
            other => Error::Session(other.to_string()),
        })?;
    match next_frame(&mut ws).await {
        Some(f) if f.kind == Kind::Ready => Ok((ws, Ready::of(&f))),
        Some(f) if f.kind == Kind::Exit => Err(Error::Session(format!(
            "the session ended at once: {}",
            f.parse::<Exit>()
                .ok()
                .and_then(|e| e.reason)
                .unwrap_or_default()
        ))),
        _ => Err(Error::Session("the session did not start".into())),
    }
}

async fn next_frame(ws: &mut Socket) -> Option<Frame> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => return Frame::decode(&b).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// `plain` as a data frame carries it: sealed in an encrypted session.
pub(super) fn seal(sealer: &mut Option<Sealer>, plain: &[u8]) -> Vec<u8> {
    match sealer {
        Some(s) => s.seal(plain),
        None => plain.to_vec(),
    }
}
