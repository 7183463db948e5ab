//! The command line that starts a workspace's container inside its Slurm job, one builder per
//! runtime (Apptainer, Docker, Podman), each applying the contract's isolation defaults in its
//! own words.
//!
//! The builders are pure: they check the spec and return an argv. They do not quote anything;
//! the job script renderer shell-quotes every word. What they refuse instead are values that the
//! *runtime's own* option parser would split or reinterpret (a `,` inside `--mount`, a `:` inside
//! `--bind`), since no shell quoting can protect against those.

use std::path::Path;

use basho_core::{LABEL_EXPIRES, LABEL_PROJECT, LABEL_SITE, LABEL_WORKSPACE};
use chrono::SecondsFormat;

use crate::backend::docker::container_name;
use crate::backend::docker::spec::{check_env, check_image, check_limits, check_user};
use crate::backend::{BackendError, LaunchSpec};
use crate::config::Runtime;

/// Where the contract puts things inside the container (design §4, "Inside the container").
const WORK: &str = "/work";

/// Where the command starts: a batch workspace's own directory, or `/work`.
fn workdir(spec: &LaunchSpec) -> String {
    spec.workdir.clone().unwrap_or_else(|| WORK.into())
}
const RESULTS: &str = "/results";
const INPUTS: &str = basho_core::federated::INPUTS;
const WORKSPACE_JSON: &str = "/etc/basho/workspace.json";

fn refused(msg: impl Into<String>) -> BackendError {
    BackendError::refused(msg.into())
}

/// The argv that runs the workspace's container in the foreground of the job, starting with
/// `program` (the runtime's executable on the compute node).
pub fn container_argv(
    runtime: Runtime,
    program: &str,
    spec: &LaunchSpec,
) -> Result<Vec<String>, BackendError> {
    if program.is_empty() || program.chars().any(char::is_control) {
        return Err(refused(format!(
            "runtime program {program:?} is not usable; set runtime_path to the runtime's path"
        )));
    }
    check_common(spec)?;
    match runtime {
        Runtime::Apptainer => apptainer(program, spec),
        Runtime::Docker | Runtime::Podman => engine(runtime, program, spec),
    }
}

/// The argv that removes the workspace's container, for runtimes whose containers outlive the
/// job's processes (Docker and Podman run them under a daemon or conmon, outside Slurm's
/// cgroup). `None` for Apptainer: its container is the job's own process tree, which Slurm kills.
pub fn cleanup_argv(runtime: Runtime, program: &str, workspace: &str) -> Option<Vec<String>> {
    match runtime {
        Runtime::Apptainer => None,
        Runtime::Docker | Runtime::Podman => Some(vec![
            program.to_string(),
            "rm".into(),
            "-f".into(),
            container_name(workspace),
        ]),
    }
}

/// Splits an Apptainer allow-list value, `<absolute path to .sif>@sha256:<64 hex>`, into the path
/// and the hex digest, so the job can check the file's sha256 before it runs it. Registry URIs
/// (`docker://`, `library://`, `oras://`) are refused: the compute node would fetch whatever the
/// tag names at that moment.
pub fn sif_image(image: &str) -> Result<(String, String), BackendError> {
    let bad = |why: &str| {
        refused(format!(
            "apptainer image {image:?} {why}; the site's images must name a SIF file as \
             /absolute/path.sif@sha256:<64 hex digits>"
        ))
    };
    if image.contains("://") {
        return Err(bad("is a registry URI"));
    }
    let Some((path, digest)) = image.rsplit_once('@') else {
        return Err(bad("carries no digest"));
    };
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad("carries no sha256 digest"))?;
    if !path.starts_with('/') {
        return Err(bad("is not an absolute path"));
    }
    // sha256sum -c escapes such names in its own format; refusing them keeps the check exact.
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("has a control character or backslash in its path"));
    }
    Ok((path.to_string(), hex.to_ascii_lowercase()))
}

/// The checks every runtime shares with the Docker backend (same functions), plus the ones that
/// matter because values travel through a script: absolute UTF-8 paths without control
/// characters, a dataset at most once.
fn check_common(spec: &LaunchSpec) -> Result<(), BackendError> {
    check_user(&spec.user)?;
    check_limits(spec)?;
    check_env(&spec.env)?;
    for (i, d) in spec.datasets.iter().enumerate() {
        if spec.datasets[..i].iter().any(|e| e.id == d.id) {
            return Err(refused(format!("dataset {} is listed twice", d.id)));
        }
        host_path(&format!("dataset {}", d.id), &d.host_path)?;
    }
    host_path("work directory", &spec.work_dir)?;
    host_path("results directory", &spec.results_dir)?;
    if let Some(inputs) = &spec.inputs_dir {
        host_path("inputs directory", inputs)?;
    }
    host_path("workspace.json", &spec.workspace_json)?;
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(refused("the workspace command has a NUL byte"));
    }
    Ok(())
}

