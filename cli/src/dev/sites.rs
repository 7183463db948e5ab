//! The three site agents of `basho dev`, each with a site config built in code: its catalog of
//! synthetic datasets, the demo image pinned by ID, the trusted issuers, its own directories and
//! a share of the host as capacity.

use std::collections::BTreeMap;
use std::fs;

use basho_agent::config::{
    BackendConfig, CatalogEntry, Isolation, OrchestratorLink, Paths, SiteConfig,
};
use basho_core::Ident;
use basho_core::protocol::Capacity;
use basho_core::visa::IssuerRef;

use super::data::DemoSite;
use super::{DevError, Layout};

/// Memory offered when `/proc/meminfo` cannot be read, MiB.
const FALLBACK_MEMORY_MIB: u64 = 4096;

/// What every site of the dev federation shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// Where the agents reach the orchestrator.
    pub api_url: String,
    /// The demo image's name and the image ID it is pinned to.
    pub image: (String, String),
    /// Issuers every agent trusts.
    pub trusted_issuers: Vec<IssuerRef>,
    /// What each site offers.
    pub capacity: Capacity,
}

/// The host as capacity: every core, half the memory. Each dev site offers the same, since they
/// all share the one Docker engine.
pub fn host_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total_kib(&s))
        .map(|kib| (kib / 1024 / 2).max(64))
        .unwrap_or(FALLBACK_MEMORY_MIB);
    Capacity {
        cpus,
        memory_mib,
        gpus: 0,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The site config of `site`; creates its directories under `<data-dir>/sites/<site>/`.
pub fn site_config(
    layout: &Layout,
    site: &DemoSite,
    token: String,
    common: &Common,
) -> Result<SiteConfig, DevError> {
    let dir = layout.site(site.name);
    let paths = Paths::under(&dir);
    for d in [&paths.state_dir, &paths.work_root, &paths.results_root] {
        fs::create_dir_all(d).map_err(|e| DevError::io(d, e))?;
    }
    let datasets = site
        .datasets
        .iter()
        .map(|d| {
            Ok(CatalogEntry {
                id: ident(d.id)?,
                path: layout.datasets().join(d.id),
                claim: None,
                grant_url: None,
                // Every issuer `basho dev` trusts may grant every demo dataset, said explicitly.
                issuers: common
                    .trusted_issuers
                    .iter()
                    .map(|t| t.issuer.clone())
                    .collect(),
                source: None,
                // One row per participant: its record ID is the pseudonymous participant ID a
                // withdrawal names (`basho-agent withdraw`).
                participant_column: Some("record_id".into()),
                filter_command: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, DevError>>()?;
    Ok(SiteConfig {
        consent: Default::default(),
        site: ident(site.name)?,
        orchestrator: OrchestratorLink {
            url: common.api_url.clone(),
            token: Some(token),
            token_file: None,
            poll_wait_s: 25,
            ca_file: None,
            plain_http_on_loopback: true,
        },
        capacity: basho_agent::capacity::CapacityConfig::fixed(common.capacity),
        backend: BackendConfig::Docker(basho_agent::config::DockerConfig {
            socket: None,
            namespace: Some(namespace(layout)),
            init: None,
        }),
        datasets,
        images: BTreeMap::from([common.image.clone()]),
        trusted_issuers: common.trusted_issuers.clone(),
        paths,
        isolation: Isolation::default(),
        metrics: None,
        metering: Default::default(),
        // Sessions need the owner's identity token, which `basho dev id-token` makes.
        sessions: basho_agent::session::SessionsConfig {
            identity_issuers: vec![layout.issuer().identity_issuer()],
            ..Default::default()
        },
        // The demo's federated jobs: a partial that passes every automated check leaves by the
        // site's own rule; the aggregate still waits for two checkers.
        airlock: basho_agent::airlock::AirlockConfig {
            auto_release_partials: true,
            ..Default::default()
        },
        reconcile: Default::default(),
    })
}

/// The Docker namespace of this data dir's agents: two `basho dev` instances (or one next to the
/// tests) on one engine then never touch each other's containers, while a restart on the same data
/// dir re-adopts its own. FNV-1a, so the name stays the same across builds.
pub fn namespace(layout: &Layout) -> String {
    let path = layout.root.to_string_lossy();
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("dev-{hash:016x}")
}

fn ident(s: &str) -> Result<Ident, DevError> {
    Ident::parse(s).map_err(|e| DevError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::data::FEDERATION;

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24684092 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_kib(text), Some(24_684_092));
        assert_eq!(mem_total_kib("nothing"), None);
        let c = host_capacity();
        assert!(c.cpus >= 1 && c.memory_mib >= 64);
    }

    #[test]
    fn each_site_gets_its_datasets_directories_and_the_pinned_image() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let common = Common {
            api_url: "http://127.0.0.1:8080".into(),
            image: ("basho/demo".into(), format!("sha256:{}", "a".repeat(64))),
            trusted_issuers: vec![layout.issuer().issuer_ref()],
            capacity: Capacity {
                cpus: 2,
                memory_mib: 1024,
                gpus: 0,
            },
        };
        let tohoku = site_config(&layout, &FEDERATION[0], "tok".into(), &common).unwrap();
        assert_eq!(tohoku.site.as_str(), "tohoku");
        let ids: Vec<&str> = tohoku.datasets.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["JGAD000101", "JGAD000102"]);
        assert_eq!(
            tohoku.datasets[0].path,
            tmp.path().join("datasets/JGAD000101")
        );
        assert!(tohoku.paths.work_root.is_dir());
        assert!(
            tohoku
                .paths
                .state_dir
                .starts_with(tmp.path().join("sites/tohoku"))
        );
        assert_eq!(tohoku.images["basho/demo"], common.image.1);
        assert!(tohoku.airlock.auto_release_partials);
        assert_eq!(tohoku.orchestrator.token.as_deref(), Some("tok"));
        let bbj = site_config(&layout, &FEDERATION[2], "t2".into(), &common).unwrap();
        assert_ne!(bbj.paths.state_dir, tohoku.paths.state_dir);
    }
}
