//! What the site tells the orchestrator of consent: its datasets' releases, the withdrawals it
//! applied and which release each running workspace mounts ([`ConsentReport`]). Counts and
//! digests only; the participant IDs stay here.

use std::collections::{BTreeMap, BTreeSet};

use basho_core::Ident;
use basho_core::consent::{ConsentReport, DatasetReleases, Release, Withdrawal};
use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Manifest;
use super::desk::Spool;
use super::scan::Matcher;
use crate::catalog::Catalog;
use crate::client::Client;

/// The release of each dataset each running workspace mounts.
pub type Mounted = BTreeMap<String, BTreeMap<Ident, u32>>;

/// The datasets whose releases the site makes: those on a file system (a claim-backed
/// Kubernetes dataset is the cluster's to change).
fn datasets(catalog: &Catalog) -> impl Iterator<Item = (&Ident, &crate::catalog::Dataset)> {
    catalog.entries().filter(|(_, d)| d.claim.is_none())
}

/// Measures release 1 of every dataset that has not been yet (once; it reads each dataset
/// whole). Blocking.
pub fn measure_first_releases(catalog: &Catalog) {
    for (id, d) in datasets(catalog) {
        let Some(releases) = catalog.releases(id) else {
            continue;
        };
        if let Err(e) = releases.first(&d.consent_source(), Utc::now()) {
            warn!(dataset = %id, error = %e, "release 1 could not be measured; its digest is not reported");
        }
    }
}

fn release(m: &Manifest, made_by: &BTreeMap<(Ident, u32), String>, id: &Ident) -> Release {
    let first = m.release == 1;
    Release {
        release: m.release,
        parent: (!first).then_some(m.parent),
        digest: Some(m.digest.clone()),
        files: m.files,
        rows: m.rows,
        participants: m.participants,
        removed: m.removed,
        withdrawal: made_by.get(&(id.clone(), m.release)).cloned(),
        made_at: (!first).then_some(m.made_at),
    }
}

/// The site's consent state now. Blocking: it reads the manifests and answers.
pub fn build(site: &Ident, catalog: &Catalog, spool: &Spool, workspaces: Mounted) -> ConsentReport {
    let answers = spool.answers();
    let made_by: BTreeMap<(Ident, u32), String> = answers
        .iter()
        .filter_map(|a| Some(((a.dataset.clone(), a.made.as_ref()?.release), a.id.clone())))
        .collect();
    let mut report = ConsentReport {
        site: site.clone(),
        datasets: Vec::new(),
        withdrawals: Vec::new(),
        workspaces: BTreeMap::new(),
        copies: BTreeMap::new(),
    };
    let mut withdrawn: BTreeMap<Ident, Option<Matcher>> = BTreeMap::new();
    for (id, d) in datasets(catalog) {
        let Some(releases) = catalog.releases(id) else {
            continue;
        };
        let mut list: Vec<Release> = releases
            .manifests()
            .iter()
            .map(|m| release(m, &made_by, id))
            .collect();
        if list.first().is_none_or(|r| r.release != 1) {
            // Not measured yet: its number is all there is to say.
            list.insert(
                0,
                Release {
                    release: 1,
                    parent: None,
                    digest: None,
                    files: 0,
                    rows: 0,
                    participants: 0,
                    removed: 0,
                    withdrawal: None,
                    made_at: None,
                },
            );
        }
        report.datasets.push(DatasetReleases {
            dataset: id.clone(),
            current: releases.current(&d.path).0,
            releases: list,
        });
        withdrawn.insert(
            id.clone(),
            Matcher::new(&releases.withdrawn()).ok().flatten(),
        );
    }
    for a in &answers {
        report.withdrawals.push(Withdrawal {
            id: a.id.clone(),
            dataset: a.dataset.clone(),
            at: a.at,
            participants: a.participants,
            participants_sha256: a.participants_sha256.clone(),
            unknown: a.unknown.len() as u64,
            previous: a.previous,
            release: a.made.as_ref().map(|m| m.release),
            error: a.error.clone(),
        });
        let matcher = withdrawn.get(&a.dataset).and_then(Option::as_ref);
        for (w, files) in a.hits.iter().filter(|(w, _)| workspaces.contains_key(*w)) {
            let shown = report.copies.entry(w.clone()).or_default();
            for f in files {
                // A name that itself holds a withdrawn ID is not for the orchestrator.
                let named = matcher.is_some_and(|m| m.find(f.as_bytes()).is_some());
                shown.push(if named {
                    "(a file whose name holds a withdrawn participant's ID)".to_owned()
                } else {
                    f.clone()
                });
            }
        }
    }
    for files in report.copies.values_mut() {
        let unique: BTreeSet<String> = std::mem::take(files).into_iter().collect();
        *files = unique.into_iter().collect();
    }
    report.workspaces = workspaces;
    report
}

/// How often the whole report is sent again even when nothing changed: an orchestrator that
/// lost it (a new database) has it back within this.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends the site's consent state to the orchestrator whenever it changes (checked every
/// [`super::desk::POLL`] and whenever `mounted` changes), until `stop`. `mounted` is `None`
/// until the reconciler has seen what runs.
pub async fn report_loop(
    client: Client,
    site: Ident,
    catalog: Catalog,
    spool: Spool,
    mut mounted: watch::Receiver<Option<Mounted>>,
    stop: CancellationToken,
) {
    let measuring = catalog.clone();
    let mut measured = tokio::task::spawn_blocking(move || measure_first_releases(&measuring));
    let mut sent: Option<(ConsentReport, std::time::Instant)> = None;
    // Said once per cause, not every 2 s (an orchestrator that predates the route, an outage).
    let mut failing: Option<String> = None;
    loop {
        let workspaces = mounted.borrow_and_update().clone();
        if let Some(workspaces) = workspaces {
            let (s, c, sp) = (site.clone(), catalog.clone(), spool.clone());
            if let Ok(report) =
                tokio::task::spawn_blocking(move || build(&s, &c, &sp, workspaces)).await
            {
                let fresh = sent
                    .as_ref()
                    .is_some_and(|(r, at)| *r == report && at.elapsed() < REFRESH);
                if !fresh {
                    match client.consent(&report).await {
                        Ok(()) => {
                            debug!(datasets = report.datasets.len(), "consent state reported");
                            if failing.take().is_some() {
                                tracing::info!("consent state reported again");
                            }
                            sent = Some((report, std::time::Instant::now()));
                        }
                        Err(e) => {
                            let why = e.to_string();
                            if failing.as_deref() != Some(why.as_str()) {
                                warn!(error = %why, "consent state not reported; trying again every 2 s");
                                failing = Some(why);
                            }
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(super::desk::POLL) => {}
            _ = &mut measured, if !measured.is_finished() => {}
            r = mounted.changed() => if r.is_err() { return },
        }
    }
}
