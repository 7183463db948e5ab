//! Placement tests against an in-memory set of site views.

use super::*;
use basho_core::visa::default_grant_url;

struct Fixture {
    names: Vec<Ident>,
    datasets: Vec<BTreeMap<Ident, String>>,
    capacity: Vec<Capacity>,
    allocated: Vec<Capacity>,
    workspaces: Vec<u32>,
    online: Vec<bool>,
}

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

fn cap(cpus: u32, memory_mib: u64, gpus: u32) -> Capacity {
    Capacity {
        cpus,
        memory_mib,
        gpus,
    }
}

impl Fixture {
    fn new() -> Self {
        Self {
            names: vec![],
            datasets: vec![],
            capacity: vec![],
            allocated: vec![],
            workspaces: vec![],
            online: vec![],
        }
    }

    fn site(mut self, name: &str, datasets: &[&str], capacity: Capacity) -> Self {
        self.names.push(id(name));
        self.datasets.push(
            datasets
                .iter()
                .map(|d| (id(d), default_grant_url(d)))
                .collect(),
        );
        self.capacity.push(capacity);
        self.allocated.push(Capacity::default());
        self.workspaces.push(0);
        self.online.push(true);
        self
    }

    fn load(mut self, name: &str, allocated: Capacity, workspaces: u32) -> Self {
        let i = self.names.iter().position(|n| n.as_str() == name).unwrap();
        self.allocated[i] = allocated;
        self.workspaces[i] = workspaces;
        self
    }

    fn offline(mut self, name: &str) -> Self {
        let i = self.names.iter().position(|n| n.as_str() == name).unwrap();
        self.online[i] = false;
        self
    }

    fn views(&self) -> Vec<SiteView<'_>> {
        (0..self.names.len())
            .map(|i| SiteView {
                name: &self.names[i],
                datasets: &self.datasets[i],
                capacity: self.capacity[i],
                ceiling: self.capacity[i],
                note: None,
                allocated: self.allocated[i],
                workspaces: self.workspaces[i],
                online: self.online[i],
            })
            .collect()
    }
}

fn demo() -> Fixture {
    Fixture::new()
        .site("tohoku", &["JGAD000101", "JGAD000102"], cap(16, 65536, 0))
        .site("ncbn", &["JGAD000201"], cap(8, 32768, 2))
        .site("bbj", &["JGAD000301", "JGAD000101"], cap(16, 65536, 0))
}

fn small() -> Resources {
    Resources {
        cpus: 1,
        memory_mib: 512,
        gpus: 0,
    }
}

fn place_for(
    f: &Fixture,
    datasets: &[&str],
    resources: Resources,
    site: Option<&str>,
) -> Result<String, PlacementError> {
    let ds: Vec<Ident> = datasets.iter().map(|d| id(d)).collect();
    let granted: BTreeSet<String> = datasets.iter().map(|d| default_grant_url(d)).collect();
    let pin = site.map(id);
    let views = f.views();
    let req = Request {
        datasets: &ds,
        resources,
        site: pin.as_ref(),
        granted: &granted,
        held_back: None,
    };
    place(&req, &views).map(|s| s.to_string())
}

#[test]
fn data_decides_first() {
    let f = demo();
    assert_eq!(
        place_for(&f, &["JGAD000201"], small(), None).unwrap(),
        "ncbn"
    );
    assert_eq!(
        place_for(&f, &["JGAD000102"], small(), None).unwrap(),
        "tohoku"
    );
}

#[test]
fn least_loaded_wins_among_holders() {
    let f = demo().load("bbj", cap(8, 1024, 0), 1);
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "tohoku"
    );
    let f = demo().load("tohoku", cap(8, 1024, 0), 1);
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "bbj"
    );
}

#[test]
fn ties_break_on_workspace_count_then_name() {
    let f = demo();
    // Equal load and counts: the name decides.
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "bbj"
    );
    // Same CPU fraction (0), but bbj runs more (zero-CPU) workspaces.
    let f = demo().load("bbj", cap(0, 16, 0), 3);
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "tohoku"
    );
}

#[test]
fn fraction_not_absolute_load() {
    // 4 of 64 (1/16) beats 2 of 8 (1/4).
    let f = Fixture::new()
        .site("big", &["D1"], cap(64, 65536, 0))
        .site("small", &["D1"], cap(8, 65536, 0))
        .load("big", cap(4, 0, 0), 4)
        .load("small", cap(2, 0, 0), 1);
    assert_eq!(place_for(&f, &["D1"], small(), None).unwrap(), "big");
}

#[test]
fn reachable_sites_first() {
    let f = demo().offline("bbj");
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "tohoku"
    );
    // An offline site still takes work when it alone holds the data.
    let f = demo().offline("ncbn");
    assert_eq!(
        place_for(&f, &["JGAD000201"], small(), None).unwrap(),
        "ncbn"
    );
}

