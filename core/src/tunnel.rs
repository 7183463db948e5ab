//! The session tunnel's wire format: binary frames carried in WebSocket messages between the
//! agent and the orchestrator (many sessions on one agent-dialled connection) and between a client
//! and the orchestrator (one session per connection, session id 0).
//!
//! A frame is `session (u32, big endian) | kind (u8) | payload`. Data frames (`Stdin`, `Stdout`,
//! `Stderr`) are sent only against credit: each side starts with [`WINDOW`] bytes of credit per
//! session and direction, and the receiver returns credit (`Credit`, a u32) as it hands bytes on.
//! Credit travels end to end through the orchestrator, so a client that never reads stops the
//! process's output at the agent, and one noisy session never holds more than its window in any
//! queue.

use serde::{Deserialize, Serialize};

/// Bytes a sender may have in flight per session and direction before it waits for credit.
pub const WINDOW: u32 = 256 * 1024;
/// The largest data payload in one frame.
pub const MAX_CHUNK: usize = 32 * 1024;
/// The length of a frame's header.
pub const HEADER: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Orchestrator → agent: start a session ([`Open`] as JSON).
    Open = 1,
    /// Agent → orchestrator → client: the session runs ([`Ready`] as JSON; agents before
    /// [`Ready`] existed send an empty payload, read as `Ready::default()`).
    Ready = 2,
    /// Agent → orchestrator → client: the session could not start ([`Refusal`] as JSON). Sent
    /// during a session, it refuses one request (a `Signal`) and the session goes on.
    Refused = 3,
    /// Towards the process: bytes for its standard input.
    Stdin = 4,
    /// Towards the process: its standard input is closed.
    StdinEof = 5,
    /// From the process: standard output (with a TTY, everything).
    Stdout = 6,
    /// From the process: standard error.
    Stderr = 7,
    /// Towards the process: the terminal's size, `cols (u16) | rows (u16)`.
    Resize = 8,
    /// From the agent: the session ended ([`Exit`] as JSON). The last frame of a session.
    Exit = 9,
    /// Either way: the receiver handed on this many bytes (u32); the sender may send that many more.
    Credit = 10,
    /// Either way: end the session now (a reason as UTF-8 text).
    Close = 11,
    /// Towards the process: deliver a signal (its name, e.g. `TERM`, as ASCII; see [`Signal`]).
    /// An agent that predates this kind closes the tunnel on it, so the orchestrator sends it
    /// only to agents that announce [`FEATURE_SIGNAL`].
    Signal = 12,
    /// Orchestrator → agent: a request to the site's airlock desk
    /// ([`crate::release::Call`] as JSON), on a session id of its own. Sent only to agents whose
    /// registration lists [`crate::release::FEATURE_AIRLOCK`].
    Call = 13,
    /// Agent → orchestrator: the desk's answer to a `Call` ([`crate::release::Answer`]).
    Answer = 14,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Open,
            2 => Kind::Ready,
            3 => Kind::Refused,
            4 => Kind::Stdin,
            5 => Kind::StdinEof,
            6 => Kind::Stdout,
            7 => Kind::Stderr,
            8 => Kind::Resize,
            9 => Kind::Exit,
            10 => Kind::Credit,
            11 => Kind::Close,
            12 => Kind::Signal,
            13 => Kind::Call,
            14 => Kind::Answer,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The session it belongs to (0 on a client's connection).
    pub session: u32,
    /// What it carries.
    pub kind: Kind,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the header.
    #[error("frame of {0} bytes is shorter than its 5-byte header")]
    Short(usize),
    /// An unknown kind byte.
    #[error("frame kind {0} is unknown; client and server versions differ")]
    UnknownKind(u8),
    /// A payload that does not fit its kind.
    #[error("the payload of a {0:?} frame is malformed")]
    Payload(Kind),
}