/// A host path as a string: absolute, UTF-8, no control characters (a newline would split the
/// job script's lines; the runtimes' option parsers do not expect them either).
fn host_path<'a>(what: &str, path: &'a Path) -> Result<&'a str, BackendError> {
    let s = path
        .to_str()
        .ok_or_else(|| refused(format!("{what} path {} is not valid UTF-8", path.display())))?;
    if !path.is_absolute() {
        return Err(refused(format!("{what} path {s:?} is not absolute")));
    }
    if s.chars().any(char::is_control) {
        return Err(refused(format!(
            "{what} path {s:?} has a control character"
        )));
    }
    Ok(s)
}

/// A path for Apptainer's `--bind src:dst[:opts]`, whose value is split at `,` (several binds)
/// and `:` (fields) with no way to escape either.
fn bind_path<'a>(what: &str, path: &'a Path) -> Result<&'a str, BackendError> {
    let s = host_path(what, path)?;
    if s.contains(':') || s.contains(',') {
        return Err(refused(format!(
            "{what} path {s:?} contains ':' or ',', which apptainer --bind cannot carry; \
             rename or link the directory"
        )));
    }
    Ok(s)
}

/// A path for Docker's and Podman's `--mount type=bind,src=..`, a CSV record: `,` separates
/// fields and `"` starts quoting, so neither may appear in a source.
fn mount_path<'a>(what: &str, path: &'a Path) -> Result<&'a str, BackendError> {
    let s = host_path(what, path)?;
    if s.contains(',') || s.contains('"') {
        return Err(refused(format!(
            "{what} path {s:?} contains ',' or '\"', which --mount cannot carry; rename or \
             link the directory"
        )));
    }
    Ok(s)
}

/// `apptainer exec`.
///
/// Limits: Apptainer's own `--cpus`/`--memory`/`--pids-limit` need root or cgroups v2
/// delegation, which compute nodes rarely give a service account. The limits come from the job
/// instead: `--cpus-per-task` and `--mem` in the script's directives, enforced by Slurm's cgroup
/// plugin on the job's process tree, which the container is part of. The root filesystem is
/// the read-only SIF; `--containall` gives private /tmp, PID and IPC namespaces and a clean
/// environment; `--no-privs` drops every capability and sets no-new-privileges; `--no-mount
/// bind-paths,hostfs,cwd` keeps the `bind path` entries of the site's apptainer.conf, its host
/// filesystems and the submit directory out. `--network none` is allowed for unprivileged users
/// from Apptainer 1.1 on. Not matched on Apptainer (an unprivileged runtime cannot): a pids limit
/// and a noexec /tmp.
///
/// User: an unprivileged Apptainer cannot switch users, so the container runs as the account the
/// job runs as (the site's submitting service account), not as `spec.user`; the spec's user is
/// still checked so a config that names root is refused on every runtime alike. The job script
/// refuses to start the container as root.
fn apptainer(program: &str, spec: &LaunchSpec) -> Result<Vec<String>, BackendError> {
    let (sif, _) = sif_image(&spec.image)?;
    if spec.command.is_empty() {
        return Err(refused(
            "the workspace template names no command; apptainer exec needs one",
        ));
    }
    let mut argv: Vec<String> = [
        program,
        "exec",
        "--containall",
        "--cleanenv",
        "--no-home",
        "--no-privs",
        // The site's own `bind path` entries (and `mount hostfs`, and the submit directory) would
        // reach every container; only the contract's mounts below do.
        "--no-mount",
        "bind-paths,hostfs,cwd",
        "--net",
        "--network",
        "none",
    ]
    .map(String::from)
    .to_vec();
    if spec.resources.gpus > 0 {
        // Slurm's --gres allocates the GPUs and sets CUDA_VISIBLE_DEVICES; --nv brings in the
        // driver libraries and only the devices the job's cgroup allows.
        argv.push("--nv".into());
    }
    for d in &spec.datasets {
        let src = bind_path(&format!("dataset {}", d.id), &d.host_path)?;
        argv.extend(["--bind".into(), format!("{src}:/data/{}:ro", d.id)]);
    }
    let work = bind_path("work directory", &spec.work_dir)?;
    let results = bind_path("results directory", &spec.results_dir)?;
    let json = bind_path("workspace.json", &spec.workspace_json)?;
    argv.extend([
        "--bind".into(),
        format!("{work}:{WORK}"),
        "--bind".into(),
        format!("{results}:{RESULTS}"),
        "--bind".into(),
        format!("{json}:{WORKSPACE_JSON}:ro"),
        "--pwd".into(),
        workdir(spec),
    ]);
    if let Some(inputs) = &spec.inputs_dir {
        let src = bind_path("inputs directory", inputs)?;
        argv.extend(["--bind".into(), format!("{src}:{INPUTS}:ro")]);
    }
    for (k, v) in &spec.env {
        // --env is a key=value map flag: with exactly one '=' the value is taken as is (only
        // surrounding '"' trimmed); with more it is parsed as CSV. Refuse what either would change.
        if v.contains('=') || v.contains('"') {
            return Err(refused(format!(
                "environment variable {k} has '=' or '\"' in its value, which apptainer --env \
                 would reinterpret"
            )));
        }
        argv.extend(["--env".into(), format!("{k}={v}")]);
    }
    argv.push(sif);
    argv.extend(spec.command.iter().cloned());
    Ok(argv)
}

