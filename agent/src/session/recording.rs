//! Session recordings at the site: each exec session (with or without a terminal) written as an
//! asciicast v2 file, `<recording_dir>/<workspace>/<started>-<session>.cast`, mode 0600, as the
//! session goes. [`Cast`] turns events into lines (pure, tested here); [`Recording`] owns the
//! file and a writer task that flushes at least once a second, so an agent that dies keeps
//! what was recorded up to the last second. A write error ends the recording, never silently:
//! the session learns of it through [`Recording::failed`], and the `Exit` frame reports it.
//! A recording written whole ends with the SHA-256 of its bytes, which the `Exit` frame carries
//! into the audit log: an auditor can tell later whether the file at the site was changed.

use basho_core::digest::hex;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basho_core::tunnel::Open;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often buffered events reach the file, at most.
const FLUSH: Duration = Duration::from_secs(1);
/// Events queued for the writer before the session waits for it.
const QUEUE: usize = 256;

/// Why the recording directory is unusable at start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingDirError {
    /// Not an absolute path.
    #[error("sessions.recording_dir {0} is not absolute; name the directory by absolute path")]
    NotAbsolute(PathBuf),
    /// Cannot be created, restricted to 0700 or written.
    #[error(
        "sessions.recording_dir {path}: {what}: {source}; create it for the agent's user, \
         or remove recording_dir to record nothing"
    )]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Makes sure `dir` is absolute, exists with mode 0700 and takes files; run at agent start.
pub async fn prepare(dir: &Path) -> Result<(), RecordingDirError> {
    use std::os::unix::fs::PermissionsExt as _;
    if !dir.is_absolute() {
        return Err(RecordingDirError::NotAbsolute(dir.to_owned()));
    }
    let unusable = |what, source| RecordingDirError::Unusable {
        path: dir.to_owned(),
        what,
        source,
    };
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .map_err(|e| unusable("cannot create it", e))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(|e| unusable("cannot restrict it to mode 0700", e))?;
    let probe = dir.join(format!(".basho-probe-{}", std::process::id()));
    tokio::fs::write(&probe, b"")
        .await
        .map_err(|e| unusable("cannot write in it", e))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}

/// Something that happened in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Standard output (with a terminal, everything).
    Stdout(Vec<u8>),
    /// Standard error; recorded as output too (asciicast v2 has one output stream), in the
    /// order the process wrote it.
    Stderr(Vec<u8>),
    /// Input from the client (only when the site records input).
    Input(Vec<u8>),
    /// The terminal's new size, `(cols, rows)`.
    Resize(u16, u16),
    /// A marker: a forwarded signal, the end of the session.
    Marker(String),
}

/// Bytes that may end inside a UTF-8 sequence; the incomplete tail waits for the next chunk.
#[derive(Debug, Default)]
struct Utf8Tail(Vec<u8>);

impl Utf8Tail {
    /// The text of `bytes` after what was held back, keeping an incomplete trailing sequence;
    /// invalid bytes become U+FFFD.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.0.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.0;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(ok).expect("valid prefix"));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        // An incomplete sequence at the end: wait for its other bytes.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        self.0 = rest.to_vec();
        out
    }

    /// Whatever is held back, as text (a sequence that never completed is U+FFFD).
    fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        s
    }
}

/// The header of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Terminal width (80 without a terminal).
    pub cols: u16,
    /// Terminal height (24 without a terminal).
    pub rows: u16,
    /// Unix time of the start, seconds.
    pub timestamp: i64,
    /// Whether the process had a terminal.
    pub tty: bool,
    /// `basho session <n> in <workspace> by <actor>`.
    pub title: String,
    /// The command as one line.
    pub command: String,
}

