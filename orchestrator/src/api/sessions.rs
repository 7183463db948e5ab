//! `GET /v1/workspaces/{id}/session?spec=<json>`: a researcher's interactive session (exec,
//! shell, port-forward) in their own running workspace, upgraded to a WebSocket and relayed to
//! the site's agent over its tunnel ([`crate::tunnel`]). Only the owner (a researcher token for
//! the workspace's `owner`) enters; an admin only with a break-glass reason; the platform never.
//! Each session is audited when it starts and when it ends (who, workspace, bytes each way, exit
//! code, why), and ends when the workspace stops running. A replica that does not hold the
//! site's tunnel relays the session to the one that does ([`crate::relay`]).

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use basho_core::State as WsState;
use basho_core::tunnel::{
    Exit, Frame, Kind, Open, Ready, Refusal, SessionKind, SessionSpec, Signal,
};
use chrono::Utc;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::auth::principal;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::relay::{self, RelayError};
use crate::tokens::Principal;
use crate::tunnel::SessionLink;
use basho_core::ErrorBody;

/// How long the agent may take to start a session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a session checks that its workspace still runs.
const STATE_CHECK: Duration = Duration::from_secs(1);
/// Signals listed in a session's audit entry, at most (a client cannot flood the log).
const AUDITED_SIGNALS: usize = 32;

/// Any authenticated caller; who may enter is decided per workspace.
pub struct Caller(pub Principal);

impl FromRequestParts<Orchestrator> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, o: &Orchestrator) -> Result<Self, ApiError> {
        principal(parts, o).await.map(Caller)
    }
}

/// The query of a session request.
#[derive(Debug, Deserialize)]
pub struct SessionQuery {
    /// A [`SessionSpec`] as JSON.
    pub spec: String,
}

async fn refused(o: &Orchestrator, actor: &str, id: &str, err: ApiError) -> ApiError {
    o.audit(
        actor,
        "session_refused",
        id,
        json!({"status": err.status.as_u16(), "code": err.body.error.code}),
    )
    .await;
    err
}

