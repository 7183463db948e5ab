//! `basho-agent check-config`: every problem of a site config at once, each saying what to fix.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{BackendConfig, DockerConfig, SiteConfig};

/// Engine sockets that give control of the host: never inside a dataset.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];
/// How deep and how wide a dataset is searched for sockets; datasets can be huge.
const SOCKET_SCAN_DEPTH: usize = 3;
const SOCKET_SCAN_ENTRIES: usize = 10_000;
/// Longest long-poll the agent asks for, seconds.
const MAX_POLL_WAIT_S: u64 = 300;

/// Every problem of `config`, empty when it is fine.
pub fn check(config: &SiteConfig) -> Vec<String> {
    let mut p = Vec::new();
    check_orchestrator(config, &mut p);
    check_datasets(config, &mut p);
    check_images(config, &mut p);
    check_issuers(config, &mut p);
    check_paths(config, &mut p);
    p.extend(config.sessions.problems());
    p.extend(config.airlock.problems());
    p.extend(config.backend.check());
    if let Err(e) = config.isolation.ids() {
        p.push(e.to_string());
    }
    if config.isolation.pids_limit <= 0 {
        p.push("isolation.pids_limit must be positive".into());
    }
    if config.isolation.tmp_size_mib == 0 {
        p.push("isolation.tmp_size_mib must be positive".into());
    }
    if config.reconcile.parallel_actions == 0 {
        p.push("reconcile.parallel_actions must be at least 1".into());
    }
    p.extend(config.capacity.problems());
    if config.capacity.only_idle && matches!(config.backend, BackendConfig::Kubernetes(_)) {
        p.push(
            "capacity.only_idle: the kubernetes backend cannot read the cluster's own load yet; \
             leave it false and size capacity and max_share for the namespace's quota"
                .into(),
        );
    }
    p
}

fn check_orchestrator(config: &SiteConfig, p: &mut Vec<String>) {
    if let Err(e) = config.token() {
        p.push(e.to_string());
    }
    let url = &config.orchestrator.url;
    let policy = config.orchestrator.tls_policy();
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
            if let Err(why) = policy.check_url(&u) {
                p.push(format!("orchestrator.url {url:?}: {why}"));
            }
        }
        _ => p.push(format!(
            "orchestrator.url {url:?} is not an http(s) URL; write it like https://basho.example.org"
        )),
    }
    if let Some(ca) = &config.orchestrator.ca_file
        && let Err(why) = crate::client::tls::load_ca_bundle(ca)
    {
        p.push(format!("orchestrator.ca_file: {why}"));
    }
    let wait = config.orchestrator.poll_wait_s;
    if wait == 0 || wait > MAX_POLL_WAIT_S {
        p.push(format!(
            "orchestrator.poll_wait_s is {wait}; use 1 to {MAX_POLL_WAIT_S}"
        ));
    }
}

fn check_datasets(config: &SiteConfig, p: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    let mut sockets: Vec<PathBuf> = ENGINE_SOCKETS.iter().map(PathBuf::from).collect();
    if let BackendConfig::Docker(DockerConfig {
        socket: Some(s), ..
    }) = &config.backend
    {
        sockets.push(PathBuf::from(s.trim_start_matches("unix://")));
    }
    let sockets: Vec<PathBuf> = sockets
        .iter()
        .filter_map(|s| std::fs::canonicalize(s).ok())
        .collect();
    let trusted: BTreeSet<&str> = config
        .trusted_issuers
        .iter()
        .map(|t| t.issuer.as_str())
        .collect();
    for d in &config.datasets {
        if !seen.insert(&d.id) {
            p.push(format!(
                "dataset {} is listed twice in the catalog; keep one entry",
                d.id
            ));
        }
        if d.issuers.is_empty() && trusted.len() > 1 {
            p.push(format!(
                "dataset {}: the site trusts {} issuers; set issuers = [...] to the ones whose \
                 visas may grant it",
                d.id,
                trusted.len()
            ));
        }
        for iss in d.issuers.iter().filter(|i| !trusted.contains(i.as_str())) {
            p.push(format!(
                "dataset {}: issuer {iss:?} is not one of the site's trusted_issuers",
                d.id
            ));
        }
        if let Some(url) = &d.grant_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            p.push(format!(
                "dataset {}: grant_url {url:?} is not a URL; visas carry an http(s) grant URL",
                d.id
            ));
        }
        if let BackendConfig::Kubernetes(_) = &config.backend {
            // The path is on the nodes, not where the agent runs: only its form can be checked.
            match &d.claim {
                Some(claim) => p.extend(claim.problem().map(|e| format!("dataset {}: {e}", d.id))),
                None => p.extend(
                    crate::config::node_path_problem(&d.path)
                        .map(|e| format!("dataset {}: {e}; or set claim", d.id)),
                ),
            }
            continue;
        }
        if d.claim.is_some() {
            p.push(format!(
                "dataset {}: claim is only used by the kubernetes backend; this site binds path",
                d.id
            ));
        }
        if let Some(problem) = dataset_path_problem(&d.path, &sockets) {
            p.push(format!("dataset {}: {problem}", d.id));
        }
    }
}

