//! `basho exec`, `basho shell` and `basho port-forward`: interactive sessions in the caller's own
//! running workspace, over a WebSocket to the orchestrator (`GET /v1/workspaces/{id}/session`)
//! that it relays through the site agent's tunnel. Output comes back against credit returned as
//! it is written, so a slow terminal slows the process, never the agent.
//!
//! Without a terminal, `basho exec` forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT it receives to
//! the process (as `docker exec` and `kubectl exec` without `-t` do not, and ssh does), and
//! exits with the process's code, `128 + n` when a signal ended it; a second Ctrl-C within a
//! second closes the session outright. With a terminal, Ctrl-C is a byte the remote terminal
//! turns into a signal.
//!
//! Every session is sealed end to end with the workspace's site ([`open`]): the orchestrator
//! relays ciphertext it cannot read.

use std::net::SocketAddr;

use basho_core::tunnel::{
    Exit, Frame, Kind, MAX_CHUNK, Refusal, SessionKind, SessionSpec, Signal, WINDOW,
};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::args::ClientArgs;
use crate::error::Error;
use crate::pins::Pins;
use crate::proof::ProofArgs;

mod open;

pub use open::{Opened, Sealing, connect, open};
use open::{seal, unseal};

/// `basho exec WORKSPACE -- CMD ...`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workspace (`ws-...`).
    pub workspace: String,
    /// Give the command a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// An administrator's reason for entering a researcher's workspace (audited).
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Where the proof the site checks comes from.
    #[command(flatten)]
    pub proof: ProofArgs,
    /// The command and its arguments, passed as they are (no shell).
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// `basho shell WORKSPACE`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workspace (`ws-...`).
    pub workspace: String,
    /// The shell to start.
    #[arg(long, default_value = "/bin/sh")]
    pub shell: String,
    /// An administrator's reason for entering a researcher's workspace (audited).
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Where the proof the site checks comes from.
    #[command(flatten)]
    pub proof: ProofArgs,
}

/// `basho port-forward WORKSPACE LOCAL:REMOTE`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workspace (`ws-...`).
    pub workspace: String,
    /// `LOCAL:REMOTE`: listen on 127.0.0.1:LOCAL, reach 127.0.0.1:REMOTE inside the workspace.
    pub ports: String,
    /// An administrator's reason for entering a researcher's workspace (audited).
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Where the proof the site checks comes from.
    #[command(flatten)]
    pub proof: ProofArgs,
}

/// What ended a session, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The process's exit code, when it exited by itself.
    pub code: Option<i64>,
    /// Why it ended otherwise.
    pub reason: Option<String>,
    /// The last signal the client forwarded (or closed the session for).
    pub signal: Option<Signal>,
}

/// Signals to forward to the process, and whether the agent takes them (otherwise the first
/// one closes the session).
pub struct Signals {
    /// Signals as the client receives them.
    pub rx: mpsc::UnboundedReceiver<Signal>,
    /// The session's `Ready` listed signals.
    pub forwarded: bool,
}

impl Signals {
    /// No signals.
    pub fn none() -> Signals {
        let (_, rx) = mpsc::unbounded_channel();
        Signals {
            rx,
            forwarded: false,
        }
    }
}

