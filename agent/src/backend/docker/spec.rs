//! The container a workspace gets: the checks a launch spec must pass and the engine request that
//! carries every isolation default (design §4, "Isolation defaults").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use basho_core::{Ident, LABEL_EXPIRES, LABEL_PROJECT, LABEL_SITE, LABEL_WORKSPACE};
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType, RestartPolicy, RestartPolicyNameEnum,
};
use chrono::SecondsFormat;

use crate::backend::{BackendError, LaunchSpec};

/// Engine's smallest memory limit.
const MIN_MEMORY_MIB: u64 = 6;

/// The container name of a workspace (`basho-<id>`), unique on the engine.
pub fn container_name(workspace: &str) -> String {
    format!("basho-{workspace}")
}

/// Where `basho-init` is bound, read-only, inside every workspace.
pub const INIT_PATH: &str = "/.basho/init";

/// Makes `init` (`basho-init` on the host) the container's first process: it runs the command
/// and ends everything at `expires_at`, whether or not an agent runs then.
pub(super) async fn with_init(
    body: &mut ContainerCreateBody,
    init: &Path,
    expires_at: chrono::DateTime<chrono::Utc>,
    sockets: &[String],
) -> Result<(), BackendError> {
    let sockets = resolve_sockets(sockets).await;
    let init = resolve("basho-init", init, Kind::File, &sockets).await?;
    body.host_config
        .get_or_insert_default()
        .mounts
        .get_or_insert_default()
        .push(bind(&init, INIT_PATH, true, Default::default()));
    body.entrypoint = Some(vec![
        INIT_PATH.into(),
        "--until".into(),
        expires_at.timestamp().to_string(),
        "--".into(),
    ]);
    Ok(())
}

/// Host paths of a spec after resolving symlinks, so what is checked is what gets bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    pub datasets: Vec<(Ident, PathBuf)>,
    pub work_dir: PathBuf,
    pub results_dir: PathBuf,
    pub inputs_dir: Option<PathBuf>,
    pub workspace_json: PathBuf,
}

fn refused(msg: impl Into<String>) -> BackendError {
    BackendError::refused(msg.into())
}

/// Refuses a spec that would weaken isolation or that the engine would reject later.
pub(super) async fn check(spec: &LaunchSpec, sockets: &[String]) -> Result<Checked, BackendError> {
    if spec.resources.gpus > 0 {
        return Err(BackendError::Unsupported(format!(
            "{} GPU(s) requested but this docker backend does not pass GPUs; place the \
             workspace on a site that offers them",
            spec.resources.gpus
        )));
    }
    check_user(&spec.user)?;
    check_image(&spec.image)?;
    check_limits(spec)?;
    check_env(&spec.env)?;

    let sockets = resolve_sockets(sockets).await;
    let mut datasets = Vec::with_capacity(spec.datasets.len());
    for d in &spec.datasets {
        if datasets.iter().any(|(id, _)| id == &d.id) {
            return Err(refused(format!("dataset {} is listed twice", d.id)));
        }
        let what = format!("dataset {}", d.id);
        datasets.push((
            d.id.clone(),
            resolve(&what, &d.host_path, Kind::Dir, &sockets).await?,
        ));
    }
    let inputs_dir = match &spec.inputs_dir {
        Some(p) => Some(resolve("inputs directory", p, Kind::Dir, &sockets).await?),
        None => None,
    };
    Ok(Checked {
        datasets,
        inputs_dir,
        work_dir: resolve("work directory", &spec.work_dir, Kind::Dir, &sockets).await?,
        results_dir: resolve("results directory", &spec.results_dir, Kind::Dir, &sockets).await?,
        workspace_json: resolve("workspace.json", &spec.workspace_json, Kind::File, &sockets)
            .await?,
    })
}

/// `uid[:gid]`, numeric, neither root: a name could map to uid 0 inside an arbitrary image.
pub(crate) fn check_user(user: &str) -> Result<(), BackendError> {
    let bad = || {
        refused(format!(
            "workspace user {user:?} is not allowed; set isolation.user to a numeric non-root \
             uid:gid such as 65534:65534"
        ))
    };
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid: u32 = uid.parse().map_err(|_| bad())?;
    let gid: Option<u32> = gid.map(str::parse).transpose().map_err(|_| bad())?;
    if uid == 0 || gid == Some(0) {
        return Err(bad());
    }
    Ok(())
}

