use std::path::PathBuf;

use super::*;
use crate::backend::slurm::script::example::{EXAMPLE_IMAGE_ID, EXAMPLE_SIF_SHA256};
use crate::backend::slurm::script::{example_spec, golden};

fn argv(runtime: Runtime, spec: &LaunchSpec) -> Result<Vec<String>, BackendError> {
    container_argv(runtime, runtime.name(), spec)
}

fn refused_with(r: Result<Vec<String>, BackendError>, needle: &str) {
    match r {
        Err(BackendError::Refused { message: m, .. }) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn command_lines_match_the_golden_files() {
    for runtime in [Runtime::Apptainer, Runtime::Docker, Runtime::Podman] {
        let words = argv(runtime, &example_spec(runtime)).unwrap();
        golden(
            &format!("argv-{}.txt", runtime.name()),
            &(words.join("\n") + "\n"),
        );
    }
}

#[test]
fn a_batch_launch_starts_in_its_working_directory() {
    for (runtime, flag) in [
        (Runtime::Apptainer, "--pwd"),
        (Runtime::Docker, "--workdir"),
        (Runtime::Podman, "--workdir"),
    ] {
        let mut spec = example_spec(runtime);
        let joined = argv(runtime, &spec).unwrap().join(" ");
        assert!(joined.contains(&format!("{flag} /work ")), "{joined}");
        spec.workdir = Some("/tmp/run".into());
        let joined = argv(runtime, &spec).unwrap().join(" ");
        assert!(joined.contains(&format!("{flag} /tmp/run ")), "{joined}");
    }
}

#[test]
fn engines_carry_every_isolation_default() {
    for runtime in [Runtime::Docker, Runtime::Podman] {
        let a = argv(runtime, &example_spec(runtime)).unwrap();
        let joined = a.join(" ");
        for want in [
            "run --rm --pull=never --name basho-ws-1",
            "--network none",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--read-only",
            "--tmpfs /tmp:rw,noexec,nosuid,nodev,size=64m",
            "--pids-limit 256",
            "--memory 512m --memory-swap 512m",
            "--cpus 2",
            "--ipc private",
            "--user 65534:65534",
            "--workdir /work",
            "--label io.basho.expires-at=2030-01-02T03:04:05Z",
            "type=bind,src=/srv/jga/JGAD000101,dst=/data/JGAD000101,readonly",
        ] {
            assert!(
                joined.contains(want),
                "{runtime:?} lacks {want:?}: {joined}"
            );
        }
        let mounts: Vec<_> = a
            .iter()
            .zip(a.iter().skip(1))
            .filter(|(f, _)| *f == "--mount")
            .map(|(_, m)| m.as_str())
            .collect();
        assert_eq!(
            mounts.len(),
            4,
            "only datasets, /work, /results, workspace.json"
        );
        assert!(mounts[3].ends_with("dst=/etc/basho/workspace.json,readonly"));
        assert!(!mounts[1].contains("readonly") && !mounts[2].contains("readonly"));
        assert_eq!(a.iter().filter(|w| w.as_str() == "--privileged").count(), 0);
        // The image, then the command, last.
        assert_eq!(
            &a[a.len() - 3..],
            [
                format!("basho/demo@{EXAMPLE_IMAGE_ID}"),
                "sleep".into(),
                "60".into()
            ]
        );
        assert_eq!(
            a.contains(&"--read-only-tmpfs=false".to_string()),
            runtime == Runtime::Podman
        );
    }
}

#[test]
fn apptainer_is_contained_and_binds_only_the_contract() {
    let a = argv(Runtime::Apptainer, &example_spec(Runtime::Apptainer)).unwrap();
    assert_eq!(
        a[..11],
        [
            "apptainer",
            "exec",
            "--containall",
            "--cleanenv",
            "--no-home",
            "--no-privs",
            "--no-mount",
            "bind-paths,hostfs,cwd",
            "--net",
            "--network",
            "none"
        ]
    );
    let binds: Vec<_> = a
        .iter()
        .zip(a.iter().skip(1))
        .filter(|(f, _)| *f == "--bind")
        .map(|(_, b)| b.as_str())
        .collect();
    assert_eq!(
        binds,
        [
            "/srv/jga/JGAD000101:/data/JGAD000101:ro",
            "/srv/basho/work/P-0001:/work",
            "/srv/basho/results/ws-1:/results",
            "/var/lib/basho-agent/workspaces/ws-1/workspace.json:/etc/basho/workspace.json:ro",
        ]
    );
    assert!(a.contains(&"/shared/images/shell.sif".to_string()));
    assert!(!a.contains(&"--nv".to_string()));
    let mut s = example_spec(Runtime::Apptainer);
    s.resources.gpus = 1;
    assert!(
        argv(Runtime::Apptainer, &s)
            .unwrap()
            .contains(&"--nv".to_string())
    );
}

#[test]
fn sif_images_must_be_absolute_and_pinned() {
    let good = format!("/shared/images/shell.sif@sha256:{EXAMPLE_SIF_SHA256}");
    assert_eq!(
        sif_image(&good).unwrap(),
        ("/shared/images/shell.sif".into(), EXAMPLE_SIF_SHA256.into())
    );
    for bad in [
        "/shared/images/shell.sif".to_string(),
        format!("images/shell.sif@sha256:{EXAMPLE_SIF_SHA256}"),
        format!("docker://basho/demo@sha256:{EXAMPLE_SIF_SHA256}"),
        "library://basho/demo:latest".to_string(),
        "/shared/images/shell.sif@sha256:abc".to_string(),
        format!("/shared/images/shell.sif@md5:{EXAMPLE_SIF_SHA256}"),
        format!("/shared/x\n.sif@sha256:{EXAMPLE_SIF_SHA256}"),
        EXAMPLE_IMAGE_ID.to_string(),
    ] {
        assert!(
            matches!(sif_image(&bad), Err(BackendError::Refused { .. })),
            "{bad:?}"
        );
    }
    // The builder refuses what sif_image refuses.
    let mut s = example_spec(Runtime::Apptainer);
    s.image = format!("basho/demo@{EXAMPLE_IMAGE_ID}");
    refused_with(argv(Runtime::Apptainer, &s), "SIF");
}

#[test]
fn engines_need_pinned_images() {
    let mut s = example_spec(Runtime::Docker);
    s.image = "basho/demo:latest".into();
    refused_with(argv(Runtime::Docker, &s), "not pinned");
    s.image = format!("/shared/images/shell.sif@sha256:{EXAMPLE_SIF_SHA256}");
    assert!(argv(Runtime::Podman, &s).is_ok(), "a name@digest is pinned");
}

#[test]
fn refuses_what_would_weaken_isolation() {
    for runtime in [Runtime::Apptainer, Runtime::Docker, Runtime::Podman] {
        let base = example_spec(runtime);

        let mut s = base.clone();
        s.user = "0:0".into();
        refused_with(argv(runtime, &s), "non-root");

        let mut s = base.clone();
        s.pids_limit = 0;
        refused_with(argv(runtime, &s), "pids_limit");

        let mut s = base.clone();
        s.tmp_size_mib = 0;
        refused_with(argv(runtime, &s), "tmp_size_mib");

        let mut s = base.clone();
        s.resources.cpus = 0;
        refused_with(argv(runtime, &s), "cpus");

        let mut s = base.clone();
        s.datasets.push(s.datasets[0].clone());
        refused_with(argv(runtime, &s), "twice");

        let mut s = base.clone();
        s.work_dir = PathBuf::from("work");
        refused_with(argv(runtime, &s), "not absolute");

        let mut s = base.clone();
        s.results_dir = PathBuf::from("/srv/results\n#SBATCH --account=x");
        refused_with(argv(runtime, &s), "control character");

        let mut s = base.clone();
        s.env.push(("A=B".into(), "x".into()));
        refused_with(argv(runtime, &s), "not valid");

        // A workspace id that is no job or container name cannot even reach a spec: the site
        // refuses it when it verifies the assignment (`Refusal::BadId`).
        assert!(basho_core::WorkspaceId::parse("../ws").is_err());

        refused_with(container_argv(runtime, "", &base), "runtime_path");
    }
}

#[test]
fn refuses_paths_the_runtime_would_split() {
    let mut s = example_spec(Runtime::Docker);
    s.datasets[0].host_path = PathBuf::from("/srv/a,readonly=false,dst=/x");
    refused_with(argv(Runtime::Docker, &s), "--mount");
    let mut s = example_spec(Runtime::Podman);
    s.work_dir = PathBuf::from("/srv/\"quoted\"");
    refused_with(argv(Runtime::Podman, &s), "--mount");
    // ':' is fine in a --mount source.
    let mut s = example_spec(Runtime::Docker);
    s.work_dir = PathBuf::from("/srv/a:b");
    assert!(argv(Runtime::Docker, &s).is_ok());

    let mut s = example_spec(Runtime::Apptainer);
    s.datasets[0].host_path = PathBuf::from("/srv/a:/etc");
    refused_with(argv(Runtime::Apptainer, &s), "--bind");
    let mut s = example_spec(Runtime::Apptainer);
    s.results_dir = PathBuf::from("/srv/a,/etc:/x");
    refused_with(argv(Runtime::Apptainer, &s), "--bind");
}

#[test]
fn apptainer_refuses_env_values_its_env_flag_would_reparse() {
    for v in ["a=b", "say \"hi\""] {
        let mut s = example_spec(Runtime::Apptainer);
        s.env.push(("X".into(), v.into()));
        refused_with(argv(Runtime::Apptainer, &s), "apptainer --env");
    }
    // A comma is fine with a single '=' (the dataset list has them).
    let mut s = example_spec(Runtime::Apptainer);
    s.env[2].1 = "JGAD000101,JGAD000102".into();
    let a = argv(Runtime::Apptainer, &s).unwrap();
    assert!(a.contains(&"BASHO_DATASETS=JGAD000101,JGAD000102".to_string()));
}

#[test]
fn gpus_only_through_apptainer() {
    for runtime in [Runtime::Docker, Runtime::Podman] {
        let mut s = example_spec(runtime);
        s.resources.gpus = 2;
        assert!(matches!(
            argv(runtime, &s),
            Err(BackendError::Unsupported(_))
        ));
    }
}

#[test]
fn cleanup_removes_the_named_container_only_for_engines() {
    assert_eq!(cleanup_argv(Runtime::Apptainer, "apptainer", "ws-1"), None);
    assert_eq!(
        cleanup_argv(Runtime::Podman, "/usr/bin/podman", "ws-1").unwrap(),
        ["/usr/bin/podman", "rm", "-f", "basho-ws-1"]
    );
}
