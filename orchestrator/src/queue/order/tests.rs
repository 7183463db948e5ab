use super::*;

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

fn shares(list: &[(&str, u32, u32)]) -> BTreeMap<Ident, Scheduling> {
    list.iter()
        .map(|(p, priority, share)| {
            let s = Scheduling {
                priority: *priority,
                share: *share,
            };
            (id(p), s)
        })
        .collect()
}

#[test]
fn factor_is_one_without_use_and_half_at_its_share() {
    let active: BTreeSet<Ident> = [id("a"), id("b")].into();
    let none = factors(&active, &BTreeMap::new(), &BTreeMap::new());
    assert_eq!(none[&id("a")], 1.0);
    let used: BTreeMap<Ident, f64> = [(id("a"), 30.0), (id("b"), 10.0)].into();
    let f = factors(&active, &used, &shares(&[("a", 50, 3), ("b", 50, 1)]));
    assert!((f[&id("a")] - 0.5).abs() < 1e-9, "{f:?}");
    assert!((f[&id("b")] - 0.5).abs() < 1e-9, "{f:?}");
    // Equal weights: the heavier user goes second.
    let f = factors(&active, &used, &BTreeMap::new());
    assert!(f[&id("a")] < f[&id("b")], "{f:?}");
}

#[test]
fn use_decays_by_half_life() {
    let buckets = vec![(id("a"), 0, 100.0, 0.0), (id("b"), 0, 0.0, 10.0)];
    let now = 10_000 + 500;
    let used = decayed_use(&buckets, 1000, now, 10_000, 8.0);
    assert!((used[&id("a")] - 50.0).abs() < 1e-9, "{used:?}");
    assert!((used[&id("b")] - 40.0).abs() < 1e-9, "{used:?}");
}

#[test]
fn priority_then_factor_then_arrival() {
    let (a, b, c) = (id("a"), id("b"), id("c"));
    let entries = [
        Entry {
            project: &a,
            seq: 1,
        },
        Entry {
            project: &b,
            seq: 2,
        },
        Entry {
            project: &c,
            seq: 3,
        },
        Entry {
            project: &b,
            seq: 4,
        },
    ];
    let s = shares(&[("c", 90, 1)]);
    let f: BTreeMap<Ident, f64> = [(a.clone(), 0.2), (b.clone(), 0.7), (c.clone(), 0.1)].into();
    assert_eq!(order(&entries, &s, &f), vec![2, 1, 3, 0]);
}

/// Two projects, weights 3 and 1, 100 one-core workspaces of two time steps each, one site of
/// four cores: while both have work queued, the first gets three quarters of the core-seconds.
/// The ledger lags one step behind, as an agent's usage report does.
#[test]
fn shares_converge_to_weights() {
    let (a, b) = (id("a"), id("b"));
    let s = shares(&[("a", 50, 3), ("b", 50, 1)]);
    let mut queue: Vec<(Ident, i64)> = (0..200)
        .map(|i| (if i % 2 == 0 { a.clone() } else { b.clone() }, i))
        .collect();
    let mut running: Vec<(Ident, u32)> = Vec::new();
    let mut ledger: Vec<(Ident, i64, f64, f64)> = Vec::new();
    let mut contended: BTreeMap<Ident, f64> = BTreeMap::new();
    let step_ms = 1000;
    for t in 0..400i64 {
        let now = t * step_ms;
        let active: BTreeSet<Ident> = queue.iter().map(|(p, _)| p.clone()).collect();
        let used = decayed_use(&ledger, step_ms, now, 60 * step_ms, 8.0);
        let f = factors(&active, &used, &s);
        let entries: Vec<Entry<'_>> = queue
            .iter()
            .map(|(p, seq)| Entry {
                project: p,
                seq: *seq,
            })
            .collect();
        let mut take: Vec<usize> = order(&entries, &s, &f)
            .into_iter()
            .take(4 - running.len())
            .collect();
        take.sort_unstable_by(|x, y| y.cmp(x));
        for i in take {
            let (p, _) = queue.remove(i);
            running.push((p, 2));
        }
        let both = active.len() == 2;
        for (p, left) in &mut running {
            // Reported at the end of the step, so the next pass sees it.
            ledger.push((p.clone(), now, 1.0, 0.0));
            if both {
                *contended.entry(p.clone()).or_insert(0.0) += 1.0;
            }
            *left -= 1;
        }
        running.retain(|(_, left)| *left > 0);
        if queue.is_empty() && running.is_empty() {
            break;
        }
    }
    let total: f64 = contended.values().sum();
    let share_a = contended[&a] / total;
    assert!(total > 100.0, "contention lasted {total} core-seconds");
    assert!(
        (share_a - 0.75).abs() <= 0.05,
        "a had {share_a:.3} of {total}"
    );
}
