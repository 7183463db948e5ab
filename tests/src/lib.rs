//! Fixtures for basho's black-box tests: a federation of one orchestrator and three Docker sites
//! started in-process over real HTTP, an issuer the test generates itself, an API client, and
//! Docker helpers. Each test owns its directories, ports and site names, and cleans up after itself.

pub mod api;
pub mod bench;
pub mod cluster;
pub mod federation;
pub mod procs;
pub mod sessions;
pub mod slurm;

use bollard::Docker;

pub use basho_test_util::{wait_for, wait_until};

/// The local Docker engine, or `None` (with the reason printed) when this machine has none;
/// under CI a missing engine fails the test instead ([`basho_test_util::unavailable`]).
pub async fn docker() -> Option<Docker> {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("no Docker engine ({e})"));
            return None;
        }
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            basho_test_util::unavailable(&format!("the Docker engine does not answer ({e})"));
            return None;
        }
    };
    Some(docker)
}

/// IDs of every container (running or not) labelled with `label=value`.
pub async fn containers_labelled(docker: &Docker, label: &str, value: &str) -> Vec<String> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    use std::collections::HashMap;
    let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("docker list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Removes every container labelled with `label=value` (test cleanup).
pub async fn remove_labelled(docker: &Docker, label: &str, value: &str) {
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    for id in containers_labelled(docker, label, value).await {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = docker.remove_container(&id, Some(opts)).await;
    }
}

/// Records in a journal file that no `acked` line covers.
pub fn pending_records(text: &str) -> usize {
    let mut acked = 0;
    let mut seqs = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("acked") => acked = acked.max(v["through"].as_u64().unwrap_or(0)),
            Some("record") => seqs.push(v["record"]["seq"].as_u64().unwrap_or(0)),
            _ => {}
        }
    }
    seqs.iter().filter(|s| **s > acked).count()
}

/// A CA named `ca_name` (its certificate in `ca.pem`) and a server certificate it signed for
/// `hosts` (`server.crt`, `server.key`), written under `dir`: the CA file, the orchestrator's
/// TLS config and the CA's PEM.
pub fn pki(
    dir: &std::path::Path,
    ca_name: &str,
    hosts: &[&str],
) -> (
    std::path::PathBuf,
    basho_orchestrator::config::TlsConfig,
    Vec<u8>,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = server.signed_by(&key, &ca).unwrap();
    let ca_file = dir.join("ca.pem");
    let tls = basho_orchestrator::config::TlsConfig {
        cert_file: dir.join("server.crt"),
        key_file: dir.join("server.key"),
    };
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&tls.cert_file, cert.pem()).unwrap();
    std::fs::write(&tls.key_file, key.serialize_pem()).unwrap();
    (ca_file, tls, ca.pem().into_bytes())
}

/// A fresh name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", n, std::process::id())
        .chars()
        .rev()
        .collect()
}

/// Runs `cmd` inside container `id` as its own user; returns the exit code and stdout+stderr.
pub async fn exec(docker: &Docker, id: &str, cmd: &[&str]) -> (i64, String) {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures::StreamExt;
    let created = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None)
        .await
        .expect("start exec")
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .expect("inspect exec")
        .exit_code
        .unwrap_or(-1);
    (code, out)
}

/// The path of a workspace binary (`basho`, `basho-agent`, ...) built next to this test.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from `target/<profile>/deps/`, binaries such as basho-bench from `target/<profile>/`.
    let mut dir = exe.parent().expect("executable dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target profile dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// `(destination, writable)` of every mount of a container, sorted.
pub async fn mounts(docker: &Docker, container: &str) -> Vec<(String, bool)> {
    let c = docker
        .inspect_container(container, None)
        .await
        .expect("inspect");
    let mut out: Vec<(String, bool)> = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.destination.unwrap_or_default(), m.rw.unwrap_or(true)))
        .collect();
    out.sort();
    out
}
