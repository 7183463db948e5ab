//! The `basho-orchestrator` binary: config errors all at once with exit code 64, and a clean
//! stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basho-orchestrator"))
}

/// `serve --config path`, with nothing from this environment overriding the file.
fn serve(path: &std::path::Path) -> Command {
    let mut c = bin();
    c.args(["serve", "--config"])
        .arg(path)
        .env_remove("BASHO_LISTEN")
        .env_remove("BASHO_DATA_DIR")
        .env_remove("BASHO_DATABASE");
    c
}

#[test]
fn bad_config_exits_64_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orchestrator.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\ntemplates_dir = {:?}\nplatform_tokens = []\n\
             [[trusted_issuers]]\nissuer = \"https://dac.example\"\njwks_file = \"/nonexistent.json\"\n",
            dir.path().join("data"),
            dir.path().join("no-templates"),
        ),
    )
    .unwrap();
    let out = serve(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for what in [
        "platform_tokens",
        "templates_dir",
        "trusted_issuers[0]",
        "plain_http_on_loopback = true",
    ] {
        assert!(err.contains(what), "{what} missing from:\n{err}");
    }
    let out = bin()
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn tls_files_and_plain_http_off_loopback_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
    let run = |extra: &str| {
        let path = dir.path().join("orchestrator.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {:?}\ntemplates_dir = {templates:?}\nplatform_tokens = [\"t\"]\n{extra}",
                dir.path().join("data"),
            ),
        )
        .unwrap();
        let out = serve(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{extra}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("[tls]\ncert_file = \"/nonexistent/o.crt\"\nkey_file = \"/nonexistent/o.key\"\n");
    for what in [
        "tls.cert_file /nonexistent/o.crt",
        "tls.key_file /nonexistent/o.key",
    ] {
        assert!(err.contains(what), "{what} missing from:\n{err}");
    }
    let err = run("listen = \"0.0.0.0:0\"\nplain_http_on_loopback = true\n");
    assert!(err.contains("not a loopback address"), "{err}");
}

#[cfg(unix)]
#[test]
fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workspaces");
    let path = dir.path().join("orchestrator.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\ntemplates_dir = {templates:?}\n\
             platform_tokens = [\"t\"]\nplain_http_on_loopback = true\n",
            dir.path().join("data"),
        ),
    )
    .unwrap();
    let mut child = serve(&path).stderr(Stdio::piped()).spawn().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up {
        let _ = child.kill();
        panic!("the orchestrator never listened on {port}");
    }
    assert!(dir.path().join("data/basho.db").exists());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Logs go to stderr, as JSON lines when it is not a terminal.
    let out = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    let first = out.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
}
