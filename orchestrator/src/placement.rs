//! The in-memory view of every registered site: catalog, capacity, compute held by live
//! workspaces, last contact, and a revision channel per site that wakes its agent's long-poll.
//! Placement reads it instead of the store, so a create costs one write and no scan of sites.

use std::collections::BTreeMap;
use std::sync::Mutex;

use basho_core::protocol::{Capacity, CapacityReport, Registration, Site};
use basho_core::{Ident, Resources, State};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::scheduler::{self, PlacementError, Request, SiteView};
use crate::store::{SiteRecord, StateCount};

/// One site in memory.
#[derive(Debug)]
struct Entry {
    registration: Registration,
    datasets: BTreeMap<Ident, String>,
    allocated: Capacity,
    workspaces: u32,
    last_contact: DateTime<Utc>,
    /// The last contact time written to the store; memory is authoritative while running.
    persisted_contact: DateTime<Utc>,
    revision: watch::Sender<i64>,
}

impl Entry {
    /// A site as the store holds it, holding `counts`' compute, at `revision`.
    fn stored(s: SiteRecord, counts: &[(Ident, State, StateCount)], revision: i64) -> Self {
        let (allocated, workspaces) = held(&s.registration.site, counts);
        Entry {
            datasets: catalog(&s.registration),
            registration: s.registration,
            allocated,
            workspaces,
            last_contact: s.last_contact,
            persisted_contact: s.last_contact,
            revision: watch::channel(revision).0,
        }
    }
}

/// How stale the stored last-contact time may get: agents poll many times a second under load,
/// and one write per poll would make the store the bottleneck for nothing.
pub const CONTACT_PERSIST_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// What a touch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The site is not registered.
    Unknown,
    /// Noted in memory; the stored time is recent enough.
    Noted,
    /// Noted; the stored time is stale and should be written now.
    Persist,
}

/// Every registered site, behind one lock held only for in-memory work.
#[derive(Debug, Default)]
pub struct SiteCache {
    sites: Mutex<BTreeMap<Ident, Entry>>,
}

fn add(c: &mut Capacity, r: &Resources) {
    c.cpus = c.cpus.saturating_add(r.cpus);
    c.memory_mib = c.memory_mib.saturating_add(r.memory_mib);
    c.gpus = c.gpus.saturating_add(r.gpus);
}

fn sub(c: &mut Capacity, r: &Resources) {
    c.cpus = c.cpus.saturating_sub(r.cpus);
    c.memory_mib = c.memory_mib.saturating_sub(r.memory_mib);
    c.gpus = c.gpus.saturating_sub(r.gpus);
}

/// The compute live workspaces hold at `site`, and how many they are.
fn held(site: &Ident, counts: &[(Ident, State, StateCount)]) -> (Capacity, u32) {
    let mut allocated = Capacity::default();
    let mut workspaces = 0u32;
    for (_, _, c) in counts
        .iter()
        .filter(|(s, st, _)| s == site && st.holds_compute())
    {
        allocated.cpus = allocated
            .cpus
            .saturating_add(u32::try_from(c.cpus).unwrap_or(u32::MAX));
        allocated.memory_mib = allocated.memory_mib.saturating_add(c.memory_mib);
        allocated.gpus = allocated
            .gpus
            .saturating_add(u32::try_from(c.gpus).unwrap_or(u32::MAX));
        workspaces = workspaces.saturating_add(u32::try_from(c.count).unwrap_or(u32::MAX));
    }
    (allocated, workspaces)
}

fn catalog(reg: &Registration) -> BTreeMap<Ident, String> {
    reg.datasets
        .iter()
        .map(|d| (d.id.clone(), d.grant_url.clone()))
        .collect()
}

/// Compute reserved at a site for a create that is not stored yet. Dropping it gives the compute
/// back, so every way a create can fail after placement releases it; [`Reservation::commit`]
/// keeps it once the workspace is stored (it is released when the workspace ends).
#[must_use = "dropping a reservation releases it at once"]
pub struct Reservation<'a> {
    sites: &'a SiteCache,
    site: Ident,
    resources: Resources,
    committed: bool,
}

impl Reservation<'_> {
    /// The site chosen.
    pub fn site(&self) -> &Ident {
        &self.site
    }

    /// Keeps the compute: the workspace holding it is stored.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.sites.release(&self.site, &self.resources);
        }
    }
}

