//! One interactive session at the agent: the backend's process, its output pumped to the tunnel
//! against the client's credit, its input written as it comes (credit returned once written),
//! signals from the client delivered to it, the site's limits, and, where the site records
//! sessions, its recording. Whatever ends the session (the process, the client, a limit, the
//! tunnel, a required recording that fails) the process and everything it started is killed
//! before the final `Exit` frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use basho_core::e2e::{Accepted, Channel, Sealer};
use basho_core::tunnel::{
    Exit, FEATURE_SIGNAL, Frame, Kind, MAX_CHUNK, Open, Ready, Refusal, SessionKind, Signal, WINDOW,
};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::SessionsConfig;
use super::recording::{Event, Recorder, Recording};
use crate::backend::exec::{ExecControl, ExecOutput, ExecRequest};
use crate::backend::{Backend, BackendError};

pub(super) struct Session {
    pub(super) id: u32,
    pub(super) open: Open,
    /// What the site verified before opening it, for the `Ready`.
    pub(super) proven: Option<String>,
    /// The end-to-end handshake the site read, answered in the `Ready`; none for a session in
    /// clear.
    pub(super) accepted: Option<Accepted>,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) tx: mpsc::Sender<Frame>,
    pub(super) limits: SessionsConfig,
    pub(super) cancel: CancellationToken,
}

/// The command a session runs: the client's argv, or the loopback relay of a port-forward
/// (busybox or netcat `nc` inside the image).
fn request(open: &Open) -> Result<ExecRequest, String> {
    let spec = &open.spec;
    match spec.kind {
        SessionKind::Exec if spec.argv.is_empty() => Err("an empty command".into()),
        SessionKind::Exec => Ok(ExecRequest {
            argv: spec.argv.clone(),
            tty: spec.tty,
            cols: spec.cols,
            rows: spec.rows,
        }),
        SessionKind::Forward if spec.port == 0 => Err("port 0 cannot be forwarded".into()),
        SessionKind::Forward => Ok(ExecRequest {
            argv: vec!["nc".into(), "127.0.0.1".into(), spec.port.to_string()],
            tty: false,
            cols: 0,
            rows: 0,
        }),
    }
}

fn refusal(e: &BackendError) -> Refusal {
    let code = match e {
        BackendError::Unsupported(_) => "unsupported",
        BackendError::Refused { .. } => "not_running",
        BackendError::Unavailable { .. } => "backend_unavailable",
    };
    Refusal {
        code: code.into(),
        message: e.to_string(),
    }
}