#[test]
fn no_single_site_holds_everything() {
    let f = demo();
    let err = place_for(
        &f,
        &["JGAD000101", "JGAD000201", "JGAD999999"],
        small(),
        None,
    )
    .unwrap_err();
    assert_eq!(err.code(), "no_site_holds_datasets");
    let msg = err.to_string();
    assert!(msg.contains("JGAD000101 is held by tohoku, bbj"), "{msg}");
    assert!(msg.contains("JGAD000201 is held by ncbn"), "{msg}");
    assert!(msg.contains("no site holds JGAD999999"), "{msg}");
    let PlacementError::NoSiteHoldsDatasets { unheld, .. } = err else {
        panic!("wrong variant")
    };
    assert_eq!(unheld, vec![id("JGAD999999")]);
}

#[test]
fn no_sites_at_all() {
    let f = Fixture::new();
    let err = place_for(&f, &["JGAD000101"], small(), None).unwrap_err();
    assert_eq!(err.code(), "no_site_holds_datasets");
    assert!(err.to_string().contains("no site holds JGAD000101"));
}

#[test]
fn capacity_is_a_filter() {
    let f = demo().load("tohoku", cap(16, 0, 0), 4);
    let big = Resources {
        cpus: 10,
        memory_mib: 1024,
        gpus: 0,
    };
    assert_eq!(place_for(&f, &["JGAD000101"], big, None).unwrap(), "bbj");
    let f = f.load("bbj", cap(8, 0, 0), 2);
    let err = place_for(&f, &["JGAD000101"], big, None).unwrap_err();
    assert_eq!(err.code(), "insufficient_capacity");
    let msg = err.to_string();
    assert!(msg.contains("tohoku 0 cpus"), "{msg}");
    assert!(msg.contains("bbj 8 cpus"), "{msg}");
}

#[test]
fn memory_and_gpus_count_too() {
    let f = demo();
    let mem = Resources {
        cpus: 1,
        memory_mib: 65537,
        gpus: 0,
    };
    assert_eq!(
        place_for(&f, &["JGAD000101"], mem, None)
            .unwrap_err()
            .code(),
        "insufficient_capacity"
    );
    let gpu = Resources {
        cpus: 1,
        memory_mib: 512,
        gpus: 1,
    };
    assert_eq!(
        place_for(&f, &["JGAD000101"], gpu, None)
            .unwrap_err()
            .code(),
        "insufficient_capacity"
    );
    assert_eq!(place_for(&f, &["JGAD000201"], gpu, None).unwrap(), "ncbn");
}

#[test]
fn pinned_site() {
    let f = demo();
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), Some("tohoku")).unwrap(),
        "tohoku"
    );
    let err = place_for(&f, &["JGAD000101"], small(), Some("riken")).unwrap_err();
    assert_eq!(err.code(), "unknown_site");
    assert!(err.to_string().contains("tohoku"));
    let err = place_for(&f, &["JGAD000201"], small(), Some("tohoku")).unwrap_err();
    assert_eq!(err.code(), "site_lacks_datasets");
    assert!(
        err.to_string().contains("JGAD000201 is held by ncbn"),
        "{err}"
    );
}

#[test]
fn grants_follow_the_site_catalog() {
    let mut f = demo();
    // bbj's catalog names its own grant URL for JGAD000101.
    f.datasets[2].insert(id("JGAD000101"), "https://bbj.example/grant/101".into());
    // The visa carries the default URL: only tohoku accepts it, whatever the load.
    let f = f.load("tohoku", cap(15, 0, 0), 9);
    assert_eq!(
        place_for(&f, &["JGAD000101"], small(), None).unwrap(),
        "tohoku"
    );
    let ds = [id("JGAD000101")];
    let granted = BTreeSet::from(["https://elsewhere.example/x".to_owned()]);
    let views = f.views();
    let req = Request {
        datasets: &ds,
        resources: small(),
        site: None,
        granted: &granted,
        held_back: None,
    };
    let err = place(&req, &views).unwrap_err();
    assert_eq!(err.code(), "dataset_not_granted");
    let msg = err.to_string();
    assert!(msg.contains("https://bbj.example/grant/101"), "{msg}");
    assert!(msg.contains(&default_grant_url("JGAD000101")), "{msg}");
}

#[test]
fn hundred_sites_place_deterministically() {
    let mut f = Fixture::new();
    for i in 0..100 {
        f = f.site(&format!("site-{i:03}"), &["D1"], cap(64, 262_144, 0));
    }
    for i in 0..99 {
        f = f.load(&format!("site-{i:03}"), cap(1, 0, 0), 1);
    }
    assert_eq!(place_for(&f, &["D1"], small(), None).unwrap(), "site-099");
}
