//! The session tunnel: one WebSocket the agent dials to the orchestrator
//! (`GET /v1/agent/tunnel`, the site's agent token) and keeps open, redialling with backoff.
//! It carries every interactive session of the site as frames tagged with a session id
//! ([`basho_core::tunnel`]); the long-poll keeps its own HTTP connection, so sessions never delay
//! the control loop. Each session has bounded credit each way, so a noisy one cannot fill a
//! queue the others need, and a closed tunnel ends (and kills) every session it carried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basho_core::tunnel::{Frame, Kind, Open, Refusal};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::backend::Backend;
use crate::client::{Backoff, TlsPolicy};

pub mod dial;
pub mod proof;
mod pump;
pub mod recording;
pub mod seal;

/// The `[sessions]` table of the site config: limits on interactive sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session with no input and no output for this long ends.
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// No session lasts longer.
    #[serde(default = "default_max")]
    pub max_session_s: u64,
    /// Most sessions open at once in one workspace.
    #[serde(default = "default_per_workspace")]
    pub max_per_workspace: usize,
    /// Where exec sessions are recorded (asciicast v2), an absolute path on the agent's host;
    /// absent, nothing is recorded. Made mode 0700 at start; each recording is 0600.
    #[serde(default)]
    pub recording_dir: Option<std::path::PathBuf>,
    /// Also record what the researcher types (`"i"` events). Off by default: input carries
    /// passwords and tokens typed at prompts that do not echo.
    #[serde(default)]
    pub record_input: bool,
    /// A session that cannot be recorded does not run: one whose recording cannot be created
    /// is refused, one whose recording fails to write ends. Off, a failed recording is logged
    /// and audited and the session goes on.
    #[serde(default)]
    pub recording_required: bool,
    /// `required` (the default): a session opens only with a proof the agent checks itself
    /// (an identity token of the workspace's owner, or a break-glass approval); `none`: the
    /// site takes the orchestrator's word, for `basho dev` on one machine.
    #[serde(default)]
    pub proof: proof::ProofPolicy,
    /// The identity providers whose tokens prove a researcher here.
    #[serde(default)]
    pub identity_issuers: Vec<basho_core::proof::IdentityIssuer>,
    /// The keys that sign break-glass approvals (`basho-agent approve`), as JWKS files.
    #[serde(default)]
    pub approvers: Vec<basho_core::visa::IssuerRef>,
    /// An identity token older than this (by `iat`) opens no session.
    #[serde(default = "default_proof_age")]
    pub max_proof_age_s: u64,
    /// `required` (the default): every session is encrypted end to end between basho's
    /// command line and the agent, so the orchestrator relays ciphertext only; `optional`:
    /// clients that predate encryption may also open sessions in clear.
    #[serde(default)]
    pub encryption: seal::Encryption,
    /// Port-forwards open (the default); `false` refuses every one with `forward_disabled`, so
    /// the only bulk way out of a workspace is the results airlock's review.
    #[serde(default = "default_true")]
    pub allow_port_forward: bool,
    /// Most bytes an exec session's process may send out (stdout and stderr together); the
    /// session ends, its processes killed, when it reaches them. Absent: no limit.
    #[serde(default)]
    pub exec_output_limit_bytes: Option<u64>,
    /// The site's session key (X25519, made at first start, mode 0600); default
    /// `<state_dir>/session.key`. Its public half goes out in the registration, and
    /// `basho-agent session-key` prints it for researchers to check.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

pub(crate) fn default_true() -> bool {
    true
}

fn default_proof_age() -> u64 {
    300
}

fn default_idle() -> u64 {
    30 * 60
}
fn default_max() -> u64 {
    12 * 3600
}
fn default_per_workspace() -> usize {
    8
}

impl SessionsConfig {
    /// What is wrong with the table, each saying what to fix (`check-config`).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(dir) = &self.recording_dir
            && !dir.is_absolute()
        {
            p.push(format!(
                "sessions.recording_dir {} is not absolute; name the directory by absolute path",
                dir.display()
            ));
        }
        for i in &self.identity_issuers {
            if i.audience.trim().is_empty() {
                p.push(format!(
                    "sessions.identity_issuers {:?} has an empty audience; set it to the client \
                     id basho's command line uses at that provider",
                    i.issuer
                ));
            }
        }
        if self.exec_output_limit_bytes == Some(0) {
            p.push(
                "sessions.exec_output_limit_bytes is 0: every exec would end at once; remove it \
                 for no limit"
                    .into(),
            );
        }
        if self.max_proof_age_s == 0 {
            p.push("sessions.max_proof_age_s is 0: no token would be fresh enough".into());
        }
        if self.recording_dir.is_none() && (self.recording_required || self.record_input) {
            p.push(
                "sessions.recording_required and sessions.record_input need \
                 sessions.recording_dir; set it, or remove them"
                    .into(),
            );
        }
        p
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_s: default_idle(),
            max_session_s: default_max(),
            max_per_workspace: default_per_workspace(),
            recording_dir: None,
            record_input: false,
            recording_required: false,
            proof: proof::ProofPolicy::default(),
            identity_issuers: Vec::new(),
            approvers: Vec::new(),
            max_proof_age_s: default_proof_age(),
            encryption: seal::Encryption::default(),
            allow_port_forward: true,
            exec_output_limit_bytes: None,
            key_file: None,
        }
    }
}