/// A second Ctrl-C within this long closes the session.
const DOUBLE_INTERRUPT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a closed session may take to send its `Exit`.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT this process receives (they no longer end it).
fn catch_signals() -> mpsc::UnboundedReceiver<Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, sig) in [
        (SignalKind::interrupt(), Signal::Int),
        (SignalKind::terminate(), Signal::Term),
        (SignalKind::hangup(), Signal::Hup),
        (SignalKind::quit(), Signal::Quit),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Carries a session: `input` to the process (with `resize` frames from `resizes`), its output
/// to `stdout`/`stderr`, each written before credit goes back.
pub async fn pump(
    session: Opened,
    mut input: impl AsyncRead + Unpin + Send + 'static,
    mut stdout: impl AsyncWrite + Unpin + Send,
    mut stderr: impl AsyncWrite + Unpin + Send,
    mut resizes: mpsc::UnboundedReceiver<(u16, u16)>,
    mut signals: Signals,
) -> Ended {
    let (mut sink, mut stream) = session.ws.split();
    let (mut sealer, mut opener) = (session.sealer, session.opener);
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let credit = std::sync::Arc::new(Semaphore::new(WINDOW as usize));
    let reader_credit = credit.clone();
    let reader_tx = tx.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let n = match input.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = reader_tx.send(Frame::new(0, Kind::StdinEof, Vec::new()));
                    break;
                }
                Ok(n) => n,
            };
            match reader_credit.acquire_many(n as u32).await {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
            if reader_tx
                .send(Frame::new(0, Kind::Stdin, seal(&mut sealer, &buf[..n])))
                .is_err()
            {
                break;
            }
        }
    });
    let resize_tx = tx.clone();
    let resizer = tokio::spawn(async move {
        while let Some((c, r)) = resizes.recv().await {
            if resize_tx.send(Frame::resize(0, c, r)).is_err() {
                break;
            }
        }
    });
    let credit_tx = tx;
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if sink.send(Message::Binary(f.encode().into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut ended = Ended {
        code: None,
        reason: Some("the connection to the orchestrator closed".into()),
        signal: None,
    };
    let mut last_interrupt: Option<tokio::time::Instant> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let grace = closing.map(|t| t + CLOSE_GRACE);
        let msg = tokio::select! {
            m = stream.next() => m,
            Some(sig) = signals.rx.recv() => {
                ended.signal = Some(sig);
                let now = tokio::time::Instant::now();
                let twice = sig == Signal::Int
                    && last_interrupt.is_some_and(|t| now.duration_since(t) < DOUBLE_INTERRUPT);
                if sig == Signal::Int {
                    last_interrupt = Some(now);
                }
                let frame = if twice {
                    Frame::new(0, Kind::Close, b"interrupted twice at the client".to_vec())
                } else if signals.forwarded {
                    Frame::new(0, Kind::Signal, sig.name().as_bytes().to_vec())
                } else {
                    let why = format!("{sig} at the client; the site cannot forward signals");
                    Frame::new(0, Kind::Close, why.into_bytes())
                };
                if frame.kind == Kind::Close {
                    closing.get_or_insert(now);
                }
                let _ = credit_tx.send(frame);
                continue;
            }
            _ = tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)), if grace.is_some() => {
                ended.reason = Some("the session did not end after it was closed".into());
                break;
            }
        };
        let Some(msg) = msg else { break };
        let bytes = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(mut f) = Frame::decode(&bytes) else {
            break;
        };
        if let Err(e) = unseal(&mut opener, &mut f) {
            let why = e.to_string();
            let _ = credit_tx.send(Frame::new(0, Kind::Close, why.clone().into_bytes()));
            ended.reason = Some(why);
            break;
        }
        match f.kind {
            Kind::Stdout | Kind::Stderr => {
                let out: &mut (dyn AsyncWrite + Unpin + Send) = if f.kind == Kind::Stdout {
                    &mut stdout
                } else {
                    &mut stderr
                };
                if out.write_all(&f.payload).await.is_err() {
                    let _ = credit_tx.send(Frame::new(
                        0,
                        Kind::Close,
                        b"the client's output closed".to_vec(),
                    ));
                    continue;
                }
                let _ = out.flush().await;
                let _ = credit_tx.send(Frame::credit(0, f.payload.len() as u32));
            }
            Kind::Credit => {
                if let Ok(n) = f.credit_value() {
                    credit.add_permits(n as usize);
                }
            }
            Kind::Exit => {
                let e: Exit = f.parse().unwrap_or_default();
                ended.code = e.code;
                ended.reason = e.reason;
                break;
            }
            // A request the session refused (a signal); the session goes on, unless the
            // site's backend cannot deliver signals at all: then the signal closes it.
            Kind::Refused => {
                if let Ok(r) = f.parse::<Refusal>() {
                    let line = format!("basho: {} ({})\r\n", r.message, r.code);
                    let _ = stderr.write_all(line.as_bytes()).await;
                    let _ = stderr.flush().await;
                    if r.code == "unsupported"
                        && let Some(sig) = ended.signal
                    {
                        let why = format!("{sig} at the client; the site cannot deliver it");
                        let _ = credit_tx.send(Frame::new(0, Kind::Close, why.into_bytes()));
                        closing.get_or_insert_with(tokio::time::Instant::now);
                    }
                }
            }
            _ => {}
        }
    }
    drop(credit_tx);
    reader.abort();
    resizer.abort();
    credit.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    ended
}

