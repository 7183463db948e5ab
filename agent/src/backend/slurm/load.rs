//! The cluster's own load, for `[capacity] only_idle`: the nodes of the configured partition as
//! `scontrol --oneliner show node` lists them (those that can run jobs), what jobs hold of them,
//! and how much of that is this site's own basho jobs (`squeue` of the service account). What
//! is left, the site's own users' work, is what basho leaves alone.

use basho_core::protocol::Capacity;

use super::state::comment;
use crate::backend::SiteLoad;

/// `squeue` fields for what basho's jobs hold: CPUs, memory per node, comment (free text, last).
pub const SQUEUE_HELD: &str = "%C|%m|%k";

/// One node as `scontrol --oneliner show node` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub cpus_alloc: u32,
    pub memory_mib: u64,
    pub memory_alloc_mib: u64,
    /// `State=`, such as `IDLE`, `MIXED`, `DOWN+DRAIN`.
    pub state: String,
    pub partitions: Vec<String>,
}

impl Node {
    /// Whether jobs can start on it: not down, drained, failing or not responding.
    pub fn usable(&self) -> bool {
        ![
            "DOWN",
            "DRAIN",
            "FAIL",
            "NOT_RESPONDING",
            "POWERED_DOWN",
            "FUTURE",
        ]
        .iter()
        .any(|bad| {
            self.state
                .split('+')
                .any(|s| s.trim_end_matches('*') == *bad)
        })
    }
}

/// Every node of `scontrol --oneliner show node`, one per line.
pub fn nodes(out: &str) -> Vec<Node> {
    out.lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            };
            let num = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok());
            Some(Node {
                name: field("NodeName")?.to_owned(),
                cpus: u32::try_from(num("CPUTot")?).ok()?,
                cpus_alloc: u32::try_from(num("CPUAlloc").unwrap_or(0)).ok()?,
                memory_mib: num("RealMemory").unwrap_or(0),
                memory_alloc_mib: num("AllocMem").unwrap_or(0),
                state: field("State").unwrap_or("UNKNOWN").to_owned(),
                partitions: field("Partitions")
                    .map(|p| p.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Memory as `squeue %m` prints it (`512M`, `4G`, `1T`, bare MiB), in MiB.
pub fn memory_mib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "M"),
    };
    let n: f64 = digits.parse().ok()?;
    let scale = match unit.chars().next()? {
        'K' => 1.0 / 1024.0,
        'M' => 1.0,
        'G' => 1024.0,
        'T' => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * scale).ceil() as u64)
}

/// A `GrpTRES` value (`cpu=4,mem=16G,gres/gpu=2`) as a limit; figures it does not name are
/// unlimited. `None` when it names none of cpu, mem or GPUs.
pub fn tres_limit(tres: &str) -> Option<Capacity> {
    let mut limit = Capacity {
        cpus: u32::MAX,
        memory_mib: u64::MAX,
        gpus: u32::MAX,
    };
    let mut any = false;
    for (key, value) in tres.split(',').filter_map(|kv| kv.split_once('=')) {
        match key.trim() {
            "cpu" => limit.cpus = value.trim().parse().ok()?,
            "mem" => limit.memory_mib = memory_mib(value)?,
            "gres/gpu" => limit.gpus = value.trim().parse().ok()?,
            _ => continue,
        }
        any = true;
    }
    any.then_some(limit)
}