/// Opens a session; see the module docs.
#[utoipa::path(
    get, path = "/v1/workspaces/{id}/session", operation_id = "openSession", tag = "sessions",
    params(
        ("id" = String, Path, description = "Workspace id (`ws-...`)", max_length = 64),
        ("spec" = String, Query, description = "What to run, as JSON: `{\"kind\": \"exec\"|\"forward\", \"argv\": [..], \"tty\", \"cols\", \"rows\", \"port\", \"break_glass\", \"proof\"}`; `proof` is `{\"kind\": \"id_token\", \"token\", \"seed\"}` or `{\"kind\": \"approval\", \"token\"}`, checked by the site, never by the orchestrator; `handshake` is the first message of the end-to-end handshake with the site (base64), which carries the spec again and the proof, sealed for the site (GET /v1/sites/{id}/session-key)"),
    ),
    responses(
        (status = 101, description = "A WebSocket carrying the session's binary frames (docs/architecture.md, \"Researchers get in\")"),
        (status = 400, description = "No `spec` in the query (`bad_request`), or not a WebSocket upgrade (`websocket_required`)", body = ErrorBody),
        (status = 422, description = "The spec is not a session spec (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the owner's researcher token (`forbidden`), or an admin without a break-glass reason (`break_glass_required`), or the site found no proof it accepts (`proof_required`, `proof_refused`), or the site opens only sessions encrypted end to end (`encryption_required`) and this handshake is not for its key or its request was changed on the way (`handshake_refused`)", body = ErrorBody),
        (status = 404, description = "No such workspace (or another researcher's)", body = ErrorBody),
        (status = 409, description = "The workspace is not running", body = ErrorBody),
        (status = 429, description = "The site's limit of sessions per workspace is reached", body = ErrorBody),
        (status = 501, description = "The site's backend has no sessions yet", body = ErrorBody),
        (status = 503, description = "The site's agent holds no tunnel on any replica, or the replica holding it cannot be reached (`site_unreachable`), or the site records every session and cannot record this one (`recording_failed`), or the session's start cannot be audited (`audit_unavailable`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn open(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let actor = who.actor();
    let spec: SessionSpec = serde_json::from_str(&q.spec)
        .map_err(|e| ApiError::invalid(format!("the session spec does not parse: {e}")))?;
    let missing = || {
        ApiError::not_found(format!(
            "no workspace {id}; list yours with GET /v1/workspaces"
        ))
    };
    let Some(rec) = o.inner().store.workspace(&id).await? else {
        return Err(refused(&o, &actor, &id, missing()).await);
    };
    let ws_ = rec.workspace;
    let break_glass = match &who {
        Principal::Researcher(sub) if *sub == ws_.owner => None,
        // Another researcher's workspace looks missing, so ids cannot be probed.
        Principal::Researcher(_) => return Err(refused(&o, &actor, &id, missing()).await),
        Principal::Admin(_) => match spec.break_glass.as_deref().map(str::trim) {
            Some(reason) if !reason.is_empty() => Some(reason.to_owned()),
            _ => {
                let e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "break_glass_required",
                    "an administrator enters a researcher's workspace only with a break-glass \
                     reason (basho shell --break-glass REASON), which is audited",
                );
                return Err(refused(&o, &actor, &id, e).await);
            }
        },
        _ => {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the workspace's owner, with a researcher token, may open a session in it \
                 (an admin only with --break-glass); the platform never does",
            );
            return Err(refused(&o, &actor, &id, e).await);
        }
    };
    if ws_.state != WsState::Running {
        let e = ApiError::new(
            StatusCode::CONFLICT,
            "workspace_not_running",
            format!(
                "workspace {id} is {}; sessions open only in a running workspace",
                ws_.state.as_str()
            ),
        );
        return Err(refused(&o, &actor, &id, e).await);
    }
    // Checked after who and what, so a plain GET learns the same as a WebSocket would.
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let e = super::websocket_required(&e, "a session (basho shell, basho exec)");
            return Err(refused(&o, &actor, &id, e).await);
        }
    };
    let open = Open {
        workspace: id.clone(),
        spec: spec.clone(),
        actor: actor.clone(),
    };
    let open_json = serde_json::to_vec(&open).expect("serializes");
    let Some(mut link) = o.inner().tunnels.open(&ws_.site, open_json).await else {
        // Another replica may hold the tunnel: it authorizes and audits the session itself.
        let why = match elsewhere(&o, &ws_.site, &uri, &headers).await {
            Ok(peer) => {
                let closing = o.inner().closing.clone();
                let span = tracing::info_span!("session_relay", site = %ws_.site, workspace = %id);
                return Ok(ws.max_message_size(1 << 20).on_upgrade(move |socket| {
                    relay::pipe(socket, peer, closing).instrument(span)
                }));
            }
            Err(Elsewhere::Answered(e)) => return Err(e),
            Err(Elsewhere::Nowhere(why)) => why,
        };
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "site_unreachable",
            format!(
                "site {} has no session tunnel open right now ({why}); retry in a moment, or \
                 ask the site's admin whether its agent runs",
                ws_.site
            ),
        );
        return Err(refused(&o, &actor, &id, e).await);
    };
    let first = tokio::time::timeout(OPEN_TIMEOUT, link.rx.recv()).await;
    let ready = match first {
        Ok(Some(f)) if f.kind == Kind::Ready => Ready::of(&f),
        Ok(Some(f)) if f.kind == Kind::Refused => {
            link.ended();
            let r: Refusal = f.parse().unwrap_or(Refusal {
                code: "refused".into(),
                message: "the site refused the session".into(),
            });
            let status = match r.code.as_str() {
                "too_many_sessions" => StatusCode::TOO_MANY_REQUESTS,
                "unsupported" => StatusCode::NOT_IMPLEMENTED,
                "not_running" => StatusCode::CONFLICT,
                "invalid" => StatusCode::UNPROCESSABLE_ENTITY,
                "recording_failed" => StatusCode::SERVICE_UNAVAILABLE,
                "proof_required"
                | "proof_refused"
                | "encryption_required"
                | "handshake_refused"
                | "forward_disabled" => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            let e = ApiError::new(status, &r.code, format!("site {}: {}", ws_.site, r.message));
            return Err(refused(&o, &actor, &id, e).await);
        }
        Ok(_) | Err(_) => {
            let e = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "site_unreachable",
                format!("site {} did not start the session; retry", ws_.site),
            );
            return Err(refused(&o, &actor, &id, e).await);
        }
    };
    let detail = json!({
        "session": link.id,
        "site": ws_.site.as_str(),
        "owner": ws_.owner,
        "kind": spec.kind,
        "argv": spec.argv,
        "tty": spec.tty,
        "port": (spec.kind == SessionKind::Forward).then_some(spec.port),
        "break_glass": break_glass,
        "recording": ready.recording,
        "proven": ready.proven,
        "encrypted": ready.handshake.is_some(),
    });
    let action = if break_glass.is_some() {
        "session_break_glass"
    } else {
        "session_started"
    };
    if !o.audit(&actor, action, &id, detail).await {
        // A session nobody can prove was opened does not open: dropping the link ends it at
        // the site.
        drop(link);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the session's start could not be written to the audit chain, so it does not open; \
             retry, or ask the platform's admin to check the orchestrator's database",
        ));
    }
    let meta = Meta {
        actor,
        id,
        kind: spec.kind,
        sealed: ready.handshake.is_some(),
        ready,
    };
    // The session outlives the request: its task carries who, where and what.
    let span = tracing::info_span!("session", site = %ws_.site, workspace = %meta.id,
        session = link.id, actor = %meta.actor);
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| relay(o, link, socket, meta).instrument(span)))
}