fn finish(ended: Ended) -> Result<(), Error> {
    match (ended.code, ended.reason) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(Error::Exited(c)),
        // Closed after a signal at the client: like a shell, 128 + the signal's number.
        (None, reason) if ended.signal.is_some() => {
            let sig = ended.signal.expect("checked");
            if let Some(reason) = reason {
                eprintln!("basho: the session ended: {reason}");
            }
            Err(Error::Exited(128 + i64::from(sig.number())))
        }
        (None, reason) => Err(Error::Session(format!(
            "the session ended: {}",
            reason.unwrap_or_else(|| "no reason given".into())
        ))),
    }
}

/// `basho exec`: runs the command and exits with its exit code; stdout and stderr stay apart.
pub async fn exec(a: ExecArgs) -> Result<(), Error> {
    let spec = SessionSpec {
        tty: a.tty,
        break_glass: a.break_glass,
        ..SessionSpec::exec(a.argv)
    };
    // Caught from the start: one that arrives while the session opens ends basho as it would
    // have ended it uncaught (the orchestrator then ends whatever the agent started).
    let mut caught = (!a.tty).then(catch_signals);
    let session = match caught.as_mut() {
        Some(rx) => tokio::select! {
            r = connect(&a.client, &a.workspace, &spec, &a.proof) => r?,
            Some(sig) = rx.recv() => return Err(Error::Exited(128 + i64::from(sig.number()))),
        },
        None => connect(&a.client, &a.workspace, &spec, &a.proof).await?,
    };
    let forwarded = session.ready.signals();
    let (_keep, resizes) = mpsc::unbounded_channel();
    let ended = if a.tty {
        pump(
            session,
            tokio::io::stdin(),
            tokio::io::stdout(),
            tokio::io::stderr(),
            resizes,
            Signals::none(),
        )
        .await
    } else {
        let signals = Signals {
            rx: caught.expect("caught without a terminal"),
            forwarded,
        };
        // Like `docker exec` without `-i`... but a pipe is worth forwarding.
        pump(
            session,
            stdin_unless_terminal(),
            tokio::io::stdout(),
            tokio::io::stderr(),
            resizes,
            signals,
        )
        .await
    };
    finish(ended)
}

/// Standard input when it is a pipe or a file; nothing when it is a terminal, so a command that
/// does not read input never waits for the user.
fn stdin_unless_terminal() -> Box<dyn AsyncRead + Unpin + Send> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        Box::new(tokio::io::empty())
    } else {
        Box::new(tokio::io::stdin())
    }
}

/// The terminal's size from `stty size`, as `(cols, rows)`.
fn terminal_size() -> Option<(u16, u16)> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let rows = it.next()?.parse().ok()?;
    let cols = it.next()?.parse().ok()?;
    Some((cols, rows))
}

fn stty(args: &[&str]) -> Option<String> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .args(args)
        .stdin(tty)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `basho shell`: a terminal in the workspace. The local terminal is put in raw mode, so keys
