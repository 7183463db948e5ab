//! Placement, pure: feasibility filters (pinned site, datasets held, grants, free compute), then
//! ranking (reachable first, least CPU-loaded, fewest workspaces, name). No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use basho_core::protocol::Capacity;
use basho_core::{Ident, Resources};

/// One site as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct SiteView<'a> {
    /// Site name.
    pub name: &'a Ident,
    /// Datasets it holds: ID → grant URL a visa must carry.
    pub datasets: &'a BTreeMap<Ident, String>,
    /// Compute basho may use there now.
    pub capacity: Capacity,
    /// The most basho may ever use there.
    pub ceiling: Capacity,
    /// Why `capacity` is below the ceiling now, as the site says.
    pub note: Option<&'a str>,
    /// Compute held by its live workspaces.
    pub allocated: Capacity,
    /// Its live workspaces.
    pub workspaces: u32,
    /// Whether its agent was heard from recently.
    pub online: bool,
}

impl SiteView<'_> {
    /// Compute not yet allocated.
    pub fn free(&self) -> Capacity {
        Capacity {
            cpus: self.capacity.cpus.saturating_sub(self.allocated.cpus),
            memory_mib: self
                .capacity
                .memory_mib
                .saturating_sub(self.allocated.memory_mib),
            gpus: self.capacity.gpus.saturating_sub(self.allocated.gpus),
        }
    }
}

/// What a workspace needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Datasets it must have local.
    pub datasets: &'a [Ident],
    /// Compute.
    pub resources: Resources,
    /// The site it is pinned to, if any.
    pub site: Option<&'a Ident>,
    /// The grant URLs (visa `value`s) the request's visas carry.
    pub granted: &'a BTreeSet<String>,
    /// Sites it may not take now: held for queued workspaces ahead of it.
    pub held_back: Option<&'a BTreeSet<Ident>>,
}

/// Why no site fits. Every message names the sites and datasets involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The pinned site is not registered.
    #[error("site {site} is not registered; registered sites: {}", list(known))]
    UnknownSite {
        /// The pinned site.
        site: Ident,
        /// Registered sites.
        known: Vec<Ident>,
    },
    /// The pinned site lacks some requested datasets.
    #[error("site {site} does not hold {}; {}", list(missing), holders_text(holders, &[]))]
    SiteLacksDatasets {
        /// The pinned site.
        site: Ident,
        /// Requested datasets it does not hold.
        missing: Vec<Ident>,
        /// Which sites hold each requested dataset.
        holders: BTreeMap<Ident, Vec<Ident>>,
    },
    /// No site holds every requested dataset.
    #[error(
        "no site holds all of {}; {}",
        list(requested),
        holders_text(holders, unheld)
    )]
    NoSiteHoldsDatasets {
        /// The requested datasets.
        requested: Vec<Ident>,
        /// Which sites hold each requested dataset that some site holds.
        holders: BTreeMap<Ident, Vec<Ident>>,
        /// Requested datasets no site holds.
        unheld: Vec<Ident>,
    },
    /// Sites hold the datasets but no visa carries the grant URL they require.
    #[error(
        "no visa grants dataset {dataset}: the sites holding it require a visa whose value is one \
         of {}; ask the DAC for that grant or leave the dataset out",
        list(expected)
    )]
    NotGranted {
        /// The dataset.
        dataset: Ident,
        /// Grant URLs that would do.
        expected: Vec<String>,
    },
    /// Sites fit the datasets and grants but have too little free compute.
    #[error(
        "no site has {} cpus, {} MiB memory and {} gpus free; free now: {}; ask for less or retry \
         when workspaces end",
        need.cpus, need.memory_mib, need.gpus, free_text(candidates)
    )]
    InsufficientCapacity {
        /// What was asked.
        need: Resources,
        /// Sites that pass the dataset and grant filters, with their free compute.
        candidates: Vec<(Ident, Capacity)>,
        /// Those whose ceiling could hold it, most free first: where it could wait in the queue.
        could_hold: Vec<Candidate>,
    },
}

/// A site a workspace could wait for: its compute free now and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The site.
    pub site: Ident,
    /// Free now.
    pub free: Capacity,
    /// What basho may use there now.
    pub capacity: Capacity,
    /// Why that is below the site's ceiling, as the site says.
    pub note: Option<String>,
}

impl Candidate {
    /// Why `need` does not start here now, naming only what is short: `site tohoku: 0 of 8
    /// gpus free`.
    pub fn shortfall(&self, need: Resources) -> String {
        let (f, c) = (self.free, self.capacity);
        let mut short = Vec::new();
        if need.cpus > f.cpus {
            short.push(format!("{} of {} cpus", f.cpus, c.cpus));
        }
        if need.memory_mib > f.memory_mib {
            short.push(format!("{} of {} MiB memory", f.memory_mib, c.memory_mib));
        }
        if need.gpus > f.gpus {
            short.push(format!("{} of {} gpus", f.gpus, c.gpus));
        }
        if short.is_empty() {
            return format!("site {}: held for workspaces ahead in the queue", self.site);
        }
        match &self.note {
            Some(note) => format!("site {}: {} free ({note})", self.site, short.join(", ")),
            None => format!("site {}: {} free", self.site, short.join(", ")),
        }
    }
}

impl PlacementError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            PlacementError::UnknownSite { .. } => "unknown_site",
            PlacementError::SiteLacksDatasets { .. } => "site_lacks_datasets",
            PlacementError::NoSiteHoldsDatasets { .. } => "no_site_holds_datasets",
            PlacementError::NotGranted { .. } => "dataset_not_granted",
            PlacementError::InsufficientCapacity { .. } => "insufficient_capacity",
        }
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn holders_text(holders: &BTreeMap<Ident, Vec<Ident>>, unheld: &[Ident]) -> String {
    let mut s = String::new();
    for (d, sites) in holders {
        let _ = write!(s, "{d} is held by {}; ", list(sites));
    }
    if !unheld.is_empty() {
        let _ = write!(s, "no site holds {}; ", list(unheld));
    }
    s.push_str("ask for datasets one site holds together, or pin nothing");
    s
}