impl Frame {
    /// A frame of `kind` for `session` with `payload`.
    pub fn new(session: u32, kind: Kind, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            session,
            kind,
            payload: payload.into(),
        }
    }

    /// A `Credit` frame returning `n` bytes.
    pub fn credit(session: u32, n: u32) -> Frame {
        Frame::new(session, Kind::Credit, n.to_be_bytes())
    }

    /// A `Resize` frame.
    pub fn resize(session: u32, cols: u16, rows: u16) -> Frame {
        let mut p = cols.to_be_bytes().to_vec();
        p.extend_from_slice(&rows.to_be_bytes());
        Frame::new(session, Kind::Resize, p)
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json(session: u32, kind: Kind, value: &impl Serialize) -> Frame {
        Frame::new(
            session,
            kind,
            serde_json::to_vec(value).expect("tunnel messages serialize"),
        )
    }

    /// The frame as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&self.session.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes one frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() < HEADER {
            return Err(FrameError::Short(bytes.len()));
        }
        let session = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        let kind = Kind::from_u8(bytes[4]).ok_or(FrameError::UnknownKind(bytes[4]))?;
        Ok(Frame {
            session,
            kind,
            payload: bytes[HEADER..].to_vec(),
        })
    }

    /// The credit a `Credit` frame returns.
    pub fn credit_value(&self) -> Result<u32, FrameError> {
        let b: [u8; 4] = self
            .payload
            .as_slice()
            .try_into()
            .map_err(|_| FrameError::Payload(Kind::Credit))?;
        Ok(u32::from_be_bytes(b))
    }

    /// `(cols, rows)` of a `Resize` frame.
    pub fn size(&self) -> Result<(u16, u16), FrameError> {
        if self.payload.len() != 4 {
            return Err(FrameError::Payload(Kind::Resize));
        }
        let cols = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let rows = u16::from_be_bytes([self.payload[2], self.payload[3]]);
        Ok((cols, rows))
    }

    /// The payload as JSON of type `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|_| FrameError::Payload(self.kind))
    }
}

/// A signal a client may forward to a session's process (an exec without a terminal; with one,
/// Ctrl-C and friends are bytes the terminal turns into signals). Only these are forwarded: the
/// ones a user's terminal or shell would send to a foreground job, and `KILL` to insist. On the
/// wire a `Signal` frame carries the name (`TERM`), so no side depends on another's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGHUP` (1): the terminal went away.
    Hup,
    /// `SIGINT` (2): Ctrl-C.
    Int,
    /// `SIGQUIT` (3): Ctrl-\\.
    Quit,
    /// `SIGKILL` (9): cannot be caught.
    Kill,
    /// `SIGUSR1` (10).
    Usr1,
    /// `SIGUSR2` (12).
    Usr2,
    /// `SIGTERM` (15): please end.
    Term,
}

/// A signal name outside [`Signal`]'s allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signal {0:?} is not forwarded; allowed: HUP, INT, QUIT, KILL, USR1, USR2, TERM")]
pub struct UnknownSignal(pub String);

impl Signal {
    /// Every forwardable signal.
    pub const ALL: [Signal; 7] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Term,
    ];

    /// The name without `SIG` (`TERM`), as `kill -s` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Term => "TERM",
        }
    }

    /// The number on Linux (x86, Arm, RISC-V), as in an exit status of `128 + n`.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
        }
    }

    /// Parses `TERM`, `SIGTERM`, `term` or `15`; anything outside the allow-list is an error.
    pub fn parse(s: &str) -> Result<Signal, UnknownSignal> {
        let t = s.trim();
        let upper = t.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .into_iter()
            .find(|sig| sig.name() == bare || t.parse::<i32>().ok() == Some(sig.number()))
            .ok_or_else(|| UnknownSignal(s.chars().take(32).collect()))
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// What kind of session a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A command, with or without a terminal.
    Exec,
    /// A connection to a TCP port on the workspace's own loopback.
    Forward,
}

/// What a client asks for: sent as the `spec` query parameter (JSON) of
/// `GET /v1/workspaces/{id}/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Exec or forward.
    pub kind: SessionKind,
    /// The command, passed to the runtime as argv: never through a shell.
    #[serde(default)]
    pub argv: Vec<String>,
    /// Whether the process gets a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Terminal width.
    #[serde(default)]
    pub cols: u16,
    /// Terminal height.
    #[serde(default)]
    pub rows: u16,
    /// For `forward`: the port on the workspace's loopback.
    #[serde(default)]
    pub port: u16,
    /// An administrator's stated reason for entering someone else's workspace (break-glass).
    #[serde(default)]
    pub break_glass: Option<String>,
    /// What the site checks before it opens the session ([`crate::proof`]); the orchestrator
    /// passes it on untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::proof::Proof>,
    /// The first message of the end-to-end handshake ([`crate::e2e`], base64), which carries
    /// this spec again and the proof, sealed for the site; the proof is then not sent here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
}

