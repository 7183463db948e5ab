//! The session's command lines, run through a real `sh` with stand-ins for `srun` and the
//! runtime, so that what reaches the container is checked byte for byte.

use std::path::Path;
use std::process::Command;

use super::*;

const HOSTILE: &[&str] = &[
    "plain",
    "",
    "it's",
    "$(id)",
    "`whoami`",
    "; rm -rf /work",
    "a\nb",
    "tab\there",
    "\x1b[31mred\x1b[0m",
    "'\"|&>x",
    "\\",
    "=x",
    "--flag=1",
    "ünïcödé",
];

fn req(argv: &[&str], tty: bool) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty,
        cols: 80,
        rows: 24,
    }
}

/// A directory with `srun` (drops its options, runs the rest) and `docker` (answers `inspect`
/// with `state`, prints each word of anything else NUL-terminated).
fn stand_ins(dir: &Path, state: &str) {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let ok = Command::new("chmod").arg("+x").arg(&p).status().unwrap();
        assert!(ok.success());
    };
    write(
        "srun",
        "#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n".into(),
    );
    write(
        "docker",
        format!(
            "#!/bin/sh\nif [ \"$1\" = inspect ]; then echo '{state}'; exit 0; fi\n\
             printf '%s\\0' \"$@\"\n"
        ),
    );
}

fn run(dir: &Path, line: &str) -> (i32, Vec<String>, String) {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("PATH", path)
        .output()
        .unwrap();
    let words = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    (
        out.status.code().unwrap_or(-1),
        words,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hostile_argv_reaches_the_runtime_intact_as_the_containers_user() {
    let dir = tempfile::tempdir().unwrap();
    stand_ins(dir.path(), "true 65534:65534");
    let line = enter_line("42", "docker", "ws-1", "tok", &req(HOSTILE, false));
    assert!(line.starts_with("srun --jobid=42 --overlap "), "{line}");
    let (code, words, err) = run(dir.path(), &line);
    assert_eq!(code, 0, "{err}");
    let mut expected: Vec<String> = [
        "exec",
        "-i",
        "-e",
        "BASHO_SESSION=tok",
        "-u",
        "65534:65534",
        "basho-ws-1",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(HOSTILE.iter().map(|s| s.to_string()));
    assert_eq!(words, expected);
}

#[test]
fn a_terminal_session_asks_srun_and_the_runtime_for_one() {
    let dir = tempfile::tempdir().unwrap();
    stand_ins(dir.path(), "true 1000:1000");
    let line = enter_line("7", "docker", "ws-1", "tok", &req(&["sh"], true));
    assert!(line.contains(" --pty "), "{line}");
    let (_, words, _) = run(dir.path(), &line);
    assert_eq!(
        words[..4],
        ["exec", "-i", "-t", "-e"].map(String::from).to_vec()
    );
    assert!(words.contains(&"TERM=xterm-256color".to_owned()));
}

#[test]
fn a_container_that_is_not_running_or_runs_as_root_is_not_entered() {
    for state in ["false 65534:65534", "true ", "true 0:0", "true root", ""] {
        let dir = tempfile::tempdir().unwrap();
        stand_ins(dir.path(), state);
        let line = enter_line("7", "docker", "ws-1", "tok", &req(&["id"], false));
        let (code, words, err) = run(dir.path(), &line);
        assert_eq!(code, 125, "{state:?}: {words:?}");
        assert!(words.is_empty(), "{state:?}: {words:?}");
        assert!(err.starts_with("basho: "), "{err}");
    }
}

/// What the runtime receives for a control step: `script` run with `args` in the container, as
/// its user.
fn control_words(script: &str, args: &[&str]) -> Vec<String> {
    [
        "exec",
        "-u",
        "65534:65534",
        "basho-ws-1",
        "/bin/sh",
        "-c",
        script,
    ]
    .iter()
    .chain(args)
    .map(|w| w.to_string())
    .collect()
}

/// Runs a control `script` with `args` on this host; it must succeed.
fn script(code: &str, args: &[&str]) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(code)
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn the_kill_step_runs_the_kill_script_in_the_container_as_its_user() {
    let dir = tempfile::tempdir().unwrap();
    stand_ins(dir.path(), "true 65534:65534");
    let line = kill_line("7", "docker", "ws-1", "tok");
    let (code, words, err) = run(dir.path(), &line);
    assert_eq!(code, 0, "{err}");
    assert_eq!(words, control_words(KILL, &["tok"]));
}

#[test]
fn the_signal_step_signals_the_sessions_process_group() {
    let dir = tempfile::tempdir().unwrap();
    stand_ins(dir.path(), "true 65534:65534");
    let line = signal_line("7", "docker", "ws-1", "tok", Signal::Int);
    let (code, words, err) = run(dir.path(), &line);
    assert_eq!(code, 0, "{err}");
    assert_eq!(words, control_words(SIGNAL, &["tok", "INT"]));

    // For real: TERM reaches the leader's group, not a process that left it.
    let mut child = Command::new("setsid")
        .args(["-f", "-w", "sh", "-c", "setsid sleep 303 & exec sleep 304"])
        .env("BASHO_SESSION", "s-ours")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    script(SIGNAL, &["s-ours", "TERM"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    script(KILL, &["s-ours"]);
    let _ = child.kill();
    let status = status.expect("TERM ended the session's leader");
    assert!(!status.success());
}

#[test]
fn the_kill_script_ends_the_sessions_processes_and_nothing_else() {
    // Two sessions of this test's own: one marked with the token (a leader, a background job
    // and a process that left for a session of its own), one with another token.
    let spawn = |token: &str| {
        Command::new("setsid")
            .args(["sh", "-c", "sleep 300 & setsid sleep 301 & exec sleep 302"])
            .env("BASHO_SESSION", token)
            .spawn()
            .unwrap()
    };
    let mut ours = spawn("k-ours");
    let mut theirs = spawn("k-theirs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let marked = |token: &str| -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(
                "for d in /proc/[0-9]*; do grep -q \"BASHO_SESSION=$0\" $d/environ 2>/dev/null \
                 && [ \"$(cut -d' ' -f3 $d/stat)\" != Z ] && echo ${d#/proc/}; done",
            )
            .arg(token)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(marked("k-ours").len(), 3, "{:?}", marked("k-ours"));
    script(KILL, &["k-ours"]);
    let _ = ours.wait();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(marked("k-ours").is_empty(), "{:?}", marked("k-ours"));
    assert_eq!(marked("k-theirs").len(), 3);
    script(KILL, &["k-theirs"]);
    let _ = theirs.wait();
}

#[test]
fn posix_quoting_keeps_every_byte() {
    let words: Vec<String> = HOSTILE.iter().map(|s| posix_quote(s)).collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {}", words.join(" ")))
        .output()
        .unwrap();
    let back: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_terminator('\0')
        .collect();
    assert_eq!(back, HOSTILE);
    assert_eq!(posix_quote("--jobid=42"), "--jobid=42");
    assert_eq!(posix_quote("a b"), "'a b'");
}