/// Why a session was not relayed to another replica.
enum Elsewhere {
    /// No replica could take it; says why, for the caller's `site_unreachable`.
    Nowhere(String),
    /// The holder answered with an error (it audited the refusal).
    Answered(ApiError),
}

/// Dials the replica that holds `site`'s tunnel, unless the request was relayed already.
async fn elsewhere(
    o: &Orchestrator,
    site: &basho_core::Ident,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<relay::PeerSocket, Elsewhere> {
    let peers = &o.inner().peers;
    if headers.contains_key(relay::RELAYED) {
        return Err(Elsewhere::Nowhere(
            "the replica that relayed the request here holds none either".into(),
        ));
    }
    let holder = match o.inner().store.tunnel_holder(site).await {
        Ok(Some(h)) if h.replica != peers.id() => h,
        Ok(_) => return Err(Elsewhere::Nowhere("no replica holds one".into())),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the tunnel's holder");
            return Err(Elsewhere::Nowhere("its holder cannot be looked up".into()));
        }
    };
    let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(Elsewhere::Nowhere(
            "the request carries no token to relay".into(),
        ));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match peers.dial(&holder.url, path, authorization).await {
        Ok(peer) => Ok(peer),
        Err(RelayError::Answered { status, body }) => {
            Err(Elsewhere::Answered(ApiError { status, body }))
        }
        Err(RelayError::Unreachable(why)) => {
            tracing::warn!(%site, peer = %holder.url, %why, "the replica holding the tunnel is unreachable");
            Err(Elsewhere::Nowhere(format!(
                "the replica holding it cannot be reached: {why}"
            )))
        }
    }
}

struct Meta {
    actor: String,
    id: String,
    kind: SessionKind,
    /// Whether its data frames are sealed end to end (each carries a tag the byte counts
    /// leave out).
    sealed: bool,
    /// What the agent said when the session started.
    ready: Ready,
}

/// The bytes of data a frame carries for the process, without a sealed frame's tag.
fn data_len(meta: &Meta, f: &Frame) -> u64 {
    let tag = if meta.sealed { basho_core::e2e::TAG } else { 0 };
    f.payload.len().saturating_sub(tag) as u64
}