impl SessionSpec {
    /// An exec of `argv` without a terminal, proof or handshake: the fields a caller changes
    /// are set after.
    pub fn exec<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> SessionSpec {
        SessionSpec {
            kind: SessionKind::Exec,
            argv: argv.into_iter().map(Into::into).collect(),
            tty: false,
            cols: 0,
            rows: 0,
            port: 0,
            break_glass: None,
            proof: None,
            handshake: None,
        }
    }
}

/// What the orchestrator asks an agent to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The workspace.
    pub workspace: String,
    /// What to run.
    pub spec: SessionSpec,
    /// Who asked (for the site's log).
    pub actor: String,
}

/// Why an agent did not open a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `unsupported`, `too_many_sessions`, `not_running`, `backend_unavailable`, `invalid`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// The agent can deliver `Signal` frames (a `Ready` lists it in `features`).
pub const FEATURE_SIGNAL: &str = "signal";

/// What a `Ready` frame says about the session that started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ready {
    /// What the agent can do in this session beyond the original frames ([`FEATURE_SIGNAL`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Where the site records the session, a path on the site (none when it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// What the site verified before it opened the session (`identity token of alice from
    /// https://idp.example`), none when the site trusts the orchestrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven: Option<String>,
    /// The site's answer to the end-to-end handshake (base64): from here on the session's data
    /// frames are sealed ([`crate::e2e`]). None for a session in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
}

impl Ready {
    /// The `Ready` of `frame`; an empty or unreadable payload (an older agent) is the default.
    pub fn of(frame: &Frame) -> Ready {
        frame.parse().unwrap_or_default()
    }

    /// Whether the agent delivers signals.
    pub fn signals(&self) -> bool {
        self.features.iter().any(|f| f == FEATURE_SIGNAL)
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exit {
    /// The process's exit code, when it exited by itself.
    pub code: Option<i64>,
    /// Why it ended when the process did not end it (`idle timeout`, `revoked`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    /// The site-local path of the session's recording, when the site records sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Why the recording stopped before the session did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_error: Option<String>,
    /// The SHA-256 (hex) of the recording's file, when it was written whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sha256: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::new(7, Kind::Stdin, b"ls -l\n".to_vec()),
            Frame::credit(u32::MAX, 4096),
            Frame::resize(1, 120, 40),
            Frame::new(0, Kind::StdinEof, Vec::new()),
        ] {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
        assert_eq!(Frame::credit(1, 9).credit_value(), Ok(9));
        assert_eq!(Frame::resize(1, 80, 24).size(), Ok((80, 24)));
    }

    #[test]
    fn signals_parse_only_from_the_allow_list() {
        for sig in Signal::ALL {
            assert_eq!(Signal::parse(sig.name()), Ok(sig));
            assert_eq!(Signal::parse(&sig.to_string()), Ok(sig));
            assert_eq!(Signal::parse(&sig.number().to_string()), Ok(sig));
        }
        assert_eq!(Signal::parse("sigterm"), Ok(Signal::Term));
        for bad in ["STOP", "SEGV", "19", "", "TERM; rm -rf /", "-9"] {
            let e = Signal::parse(bad).unwrap_err();
            assert!(e.to_string().contains("allowed: HUP"), "{e}");
        }
    }

    #[test]
    fn ready_and_exit_stay_compatible_with_older_peers() {
        // An older agent's Ready has no payload; an older orchestrator ignores the new fields.
        assert_eq!(
            Ready::of(&Frame::new(1, Kind::Ready, Vec::new())),
            Ready::default()
        );
        let r = Ready {
            features: vec![FEATURE_SIGNAL.into()],
            recording: Some("/var/lib/basho/recordings/ws-1/a-1.cast".into()),
            proven: None,
            handshake: None,
        };
        assert!(Ready::of(&Frame::json(1, Kind::Ready, &r)).signals());
        let old: Exit = serde_json::from_str(r#"{"code":3,"reason":null}"#).unwrap();
        assert_eq!(old.code, Some(3));
        assert_eq!(
            serde_json::to_string(&Exit::default()).unwrap(),
            r#"{"code":null,"reason":null}"#
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(Frame::decode(&[0, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            Frame::decode(&[0, 0, 0, 1, 99]),
            Err(FrameError::UnknownKind(99))
        );
        let f = Frame::new(1, Kind::Credit, vec![1]);
        assert!(f.credit_value().is_err());
    }
}