/// `docker run` / `podman run`, with the same settings the Docker backend gives the engine API.
///
/// Podman differences: `--read-only` alone would also mount tmpfs on /dev/shm, /run and
/// /var/tmp (`--read-only-tmpfs` defaults to true), so it is turned off and only the contract's
/// /tmp is writable. `--userns` is left at Podman's default: rootless Podman maps the service
/// account's subordinate ids, so the workspace's uid is unprivileged on the host as well.
fn engine(runtime: Runtime, program: &str, spec: &LaunchSpec) -> Result<Vec<String>, BackendError> {
    check_image(&spec.image)?;
    if spec.resources.gpus > 0 {
        // `--gpus N` would pick any N GPUs on the node, not the ones Slurm allocated to the job.
        return Err(BackendError::Unsupported(format!(
            "{} GPU(s) requested but the {} runtime of this Slurm site cannot be held to the \
             job's GPUs; use runtime = \"apptainer\" for GPU workspaces",
            spec.resources.gpus,
            runtime.name()
        )));
    }
    let r = &spec.resources;
    let expires = spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut argv: Vec<String> = vec![
        program.into(),
        "run".into(),
        "--rm".into(),
        // Only the allow-listed image already on the node runs: never fetch one.
        "--pull=never".into(),
        "--name".into(),
        container_name(&spec.workspace),
        "--label".into(),
        format!("{LABEL_WORKSPACE}={}", spec.workspace),
        "--label".into(),
        format!("{LABEL_PROJECT}={}", spec.project),
        "--label".into(),
        format!("{LABEL_SITE}={}", spec.site),
        "--label".into(),
        format!("{LABEL_EXPIRES}={expires}"),
        "--network".into(),
        "none".into(),
        "--cap-drop".into(),
        "ALL".into(),
        // The engine's default seccomp profile stays on: only no-new-privileges is added.
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--read-only".into(),
    ];
    if runtime == Runtime::Podman {
        argv.push("--read-only-tmpfs=false".into());
    }
    argv.extend([
        "--tmpfs".into(),
        format!("/tmp:rw,noexec,nosuid,nodev,size={}m", spec.tmp_size_mib),
        "--pids-limit".into(),
        spec.pids_limit.to_string(),
        "--memory".into(),
        format!("{}m", r.memory_mib),
        "--memory-swap".into(),
        format!("{}m", r.memory_mib),
        "--cpus".into(),
        r.cpus.to_string(),
        "--ipc".into(),
        "private".into(),
        "--user".into(),
        spec.user.clone(),
        "--workdir".into(),
        workdir(spec),
    ]);
    for d in &spec.datasets {
        let src = mount_path(&format!("dataset {}", d.id), &d.host_path)?;
        // Non-recursive, as the Docker backend does on engines without recursive read-only: a
        // submount shows as an empty directory instead of a writable one.
        argv.extend([
            "--mount".into(),
            format!(
                "type=bind,src={src},dst=/data/{},readonly,bind-nonrecursive",
                d.id
            ),
        ]);
    }
    let work = mount_path("work directory", &spec.work_dir)?;
    let results = mount_path("results directory", &spec.results_dir)?;
    let json = mount_path("workspace.json", &spec.workspace_json)?;
    argv.extend([
        "--mount".into(),
        format!("type=bind,src={work},dst={WORK}"),
        "--mount".into(),
        format!("type=bind,src={results},dst={RESULTS}"),
        "--mount".into(),
        format!("type=bind,src={json},dst={WORKSPACE_JSON},readonly"),
    ]);
    if let Some(inputs) = &spec.inputs_dir {
        let src = mount_path("inputs directory", inputs)?;
        argv.extend([
            "--mount".into(),
            format!("type=bind,src={src},dst={INPUTS},readonly"),
        ]);
    }
    for (k, v) in &spec.env {
        argv.extend(["--env".into(), format!("{k}={v}")]);
    }
    argv.push(spec.image.clone());
    argv.extend(spec.command.iter().cloned());
    Ok(argv)
}

#[cfg(test)]
mod tests;