impl Header {
    /// The header of session `session` opened by `open`.
    pub fn for_open(open: &Open, session: u32, timestamp: i64) -> Header {
        let spec = &open.spec;
        let (cols, rows) = if spec.tty && spec.cols > 0 && spec.rows > 0 {
            (spec.cols, spec.rows)
        } else {
            (80, 24)
        };
        Header {
            cols,
            rows,
            timestamp,
            tty: spec.tty,
            title: format!(
                "basho session {session} in {} by {}",
                open.workspace, open.actor
            ),
            command: spec
                .argv
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// `a` as a shell word, for reading the recording's `command`, never for running it.
fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Turns a session's events into asciicast v2 lines, each ending in `\n`.
#[derive(Debug, Default)]
pub struct Cast {
    last: f64,
    stdout: Utf8Tail,
    stderr: Utf8Tail,
    input: Utf8Tail,
}

impl Cast {
    /// The header line: only fields of the v2 spec (who and where are in `title`).
    pub fn header(h: &Header) -> String {
        let mut v = json!({
            "version": 2,
            "width": h.cols,
            "height": h.rows,
            "timestamp": h.timestamp,
            "title": h.title,
            "command": h.command,
        });
        if h.tty {
            v["env"] = json!({"TERM": "xterm-256color"});
        }
        format!("{v}\n")
    }

    fn line(&mut self, at: Duration, code: &str, data: &str) -> String {
        // Seconds to the microsecond, never earlier than the event before.
        let t = ((at.as_secs_f64() * 1e6).round() / 1e6).max(self.last);
        self.last = t;
        format!("{}\n", json!([t, code, data]))
    }

    /// The line of `event` at `at` since the start; empty when nothing is complete yet (a chunk
    /// that is only the start of a UTF-8 sequence).
    pub fn event(&mut self, at: Duration, event: &Event) -> String {
        let (code, text) = match event {
            Event::Stdout(b) => ("o", self.stdout.push(b)),
            Event::Stderr(b) => ("o", self.stderr.push(b)),
            Event::Input(b) => ("i", self.input.push(b)),
            Event::Resize(c, r) => ("r", format!("{c}x{r}")),
            Event::Marker(m) => ("m", m.clone()),
        };
        if text.is_empty() && code != "m" {
            return String::new();
        }
        self.line(at, code, &text)
    }

    /// Lines for whatever bytes were still held back.
    pub fn finish(&mut self, at: Duration) -> String {
        let mut out = String::new();
        for (code, tail) in [("o", 0), ("o", 1), ("i", 2)] {
            let text = match tail {
                0 => self.stdout.finish(),
                1 => self.stderr.finish(),
                _ => self.input.finish(),
            };
            if !text.is_empty() {
                out.push_str(&self.line(at, code, &text));
            }
        }
        out
    }
}

/// A handle that records events; cheap to clone into the tasks of a session.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Duration, Event)>,
    started: Instant,
}

impl Recorder {
    /// Records `event` now. After a write error the event is dropped (the recording has ended).
    pub async fn record(&self, event: Event) {
        let _ = self.tx.send((self.started.elapsed(), event)).await;
    }
}

/// A recording in progress.
#[derive(Debug)]
pub struct Recording {
    /// Where it is written, site-local.
    pub path: PathBuf,
    recorder: Recorder,
    failed: CancellationToken,
    error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<Option<String>>,
}

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finished {
    /// The write error that ended it early, if any.
    pub error: Option<String>,
    /// The SHA-256 (hex) of the whole file, when it was written whole.
    pub sha256: Option<String>,
}

impl Recording {
    /// Creates `<dir>/<workspace>/<started>-<session>.cast` (0600, never over another file)
    /// and writes its header.
    pub async fn start(dir: &Path, open: &Open, session: u32) -> std::io::Result<Recording> {
        use std::os::unix::fs::PermissionsExt as _;
        let now = chrono::Utc::now();
        let ws_dir = dir.join(&open.workspace);
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ws_dir)
            .await?;
        tokio::fs::set_permissions(&ws_dir, std::fs::Permissions::from_mode(0o700)).await?;
        let stem = format!("{}-{session}", now.format("%Y%m%dT%H%M%S%.3fZ"));
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 {
                format!("{stem}.cast")
            } else {
                format!("{stem}.{n}.cast")
            };
            let path = ws_dir.join(name);
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut out = tokio::io::BufWriter::new(file);
        let header = Cast::header(&Header::for_open(open, session, now.timestamp()));
        out.write_all(header.as_bytes()).await?;
        let mut hasher = Sha256::new();
        hasher.update(header.as_bytes());
        out.flush().await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = CancellationToken::new();
        let error = Arc::new(Mutex::new(None));
        let started = Instant::now();
        let task = crate::spawn_in_span(write(
            out,
            hasher,
            rx,
            started,
            path.clone(),
            failed.clone(),
            error.clone(),
        ));
        Ok(Recording {
            path,
            recorder: Recorder { tx, started },
            failed,
            error,
            task,
        })
    }

    /// A handle for the session's tasks.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Cancelled when a write failed and the recording ended.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    /// Ends the recording once every [`Recorder`] is gone: the last bytes, a flush, a sync.
    pub async fn finish(self) -> Finished {
        drop(self.recorder);
        let sha256 = match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(digest)) => digest,
            Ok(Err(_)) => None,
            Err(_) => {
                warn!(path = %self.path.display(), "the session recording did not finish within 10 s");
                None
            }
        };
        Finished {
            error: self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            sha256,
        }
    }
}