fn free_text(c: &[(Ident, Capacity)]) -> String {
    let parts: Vec<String> = c
        .iter()
        .map(|(n, f)| format!("{n} {} cpus/{} MiB/{} gpus", f.cpus, f.memory_mib, f.gpus))
        .collect();
    list(&parts)
}

fn holders(req: &Request<'_>, sites: &[SiteView<'_>]) -> BTreeMap<Ident, Vec<Ident>> {
    let mut out = BTreeMap::new();
    for d in req.datasets {
        let held: Vec<Ident> = sites
            .iter()
            .filter(|s| s.datasets.contains_key(d))
            .map(|s| s.name.clone())
            .collect();
        if !held.is_empty() {
            out.insert(d.clone(), held);
        }
    }
    out
}

fn holds_all(site: &SiteView<'_>, datasets: &[Ident]) -> bool {
    datasets.iter().all(|d| site.datasets.contains_key(d))
}

fn fits(free: Capacity, need: Resources) -> bool {
    need.cpus <= free.cpus && need.memory_mib <= free.memory_mib && need.gpus <= free.gpus
}

/// Ranking key, lower is better: reachable first, then the lowest allocated-CPU fraction, then
/// the fewest workspaces, then the name (for a deterministic answer).
fn better(a: &SiteView<'_>, b: &SiteView<'_>) -> std::cmp::Ordering {
    // allocated_a / cap_a vs allocated_b / cap_b without floats; a site of zero CPUs sorts last.
    let frac = |s: &SiteView<'_>| {
        (
            u64::from(s.allocated.cpus),
            u64::from(s.capacity.cpus.max(1)),
        )
    };
    let (na, da) = frac(a);
    let (nb, db) = frac(b);
    b.online
        .cmp(&a.online)
        .then((na * db).cmp(&(nb * da)))
        .then(a.workspaces.cmp(&b.workspaces))
        .then(a.name.cmp(b.name))
}

/// Picks the site for `req` among `sites`, or says why none fits.
pub fn place<'s>(req: &Request<'_>, sites: &[SiteView<'s>]) -> Result<&'s Ident, PlacementError> {
    let pinned: Vec<SiteView<'s>> = match req.site {
        Some(name) => match sites.iter().find(|s| s.name == name) {
            Some(s) => vec![*s],
            None => {
                return Err(PlacementError::UnknownSite {
                    site: name.clone(),
                    known: sites.iter().map(|s| s.name.clone()).collect(),
                });
            }
        },
        None => sites.to_vec(),
    };

    // Hard constraint: data never moves.
    let holding: Vec<&SiteView<'s>> = pinned
        .iter()
        .filter(|s| holds_all(s, req.datasets))
        .collect();
    if holding.is_empty() {
        let holders = holders(req, sites);
        if let Some(site) = req.site {
            let missing = req
                .datasets
                .iter()
                .filter(|d| !pinned[0].datasets.contains_key(*d))
                .cloned()
                .collect();
            return Err(PlacementError::SiteLacksDatasets {
                site: site.clone(),
                missing,
                holders,
            });
        }
        let unheld = req
            .datasets
            .iter()
            .filter(|d| !holders.contains_key(*d))
            .cloned()
            .collect();
        return Err(PlacementError::NoSiteHoldsDatasets {
            requested: req.datasets.to_vec(),
            holders,
            unheld,
        });
    }

    // Each dataset's grant URL is the site's to name, so the visas must match it there.
    let granted: Vec<&SiteView<'s>> = holding
        .iter()
        .copied()
        .filter(|s| {
            req.datasets
                .iter()
                .all(|d| s.datasets.get(d).is_some_and(|u| req.granted.contains(u)))
        })
        .collect();
    if granted.is_empty() {
        let dataset = req
            .datasets
            .iter()
            .find(|d| {
                !holding
                    .iter()
                    .any(|s| s.datasets.get(*d).is_some_and(|u| req.granted.contains(u)))
            })
            .unwrap_or(&req.datasets[0]);
        let expected: BTreeSet<String> = holding
            .iter()
            .filter_map(|s| s.datasets.get(dataset).cloned())
            .collect();
        return Err(PlacementError::NotGranted {
            dataset: dataset.clone(),
            expected: expected.into_iter().collect(),
        });
    }

    let held_back = |s: &SiteView<'_>| req.held_back.is_some_and(|h| h.contains(s.name));
    let best = granted
        .iter()
        .filter(|s| !held_back(s) && fits(s.free(), req.resources))
        .min_by(|a, b| better(a, b));
    match best {
        Some(s) => Ok(s.name),
        None => {
            let mut could_hold: Vec<Candidate> = granted
                .iter()
                .filter(|s| fits(s.ceiling, req.resources))
                .map(|s| Candidate {
                    site: s.name.clone(),
                    free: s.free(),
                    capacity: s.capacity,
                    note: s.note.map(str::to_owned),
                })
                .collect();
            could_hold.sort_by(|a, b| {
                (b.free.cpus, b.free.memory_mib, b.free.gpus)
                    .cmp(&(a.free.cpus, a.free.memory_mib, a.free.gpus))
                    .then(a.site.cmp(&b.site))
            });
            Err(PlacementError::InsufficientCapacity {
                need: req.resources,
                candidates: granted.iter().map(|s| (s.name.clone(), s.free())).collect(),
                could_hold,
            })
        }
    }
}

#[cfg(test)]
mod tests;
