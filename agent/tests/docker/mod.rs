//! What the Docker backend's tests share: the engine and the demo image, a site's containers
//! swept away when a test ends, host directories and a spec that binds them, and `exec` inside a
//! container. Nothing is ever pulled: the demo image is imported from the host's static busybox.
// Each test binary uses its own part of this.
#![allow(dead_code)]

#[path = "../../../cli/src/dev/image.rs"]
pub mod image;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use basho_agent::backend::docker::DockerBackend;
use basho_agent::backend::suite::example_spec;
use basho_agent::backend::{Backend, BackendError, DatasetMount, LaunchSpec, RunState};
use basho_core::{Ident, LABEL_SITE};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;

/// A TEST-NET-1 address (RFC 5737): never routed, so probing it reaches nobody.
pub const UNREACHABLE: &str = "192.0.2.1";

/// The engine and the demo image, or `None` (after saying why) when there is no engine; under CI
/// a missing engine fails instead.
pub async fn engine() -> Option<(Docker, String)> {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("no docker client ({e})"));
            return None;
        }
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("docker engine unreachable ({e})"));
            return None;
        }
    };
    let id = image::ensure_demo_image(&docker)
        .await
        .expect("the demo image builds from the host's static busybox");
    Some((docker, id))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Removes every container of a test's site when dropped, also when the test panics.
pub struct Cleanup {
    pub site: Ident,
}

impl Cleanup {
    pub fn new(prefix: &str) -> Cleanup {
        let site = Ident::parse(&unique(prefix)).unwrap();
        let cleanup = Cleanup { site };
        cleanup.sweep();
        cleanup
    }

    pub fn sweep(&self) {
        let filter = format!("label={LABEL_SITE}={}", self.site);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// Host directories of one workspace: two datasets with a file each, `/work`, `/results` and
/// `workspace.json`, readable (and where meant, writable) by the workspace's uid 65534.
pub struct Dirs {
    pub _tmp: tempfile::TempDir,
    pub datasets: Vec<DatasetMount>,
    pub work: PathBuf,
    pub results: PathBuf,
    pub workspace_json: PathBuf,
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let mut datasets = Vec::new();
    for id in ["JGAD000101", "JGAD000202"] {
        let path = tmp.path().join(id);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("file"), format!("contents of {id}\n")).unwrap();
        chmod(&path, 0o755);
        chmod(&path.join("file"), 0o644);
        datasets.push(DatasetMount {
            release: 1,
            id: Ident::parse(id).unwrap(),
            host_path: path,
            claim: None,
        });
    }
    let work = tmp.path().join("work");
    let results = tmp.path().join("results");
    for d in [&work, &results] {
        std::fs::create_dir(d).unwrap();
        chmod(d, 0o777);
    }
    let workspace_json = tmp.path().join("workspace.json");
    std::fs::write(&workspace_json, r#"{"id":"demo"}"#).unwrap();
    chmod(&workspace_json, 0o644);
    Dirs {
        _tmp: tmp,
        datasets,
        work,
        results,
        workspace_json,
    }
}

pub fn spec(site: &Ident, workspace: &str, image: &str, dirs: &Dirs) -> LaunchSpec {
    let mut s = example_spec(site, workspace);
    s.image = image.to_owned();
    s.datasets = dirs.datasets.clone();
    s.work_dir = dirs.work.clone();
    s.results_dir = dirs.results.clone();
    s.workspace_json = dirs.workspace_json.clone();
    s.env = vec![
        ("BASHO_WORKSPACE".into(), workspace.into()),
        ("BASHO_PROJECT".into(), s.project.to_string()),
        ("BASHO_DATASETS".into(), "JGAD000101,JGAD000202".into()),
    ];
    s
}

pub async fn backend(site: &Ident) -> DockerBackend {
    DockerBackend::connect(None, site.clone()).await.unwrap()
}

/// Runs `cmd` inside the container as its own user; exit code and stdout+stderr.
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> (i64, String) {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await.unwrap()
    {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk.unwrap().to_string());
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .unwrap()
        .exit_code
        .expect("exec finished");
    (code, out)
}

pub async fn must(docker: &Docker, container: &str, cmd: &[&str]) -> String {
    let (code, out) = exec(docker, container, cmd).await;
    assert_eq!(code, 0, "{cmd:?} failed: {out}");
    out
}

pub async fn must_fail(docker: &Docker, container: &str, cmd: &[&str]) -> String {
    let (code, out) = exec(docker, container, cmd).await;
    assert_ne!(code, 0, "{cmd:?} succeeded but must not: {out}");
    out
}

pub async fn wait_for(
    backend: &DockerBackend,
    ws: &str,
    want: impl Fn(&RunState) -> bool,
) -> RunState {
    let what = format!("{ws} to reach the awaited state");
    basho_test_util::wait_for(&what, Duration::from_secs(30), || async {
        let seen = backend.inspect(ws).await.unwrap()?;
        want(&seen.state).then_some(seen.state)
    })
    .await
}

pub fn refused(r: Result<impl std::fmt::Debug, BackendError>, needle: &str) {
    match r {
        Err(BackendError::Refused { message: m, .. }) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}