impl Session {
    pub(super) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Frame>) {
        let id = self.id;
        let req = match request(&self.open) {
            Ok(r) => r,
            Err(why) => {
                let r = Refusal {
                    code: "invalid".into(),
                    message: why,
                };
                let _ = self.tx.send(Frame::json(id, Kind::Refused, &r)).await;
                return;
            }
        };
        let io = match self.backend.exec(&self.open.workspace, &req).await {
            Ok(io) => io,
            Err(e) => {
                info!(error = %e, "session refused");
                let _ = self
                    .tx
                    .send(Frame::json(id, Kind::Refused, &refusal(&e)))
                    .await;
                return;
            }
        };
        // Port-forwards carry a protocol's bytes, not a terminal's: they are not recorded.
        let recording = match (&self.limits.recording_dir, self.open.spec.kind) {
            (Some(dir), SessionKind::Exec) => match Recording::start(dir, &self.open, id).await {
                Ok(r) => Some(r),
                Err(e) if self.limits.recording_required => {
                    warn!(error = %e, "cannot record the session; refusing it (recording_required)");
                    let _ = io.control.kill().await;
                    let r = Refusal {
                        code: "recording_failed".into(),
                        message: format!(
                            "the site records every session and cannot record this one ({e}); \
                             retry later or tell the site's admin"
                        ),
                    };
                    let _ = self.tx.send(Frame::json(id, Kind::Refused, &r)).await;
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot record the session; it runs unrecorded");
                    None
                }
            },
            _ => None,
        };
        let (handshake, channel) = match self.accepted.take().map(Accepted::answer) {
            None => (None, None),
            Some(Ok((answer, channel))) => (Some(answer), Some(channel)),
            Some(Err(e)) => {
                let _ = io.control.kill().await;
                let r = Refusal {
                    code: "handshake_refused".into(),
                    message: e.to_string(),
                };
                let _ = self.tx.send(Frame::json(id, Kind::Refused, &r)).await;
                return;
            }
        };
        let (sealer, mut opener) = channel.map(Channel::split).unzip();
        let recorder = recording.as_ref().map(Recording::recorder);
        let recording_failed = recording.as_ref().map(Recording::failed);
        info!(kind = ?self.open.spec.kind, tty = req.tty,
            recording = ?recording.as_ref().map(|r| r.path.display().to_string()), "session started");
        let ready = Ready {
            features: vec![FEATURE_SIGNAL.into()],
            recording: recording.as_ref().map(|r| r.path.display().to_string()),
            proven: self.proven.clone(),
            handshake,
        };
        let _ = self.tx.send(Frame::json(id, Kind::Ready, &ready)).await;
        let started = Instant::now();
        let activity = Arc::new(AtomicU64::new(0));
        let credit = Arc::new(Semaphore::new(WINDOW as usize));
        let mut pump = crate::spawn_in_span(pump(
            id,
            io.output,
            credit.clone(),
            self.tx.clone(),
            activity.clone(),
            started,
            recorder.clone(),
            sealer,
            self.limits
                .exec_output_limit_bytes
                .filter(|_| self.open.spec.kind == basho_core::tunnel::SessionKind::Exec),
        ));
        // Stdin bytes received and not yet written: never more than the credit granted.
        let pending = Arc::new(AtomicI64::new(0));
        let (in_tx, in_rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
        let mut writer = crate::spawn_in_span(write_input(
            id,
            io.input,
            in_rx,
            self.tx.clone(),
            pending.clone(),
        ));
        let control = io.control;
        let max = tokio::time::sleep(Duration::from_secs(self.limits.max_session_s));
        tokio::pin!(max);
        let idle = Duration::from_secs(self.limits.idle_timeout_s);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let input_recorder = recorder.clone().filter(|_| self.limits.record_input);
        let must_record = recording_failed
            .clone()
            .filter(|_| self.limits.recording_required)
            .unwrap_or_default();
        let reason: Option<String> = loop {
            tokio::select! {
                _ = must_record.cancelled() => break Some("the session's recording failed and the site requires one".into()),
                _ = self.cancel.cancelled() => break Some("the tunnel to the orchestrator closed".into()),
                _ = &mut max => break Some("the site's maximum session length was reached".into()),
                _ = tick.tick() => {
                    let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                    if started.elapsed().saturating_sub(last) >= idle {
                        break Some("idle timeout".into());
                    }
                }
                ended = &mut pump => break ended.ok().flatten(),
                f = inbox.recv() => {
                    let Some(f) = f else { break Some("the tunnel closed".into()) };
                    match f.kind {
                        Kind::Stdin => {
                            let payload = match opener.as_mut().map(|o| o.open(&f.payload)) {
                                None => f.payload,
                                Some(Ok(plain)) => plain,
                                Some(Err(e)) => break Some(e.to_string()),
                            };
                            let n = payload.len() as i64;
                            if pending.fetch_add(n, Ordering::AcqRel) + n > i64::from(WINDOW) {
                                break Some("the client sent input beyond its credit".into());
                            }
                            activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            if let Some(r) = &input_recorder {
                                r.record(Event::Input(payload.clone())).await;
                            }
                            let _ = in_tx.send(Some(payload));
                        }
                        Kind::StdinEof => {
                            let _ = in_tx.send(None);
                        }
                        Kind::Resize => {
                            if let Ok((cols, rows)) = f.size() {
                                let _ = control.resize(cols, rows).await;
                                if let Some(r) = &recorder {
                                    r.record(Event::Resize(cols, rows)).await;
                                }
                            }
                        }
                        Kind::Credit => {
                            if let Ok(n) = f.credit_value() {
                                credit.add_permits(n as usize);
                            }
                        }
                        Kind::Signal => {
                            deliver(id, &f.payload, &*control, &self.tx, recorder.as_ref()).await;
                        }
                        Kind::Close => {
                            let why = String::from_utf8_lossy(&f.payload).into_owned();
                            break Some(if why.is_empty() { "closed by the client".into() } else { why });
                        }
                        _ => {}
                    }
                }
            }
        };
        let exit = match reason {
            None => {
                // The output ended: the process exited; the engine may take a moment to say how.
                let mut code = None;
                for _ in 0..50 {
                    match control.exit_code().await {
                        Ok(Some(c)) => {
                            code = Some(c);
                            break;
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Err(_) => break,
                    }
                }
                if code.is_none() {
                    let _ = control.kill().await;
                }
                Exit {
                    code,
                    ..Exit::default()
                }
            }
            Some(reason) => {
                // Close the exec's stream before killing: the engine finishes an exec only once
                // its output is delivered, and a kill exec waits behind that on the same container.
                // (A pump that ended the session itself, at the output limit, is done already.)
                let pump_done = pump.is_finished();
                pump.abort();
                writer.abort();
                if !pump_done {
                    let _ = (&mut pump).await;
                }
                let _ = (&mut writer).await;
                if let Err(e) = control.kill().await {
                    info!(error = %e, "could not end the session's processes");
                }
                Exit {
                    reason: Some(reason),
                    ..Exit::default()
                }
            }
        };
        writer.abort();
        drop(pump);
        let mut exit = exit;
        if let Some(rec) = recording {
            if let Some(r) = &recorder {
                let end = match (&exit.code, &exit.reason) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(why)) => format!("ended: {why}"),
                    (None, None) => "ended".into(),
                };
                r.record(Event::Marker(end)).await;
            }
            drop(recorder);
            drop(input_recorder);
            exit.recording = Some(rec.path.display().to_string());
            let done = rec.finish().await;
            exit.recording_error = done.error;
            exit.recording_sha256 = done.sha256;
        }
        info!(code = ?exit.code, reason = ?exit.reason, "session ended");
        let _ = self.tx.send(Frame::json(id, Kind::Exit, &exit)).await;
    }
}

