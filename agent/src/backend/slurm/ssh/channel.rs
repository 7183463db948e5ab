//! One SSH channel held open for an interactive session: its input, its two output streams, its
//! terminal size and its exit status, bridged from libssh2 to async code.
//!
//! libssh2 serialises every call on a session, so a blocking read would hold up the writes and
//! resizes of the same channel. The channel is therefore driven by one dedicated thread with the
//! session in non-blocking mode: it applies what the async side asks (input, end of input, a
//! resize, close), reads both streams, and otherwise sleeps on its inbox. A small task on the
//! runtime watches the session's socket (through a second handle on it, never reading from it)
//! and posts a wake-up to that inbox whenever the socket turns readable, so the thread neither
//! spins nor adds latency. The thread never touches the runtime, and the runtime never calls
//! libssh2.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh2::{Channel, Session};
use tokio::sync::{mpsc, oneshot};

use super::{Linked, POOL_SIZE, SshError, millis};
use crate::config::LoginNode;

/// What the async side asks of the channel's thread.
#[derive(Debug)]
pub enum Request {
    /// Bytes for the remote process's standard input.
    Input(Vec<u8>),
    /// End of standard input, once what was sent before is written.
    Eof,
    /// A new terminal size, `cols × rows`.
    Resize(u16, u16),
    /// Close the channel now.
    Close,
    /// The socket turned readable (from the watcher task).
    Readable,
}

/// A chunk of output: `0` standard output (everything, with a terminal), `1` standard error.
pub type Chunk = (u8, Vec<u8>);

/// An open interactive channel.
pub struct Interactive {
    /// Requests to its thread. The watcher holds a sender too, so dropping this one does not
    /// close the channel: send [`Request::Close`].
    pub requests: std_mpsc::Sender<Request>,
    /// Its output, in order per stream; ends when the remote command has exited (its status is
    /// then in `exit`) or the channel failed or was closed.
    pub output: mpsc::Receiver<Chunk>,
    /// The remote command's exit status, once known: its code, or 128 + the signal number
    /// when the command was killed by a signal.
    pub exit: Arc<Mutex<Option<i64>>>,
}

/// How long the thread sleeps when nothing happens (a safety net: the watcher wakes it), and
/// when input waits for the peer's window to open.
const IDLE_WAIT: Duration = Duration::from_millis(250);
const BUSY_WAIT: Duration = Duration::from_millis(5);
/// Output chunks in flight to the async side before the thread waits for it.
const OUTPUT_DEPTH: usize = 32;

/// Starts `command` on a new channel of `sess` (with a terminal of `cols × rows` when `pty`),
/// then hands the channel to its own thread. `idle` gets the session back when the command
/// ended cleanly and the pool has room.
pub(super) async fn open(
    linked: Linked,
    command: String,
    pty: Option<(u16, u16)>,
    cfg: Arc<LoginNode>,
    idle: Arc<Mutex<Vec<Linked>>>,
) -> Result<Interactive, SshError> {
    let where_ = format!("{}:{}", cfg.host, cfg.port);
    let Linked { sess, sock } = linked;
    let watched = sock
        .try_clone()
        .and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(s)
        })
        .map_err(|e| SshError::Unreachable(format!("{where_}: cannot watch the socket: {e}")))?;
    let (sess, ch) = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(cfg.command_timeout_s.max(1));
        sess.set_blocking(true);
        sess.set_timeout(millis(timeout));
        let lost = |e: ssh2::Error| SshError::Unreachable(format!("{where_}: {e}"));
        let mut ch = sess.channel_session().map_err(lost)?;
        if let Some((cols, rows)) = pty {
            ch.request_pty(
                "xterm-256color",
                None,
                Some((u32::from(cols.max(1)), u32::from(rows.max(1)), 0, 0)),
            )
            .map_err(lost)?;
        }
        ch.exec(&command).map_err(lost)?;
        Ok::<_, SshError>((sess, ch))
    })
    .await
    .map_err(|e| SshError::Unreachable(format!("ssh task failed: {e}")))??;

    let (req_tx, req_rx) = std_mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_DEPTH);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let exit = Arc::new(Mutex::new(None));
    crate::spawn_in_span(watch(watched, req_tx.clone(), stop_rx));
    let thread_exit = exit.clone();
    std::thread::Builder::new()
        .name("slurm-session".into())
        .spawn(move || {
            let pump = Pump {
                ch,
                requests: req_rx,
                output: out_tx,
                exit: thread_exit,
            };
            let clean = pump.run(&sess);
            drop(stop_tx);
            if clean {
                sess.set_blocking(true);
                let mut pool = idle.lock().expect("pool lock");
                if pool.len() < POOL_SIZE {
                    pool.push(Linked { sess, sock });
                }
            }
        })
        .map_err(|e| SshError::Unreachable(format!("cannot start a session thread: {e}")))?;
    Ok(Interactive {
        requests: req_tx,
        output: out_rx,
        exit,
    })
}

/// Posts [`Request::Readable`] each time the socket turns readable, until `stop` resolves or
/// the thread has gone. It never reads: it clears the readiness it has reported, and libssh2
/// on the thread does the reading.
async fn watch(
    sock: tokio::net::TcpStream,
    tx: std_mpsc::Sender<Request>,
    mut stop: oneshot::Receiver<()>,
) {
    let clear = || Err::<(), _>(std::io::Error::from(ErrorKind::WouldBlock));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            ready = sock.readable() => {
                if ready.is_err() || tx.send(Request::Readable).is_err() {
                    return;
                }
                // The thread reads after this notice, so whatever is in the socket now is
                // seen; anything later raises readiness again.
                let _ = sock.try_io(tokio::io::Interest::READABLE, clear);
            }
        }
    }
}

