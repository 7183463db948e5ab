//! The orchestrator's end of the agents' session tunnels: `GET /v1/agent/tunnel` (agent token,
//! `api/agent.rs`) upgrades to a WebSocket that the site's agent keeps open, and [`Tunnels`] maps each site to
//! its live tunnel. Sessions are opened on a site's tunnel with [`Tunnels::open`]; frames from the
//! agent are routed to their session by id. Credit travels end to end, so a session's queue here
//! never holds more than its window; a tunnel that goes away ends every session it carried.
//! With an advertise URL, the replica records itself in the store as the site's holder while the
//! tunnel is up, so its peers relay sessions to it ([`crate::relay`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use basho_core::Ident;
use basho_core::tunnel::{Frame, Kind};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use crate::Orchestrator;
use crate::store::TunnelHolder;

/// One agent's live tunnel.
pub struct Link {
    tx: mpsc::Sender<Frame>,
    sessions: Mutex<HashMap<u32, mpsc::UnboundedSender<Frame>>>,
    next: AtomicU32,
    closed: CancellationToken,
}

/// A session opened on a tunnel: frames from the agent arrive on `rx`; dropping it tells the
/// agent to end the session.
pub struct SessionLink {
    /// The session id on the tunnel.
    pub id: u32,
    /// Frames from the agent for this session.
    pub rx: mpsc::UnboundedReceiver<Frame>,
    link: Arc<Link>,
    ended: bool,
}

impl SessionLink {
    /// Sends a frame to the agent for this session; `false` when the tunnel is gone.
    pub async fn send(&self, kind: Kind, payload: Vec<u8>) -> bool {
        self.link
            .tx
            .send(Frame::new(self.id, kind, payload))
            .await
            .is_ok()
    }

    /// Cancelled when the tunnel goes away.
    pub fn tunnel_closed(&self) -> CancellationToken {
        self.link.closed.clone()
    }

    /// Marks the session ended by the agent (its `Exit` arrived): dropping sends no `Close`.
    pub fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        self.link
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if !self.ended {
            let _ = self.link.tx.try_send(Frame::new(
                self.id,
                Kind::Close,
                b"the client went away".to_vec(),
            ));
        }
    }
}

/// Every site's live tunnel.
#[derive(Default)]
pub struct Tunnels {
    links: Mutex<HashMap<Ident, Arc<Link>>>,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels").finish_non_exhaustive()
    }
}

impl Tunnels {
    /// Opens a session on `site`'s tunnel and sends `open` (an `Open` frame's JSON); `None` when
    /// the site has no tunnel.
    pub async fn open(&self, site: &Ident, open: Vec<u8>) -> Option<SessionLink> {
        self.open_as(site, Kind::Open, open).await
    }

    /// Opens a session with a first frame of `kind` (`Open`, or an airlock `Call`).
    pub async fn open_as(&self, site: &Ident, kind: Kind, first: Vec<u8>) -> Option<SessionLink> {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(site)?
            .clone();
        let id = link.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        link.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let s = SessionLink {
            id,
            rx,
            link,
            ended: false,
        };
        s.send(kind, first).await.then_some(s)
    }

    /// Whether `site` has a live tunnel.
    pub fn is_up(&self, site: &Ident) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(site)
    }
}

/// Serves `site`'s tunnel on an upgraded socket until either end closes it.
pub(crate) async fn serve(o: Orchestrator, site: Ident, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Frame>(64);
    let link = Arc::new(Link {
        tx,
        sessions: Mutex::default(),
        next: AtomicU32::new(1),
        closed: CancellationToken::new(),
    });
    let previous = o
        .inner()
        .tunnels
        .links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(site.clone(), link.clone());
    if let Some(old) = previous {
        old.closed.cancel();
    }
    info!("session tunnel up");
    hold(&o, &site).await;
    o.audit(
        &format!("agent:{site}"),
        "tunnel_connected",
        site.as_str(),
        json!({}),
    )
    .await;
    let closed = link.closed.clone();
    let closing = o.inner().closing.clone();
    let writer = tokio::spawn(
        async move {
            let mut ping = tokio::time::interval(Duration::from_secs(15));
            loop {
                let msg = tokio::select! {
                    _ = closed.cancelled() => break,
                    f = rx.recv() => match f {
                        Some(f) => Message::Binary(f.encode().into()),
                        None => break,
                    },
                    _ = ping.tick() => Message::Ping(Vec::new().into()),
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            closed.cancel();
            let _ = sink.close().await;
        }
        .in_current_span(),
    );
    loop {
        let msg = tokio::select! {
            _ = link.closed.cancelled() => break,
            _ = closing.cancelled() => break,
            m = stream.next() => m,
        };
        let bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let frame = match Frame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "undecodable frame from the agent; closing its tunnel");
                break;
            }
        };
        let to = link
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&frame.session)
            .cloned();
        if let Some(to) = to {
            let _ = to.send(frame);
        }
    }
    link.closed.cancel();
    writer.abort();
    let released = {
        let mut links = o
            .inner()
            .tunnels
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if links.get(&site).is_some_and(|l| Arc::ptr_eq(l, &link)) {
            links.remove(&site)
        } else {
            // A newer tunnel of the site replaced this one here: the holder row is its.
            None
        }
    };
    if released.is_some() {
        release(&o, &site).await;
    }
    // Every session of this tunnel sees its channel close.
    link.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    info!("session tunnel down");
}

/// Records this replica as the site's holder, so its peers relay sessions here; only with an
/// advertise URL, as peers could not reach it otherwise.
async fn hold(o: &Orchestrator, site: &Ident) {
    let peers = &o.inner().peers;
    let Some(url) = peers.advertise_url() else {
        return;
    };
    let holder = TunnelHolder {
        site: site.clone(),
        url: url.to_owned(),
        replica: peers.id().to_owned(),
        since: chrono::Utc::now(),
    };
    if let Err(e) = o.inner().store.hold_tunnel(&holder).await {
        warn!(error = %e, "cannot record this replica as the tunnel's holder; sessions through \
            other replicas fail until the agent redials");
    }
}

/// Forgets this replica as the site's holder, unless another replica has taken over since.
async fn release(o: &Orchestrator, site: &Ident) {
    let peers = &o.inner().peers;
    if peers.advertise_url().is_none() {
        return;
    }
    if let Err(e) = o.inner().store.release_tunnel(site, peers.id()).await {
        warn!(error = %e, "cannot clear this replica as the tunnel's holder; peers will find it \
            unreachable");
    }
}
