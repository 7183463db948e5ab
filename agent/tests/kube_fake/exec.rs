//! The fake API server's `pods/{name}/exec`: a WebSocket upgrade with the channel protocol of
//! the real API server (`v5.channel.k8s.io`, else `v4.channel.k8s.io`, in the client's order):
//! binary messages whose first byte is the channel, 0 stdin, 1 stdout, 2 stderr, 3 the exit
//! `Status` as JSON, 4 a terminal size (`{"Width":..,"Height":..}`), and in v5 `[255, 0]` to close
//! stdin. It checks the request like the API server (the pod exists and runs, the container is the
//! pod's, a command, at least one stream, not tty and stderr together) and answers its `Status`
//! errors before the upgrade.
//!
//! It is a fake: the command runs for real, but on the test host as the test's user, in the
//! fake's "container" directory (`FakeApi::container_dir`), not in a container: no namespaces, no
//! image, the host's `/tmp` and `/proc`. Like a container runtime it makes each exec a session
//! leader (`setsid`, with the terminal as controlling terminal under `tty`), runs a tty exec on a
//! pseudo-terminal it resizes, and does not end a process when the WebSocket closes (without a
//! tty the process sees stdin closed and its output unread; with one, the terminal hangs up). It
//! answers the status once the process has exited and its output is closed. Not modelled: SPDY
//! (`kubectl`'s POST upgrade), the kubelet's stream timeouts, `attach`, ephemeral containers.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Inner, error, gate};

/// The protocols the fake speaks, most capable first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// One exec request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSeen {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// `Sec-WebSocket-Protocol` as offered.
    pub offered: String,
    /// The protocol the fake chose.
    pub protocol: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

type Shared = State<Arc<Mutex<Inner>>>;

fn flag(q: &[(String, String)], key: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == key && matches!(v.as_str(), "true" | "1"))
}

pub(super) async fn exec(
    State(inner): Shared,
    Path((_ns, name)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Vec<(String, String)>>,
    method: Method,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let mut seen = ExecSeen {
        method: method.to_string(),
        uri: uri.to_string(),
        offered: offered.join(", "),
        protocol: String::new(),
        container: q
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.clone()),
        command: q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(&q, "stdin"),
        stdout: flag(&q, "stdout"),
        stderr: flag(&q, "stderr"),
        tty: flag(&q, "tty"),
    };
    let (dir, pod) = {
        let mut guard = inner.lock().unwrap();
        // A GET upgrade is authorized as `get` on pods/exec, and from Kubernetes 1.35 also as
        // `create` (the verb of the SPDY POST).
        let verb = if method == Method::POST {
            "create"
        } else {
            "get"
        };
        if let Err((code, message)) = gate(&mut guard, verb, "", "pods/exec") {
            guard.execs.push(seen);
            return error(code, &message);
        }
        if verb == "get" && ws.is_ok() {
            guard.requests.push(super::Request {
                verb: "create".into(),
                group: String::new(),
                resource: "pods/exec".into(),
            });
        }
        let pod = guard
            .objects
            .get("pods")
            .and_then(|p| p.get(&name))
            .cloned();
        (guard.dir.clone(), pod)
    };
    let record = |seen: ExecSeen| inner.lock().unwrap().execs.push(seen);
    let Some(pod) = pod else {
        record(seen);
        return error(404, &format!("pods \"{name}\" not found"));
    };
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let problem = match &seen.container {
        Some(c) if !containers.contains(&c.as_str()) => {
            Some(format!("container {c} is not valid for pod {name}"))
        }
        None if containers.len() != 1 => Some(format!(
            "a container name must be specified for pod {name}, choose one of: {containers:?}"
        )),
        _ if seen.command.is_empty() => {
            Some("you must specify at least one command for the container".into())
        }
        _ if !(seen.stdin || seen.stdout || seen.stderr) => {
            Some("you must specify at least 1 of stdin, stdout, stderr".into())
        }
        _ if seen.tty && seen.stderr => Some("tty and stderr cannot both be true".into()),
        _ if pod["status"]["phase"].as_str() != Some("Running") => Some(format!(
            "unable to upgrade connection: container not found (\"{}\")",
            containers.first().unwrap_or(&"")
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        record(seen);
        return error(400, &problem);
    }
    let Ok(mut ws) = ws else {
        record(seen);
        return error(
            400,
            "Upgrade request required (the fake API speaks only WebSocket)",
        );
    };
    let Some(protocol) = offered.iter().find(|p| PROTOCOLS.contains(&p.as_str())) else {
        record(seen);
        return error(400, "no supported channel protocol was offered");
    };
    seen.protocol = protocol.clone();
    ws.set_selected_protocol(HeaderValue::from_str(protocol).unwrap());
    let v5 = protocol == PROTOCOLS[0];
    record(seen.clone());
    ws.on_upgrade(move |socket| async move {
        if let Err(e) = run(socket, seen, dir, v5).await {
            eprintln!("kube_fake exec: {e}");
        }
    })
}

/// The session's process: pipes, or a pseudo-terminal.
enum Io {
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
    },
    Tty {
        master: Arc<AsyncFd<OwnedFd>>,
    },
}

fn status_of(code: Option<i32>, signal: Option<i32>) -> Value {
    // Container runtimes report a signalled exec as 128 + the signal, like a shell.
    let code = code.unwrap_or(128 + signal.unwrap_or(9));
    if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    }
}