/// The thread's side of one channel.
struct Pump {
    ch: Channel,
    requests: std_mpsc::Receiver<Request>,
    output: mpsc::Sender<Chunk>,
    exit: Arc<Mutex<Option<i64>>>,
}

/// What the thread still has to do for the async side.
#[derive(Default)]
struct Pending {
    input: VecDeque<u8>,
    eof: bool,
    eof_sent: bool,
    resize: Option<(u16, u16)>,
    close: bool,
}

impl Pending {
    fn apply(&mut self, r: Request) {
        match r {
            Request::Input(b) if !self.eof => self.input.extend(b),
            Request::Input(_) | Request::Readable => {}
            Request::Eof => self.eof = true,
            Request::Resize(c, r) => self.resize = Some((c, r)),
            Request::Close => self.close = true,
        }
    }

    fn busy(&self) -> bool {
        !self.input.is_empty() || (self.eof && !self.eof_sent) || self.resize.is_some()
    }
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(-37) // LIBSSH2_ERROR_EAGAIN
}

impl Pump {
    /// Runs until the command has exited, the channel failed or was closed, or nobody listens
    /// any more. True when the session is fit to be reused.
    fn run(mut self, sess: &Session) -> bool {
        sess.set_blocking(false);
        let mut p = Pending::default();
        let mut open = [true, true];
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            loop {
                match self.requests.try_recv() {
                    Ok(r) => p.apply(r),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    // Nobody holds the session any more.
                    Err(std_mpsc::TryRecvError::Disconnected) => p.close = true,
                }
                if p.close {
                    break;
                }
            }
            if p.close {
                let _ = self.ch.close();
                return false;
            }
            let mut progress = false;
            if let Some((cols, rows)) = p.resize {
                match self
                    .ch
                    .request_pty_size(u32::from(cols), u32::from(rows), None, None)
                {
                    Err(e) if would_block(&e) => {}
                    _ => {
                        p.resize = None;
                        progress = true;
                    }
                }
            }
            while !p.input.is_empty() {
                let (head, _) = p.input.as_slices();
                match self.ch.write(head) {
                    Ok(0) => break,
                    Ok(n) => {
                        p.input.drain(..n);
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // The remote side closed its input: what is left has nowhere to go.
                    Err(_) => p.input.clear(),
                }
            }
            if p.eof && !p.eof_sent && p.input.is_empty() {
                match self.ch.send_eof() {
                    Err(e) if would_block(&e) => {}
                    _ => {
                        p.eof_sent = true;
                        progress = true;
                    }
                }
            }
            for (id, is_open) in open.iter_mut().enumerate() {
                while *is_open {
                    match self.ch.stream(id as i32).read(&mut buf) {
                        Ok(0) if self.ch.eof() => *is_open = false,
                        Ok(0) => break,
                        Ok(n) => {
                            progress = true;
                            if self
                                .output
                                .blocking_send((id as u8, buf[..n].to_vec()))
                                .is_err()
                            {
                                let _ = self.ch.close();
                                return false;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "interactive channel read failed");
                            return false;
                        }
                    }
                }
            }
            if open == [false, false] {
                match self.ch.wait_close() {
                    Err(e) if would_block(&e) => {}
                    Err(_) => return false,
                    Ok(()) => {
                        *self.exit.lock().expect("exit lock") = Some(self.status());
                        return true;
                    }
                }
            }
            let _ = sess.keepalive_send();
            if !progress {
                let wait = if p.busy() { BUSY_WAIT } else { IDLE_WAIT };
                match self.requests.recv_timeout(wait) {
                    Ok(r) => p.apply(r),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => p.close = true,
                }
            }
        }
    }

    /// The command's exit code, or 128 + its signal's number when a signal ended it.
    fn status(&self) -> i64 {
        let code = self.ch.exit_status().unwrap_or(255);
        let signal = self.ch.exit_signal().ok().and_then(|s| s.exit_signal);
        match signal {
            Some(name) => 128 + signal_number(&name),
            None => i64::from(code),
        }
    }
}

/// The number of a signal named as SSH names them (`KILL`, `TERM`, …); 127 when unknown, so an
/// unknown signal still reads as one (255).
fn signal_number(name: &str) -> i64 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 127,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accumulate_until_the_thread_acts() {
        let mut p = Pending::default();
        p.apply(Request::Input(b"ab".to_vec()));
        p.apply(Request::Resize(80, 24));
        p.apply(Request::Input(b"c".to_vec()));
        p.apply(Request::Eof);
        p.apply(Request::Input(b"late".to_vec()));
        assert_eq!(p.input.iter().copied().collect::<Vec<_>>(), b"abc");
        assert_eq!(p.resize, Some((80, 24)));
        assert!(p.eof && p.busy() && !p.close);
        p.apply(Request::Close);
        assert!(p.close);
    }

    #[test]
    fn signals_read_as_shells_report_them() {
        assert_eq!(128 + signal_number("KILL"), 137);
        assert_eq!(128 + signal_number("TERM"), 143);
        assert_eq!(128 + signal_number("RTMIN+3"), 255);
    }
}