/// An image ID (`sha256:<64 hex>`) or `name@sha256:<64 hex>`: a tag can be moved under us.
pub(crate) fn check_image(image: &str) -> Result<(), BackendError> {
    let digest = match image.rsplit_once('@') {
        Some((name, digest)) if !name.is_empty() => digest,
        Some(_) => "",
        None => image,
    };
    let pinned = digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !pinned {
        return Err(refused(format!(
            "image {image:?} is not pinned; the site's images must name an image ID (sha256:...) \
             or name@sha256:..."
        )));
    }
    Ok(())
}

pub(crate) fn check_limits(spec: &LaunchSpec) -> Result<(), BackendError> {
    let r = &spec.resources;
    if r.cpus == 0 {
        return Err(refused("cpus must be at least 1"));
    }
    if r.memory_mib < MIN_MEMORY_MIB {
        return Err(refused(format!(
            "memory_mib {} is below the engine's minimum of {MIN_MEMORY_MIB}",
            r.memory_mib
        )));
    }
    // 0 and -1 mean "unlimited" to the engine and the kernel: never what a site wants.
    if spec.pids_limit <= 0 {
        return Err(refused(format!(
            "pids_limit {} would mean no limit; set isolation.pids_limit to a positive number",
            spec.pids_limit
        )));
    }
    if spec.tmp_size_mib == 0 {
        return Err(refused(
            "tmp_size_mib 0 would mean an unbounded /tmp; set isolation.tmp_size_mib",
        ));
    }
    Ok(())
}

/// Names only: values may hold secrets and never appear in errors or logs.
pub(crate) fn check_env(env: &[(String, String)]) -> Result<(), BackendError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(refused(format!(
                "environment variable name {k:?} is not valid"
            )));
        }
        if v.contains('\0') {
            return Err(refused(format!(
                "environment variable {k} has a NUL byte in its value"
            )));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Socket paths as given and as resolved (`/var/run` is often a link to `/run`).
async fn resolve_sockets(sockets: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in sockets {
        let p = PathBuf::from(s);
        if let Ok(real) = tokio::fs::canonicalize(&p).await {
            out.push(real);
        }
        out.push(p);
    }
    out
}

/// Resolves `path`, checks its kind, and refuses it when it is, is under or contains an engine
/// socket: binding `/var/run` would hand the workspace the engine as surely as the socket would.
async fn resolve(
    what: &str,
    path: &Path,
    kind: Kind,
    sockets: &[PathBuf],
) -> Result<PathBuf, BackendError> {
    if !path.is_absolute() {
        return Err(refused(format!(
            "{what} path {} is not absolute",
            path.display()
        )));
    }
    let real = tokio::fs::canonicalize(path).await.map_err(|e| {
        refused(format!(
            "{what} path {} cannot be used: {e}; check the site config and that the agent \
             created it",
            path.display()
        ))
    })?;
    if let Some(s) = sockets
        .iter()
        .find(|s| real.starts_with(s) || s.starts_with(&real))
    {
        return Err(refused(format!(
            "{what} path {} would expose the container engine socket {}; workspaces never get \
             the engine",
            path.display(),
            s.display()
        )));
    }
    let meta = tokio::fs::metadata(&real).await.map_err(|e| {
        refused(format!(
            "{what} path {} cannot be used: {e}",
            path.display()
        ))
    })?;
    let ok = match kind {
        Kind::Dir => meta.is_dir(),
        Kind::File => meta.is_file(),
    };
    if !ok {
        let want = if kind == Kind::Dir {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(refused(format!(
            "{what} path {} is not {want}",
            path.display()
        )));
    }
    Ok(real)
}

fn bind(source: &Path, target: &str, read_only: bool, options: MountBindOptions) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(source.to_string_lossy().into_owned()),
        target: Some(target.to_string()),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            ..options
        }),
        ..Default::default()
    }
}

