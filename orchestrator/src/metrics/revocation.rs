//! End-to-end revocation latency: from `POST /v1/revocations` until the sites confirm that every
//! container the revocation ends is gone. Kept in memory only: a restart forgets the revocations
//! still waiting, and one whose site never confirms is dropped after [`MAX_WAIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a revocation waits for its sites before it is dropped unobserved (the site is silent;
/// `basho_agent_last_contact_age_seconds` says so).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most revocations waiting at once; the oldest is dropped past it.
pub const MAX_PENDING: usize = 1024;

#[derive(Debug)]
struct Pending {
    started: Instant,
    waiting: BTreeSet<String>,
    /// Every affected workspace is known; until then an empty `waiting` is not the end.
    closed: bool,
}

/// Revocations waiting for their sites, by revocation sequence number.
#[derive(Debug, Default)]
pub struct RevocationTimer {
    pending: Mutex<BTreeMap<i64, Pending>>,
}

impl RevocationTimer {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revocation `seq`, requested at `started`, begins.
    pub fn begin(&self, seq: i64, started: Instant) {
        let mut pending = self.lock();
        pending.retain(|_, p| p.started.elapsed() < MAX_WAIT);
        while pending.len() >= MAX_PENDING {
            pending.pop_first();
        }
        pending.insert(
            seq,
            Pending {
                started,
                waiting: BTreeSet::new(),
                closed: false,
            },
        );
    }

    /// Revocation `seq` waits for `workspace`'s site. Call it before the workspace is moved to
    /// `revoked`, so a confirmation cannot arrive first.
    pub fn expect(&self, seq: i64, workspace: &str) {
        if let Some(p) = self.lock().get_mut(&seq) {
            p.waiting.insert(workspace.to_owned());
        }
    }

    /// Revocation `seq` does not wait for `workspace` after all (it was not moved, or its site
    /// never had a container for it).
    pub fn settled(&self, seq: i64, workspace: &str) {
        if let Some(p) = self.lock().get_mut(&seq) {
            p.waiting.remove(workspace);
        }
    }

    /// `workspace`'s site confirmed it gone: the seconds of every revocation that thereby ended.
    pub fn confirmed(&self, workspace: &str) -> Vec<f64> {
        let mut pending = self.lock();
        let mut done = Vec::new();
        for (seq, p) in pending.iter_mut() {
            if p.waiting.remove(workspace) && p.closed && p.waiting.is_empty() {
                done.push(*seq);
            }
        }
        done.iter()
            .filter_map(|seq| pending.remove(seq))
            .map(|p| p.started.elapsed().as_secs_f64())
            .collect()
    }

    /// Every workspace of revocation `seq` is known: its seconds if nothing waits for a site.
    pub fn end(&self, seq: i64) -> Option<f64> {
        let mut pending = self.lock();
        let p = pending.get_mut(&seq)?;
        p.closed = true;
        if !p.waiting.is_empty() {
            return None;
        }
        pending
            .remove(&seq)
            .map(|p| p.started.elapsed().as_secs_f64())
    }

    /// How many revocations wait for a site.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_when_the_last_site_confirms_and_not_before_it_is_closed() {
        let t = RevocationTimer::default();
        t.begin(1, Instant::now());
        t.expect(1, "a");
        // A confirmation arriving while the request still runs must not end it early.
        assert!(t.confirmed("a").is_empty());
        t.expect(1, "b");
        t.expect(1, "c");
        t.settled(1, "c");
        assert_eq!(t.end(1), None, "b still runs");
        assert!(t.confirmed("x").is_empty());
        assert_eq!(t.confirmed("b").len(), 1);
        assert!(t.is_empty());
        assert!(t.confirmed("b").is_empty(), "observed once");
    }

    #[test]
    fn nothing_to_wait_for_ends_at_once() {
        let t = RevocationTimer::default();
        t.begin(7, Instant::now());
        assert!(t.end(7).is_some());
        assert!(t.end(7).is_none());
        assert!(t.end(8).is_none(), "an unknown revocation is ignored");
    }

    #[test]
    fn old_and_excess_revocations_are_dropped() {
        let t = RevocationTimer::default();
        if let Some(long_ago) = Instant::now().checked_sub(MAX_WAIT + Duration::from_secs(1)) {
            t.begin(1, long_ago);
            t.expect(1, "silent");
            t.begin(2, Instant::now());
            assert_eq!(t.len(), 1, "the one waiting past MAX_WAIT is gone");
        }
        for seq in 10..10 + MAX_PENDING as i64 + 5 {
            t.begin(seq, Instant::now());
        }
        assert_eq!(t.len(), MAX_PENDING);
    }
}