/// Carries frames between the client and the agent until the agent's `Exit`, the client going
/// away, or the workspace no longer running; then audits the session.
async fn relay(o: Orchestrator, mut link: SessionLink, socket: WebSocket, meta: Meta) {
    let started_at = Utc::now();
    let started = Instant::now();
    let (mut sink, mut stream) = socket.split();
    // The client's writes go through their own task: a client that does not read never blocks
    // this loop (the agent stops at its credit, so the queue stays within one window).
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(
        async move {
            while let Some(m) = out_rx.recv().await {
                let last = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || last {
                    break;
                }
            }
            let _ = sink.close().await;
        }
        .in_current_span(),
    );
    let _ = out_tx.send(Message::Binary(
        Frame::json(0, Kind::Ready, &meta.ready).encode().into(),
    ));
    let mut signals: Vec<&'static str> = Vec::new();
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let mut exit: Option<Exit> = None;
    let mut why: Option<String> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut check = tokio::time::interval(STATE_CHECK);
    let tunnel_closed = link.tunnel_closed();
    let closing = o.inner().closing.clone();
    loop {
        let until = deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
        tokio::select! {
            f = link.rx.recv() => {
                let Some(mut f) = f else {
                    why.get_or_insert_with(|| "the site's tunnel closed".into());
                    break;
                };
                match f.kind {
                    Kind::Stdout | Kind::Stderr => bytes_out += data_len(&meta, &f),
                    Kind::Exit => {
                        link.ended();
                        exit = f.parse().ok();
                    }
                    _ => {}
                }
                let last = f.kind == Kind::Exit;
                f.session = 0;
                let _ = out_tx.send(Message::Binary(f.encode().into()));
                if last {
                    break;
                }
            }
            m = stream.next(), if deadline.is_none() => {
                let bytes = match m {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        why = Some("the client disconnected".into());
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let Ok(f) = Frame::decode(&bytes) else {
                    why = Some("the client sent an undecodable frame".into());
                    break;
                };
                match f.kind {
                    // An agent that predates signals would close its whole tunnel on the frame:
                    // only names on the allow-list, only to agents that said they take them.
                    Kind::Signal => {
                        let refusal = match Signal::parse(&String::from_utf8_lossy(&f.payload)) {
                            Err(e) => Some(("invalid_signal", e.to_string())),
                            Ok(sig) if !meta.ready.signals() => Some((
                                "unsupported",
                                format!(
                                    "the site's agent cannot forward {sig} (it predates signals); \
                                     end the session instead"
                                ),
                            )),
                            Ok(sig) => {
                                if signals.len() < AUDITED_SIGNALS {
                                    signals.push(sig.name());
                                }
                                if !link.send(Kind::Signal, sig.name().as_bytes().to_vec()).await {
                                    why = Some("the site's tunnel closed".into());
                                    break;
                                }
                                None
                            }
                        };
                        if let Some((code, message)) = refusal {
                            let r = Refusal { code: code.into(), message };
                            let _ = out_tx.send(Message::Binary(
                                Frame::json(0, Kind::Refused, &r).encode().into(),
                            ));
                        }
                    }
                    Kind::Stdin | Kind::StdinEof | Kind::Resize | Kind::Credit | Kind::Close => {
                        if f.kind == Kind::Stdin {
                            bytes_in += data_len(&meta, &f);
                        }
                        if f.kind == Kind::Close {
                            deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                        }
                        if !link.send(f.kind, f.payload).await {
                            why = Some("the site's tunnel closed".into());
                            break;
                        }
                    }
                    _ => {}
                }
            }
            _ = check.tick(), if deadline.is_none() => {
                let state = o.inner().store.workspace(&meta.id).await.ok().flatten().map(|r| r.workspace.state);
                if state != Some(WsState::Running) {
                    let s = state.map_or("gone", |s| s.as_str());
                    let reason = format!("the workspace is {s}");
                    why = Some(reason.clone());
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                    if !link.send(Kind::Close, reason.into_bytes()).await {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(until) => break,
            _ = tunnel_closed.cancelled() => {
                why.get_or_insert_with(|| "the site's tunnel closed".into());
                break;
            }
            _ = closing.cancelled() => {
                why.get_or_insert_with(|| "the orchestrator is shutting down".into());
                break;
            }
        }
    }
    if exit.is_none() {
        let e = Exit {
            reason: why.clone(),
            ..Exit::default()
        };
        let _ = out_tx.send(Message::Binary(
            Frame::json(0, Kind::Exit, &e).encode().into(),
        ));
    }
    let _ = out_tx.send(Message::Close(None));
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let id = link.id;
    drop(link);
    let exit = exit.unwrap_or_default();
    o.audit(
        &meta.actor,
        "session_ended",
        &meta.id,
        json!({
            "session": id,
            "kind": meta.kind,
            "started_at": started_at,
            "ended_at": Utc::now(),
            "duration_ms": started.elapsed().as_millis() as u64,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "exit_code": exit.code,
            "reason": exit.reason.or(why),
            "signals": signals,
            "recording": exit.recording.or(meta.ready.recording),
            "recording_error": exit.recording_error,
            "recording_sha256": exit.recording_sha256,
        }),
    )
    .await;
    relay::until_closed(&mut stream).await;
}