/// The mounts, and nothing else: datasets read-only, `/work` and `/results` read-write, the
/// workspace description read-only.
///
/// Datasets are made read-only all the way down when the engine can (API 1.44+). Older engines
/// only make the top mount read-only, so there datasets are bound without their submounts: a
/// submount shows as an empty directory instead of a writable one.
pub(super) fn mounts(checked: &Checked, recursive_readonly: bool) -> Vec<Mount> {
    let dataset_options = if recursive_readonly {
        MountBindOptions {
            read_only_force_recursive: Some(true),
            ..Default::default()
        }
    } else {
        MountBindOptions {
            non_recursive: Some(true),
            ..Default::default()
        }
    };
    let mut out: Vec<Mount> = checked
        .datasets
        .iter()
        .map(|(id, path)| bind(path, &format!("/data/{id}"), true, dataset_options.clone()))
        .collect();
    out.push(bind(&checked.work_dir, "/work", false, Default::default()));
    out.push(bind(
        &checked.results_dir,
        "/results",
        false,
        Default::default(),
    ));
    if let Some(inputs) = &checked.inputs_dir {
        out.push(bind(
            inputs,
            basho_core::federated::INPUTS,
            true,
            dataset_options.clone(),
        ));
    }
    out.push(bind(
        &checked.workspace_json,
        "/etc/basho/workspace.json",
        true,
        Default::default(),
    ));
    out
}