fn dataset_path_problem(path: &Path, engine_sockets: &[PathBuf]) -> Option<String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Some(format!("path {shown} is not absolute"));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("path {shown} cannot be used: {e}")),
    };
    if meta.file_type().is_socket() {
        return Some(format!(
            "path {shown} is a socket; never expose an engine socket to a workspace"
        ));
    }
    if !meta.is_dir() {
        return Some(format!(
            "path {shown} is not a directory; datasets are mounted as directories"
        ));
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if let Some(s) = engine_sockets.iter().find(|s| s.starts_with(&real)) {
        return Some(format!(
            "path {shown} contains the engine socket {}; point the catalog at the dataset itself",
            s.display()
        ));
    }
    find_socket(&real).map(|s| {
        format!(
            "path {shown} contains the socket {}; remove it or point the catalog elsewhere",
            s.display()
        )
    })
}

/// A socket within the first few levels of `dir`, if any (symlinks are not followed: inside the
/// container they resolve in the container's own namespace).
fn find_socket(dir: &Path) -> Option<PathBuf> {
    let mut queue = vec![(dir.to_owned(), 0usize)];
    let mut visited = 0usize;
    while let Some((d, depth)) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > SOCKET_SCAN_ENTRIES {
                return None;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_socket() {
                return Some(entry.path());
            }
            if kind.is_dir() && depth + 1 < SOCKET_SCAN_DEPTH {
                queue.push((entry.path(), depth + 1));
            }
        }
    }
    None
}

/// `sha256:<64 hex>` (an image ID) or `name@sha256:<64 hex>` (a digest).
pub(crate) fn is_pinned(reference: &str) -> bool {
    let digest = match reference.split_once('@') {
        Some((name, digest)) => {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return false;
            }
            digest
        }
        None => reference,
    };
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn check_images(config: &SiteConfig, p: &mut Vec<String>) {
    for (name, reference) in &config.images {
        if name.trim().is_empty() {
            p.push("images: an allow-list entry has an empty name".into());
        }
        if !is_pinned(reference) {
            p.push(format!(
                "images.{name:?} = {reference:?} is not pinned; use an image ID sha256:<64 hex> \
                 or name@sha256:<64 hex>"
            ));
        }
    }
}

fn check_issuers(config: &SiteConfig, p: &mut Vec<String>) {
    if config.trusted_issuers.is_empty() {
        p.push(
            "no trusted_issuers: every workspace would be refused; add the DAC issuers' JWKS files"
                .into(),
        );
    }
    let mut seen = BTreeSet::new();
    for r in &config.trusted_issuers {
        if !seen.insert(&r.issuer) {
            p.push(format!(
                "trusted issuer {:?} is listed twice; keep one entry",
                r.issuer
            ));
        }
    }
    if let Err(problems) = config.load_trusted_issuers() {
        p.extend(problems.iter().map(ToString::to_string));
    }
    let sessions = &config.sessions;
    let keys = sessions
        .identity_issuers
        .iter()
        .map(|i| (i.issuer.as_str(), i.jwks_file.as_path()))
        .chain(
            sessions
                .approvers
                .iter()
                .map(|a| (a.issuer.as_str(), a.jwks_file.as_path())),
        );
    if let Err(problems) = super::load_issuers(keys) {
        p.extend(problems.iter().map(|e| format!("sessions: {e}")));
    }
}