impl SessionsConfig {
    /// Where the site's session key is kept.
    pub fn key_path(&self, state_dir: &std::path::Path) -> std::path::PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| state_dir.join("session.key"))
    }
}

/// Where the tunnel goes and what it serves.
#[derive(Clone)]
pub struct Tunnel {
    /// The orchestrator's base URL.
    pub url: String,
    /// The site's agent token.
    pub token: String,
    /// How the orchestrator's endpoint is trusted.
    pub tls: TlsPolicy,
    /// Runs the sessions.
    pub backend: Arc<dyn Backend>,
    /// Session limits.
    pub limits: SessionsConfig,
    /// Checks each session's proof.
    pub gate: Arc<proof::Gate>,
    /// Where the site records each session it opens or refuses.
    pub site_audit: Arc<crate::site_audit::SiteAudit>,
    /// The site's session key, which opens sessions sealed for it.
    pub key: Arc<basho_core::e2e::KeyPair>,
    /// Serves the airlock's calls.
    pub counter: Arc<crate::airlock::serve::Counter>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A tunnel up at least this long counts as established: the next redial starts from the
/// shortest delay again.
const STABLE: Duration = Duration::from_secs(30);

/// Sessions open per workspace on this agent.
type Counts = Arc<Mutex<HashMap<String, usize>>>;

impl Tunnel {
    /// Keeps the tunnel up until `stop`; every session ends with it.
    pub async fn run(self, stop: CancellationToken) {
        let counts: Counts = Arc::default();
        let mut backoff = Backoff::agent_default();
        let mut up = true;
        while !stop.is_cancelled() {
            match dial::dial(&self.url, "v1/agent/tunnel", &self.token, &self.tls).await {
                Ok(ws) => {
                    info!("session tunnel up");
                    up = true;
                    let opened = tokio::time::Instant::now();
                    self.serve(ws, counts.clone(), &stop).await;
                    // Only a tunnel that stayed up earns a quick redial: one the orchestrator
                    // accepts and drops at once (a restart, a replica shutting down) must not
                    // be redialled several times a second by every site.
                    if opened.elapsed() >= STABLE {
                        backoff.reset();
                    }
                    if !stop.is_cancelled() {
                        info!("session tunnel down; redialling");
                    }
                }
                Err(e) => {
                    if up {
                        warn!(error = %e, "cannot open the session tunnel; retrying");
                    }
                    up = false;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn serve(&self, ws: dial::Socket, counts: Counts, stop: &CancellationToken) {
        let (mut sink, mut stream) = ws.split();
        let conn = stop.child_token();
        let (tx, mut rx) = mpsc::channel::<Frame>(64);
        let tasks = TaskTracker::new();
        let writer_stop = conn.clone();
        let writer = async move {
            let mut ping = tokio::time::interval(Duration::from_secs(15));
            loop {
                let msg = tokio::select! {
                    _ = writer_stop.cancelled() => break,
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
            writer_stop.cancel();
            let _ = sink.close().await;
        };
        tasks.spawn(writer.in_current_span());
        let mut sessions: HashMap<u32, mpsc::UnboundedSender<Frame>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
        loop {
            let msg = tokio::select! {
                _ = conn.cancelled() => break,
                Some(id) = done_rx.recv() => {
                    sessions.remove(&id);
                    continue;
                }
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
                    warn!(error = %e, "undecodable tunnel frame; closing the tunnel");
                    break;
                }
            };
            if frame.kind == Kind::Call {
                let id = frame.session;
                let Some(call) = first::<basho_core::release::Call>(&frame, &sessions, &tx).await
                else {
                    continue;
                };
                let (in_tx, in_rx) = mpsc::unbounded_channel();
                sessions.insert(id, in_tx);
                let (counter, tx, done, cancel) = (
                    self.counter.clone(),
                    tx.clone(),
                    done_tx.clone(),
                    conn.child_token(),
                );
                tasks.spawn(
                    async move {
                        counter.serve(id, call, tx, in_rx, cancel).await;
                        let _ = done.send(id);
                    }
                    .instrument(info_span!("airlock", id)),
                );
                continue;
            }
            if frame.kind != Kind::Open {
                if let Some(s) = sessions.get(&frame.session) {
                    let _ = s.send(frame);
                }
                continue;
            }
            let id = frame.session;
            let Some(open) = first::<Open>(&frame, &sessions, &tx).await else {
                continue;
            };
            let checked = seal::unseal(open.clone(), &self.key, self.limits.encryption).and_then(
                |(inner, accepted)| {
                    let proven = self.gate.check(&inner, chrono::Utc::now().timestamp())?;
                    Ok((inner, accepted, proven))
                },
            );
            let (open, accepted, proven) = match checked {
                Ok(a) => a,
                Err(r) => {
                    warn!(session = id, workspace = %open.workspace, actor = %open.actor,
                        code = %r.code, why = %r.message, "session refused");
                    let detail = serde_json::json!({"actor": open.actor, "code": r.code,
                        "message": r.message});
                    // Written beside the tunnel's reading, which no disk write holds up.
                    let (log, ws) = (self.site_audit.clone(), open.workspace.clone());
                    tasks.spawn(async move {
                        let _ = log.record("session_refused", &ws, detail).await;
                    });
                    refuse(&tx, id, &r.code, &r.message).await;
                    continue;
                }
            };
            if open.spec.kind == basho_core::tunnel::SessionKind::Forward
                && !self.limits.allow_port_forward
            {
                let msg = "this site opens no port-forwards (sessions.allow_port_forward = \
                           false); results leave through the airlock (basho results request)";
                refuse(&tx, id, "forward_disabled", msg).await;
                continue;
            }
            let admitted = {
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                let n = c.entry(open.workspace.clone()).or_default();
                if *n >= self.limits.max_per_workspace {
                    false
                } else {
                    *n += 1;
                    true
                }
            };
            if !admitted {
                let msg = format!(
                    "workspace {} already has {} open sessions, the site's limit \
                     (sessions.max_per_workspace); close one first",
                    open.workspace, self.limits.max_per_workspace
                );
                refuse(&tx, id, "too_many_sessions", &msg).await;
                continue;
            }
            let detail = serde_json::json!({"actor": open.actor, "kind": open.spec.kind,
                "argv": open.spec.argv, "port": open.spec.port,
                "break_glass": open.spec.break_glass,
                "encrypted": accepted.is_some(),
                "proven": proven.as_ref().map(ToString::to_string)});
            let (in_tx, in_rx) = mpsc::unbounded_channel();
            sessions.insert(id, in_tx);
            let span = info_span!("session", id, workspace = %open.workspace, actor = %open.actor,
                proven = proven.as_ref().map(tracing::field::display));
            let run = pump::Session {
                id,
                open,
                proven: proven.map(|p| p.to_string()),
                accepted,
                backend: self.backend.clone(),
                tx: tx.clone(),
                limits: self.limits.clone(),
                cancel: conn.child_token(),
            };
            let counts = counts.clone();
            let done = done_tx.clone();
            let log = self.site_audit.clone();
            tasks.spawn(
                async move {
                    let workspace = run.open.workspace.clone();
                    // A session the site cannot record does not open.
                    match log.record("session_opened", &workspace, detail).await {
                        Ok(()) => run.run(in_rx).await,
                        Err(e) => {
                            warn!(error = %e, "session refused: the site cannot record it");
                            let msg =
                                format!("the site cannot record the session in its audit log: {e}");
                            refuse(&run.tx, id, "audit_unavailable", &msg).await;
                        }
                    }
                    if let Some(n) = counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&workspace)
                    {
                        *n = n.saturating_sub(1);
                    }
                    let _ = done.send(id);
                }
                .instrument(span),
            );
        }
        conn.cancel();
        drop(sessions);
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), tasks.wait())
            .await
            .is_err()
        {
            warn!("sessions did not end within 20 s of the tunnel closing");
        }
        debug!("tunnel connection finished");
    }
}

/// The message of a frame that starts something on a new session id (a session's `Open`, an
/// airlock `Call`); refused, and `None`, when it does not parse or the id is taken.
async fn first<T: serde::de::DeserializeOwned>(
    frame: &Frame,
    sessions: &HashMap<u32, mpsc::UnboundedSender<Frame>>,
    tx: &mpsc::Sender<Frame>,
) -> Option<T> {
    let id = frame.session;
    match frame.parse() {
        Err(e) => refuse(tx, id, "invalid", &e.to_string()).await,
        Ok(_) if sessions.contains_key(&id) => {
            refuse(tx, id, "invalid", "session id already in use").await;
        }
        Ok(m) => return Some(m),
    }
    None
}

async fn refuse(tx: &mpsc::Sender<Frame>, id: u32, code: &str, message: &str) {
    let r = Refusal {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    let _ = tx.send(Frame::json(id, Kind::Refused, &r)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_settings_are_checked() {
        let mut c: SessionsConfig = toml::from_str("").unwrap();
        assert_eq!(c, SessionsConfig::default());
        assert!(c.problems().is_empty());
        c.recording_required = true;
        assert!(c.problems()[0].contains("need sessions.recording_dir"));
        c.recording_dir = Some("recordings".into());
        assert!(c.problems()[0].contains("not absolute"));
        let c: SessionsConfig =
            toml::from_str("recording_dir = \"/var/lib/basho/recordings\"\nrecord_input = true\n")
                .unwrap();
        assert!(c.problems().is_empty());
        assert!(c.record_input && !c.recording_required);
        let c: SessionsConfig =
            toml::from_str("allow_port_forward = false\nexec_output_limit_bytes = 0\n").unwrap();
        assert!(!c.allow_port_forward);
        assert!(
            c.problems()[0].contains("exec_output_limit_bytes is 0"),
            "{:?}",
            c.problems()
        );
    }
}