/// The create request. Every field that bears on isolation is set explicitly, even where it
/// matches the engine's default, so a changed daemon default cannot loosen it.
pub(super) fn container_body(
    spec: &LaunchSpec,
    checked: &Checked,
    recursive_readonly: bool,
) -> ContainerCreateBody {
    let memory = (spec.resources.memory_mib * 1024 * 1024) as i64;
    let host_config = HostConfig {
        network_mode: Some("none".into()),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(Vec::new()),
        // The engine's default seccomp profile stays on: only no-new-privileges is added.
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={}m", spec.tmp_size_mib),
        )])),
        pids_limit: Some(spec.pids_limit),
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(spec.resources.cpus) * 1_000_000_000),
        privileged: Some(false),
        devices: Some(Vec::new()),
        device_requests: Some(Vec::new()),
        ipc_mode: Some("private".into()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        publish_all_ports: Some(false),
        auto_remove: Some(false),
        mounts: Some(mounts(checked, recursive_readonly)),
        ..Default::default()
    };
    let labels = HashMap::from([
        (LABEL_WORKSPACE.to_string(), spec.workspace.to_string()),
        (LABEL_PROJECT.to_string(), spec.project.to_string()),
        (LABEL_SITE.to_string(), spec.site.to_string()),
        (
            LABEL_EXPIRES.to_string(),
            spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    ]);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        user: Some(spec.user.clone()),
        working_dir: Some(spec.workdir.clone().unwrap_or_else(|| "/work".into())),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DatasetMount;
    use basho_core::Resources;
    use chrono::{TimeZone, Utc};

    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec(dir: &Path) -> LaunchSpec {
        let ds = dir.join("ds");
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("results")).unwrap();
        std::fs::write(dir.join("ws.json"), "{}").unwrap();
        LaunchSpec {
            workspace: basho_core::WorkspaceId::parse("ws-1").unwrap(),
            project: Ident::parse("P-0001").unwrap(),
            site: Ident::parse("tohoku").unwrap(),
            image: ID.into(),
            command: vec!["sleep".into(), "60".into()],
            workdir: None,
            datasets: vec![DatasetMount {
                release: 1,
                id: Ident::parse("JGAD000101").unwrap(),
                host_path: ds,
                claim: None,
            }],
            work_dir: dir.join("work"),
            results_dir: dir.join("results"),
            inputs_dir: None,
            workspace_json: dir.join("ws.json"),
            env: vec![("BASHO_WORKSPACE".into(), "ws-1".into())],
            resources: Resources {
                cpus: 2,
                memory_mib: 512,
                gpus: 0,
            },
            expires_at: Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap(),
            user: "65534:65534".into(),
            pids_limit: 256,
            tmp_size_mib: 64,
        }
    }

    fn refused_with(r: Result<Checked, BackendError>, needle: &str) {
        match r {
            Err(BackendError::Refused { message: m, .. }) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn users_must_be_numeric_and_not_root() {
        for ok in ["65534:65534", "1000", "1000:1000"] {
            assert!(check_user(ok).is_ok(), "{ok}");
        }
        for bad in [
            "0",
            "0:0",
            "root",
            "root:root",
            "1000:0",
            "",
            "nobody",
            "1000:",
            ":1000",
        ] {
            assert!(
                matches!(check_user(bad), Err(BackendError::Refused { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn images_must_be_pinned() {
        assert!(check_image(ID).is_ok());
        assert!(check_image(&format!("basho/demo@{ID}")).is_ok());
        for bad in [
            "basho/demo:1",
            "basho/demo",
            "sha256:abc",
            &format!("@{ID}"),
            "latest",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_sound_spec_passes_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let c = check(&s, &[]).await.unwrap();
        assert_eq!(c.work_dir, std::fs::canonicalize(&s.work_dir).unwrap());
        assert_eq!(c.datasets.len(), 1);
    }

    #[tokio::test]
    async fn refuses_what_would_weaken_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let base = spec(dir.path());

        let mut s = base.clone();
        s.pids_limit = 0;
        refused_with(check(&s, &[]).await, "pids_limit");

        let mut s = base.clone();
        s.tmp_size_mib = 0;
        refused_with(check(&s, &[]).await, "tmp_size_mib");

        let mut s = base.clone();
        s.datasets.push(s.datasets[0].clone());
        refused_with(check(&s, &[]).await, "twice");

        let mut s = base.clone();
        s.work_dir = dir.path().join("missing");
        refused_with(check(&s, &[]).await, "work directory");

        let mut s = base.clone();
        s.workspace_json = dir.path().join("work");
        refused_with(check(&s, &[]).await, "regular file");

        let mut s = base.clone();
        s.resources.gpus = 1;
        assert!(matches!(
            check(&s, &[]).await,
            Err(BackendError::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn refuses_engine_sockets_and_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let base = spec(dir.path());
        let sock = dir.path().join("run").join("docker.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, "").unwrap();
        let sockets = [sock.to_string_lossy().into_owned()];

        let mut s = base.clone();
        s.datasets[0].host_path = dir.path().join("run");
        refused_with(check(&s, &sockets).await, "engine socket");

        let mut s = base.clone();
        s.workspace_json = sock.clone();
        refused_with(check(&s, &sockets).await, "engine socket");

        // Through a symlink too.
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(dir.path().join("run"), &link).unwrap();
        let mut s = base.clone();
        s.results_dir = link;
        refused_with(check(&s, &sockets).await, "engine socket");

        assert!(check(&base, &sockets).await.is_ok());
    }

    #[tokio::test]
    async fn a_batch_launch_sets_its_working_directory_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        let c = check(&s, &[]).await.unwrap();
        assert_eq!(
            container_body(&s, &c, false).working_dir.as_deref(),
            Some("/work")
        );
        s.workdir = Some("/tmp/run".into());
        s.env.push(("LANG".into(), "C".into()));
        let body = container_body(&s, &c, false);
        assert_eq!(body.working_dir.as_deref(), Some("/tmp/run"));
        assert!(body.env.unwrap().contains(&"LANG=C".to_string()));
    }

    #[tokio::test]
    async fn body_carries_every_isolation_default() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let c = check(&s, &[]).await.unwrap();
        let body = container_body(&s, &c, false);
        let h = body.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.cap_add, Some(vec![]));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(
            h.tmpfs.as_ref().unwrap()["/tmp"],
            "rw,noexec,nosuid,nodev,size=64m"
        );
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.memory, Some(512 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory);
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.ipc_mode.as_deref(), Some("private"));
        assert!(h.binds.is_none());
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_EXPIRES], "2030-01-02T03:04:05Z");
        assert_eq!(labels[LABEL_SITE], "tohoku");

        let m = h.mounts.as_ref().unwrap();
        let targets: Vec<_> = m.iter().map(|m| m.target.clone().unwrap()).collect();
        assert_eq!(
            targets,
            [
                "/data/JGAD000101",
                "/work",
                "/results",
                "/etc/basho/workspace.json"
            ]
        );
        let ro: Vec<_> = m.iter().map(|m| m.read_only.unwrap()).collect();
        assert_eq!(ro, [true, false, false, true]);
        let ds = m[0].bind_options.as_ref().unwrap();
        assert_eq!(ds.non_recursive, Some(true));
        assert_eq!(ds.read_only_force_recursive, None);

        let newer = container_body(&s, &c, true);
        let ds = newer.host_config.unwrap().mounts.unwrap()[0]
            .bind_options
            .clone()
            .unwrap();
        assert_eq!(ds.read_only_force_recursive, Some(true));
        assert_eq!(ds.non_recursive, None);
    }
}