/// Sends the process's output, `MAX_CHUNK` at a time, each chunk only against credit (and
/// sealed, in an encrypted session).
#[allow(clippy::too_many_arguments)]
async fn pump(
    id: u32,
    mut output: futures::stream::BoxStream<'static, Result<ExecOutput, BackendError>>,
    credit: Arc<Semaphore>,
    tx: mpsc::Sender<Frame>,
    activity: Arc<AtomicU64>,
    started: Instant,
    recorder: Option<Recorder>,
    mut sealer: Option<Sealer>,
    limit: Option<u64>,
) -> Option<String> {
    let mut sent = 0u64;
    while let Some(item) = output.next().await {
        let (kind, bytes) = match item {
            Ok(ExecOutput::Stdout(b)) => (Kind::Stdout, b),
            Ok(ExecOutput::Stderr(b)) => (Kind::Stderr, b),
            Err(e) => {
                debug!(error = %e, "session output failed");
                break;
            }
        };
        if let Some(r) = &recorder {
            let ev = if kind == Kind::Stdout {
                Event::Stdout(bytes.clone())
            } else {
                Event::Stderr(bytes.clone())
            };
            r.record(ev).await;
        }
        let room = limit.map_or(u64::MAX, |l| l.saturating_sub(sent));
        let over = bytes.len() as u64 > room;
        let bytes = &bytes[..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        for chunk in bytes.chunks(MAX_CHUNK) {
            match credit.acquire_many(chunk.len() as u32).await {
                Ok(p) => p.forget(),
                Err(_) => return None,
            }
            sent += chunk.len() as u64;
            activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let payload = match sealer.as_mut() {
                Some(s) => s.seal(chunk),
                None => chunk.to_vec(),
            };
            if tx.send(Frame::new(id, kind, payload)).await.is_err() {
                return None;
            }
        }
        if over {
            return Some(format!(
                "the site's exec output limit ({} bytes, sessions.exec_output_limit_bytes) was \
                 reached; results leave through the airlock (basho results request)",
                limit.unwrap_or_default()
            ));
        }
    }
    None
}

/// Delivers the signal a `Signal` frame names; a name off the allow-list or a backend that
/// cannot is answered with a `Refused` frame, and the session goes on.
async fn deliver(
    id: u32,
    payload: &[u8],
    control: &dyn ExecControl,
    tx: &mpsc::Sender<Frame>,
    recorder: Option<&Recorder>,
) {
    let refuse = |code: &str, message: String| {
        Frame::json(
            id,
            Kind::Refused,
            &Refusal {
                code: code.into(),
                message,
            },
        )
    };
    let sig = match Signal::parse(&String::from_utf8_lossy(payload)) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(refuse("invalid_signal", e.to_string())).await;
            return;
        }
    };
    match control.signal(sig).await {
        Ok(()) => {
            info!(signal = sig.name(), "signal delivered");
            if let Some(r) = recorder {
                r.record(Event::Marker(format!("signal {}", sig.name())))
                    .await;
            }
        }
        Err(e) => {
            info!(signal = sig.name(), error = %e, "signal not delivered");
            let code = refusal(&e).code;
            let _ = tx
                .send(refuse(&code, format!("{sig} was not delivered: {e}")))
                .await;
        }
    }
}