fn found_in_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn chan(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// A pseudo-terminal: its non-blocking master and its slave.
fn pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    resize(&master, cols, rows)?;
    rustix::fs::fcntl_setfl(&master, OFlags::NONBLOCK)?;
    Ok((master, slave))
}

fn resize(master: &OwnedFd, cols: u16, rows: u16) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        master,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

async fn pty_read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| Ok(rustix::io::read(f.get_ref(), &mut *buf)?)) {
            Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                // Every slave is closed: the terminal's end of file.
                return Ok(0);
            }
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn pty_write(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        if let Ok(r) = guard.try_io(|f| Ok(rustix::io::write(f.get_ref(), data)?)) {
            data = &data[r?..];
        }
    }
    Ok(())
}

/// Runs the command and relays it over the WebSocket until it has exited.
async fn run(
    mut socket: WebSocket,
    seen: ExecSeen,
    dir: std::path::PathBuf,
    v5: bool,
) -> io::Result<()> {
    if !found_in_path(&seen.command[0]) {
        let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
            "message": format!("OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown", seen.command[0])});
        let _ = socket.send(chan(3, status.to_string().as_bytes())).await;
        let _ = socket.send(Message::Close(None)).await;
        return Ok(());
    }
    let mut cmd = tokio::process::Command::new("setsid");
    if seen.tty {
        cmd.arg("--ctty");
    }
    cmd.args(&seen.command).current_dir(&dir);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut readers = Vec::new();
    let (mut child, mut io) = if seen.tty {
        let (master, slave) = pty(80, 24)?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // Drop the command: the fake keeps no slave open, so the terminal ends with the process.
        drop(cmd);
        // The fd is owned by the AsyncFd and closed only when it is dropped, which is all the
        // deprecation is about (`register`, its replacement, is `unsafe`).
        #[allow(deprecated)]
        let master = Arc::new(AsyncFd::new(master)?);
        let m = master.clone();
        let tx = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = pty_read(&m, &mut buf).await {
                if n == 0 || tx.send(chan(1, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }));
        (child, Io::Tty { master })
    } else {
        cmd.stdin(if seen.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if seen.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if seen.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn()?;
        let streams: [(u8, Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>); 2] = [
            (1, child.stdout.take().map(|s| Box::new(s) as _)),
            (2, child.stderr.take().map(|s| Box::new(s) as _)),
        ];
        for (channel, stream) in streams {
            let Some(mut stream) = stream else { continue };
            let tx = out_tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || tx.send(chan(channel, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }));
        }
        let stdin = child.stdin.take();
        (child, Io::Pipes { stdin })
    };
    drop(out_tx);
    // The API server opens each stream's channel with an empty message.
    for (open, channel) in [(seen.stdout, 1u8), (seen.stderr && !seen.tty, 2)] {
        if open {
            socket
                .send(chan(channel, &[]))
                .await
                .map_err(io::Error::other)?;
        }
    }
    let mut output_open = true;
    let mut client_open = true;
    let exit = loop {
        tokio::select! {
            m = out_rx.recv(), if output_open => match m {
                Some(m) => {
                    if client_open && socket.send(m).await.is_err() {
                        client_open = false;
                    }
                }
                None => output_open = false,
            },
            m = socket.recv(), if client_open => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match (b[0], &mut io) {
                    (0, Io::Pipes { stdin }) => {
                        if let Some(s) = stdin && s.write_all(&b[1..]).await.is_err() {
                            *stdin = None;
                        }
                    }
                    (0, Io::Tty { master }) => { let _ = pty_write(master, &b[1..]).await; }
                    (4, Io::Tty { master }) => {
                        let size: Value = serde_json::from_slice(&b[1..]).unwrap_or_default();
                        let (w, h) = (size["Width"].as_u64(), size["Height"].as_u64());
                        if let (Some(w), Some(h)) = (w, h) {
                            let _ = resize(master.get_ref(), w as u16, h as u16);
                        }
                    }
                    (255, Io::Pipes { stdin }) if v5 && b.get(1) == Some(&0) => *stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away. A runtime does not end the process for that: it
                    // closes the process's stdin and stops reading its output (a terminal hangs
                    // up once its master is closed).
                    client_open = false;
                    if let Io::Pipes { stdin } = &mut io { *stdin = None; }
                    for r in &readers { r.abort(); }
                    if let Io::Tty { .. } = io { io = Io::Pipes { stdin: None }; }
                    out_rx.close();
                }
                Some(Ok(_)) => {}
            },
            status = child.wait(), if !output_open || !client_open => break status?,
        }
    };
    if client_open {
        let status = {
            use std::os::unix::process::ExitStatusExt;
            status_of(exit.code(), exit.signal())
        };
        let _ = socket.send(chan(3, status.to_string().as_bytes())).await;
        let _ = socket.send(Message::Close(None)).await;
    }
    Ok(())
}
