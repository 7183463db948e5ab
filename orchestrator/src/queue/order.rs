//! The queue's order, pure: priority first, then fair share, then arrival. No I/O, no clock.
//!
//! Fair share follows Slurm's classic factor. A project's use `U` is the ledger's allocated
//! core-seconds (plus GPU-seconds times `gpu_weight`), each bucket weighed by
//! `2^(-age / half_life)`. Its usage share `u = U / ΣU` over every project; its normalised
//! share `s = w / Σw` over the projects with work queued or use recorded, `w` being the weight
//! the platform set (1 by default). Its factor is `F = 2^(-u / s)`: 1 with no recent use, 0.5
//! at exactly its share, lower above it. Queued workspaces go by priority (higher first), then
//! `F` (higher first), then arrival.

use std::collections::{BTreeMap, BTreeSet};

use basho_core::Ident;
use basho_core::queue::Scheduling;

/// Decayed use per project from the ledger's buckets `(project, bucket start ms, core-seconds,
/// GPU-seconds)` of `bucket_ms` each, seen at `now_ms`.
pub fn decayed_use(
    buckets: &[(Ident, i64, f64, f64)],
    bucket_ms: i64,
    now_ms: i64,
    half_life_ms: i64,
    gpu_weight: f64,
) -> BTreeMap<Ident, f64> {
    let half = half_life_ms.max(1) as f64;
    let mut out = BTreeMap::new();
    for (project, start, cores, gpus) in buckets {
        let mid = start.saturating_add(bucket_ms / 2);
        let age = now_ms.saturating_sub(mid).max(0) as f64;
        let weight = (-age / half).exp2();
        *out.entry(project.clone()).or_insert(0.0) += (cores + gpus * gpu_weight) * weight;
    }
    out
}

/// Each project's fair-share factor, for the projects in `active` (those with work queued).
pub fn factors(
    active: &BTreeSet<Ident>,
    used: &BTreeMap<Ident, f64>,
    schedulings: &BTreeMap<Ident, Scheduling>,
) -> BTreeMap<Ident, f64> {
    let weight = |p: &Ident| f64::from(schedulings.get(p).copied().unwrap_or_default().share);
    let members: BTreeSet<&Ident> = active.iter().chain(used.keys()).collect();
    let total_weight: f64 = members.iter().map(|p| weight(p)).sum();
    let total_use: f64 = used.values().sum();
    active
        .iter()
        .map(|p| {
            let u = if total_use > 0.0 {
                used.get(p).copied().unwrap_or(0.0) / total_use
            } else {
                0.0
            };
            let s = weight(p) / total_weight.max(f64::MIN_POSITIVE);
            (p.clone(), (-u / s).exp2())
        })
        .collect()
}

/// One queued workspace as ordering sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its project.
    pub project: &'a Ident,
    /// Its arrival.
    pub seq: i64,
}

/// The indices of `entries` in the order they are to be placed.
pub fn order(
    entries: &[Entry<'_>],
    schedulings: &BTreeMap<Ident, Scheduling>,
    factors: &BTreeMap<Ident, f64>,
) -> Vec<usize> {
    let priority = |p: &Ident| schedulings.get(p).copied().unwrap_or_default().priority;
    let factor = |p: &Ident| factors.get(p).copied().unwrap_or(1.0);
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ea, eb) = (&entries[a], &entries[b]);
        priority(eb.project)
            .cmp(&priority(ea.project))
            .then(factor(eb.project).total_cmp(&factor(ea.project)))
            .then(ea.seq.cmp(&eb.seq))
    });
    idx
}

#[cfg(test)]
mod tests;