/// The writer task: events to lines, flushed at least every [`FLUSH`] and at the end. Returns
/// the SHA-256 of everything written (`hasher` holds what came before), when all of it was.
async fn write(
    mut out: tokio::io::BufWriter<tokio::fs::File>,
    mut hasher: Sha256,
    mut rx: mpsc::Receiver<(Duration, Event)>,
    started: Instant,
    path: PathBuf,
    failed: CancellationToken,
    error: Arc<Mutex<Option<String>>>,
) -> Option<String> {
    let mut cast = Cast::default();
    let mut tick = tokio::time::interval(FLUSH);
    let mut dirty = false;
    let result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some((at, ev)) => {
                        let line = cast.event(at, &ev);
                        if !line.is_empty() {
                            out.write_all(line.as_bytes()).await?;
                            hasher.update(line.as_bytes());
                            dirty = true;
                        }
                    }
                    None => break,
                },
                _ = tick.tick(), if dirty => {
                    out.flush().await?;
                    dirty = false;
                }
            }
        }
        let last = cast.finish(started.elapsed());
        out.write_all(last.as_bytes()).await?;
        hasher.update(last.as_bytes());
        out.flush().await?;
        out.get_ref().sync_data().await
    }
    .await;
    match result {
        Ok(()) => Some(hex(&hasher.finalize())),
        Err(e) => {
            let msg = format!("writing {}: {e}", path.display());
            warn!(error = %e, path = %path.display(), "session recording failed; it ends here");
            *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
            failed.cancel();
            // Keep taking events so the session never waits on a recording that has ended.
            while rx.recv().await.is_some() {}
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use basho_core::tunnel::SessionSpec;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn parse(line: &str) -> serde_json::Value {
        assert!(line.ends_with('\n'), "{line:?}");
        serde_json::from_str(line.trim_end()).unwrap()
    }

    fn open(tty: bool) -> Open {
        Open {
            workspace: "ws-1".into(),
            spec: SessionSpec {
                tty,
                cols: 120,
                rows: 40,
                ..SessionSpec::exec(["sh", "-c", "echo 'hi' there"])
            },
            actor: "researcher:alice".into(),
        }
    }

    #[test]
    fn the_header_has_only_spec_fields_and_says_who_and_where() {
        let h = parse(&Cast::header(&Header::for_open(
            &open(true),
            7,
            1_700_000_000,
        )));
        let keys: Vec<_> = h.as_object().unwrap().keys().cloned().collect();
        for k in &keys {
            assert!(
                [
                    "version",
                    "width",
                    "height",
                    "timestamp",
                    "title",
                    "command",
                    "env"
                ]
                .contains(&k.as_str()),
                "{k}"
            );
        }
        assert_eq!(h["version"], 2);
        assert_eq!(
            (h["width"].as_u64(), h["height"].as_u64()),
            (Some(120), Some(40))
        );
        assert_eq!(h["timestamp"], 1_700_000_000);
        assert_eq!(h["title"], "basho session 7 in ws-1 by researcher:alice");
        assert_eq!(h["command"], r#"sh -c 'echo '\''hi'\'' there'"#);
        assert_eq!(h["env"]["TERM"], "xterm-256color");
        let h = parse(&Cast::header(&Header::for_open(&open(false), 7, 0)));
        assert_eq!(
            (h["width"].as_u64(), h["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert!(h.get("env").is_none());
    }

    #[test]
    fn events_keep_their_order_and_times_never_go_back() {
        let mut c = Cast::default();
        let lines = [
            c.event(ms(1500), &Event::Stdout(b"$ ".to_vec())),
            c.event(ms(1200), &Event::Stderr(b"late clock\n".to_vec())),
            c.event(ms(2000), &Event::Resize(100, 30)),
            c.event(ms(2500), &Event::Input(b"ls\r".to_vec())),
            c.event(ms(3000), &Event::Marker("signal TERM".into())),
        ];
        let v: Vec<_> = lines.iter().map(|l| parse(l)).collect();
        assert_eq!(v[0], json!([1.5, "o", "$ "]));
        assert_eq!(v[1], json!([1.5, "o", "late clock\n"]));
        assert_eq!(v[2], json!([2.0, "r", "100x30"]));
        assert_eq!(v[3], json!([2.5, "i", "ls\r"]));
        assert_eq!(v[4], json!([3.0, "m", "signal TERM"]));
        let times: Vec<f64> = v.iter().map(|e| e[0].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let text = "é→日本語🧬";
        let bytes = text.as_bytes();
        let mut c = Cast::default();
        let mut got = String::new();
        // One byte at a time: every sequence is split.
        for (i, b) in bytes.iter().enumerate() {
            let line = c.event(ms(i as u64), &Event::Stdout(vec![*b]));
            if !line.is_empty() {
                got.push_str(parse(&line)[2].as_str().unwrap());
            }
        }
        assert_eq!(got, text);
        assert!(c.finish(ms(99)).is_empty());
        // Stdout and stderr hold their own partial sequences.
        let mut c = Cast::default();
        let dna = "🧬".as_bytes();
        assert!(c.event(ms(1), &Event::Stdout(dna[..2].to_vec())).is_empty());
        assert_eq!(
            parse(&c.event(ms(2), &Event::Stderr(b"x".to_vec())))[2],
            "x"
        );
        assert_eq!(
            parse(&c.event(ms(3), &Event::Stdout(dna[2..].to_vec())))[2],
            "🧬"
        );
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_and_a_dangling_tail_is_flushed() {
        let mut c = Cast::default();
        let l = c.event(ms(1), &Event::Stdout(b"a\xffb\xe6\x97".to_vec()));
        assert_eq!(parse(&l)[2], "a\u{fffd}b");
        let tail = c.finish(ms(2));
        assert_eq!(parse(&tail), json!([0.002, "o", "\u{fffd}"]));
    }

    #[tokio::test]
    async fn a_recording_is_0600_and_holds_what_happened() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("recordings");
        prepare(&root).await.unwrap();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let rec = Recording::start(&root, &open(true), 3).await.unwrap();
        assert!(rec.path.starts_with(root.join("ws-1")));
        assert!(rec.path.to_str().unwrap().ends_with("-3.cast"));
        let r = rec.recorder();
        r.record(Event::Stdout(b"hello \xe2".to_vec())).await;
        r.record(Event::Stdout(b"\x9c\x93\n".to_vec())).await;
        r.record(Event::Resize(90, 20)).await;
        drop(r);
        let path = rec.path.clone();
        let done = rec.finish().await;
        assert_eq!(done.error, None);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        // The digest is of the file's bytes, header to last line.
        assert_eq!(
            done.sha256.as_deref(),
            Some(basho_core::digest::sha256_hex(text.as_bytes()).as_str())
        );
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let v: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v[0]["version"], 2);
        // The check mark split across two chunks arrives whole, in the second event.
        assert_eq!((&v[1][1], &v[1][2]), (&json!("o"), &json!("hello ")));
        assert_eq!((&v[2][1], &v[2][2]), (&json!("o"), &json!("✓\n")));
        assert_eq!((&v[3][1], &v[3][2]), (&json!("r"), &json!("90x20")));
        // Another session with the same number never overwrites it.
        let again = Recording::start(&root, &open(true), 3).await.unwrap();
        assert_ne!(again.path, path);
        again.finish().await;
    }

    #[tokio::test]
    async fn a_write_error_ends_the_recording_and_says_why() {
        let Ok(full) = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
        else {
            eprintln!("skipped: no /dev/full");
            return;
        };
        let (tx, rx) = mpsc::channel(4);
        let failed = CancellationToken::new();
        let error = Arc::new(Mutex::new(None));
        let task = crate::spawn_in_span(write(
            tokio::io::BufWriter::new(full),
            Sha256::new(),
            rx,
            Instant::now(),
            PathBuf::from("/dev/full"),
            failed.clone(),
            error.clone(),
        ));
        let r = Recorder {
            tx,
            started: Instant::now(),
        };
        // Enough to overflow the buffer, so the write itself fails.
        r.record(Event::Stdout(vec![b'x'; 64 * 1024])).await;
        tokio::time::timeout(Duration::from_secs(5), failed.cancelled())
            .await
            .expect("the failure is signalled");
        // The session is never held up by a recording that has ended.
        for _ in 0..100 {
            r.record(Event::Stdout(b"more".to_vec())).await;
        }
        drop(r);
        assert_eq!(
            task.await.unwrap(),
            None,
            "no digest of a recording cut short"
        );
        let e = error.lock().unwrap().clone().unwrap();
        assert!(e.contains("/dev/full"), "{e}");
    }

    #[tokio::test]
    async fn an_unusable_directory_is_a_clear_error() {
        let e = prepare(Path::new("relative/recordings")).await.unwrap_err();
        assert!(e.to_string().contains("not absolute"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = prepare(&file.join("sub")).await.unwrap_err();
        assert!(e.to_string().contains("cannot create it"), "{e}");
    }
}