impl SiteCache {
    /// Builds the cache from stored sites, per-(site, state) counts and per-site revisions.
    pub fn load(
        sites: Vec<SiteRecord>,
        counts: &[(Ident, State, StateCount)],
        revisions: &BTreeMap<Ident, i64>,
    ) -> Self {
        let mut map = BTreeMap::new();
        for s in sites {
            let name = s.registration.site.clone();
            let rev = revisions.get(&name).copied().unwrap_or(0);
            map.insert(name, Entry::stored(s, counts, rev));
        }
        Self {
            sites: Mutex::new(map),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Ident, Entry>> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.sites.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or refreshes a site's registration; its allocations and revision stay.
    pub fn register(&self, reg: &Registration, now: DateTime<Utc>) {
        let mut sites = self.lock();
        match sites.get_mut(&reg.site) {
            Some(e) => {
                e.registration = reg.clone();
                e.datasets = catalog(reg);
                e.last_contact = now;
                e.persisted_contact = now;
            }
            None => {
                sites.insert(
                    reg.site.clone(),
                    Entry {
                        registration: reg.clone(),
                        datasets: catalog(reg),
                        allocated: Capacity::default(),
                        workspaces: 0,
                        last_contact: now,
                        persisted_contact: now,
                        revision: watch::channel(0).0,
                    },
                );
            }
        }
    }

    /// Takes a site's live capacity report; false when the site is not registered here.
    pub fn set_capacity(&self, report: &CapacityReport, now: DateTime<Utc>) -> bool {
        match self.lock().get_mut(&report.site) {
            Some(e) => {
                e.registration.capacity = report.capacity;
                e.registration.capacity_note = report.note.clone();
                e.last_contact = e.last_contact.max(now);
                true
            }
            None => false,
        }
    }

    /// Marks a site heard from, and says whether the store's copy is due for a write.
    pub fn touch(&self, site: &Ident, now: DateTime<Utc>) -> Touch {
        match self.lock().get_mut(site) {
            Some(e) => {
                e.last_contact = e.last_contact.max(now);
                if e.last_contact - e.persisted_contact >= CONTACT_PERSIST_EVERY {
                    e.persisted_contact = e.last_contact;
                    Touch::Persist
                } else {
                    Touch::Noted
                }
            }
            None => Touch::Unknown,
        }
    }

    /// Places `req` and reserves its compute at the chosen site, under one lock so concurrent
    /// creates never overbook a site. Sites silent since before `online_since` rank last. The
    /// compute is held until the reservation is dropped, or for good once it is committed.
    pub fn place_and_reserve(
        &self,
        req: &Request<'_>,
        online_since: DateTime<Utc>,
    ) -> Result<Reservation<'_>, PlacementError> {
        let mut sites = self.lock();
        let chosen = {
            let views: Vec<SiteView<'_>> = sites
                .iter()
                .map(|(name, e)| SiteView {
                    name,
                    datasets: &e.datasets,
                    capacity: e.registration.capacity,
                    ceiling: e.registration.ceiling(),
                    note: e.registration.capacity_note.as_deref(),
                    allocated: e.allocated,
                    workspaces: e.workspaces,
                    online: e.last_contact >= online_since,
                })
                .collect();
            scheduler::place(req, &views)?.clone()
        };
        if let Some(e) = sites.get_mut(&chosen) {
            add(&mut e.allocated, &req.resources);
            e.workspaces = e.workspaces.saturating_add(1);
        }
        Ok(Reservation {
            sites: self,
            site: chosen,
            resources: req.resources,
            committed: false,
        })
    }

    /// Learns from the store that `site`'s live workspaces hold at least `held` (another replica
    /// placed there since this view was loaded); the periodic reload settles the exact figure.
    pub fn learn_held(&self, site: &Ident, held: &StateCount) {
        if let Some(e) = self.lock().get_mut(site) {
            let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            e.allocated.cpus = e.allocated.cpus.max(clamp(held.cpus));
            e.allocated.memory_mib = e.allocated.memory_mib.max(held.memory_mib);
            e.allocated.gpus = e.allocated.gpus.max(clamp(held.gpus));
            e.workspaces = e.workspaces.max(clamp(held.count));
        }
    }

    /// Returns compute a workspace held (it ended, or its create was not stored).
    pub fn release(&self, site: &Ident, r: &Resources) {
        if let Some(e) = self.lock().get_mut(site) {
            sub(&mut e.allocated, r);
            e.workspaces = e.workspaces.saturating_sub(1);
        }
    }

    /// Publishes a site's new revision (never going back), waking its long-polls.
    pub fn publish(&self, site: &Ident, revision: i64) {
        if let Some(e) = self.lock().get(site) {
            e.revision.send_if_modified(|r| {
                if revision > *r {
                    *r = revision;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Publishes a revision every site must hear (a revocation).
    pub fn publish_all(&self, revision: i64) {
        for e in self.lock().values() {
            e.revision.send_if_modified(|r| {
                if revision > *r {
                    *r = revision;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Takes in what other replicas wrote: sites registered elsewhere are added, registrations
    /// replaced, last contact moved forward, and the compute held set from the store's counts.
    pub fn refresh(&self, stored: Vec<SiteRecord>, counts: &[(Ident, State, StateCount)]) {
        let mut sites = self.lock();
        for s in stored {
            let name = s.registration.site.clone();
            match sites.get_mut(&name) {
                Some(e) => {
                    let (allocated, workspaces) = held(&name, counts);
                    if e.registration != s.registration {
                        e.datasets = catalog(&s.registration);
                        e.registration = s.registration;
                    }
                    e.last_contact = e.last_contact.max(s.last_contact);
                    e.persisted_contact = e.persisted_contact.max(s.last_contact);
                    e.allocated = allocated;
                    e.workspaces = workspaces;
                }
                None => {
                    sites.insert(name, Entry::stored(s, counts, 0));
                }
            }
        }
    }

    /// A receiver of the site's revision, or `None` when it is not registered.
    pub fn subscribe(&self, site: &Ident) -> Option<watch::Receiver<i64>> {
        self.lock().get(site).map(|e| e.revision.subscribe())
    }

    /// Every grant URL a site catalog names, with the dataset it grants.
    pub fn grant_urls(&self) -> BTreeMap<String, Ident> {
        let mut out = BTreeMap::new();
        for e in self.lock().values() {
            for (d, url) in &e.datasets {
                out.entry(url.clone()).or_insert_with(|| d.clone());
            }
        }
        out
    }

    /// The grant URL `site`'s catalog gives each of `datasets` it holds.
    pub fn site_grant_urls(&self, site: &Ident, datasets: &[Ident]) -> Vec<(Ident, String)> {
        let sites = self.lock();
        let Some(e) = sites.get(site) else {
            return Vec::new();
        };
        datasets
            .iter()
            .filter_map(|d| Some((d.clone(), e.datasets.get(d)?.clone())))
            .collect()
    }

    /// Sites silent since before `cutoff`.
    pub fn silent_since(&self, cutoff: DateTime<Utc>) -> Vec<(Ident, DateTime<Utc>)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.last_contact < cutoff)
            .map(|(n, e)| (n.clone(), e.last_contact))
            .collect()
    }

    /// Every site's start timeout (`0`: none).
    pub fn start_timeouts(&self) -> BTreeMap<Ident, u64> {
        self.lock()
            .iter()
            .map(|(n, e)| (n.clone(), e.registration.start_timeout_s))
            .collect()
    }

    /// Every site's last contact.
    pub fn last_contacts(&self) -> Vec<(Ident, DateTime<Utc>)> {
        self.lock()
            .iter()
            .map(|(n, e)| (n.clone(), e.last_contact))
            .collect()
    }

    /// What `site`'s agent registered last.
    pub fn registration(&self, site: &str) -> Option<Registration> {
        self.lock()
            .iter()
            .find(|(name, _)| name.as_str() == site)
            .map(|(_, e)| e.registration.clone())
    }

    /// Every site as `GET /v1/sites` shows it.
    pub fn list(&self) -> Vec<Site> {
        self.lock()
            .values()
            .map(|e| Site {
                name: e.registration.site.clone(),
                backend: e.registration.backend.clone(),
                version: e.registration.version.clone(),
                datasets: e.registration.datasets.clone(),
                capacity: e.registration.capacity,
                ceiling: e.registration.ceiling,
                capacity_note: e.registration.capacity_note.clone(),
                allocated: e.allocated,
                workspaces: e.workspaces,
                last_contact: e.last_contact,
                start_timeout_s: e.registration.start_timeout_s,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use basho_core::protocol::Capacity;

    use super::*;

    #[test]
    fn contact_is_persisted_at_most_every_few_seconds() {
        let cache = SiteCache::default();
        let site = Ident::parse("tohoku").unwrap();
        let t0 = Utc::now();
        assert_eq!(cache.touch(&site, t0), Touch::Unknown);
        cache.register(
            &Registration {
                site: site.clone(),
                backend: "fake".into(),
                version: "0".into(),
                datasets: vec![],
                capacity: Capacity::default(),
                images: vec![],
                start_timeout_s: basho_core::protocol::DEFAULT_START_TIMEOUT_S,
                session_key: None,
                ceiling: None,
                capacity_note: None,
                features: Vec::new(),
            },
            t0,
        );
        assert_eq!(
            cache.touch(&site, t0 + chrono::TimeDelta::seconds(1)),
            Touch::Noted
        );
        let later = t0 + CONTACT_PERSIST_EVERY;
        assert_eq!(cache.touch(&site, later), Touch::Persist);
        assert_eq!(cache.touch(&site, later), Touch::Noted);
        assert_eq!(cache.last_contacts(), vec![(site.clone(), later)]);
    }

    fn reg(site: &str, cpus: u32) -> Registration {
        Registration {
            site: Ident::parse(site).unwrap(),
            backend: "fake".into(),
            version: "0".into(),
            datasets: vec![],
            capacity: Capacity {
                cpus,
                memory_mib: 4096,
                gpus: 0,
            },
            images: vec![],
            start_timeout_s: basho_core::protocol::DEFAULT_START_TIMEOUT_S,
            session_key: None,
            ceiling: None,
            capacity_note: None,
            features: Vec::new(),
        }
    }

    #[test]
    fn a_reservation_is_released_when_dropped_and_kept_when_committed() {
        let cache = SiteCache::default();
        cache.register(&reg("tohoku", 4), Utc::now());
        let want = Resources {
            cpus: 3,
            memory_mib: 1024,
            gpus: 0,
        };
        let granted = std::collections::BTreeSet::new();
        let req = Request {
            datasets: &[],
            resources: want,
            site: None,
            granted: &granted,
            held_back: None,
        };
        let allocated = |c: &SiteCache| c.list()[0].allocated.cpus;
        let since = Utc::now() - chrono::TimeDelta::seconds(60);
        let r = cache.place_and_reserve(&req, since).unwrap();
        assert_eq!(allocated(&cache), 3);
        assert!(
            cache.place_and_reserve(&req, since).is_err(),
            "a held reservation counts against the site"
        );
        drop(r);
        assert_eq!(
            allocated(&cache),
            0,
            "a dropped reservation gives its compute back"
        );
        cache.place_and_reserve(&req, since).unwrap().commit();
        assert_eq!(allocated(&cache), 3, "a committed one keeps it");
        cache.release(&Ident::parse("tohoku").unwrap(), &want);
        assert_eq!(allocated(&cache), 0);
    }

    #[test]
    fn a_refresh_takes_in_what_other_replicas_wrote() {
        let t0 = Utc::now();
        let tohoku = Ident::parse("tohoku").unwrap();
        let cache = SiteCache::default();
        cache.register(&reg("tohoku", 8), t0);
        let mut rx = cache.subscribe(&tohoku).unwrap();
        let later = t0 + chrono::TimeDelta::seconds(30);
        let stored = vec![
            // Registered again elsewhere, with more cores, but heard from earlier than here.
            SiteRecord {
                registration: reg("tohoku", 16),
                last_contact: t0 - chrono::TimeDelta::seconds(30),
            },
            // Registered only through another replica.
            SiteRecord {
                registration: reg("ncbn", 4),
                last_contact: later,
            },
        ];
        let running = StateCount {
            count: 2,
            cpus: 3,
            memory_mib: 1024,
            gpus: 0,
        };
        let ended = StateCount {
            count: 5,
            cpus: 5,
            memory_mib: 5,
            gpus: 0,
        };
        cache.refresh(
            stored,
            &[
                (tohoku.clone(), State::Running, running),
                (tohoku.clone(), State::Expired, ended),
            ],
        );
        let list = cache.list();
        assert_eq!(list.len(), 2);
        let t = list.iter().find(|s| s.name == tohoku).unwrap();
        assert_eq!(t.capacity.cpus, 16);
        assert_eq!(
            (t.allocated.cpus, t.workspaces),
            (3, 2),
            "only live workspaces hold compute"
        );
        assert_eq!(t.last_contact, t0, "last contact never moves back");
        let n = list.iter().find(|s| s.name.as_str() == "ncbn").unwrap();
        assert_eq!(n.last_contact, later);
        // Revisions: a refresh leaves them alone; publish_all reaches every site.
        assert!(!rx.has_changed().unwrap());
        cache.publish_all(7);
        assert_eq!(*rx.borrow_and_update(), 7);
        assert_eq!(
            *cache
                .subscribe(&Ident::parse("ncbn").unwrap())
                .unwrap()
                .borrow(),
            7
        );
        cache.publish_all(3);
        assert_eq!(*rx.borrow(), 7, "revisions never go back");
    }
}