/// Writes input to the process and returns credit for each write; `None` closes its stdin.
async fn write_input(
    id: u32,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    tx: mpsc::Sender<Frame>,
    pending: Arc<AtomicI64>,
) {
    while let Some(item) = rx.recv().await {
        match item {
            Some(bytes) => {
                if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                    break;
                }
                pending.fetch_sub(bytes.len() as i64, Ordering::AcqRel);
                if tx
                    .send(Frame::credit(id, bytes.len() as u32))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            None => {
                let _ = input.shutdown().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use basho_core::Ident;
    use basho_core::tunnel::SessionSpec;

    use super::*;
    use crate::backend::fake::FakeBackend;

    fn open(kind: SessionKind, argv: &[&str], port: u16) -> Open {
        Open {
            workspace: "ws-1".into(),
            spec: SessionSpec {
                kind,
                port,
                ..SessionSpec::exec(argv.iter().copied())
            },
            actor: "researcher:alice".into(),
        }
    }

    #[test]
    fn a_forward_is_a_loopback_relay_and_argv_passes_unchanged() {
        let r = request(&open(SessionKind::Forward, &[], 8888)).unwrap();
        assert_eq!(r.argv, ["nc", "127.0.0.1", "8888"]);
        let hostile = ["sh", "-c", "$(id); rm -rf /"];
        let r = request(&open(SessionKind::Exec, &hostile, 0)).unwrap();
        assert_eq!(r.argv, hostile);
        assert!(request(&open(SessionKind::Exec, &[], 0)).is_err());
        assert!(request(&open(SessionKind::Forward, &[], 0)).is_err());
    }

    /// A control whose `signal` is the trait's default, or succeeds.
    struct Control {
        signals: bool,
    }

    #[async_trait::async_trait]
    impl ExecControl for Control {
        async fn resize(&self, _: u16, _: u16) -> Result<(), BackendError> {
            Ok(())
        }
        async fn exit_code(&self) -> Result<Option<i64>, BackendError> {
            Ok(None)
        }
        async fn kill(&self) -> Result<(), BackendError> {
            Ok(())
        }
        async fn signal(&self, sig: Signal) -> Result<(), BackendError> {
            if self.signals {
                Ok(())
            } else {
                Err(BackendError::Unsupported(format!("no {sig} here")))
            }
        }
    }

    #[tokio::test]
    async fn signals_off_the_list_or_undeliverable_are_refused_and_delivered_ones_marked() {
        let (tx, mut rx) = mpsc::channel(8);
        let yes = Control { signals: true };
        let no = Control { signals: false };
        deliver(3, b"STOP", &yes, &tx, None).await;
        let r: Refusal = rx.recv().await.unwrap().parse().unwrap();
        assert_eq!(r.code, "invalid_signal");
        assert!(r.message.contains("allowed:"), "{}", r.message);
        deliver(3, b"TERM", &no, &tx, None).await;
        let f = rx.recv().await.unwrap();
        assert_eq!((f.session, f.kind), (3, Kind::Refused));
        let r: Refusal = f.parse().unwrap();
        assert_eq!(r.code, "unsupported");
        assert!(r.message.contains("SIGTERM"), "{}", r.message);
        deliver(3, b"INT", &yes, &tx, None).await;
        assert!(rx.try_recv().is_err(), "a delivered signal needs no answer");
    }

    #[tokio::test]
    async fn a_backend_without_sessions_refuses_clearly() {
        let backend: Arc<dyn Backend> = Arc::new(FakeBackend::new(
            Ident::parse("sim").unwrap(),
            Duration::ZERO,
            0.0,
        ));
        let (tx, mut rx) = mpsc::channel(8);
        let (_in_tx, in_rx) = mpsc::unbounded_channel();
        Session {
            id: 7,
            open: open(SessionKind::Exec, &["id"], 0),
            proven: None,
            accepted: None,
            backend,
            tx,
            limits: SessionsConfig::default(),
            cancel: CancellationToken::new(),
        }
        .run(in_rx)
        .await;
        let f = rx.recv().await.unwrap();
        assert_eq!((f.session, f.kind), (7, Kind::Refused));
        let r: Refusal = f.parse().unwrap();
        assert_eq!(r.code, "unsupported");
        assert!(r.message.contains("fake backend"), "{}", r.message);
    }
}
