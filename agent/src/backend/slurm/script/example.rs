//! The example workspace and site a template is checked against (`validate`, `basho template
//! validate`), and the fixed inputs of the golden tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use basho_core::{Ident, Resources};
use chrono::{DateTime, TimeZone, Utc};

use crate::backend::{DatasetMount, LaunchSpec};
use crate::config::{LoginNode, Runtime, SlurmConfig};

/// A SIF digest for examples (not the hash of any real file).
pub const EXAMPLE_SIF_SHA256: &str =
    "5f0c3a2b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29181706f5e4d3c2b1a090";
/// An image ID for examples.
pub const EXAMPLE_IMAGE_ID: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ident(s: &str) -> Ident {
    Ident::parse(s).expect("example identifiers are valid")
}

/// The moment examples are rendered at.
pub fn example_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 1, 34, 5)
        .single()
        .expect("a valid date")
}

/// A workspace of project `P-0001` at site `tohoku` with one dataset, expiring 1 h 30 min after
/// [`example_time`], with an image of the kind `runtime` takes.
pub fn example_spec(runtime: Runtime) -> LaunchSpec {
    let image = match runtime {
        Runtime::Apptainer => format!("/shared/images/shell.sif@sha256:{EXAMPLE_SIF_SHA256}"),
        Runtime::Docker | Runtime::Podman => format!("basho/demo@{EXAMPLE_IMAGE_ID}"),
    };
    LaunchSpec {
        workspace: basho_core::WorkspaceId::parse("ws-1").expect("a plain identifier"),
        project: ident("P-0001"),
        site: ident("tohoku"),
        image,
        command: vec!["sleep".into(), "60".into()],
        workdir: None,
        datasets: vec![DatasetMount {
            release: 1,
            id: ident("JGAD000101"),
            host_path: PathBuf::from("/srv/jga/JGAD000101"),
            claim: None,
        }],
        work_dir: PathBuf::from("/srv/basho/work/P-0001"),
        results_dir: PathBuf::from("/srv/basho/results/ws-1"),
        inputs_dir: None,
        workspace_json: PathBuf::from("/var/lib/basho-agent/workspaces/ws-1/workspace.json"),
        env: vec![
            ("BASHO_WORKSPACE".into(), "ws-1".into()),
            ("BASHO_PROJECT".into(), "P-0001".into()),
            ("BASHO_DATASETS".into(), "JGAD000101".into()),
        ],
        resources: Resources {
            cpus: 2,
            memory_mib: 512,
            gpus: 0,
        },
        expires_at: Utc
            .with_ymd_and_hms(2030, 1, 2, 3, 4, 5)
            .single()
            .expect("a valid date"),
        user: "65534:65534".into(),
        pids_limit: 256,
        tmp_size_mib: 64,
    }
}

/// A Slurm site with a partition, a project account, a default account and one extra directive.
pub fn example_config(runtime: Runtime) -> SlurmConfig {
    SlurmConfig {
        qos: None,
        nice: None,
        login: LoginNode {
            host: "login.hpc.example.org".into(),
            port: 22,
            user: "basho-svc".into(),
            identity_file: PathBuf::from("/etc/basho/id_ed25519"),
            known_hosts: PathBuf::from("/etc/basho/known_hosts"),
            connect_timeout_s: 10,
            command_timeout_s: 30,
        },
        partition: Some("debug".into()),
        accounts: BTreeMap::from([("P-0001".to_string(), "basho-research".to_string())]),
        default_account: Some("basho".into()),
        directives: vec!["--qos=normal".into()],
        runtime,
        runtime_path: None,
        template: None,
        output_dir: Some("/shared/basho/logs".into()),
    }
}