/// What this `site`'s basho jobs hold, from `squeue --format` [`SQUEUE_HELD`] of running jobs.
pub fn held_by_site(out: &str, site: &str) -> Capacity {
    let mut held = Capacity::default();
    for line in out.lines() {
        let mut f = line.splitn(3, '|');
        let (Some(cpus), Some(mem), Some(note)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if comment(note).0.as_deref() != Some(site) {
            continue;
        }
        held.cpus += cpus.trim().parse::<u32>().unwrap_or(0);
        held.memory_mib += memory_mib(mem).unwrap_or(0);
    }
    held
}

/// The load of the usable nodes in `partition` (every partition when `None`), less what this
/// site's basho jobs hold. GPUs are left to the ceiling.
pub fn site_load(nodes: &[Node], partition: Option<&str>, ours: Capacity) -> SiteLoad {
    let mut total = Capacity {
        gpus: u32::MAX,
        ..Capacity::default()
    };
    let mut alloc = Capacity::default();
    for n in nodes
        .iter()
        .filter(|n| n.usable() && partition.is_none_or(|p| n.partitions.iter().any(|q| q == p)))
    {
        total.cpus += n.cpus;
        total.memory_mib += n.memory_mib;
        alloc.cpus += n.cpus_alloc;
        alloc.memory_mib += n.memory_alloc_mib;
    }
    SiteLoad {
        total,
        others: Capacity {
            cpus: alloc.cpus.saturating_sub(ours.cpus),
            memory_mib: alloc.memory_mib.saturating_sub(ours.memory_mib),
            gpus: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=1.51 Gres=(null) RealMemory=22943 AllocMem=1024 FreeMem=13406 State=MIXED Partitions=debug,batch  BootTime=2026-12-08T00:43:30
NodeName=n2 CPUAlloc=0 CPUTot=64 RealMemory=262144 AllocMem=0 State=IDLE+DRAIN Partitions=batch
NodeName=n3 CPUAlloc=16 CPUTot=64 RealMemory=262144 AllocMem=65536 State=MIXED Partitions=batch
NodeName=n4 CPUAlloc=0 CPUTot=64 RealMemory=262144 AllocMem=0 State=DOWN* Partitions=debug
";

    #[test]
    fn nodes_parse_and_only_usable_ones_of_the_partition_count() {
        let n = nodes(NODES);
        assert_eq!(n.len(), 4);
        assert_eq!(n[0].cpus, 2);
        assert_eq!(n[0].memory_alloc_mib, 1024);
        assert_eq!(n[0].partitions, ["debug", "batch"]);
        assert!(n[0].usable() && !n[1].usable() && n[2].usable() && !n[3].usable());

        let ours = Capacity {
            cpus: 4,
            memory_mib: 4096,
            gpus: 0,
        };
        let batch = site_load(&n, Some("batch"), ours);
        assert_eq!(
            (batch.total.cpus, batch.total.memory_mib),
            (66, 22943 + 262144)
        );
        assert_eq!(batch.others.cpus, 1 + 16 - 4);
        assert_eq!(batch.others.memory_mib, 1024 + 65536 - 4096);
        let debug = site_load(&n, Some("debug"), Capacity::default());
        assert_eq!(debug.total.cpus, 2, "the down node is not offered");
        let all = site_load(&n, None, Capacity::default());
        assert_eq!(all.total.cpus, 66);
    }

    #[test]
    fn grp_tres_limits_what_it_names() {
        let l = tres_limit("cpu=4,mem=16G,node=2").unwrap();
        assert_eq!((l.cpus, l.memory_mib, l.gpus), (4, 16384, u32::MAX));
        assert_eq!(tres_limit("gres/gpu=2").unwrap().gpus, 2);
        assert_eq!(tres_limit(""), None);
        assert_eq!(tres_limit("node=3"), None);
        assert_eq!(tres_limit("cpu=many"), None);
    }

    #[test]
    fn memory_and_what_the_site_s_jobs_hold() {
        assert_eq!(memory_mib("512M"), Some(512));
        assert_eq!(memory_mib("4G"), Some(4096));
        assert_eq!(memory_mib("1T"), Some(1 << 20));
        assert_eq!(memory_mib("2048"), Some(2048));
        assert_eq!(memory_mib("1.5G"), Some(1536));
        assert_eq!(memory_mib("lots"), None);
        let out = "2|4G|basho site=tohoku expires=2026-12-08T10:00:00Z\n\
                   8|16G|basho site=kyoto expires=2026-12-08T10:00:00Z\n\
                   1|512M|a user's note | with bars\n\
                   1|1G|basho site=tohoku\n";
        assert_eq!(
            held_by_site(out, "tohoku"),
            Capacity {
                cpus: 3,
                memory_mib: 5120,
                gpus: 0
            }
        );
    }
}