/// (Ctrl-C, Ctrl-Z, Ctrl-D) reach the remote terminal, which turns them into signals; window
/// size changes follow.
pub async fn shell(a: ShellArgs) -> Result<(), Error> {
    use std::io::IsTerminal as _;
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let spec = SessionSpec {
        tty: true,
        cols,
        rows,
        break_glass: a.break_glass,
        ..SessionSpec::exec(vec![a.shell.clone(), "-i".into()])
    };
    let session = connect(&a.client, &a.workspace, &spec, &a.proof).await?;
    if session.ready.recording.is_some() {
        eprintln!("basho: the site records this session");
    }
    let saved = if std::io::stdin().is_terminal() {
        let saved = stty(&["-g"]);
        stty(&["raw", "-echo"]);
        saved
    } else {
        None
    };
    let (tx, resizes) = mpsc::unbounded_channel();
    let _ = tx.send((cols, rows));
    let winch = tokio::spawn(async move {
        let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            if let Some(size) = terminal_size()
                && tx.send(size).is_err()
            {
                break;
            }
        }
    });
    let ended = pump(
        session,
        tokio::io::stdin(),
        tokio::io::stdout(),
        tokio::io::stderr(),
        resizes,
        Signals::none(),
    )
    .await;
    winch.abort();
    if let Some(saved) = saved {
        stty(&[&saved]);
    }
    finish(ended)
}

/// Parses `LOCAL:REMOTE`.
pub fn parse_ports(s: &str) -> Result<(u16, u16), Error> {
    let bad = || {
        Error::Usage(format!(
            "{s:?} is not LOCAL:REMOTE (two port numbers, e.g. 8888:8888)"
        ))
    };
    let (l, r) = s.split_once(':').ok_or_else(bad)?;
    let l: u16 = l.parse().map_err(|_| bad())?;
    let r: u16 = r.parse().map_err(|_| bad())?;
    if r == 0 {
        return Err(bad());
    }
    Ok((l, r))
}

/// `basho port-forward`: every connection to 127.0.0.1:LOCAL becomes a session that relays it to
/// 127.0.0.1:REMOTE inside the workspace, until interrupted.
pub async fn port_forward(a: PortForwardArgs) -> Result<(), Error> {
    let (local, remote) = parse_ports(&a.ports)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
        .await
        .map_err(|e| Error::Session(format!("cannot listen on 127.0.0.1:{local}: {e}")))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::Session(e.to_string()))?;
    println!(
        "forwarding {addr} -> {}:{remote} (inside the workspace); Ctrl-C ends",
        a.workspace
    );
    let spec = SessionSpec {
        kind: SessionKind::Forward,
        port: remote,
        break_glass: a.break_glass.clone(),
        ..SessionSpec::exec(Vec::<String>::new())
    };
    // One key and one proof for every connection: the site lets the proof open connections
    // to this port until it expires, each sealed by a handshake of its own with this key.
    let sealing =
        std::sync::Arc::new(Sealing::prepare(&a.client, &a.workspace, &Pins::user()?).await?);
    let mut spec = spec;
    spec.proof = a.proof.obtain(&a.workspace, &sealing.seed()).await?;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Ok((conn, peer)) = conn else { continue };
        let client = a.client.clone();
        let workspace = a.workspace.clone();
        let spec = spec.clone();
        let sealing = sealing.clone();
        tokio::spawn(async move {
            match sealing.open(&client, &workspace, &spec).await {
                Ok(session) => {
                    let (r, w) = conn.into_split();
                    let (_keep, resizes) = mpsc::unbounded_channel();
                    let ended =
                        pump(session, r, w, tokio::io::sink(), resizes, Signals::none()).await;
                    if let Some(reason) = ended.reason {
                        eprintln!("connection from {peer} ended: {reason}");
                    }
                }
                Err(e) => eprintln!("connection from {peer}: {e}"),
            }
        });
    }
}