fn check_paths(config: &SiteConfig, p: &mut Vec<String>) {
    let paths = &config.paths;
    for (name, path) in [
        ("state_dir", &paths.state_dir),
        ("work_root", &paths.work_root),
        ("results_root", &paths.results_root),
    ] {
        if !path.is_absolute() {
            p.push(format!(
                "paths.{name} {} is not absolute; backends bind it by absolute path",
                path.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::net::UnixListener;

    use basho_core::Ident;
    use basho_core::protocol::Capacity;
    use basho_core::visa::IssuerRef;
    use basho_core::visa::mint::Issuer;

    use super::*;
    use crate::config::{CatalogEntry, FakeConfig, Isolation, OrchestratorLink, Paths};

    fn good(dir: &Path) -> SiteConfig {
        let data = dir.join("JGAD000101");
        std::fs::create_dir_all(&data).unwrap();
        let jwks = dir.join("dac.jwks.json");
        std::fs::write(&jwks, Issuer::generate("https://dac.test").jwks_json()).unwrap();
        SiteConfig {
            consent: Default::default(),
            site: Ident::parse("sim").unwrap(),
            orchestrator: OrchestratorLink {
                url: "http://127.0.0.1:8080".into(),
                token: Some("t".into()),
                token_file: None,
                poll_wait_s: 25,
                ca_file: None,
                plain_http_on_loopback: true,
            },
            capacity: crate::capacity::CapacityConfig::fixed(Capacity {
                cpus: 4,
                memory_mib: 4096,
                gpus: 0,
            }),
            backend: BackendConfig::Fake(FakeConfig {
                start_delay_ms: 0,
                failure_rate: 0.1,
                exit_after_ms: None,
            }),
            datasets: vec![CatalogEntry {
                participant_column: None,
                filter_command: Vec::new(),
                id: Ident::parse("JGAD000101").unwrap(),
                path: data,
                claim: None,
                grant_url: None,
                issuers: Vec::new(),
                source: None,
            }],
            images: BTreeMap::from([("basho/demo".into(), format!("sha256:{}", "a".repeat(64)))]),
            trusted_issuers: vec![IssuerRef {
                issuer: "https://dac.test".into(),
                jwks_file: jwks,
            }],
            paths: Paths::under(dir),
            isolation: Isolation::default(),
            metrics: None,
            metering: Default::default(),
            sessions: Default::default(),
            airlock: Default::default(),
            reconcile: Default::default(),
        }
    }

    #[test]
    fn a_good_config_has_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(&good(dir.path())), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = good(dir.path());
        c.orchestrator.token = None;
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let with_socket = dir.path().join("with-socket");
        std::fs::create_dir_all(with_socket.join("sub")).unwrap();
        let _listener = UnixListener::bind(with_socket.join("sub/docker.sock")).unwrap();
        let dataset = |id: &str, path: PathBuf| CatalogEntry {
            participant_column: None,
            filter_command: Vec::new(),
            id: Ident::parse(id).unwrap(),
            path,
            claim: None,
            grant_url: None,
            issuers: vec!["https://dac.test".into()],
            source: None,
        };
        c.datasets
            .push(dataset("JGAD000101", dir.path().join("JGAD000101")));
        c.datasets.push(dataset("MISSING", dir.path().join("nope")));
        c.datasets.push(dataset("FILE", file));
        c.datasets.push(dataset("SOCKETS", with_socket));
        c.datasets.push(dataset(
            "SOCKET",
            dir.path().join("with-socket/sub/docker.sock"),
        ));
        c.images.insert("latest".into(), "busybox:latest".into());
        c.images.insert("short".into(), "sha256:abc".into());
        c.images.insert(
            "digest".into(),
            format!("busybox@sha256:{}", "b".repeat(64)),
        );
        c.isolation.user = "0:0".into();
        c.trusted_issuers.push(IssuerRef {
            issuer: "https://gone.test".into(),
            jwks_file: dir.path().join("gone.jwks.json"),
        });
        c.backend = BackendConfig::Fake(FakeConfig {
            start_delay_ms: 0,
            failure_rate: 1.5,
            exit_after_ms: None,
        });
        let problems = check(&c);
        let expect = [
            "no agent token",
            "dataset JGAD000101 is listed twice",
            "dataset MISSING: path",
            "dataset FILE: path",
            "not a directory",
            "dataset SOCKETS: path",
            "contains the socket",
            "dataset SOCKET: path",
            "is a socket",
            "images.\"latest\"",
            "images.\"short\"",
            "isolation.user \"0:0\" is root",
            "trusted issuer \"https://gone.test\"",
            "dataset JGAD000101: the site trusts 2 issuers",
            "failure_rate is 1.5",
        ];
        for e in expect {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "{e:?} missing from {problems:#?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.contains("\"digest\"")),
            "{problems:#?}"
        );
        assert_eq!(problems.len(), 12, "{problems:#?}");
    }

    #[test]
    fn a_dataset_names_only_trusted_issuers() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = good(dir.path());
        c.datasets[0].issuers = vec!["https://dac.test".into(), "https://stranger.test".into()];
        let problems = check(&c);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("issuer \"https://stranger.test\" is not one of"),
            "{problems:#?}"
        );
    }

    #[test]
    fn non_numeric_user_and_no_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = good(dir.path());
        c.isolation.user = "nobody:nogroup".into();
        c.trusted_issuers.clear();
        let problems = check(&c);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("no trusted_issuers"), "{problems:#?}");
        assert!(problems[1].contains("numeric uid:gid"), "{problems:#?}");
        c.isolation.user = "65534:65534".into();
        c.trusted_issuers = good(dir.path()).trusted_issuers;
        c.backend = BackendConfig::Docker(DockerConfig {
            socket: None,
            namespace: Some("../other".into()),
            init: None,
        });
        let problems = check(&c);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("backend.namespace"), "{problems:#?}");
    }

    #[test]
    fn pinned_references() {
        let hex = "0123456789abcdef".repeat(4);
        assert!(is_pinned(&format!("sha256:{hex}")));
        assert!(is_pinned(&format!(
            "registry.example/basho/demo@sha256:{hex}"
        )));
        assert!(!is_pinned(&format!("sha256:{}", hex.to_uppercase())));
        assert!(!is_pinned(&format!("@sha256:{hex}")));
        assert!(!is_pinned("basho/demo:1.0"));
        assert!(!is_pinned(&format!("sha512:{hex}{hex}")));
    }
}
