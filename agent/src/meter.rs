//! Metering: every `[metering] interval_s` the agent samples each running workspace on its
//! backend (CPU time, memory in use), turns the difference from the workspace's previous sample
//! into a usage record, journals it (see [`journal`]) and sends the journal to the orchestrator,
//! which acknowledges what it stored. A workspace is sampled once more just before the agent
//! stops it, so its last interval is not lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basho_core::usage::{UsageBatch, UsageRecord};
use basho_core::{Ident, Resources};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{Backend, UsageSample};
use crate::client::{Backoff, Client, Link};

pub mod journal;

use journal::{Journal, JournalError, Mark};

/// Most records in one request: about 400 bytes each, well within the orchestrator's default
/// body limit (256 KiB).
pub const MAX_BATCH: usize = 200;
const GIB: f64 = (1u64 << 30) as f64;

/// `[metering]` in the site config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringConfig {
    /// Seconds between samples of each running workspace.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
}

fn default_interval_s() -> u64 {
    30
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            interval_s: default_interval_s(),
        }
    }
}

/// What the meter needs to know of a workspace: whose it is and what it was allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    /// The workspace's project.
    pub project: Ident,
    /// Its allocation.
    pub resources: Resources,
}

/// The usage record for the interval from `prev` (or the workspace's start) to `now`, and the
/// mark it ends at. `None` when the interval is empty.
///
/// A cumulative CPU counter lower than the previous mark means the backend restarted the
/// workspace's process: the interval then starts at the new start (never before the previous
/// mark), with the whole counter.
pub fn interval(
    workspace: &str,
    meta: &Metered,
    prev: Option<Mark>,
    sample: UsageSample,
    now: DateTime<Utc>,
) -> Option<(UsageRecord, Mark)> {
    if prev.is_some_and(|m| m.at >= now) {
        // Nothing has passed since the last sample (or the clock went back): wait for time to.
        return None;
    }
    let continued = prev.filter(|m| sample.cpu_seconds + 1e-9 >= m.cpu_seconds);
    let (from, cpu, mem_avg, peak) = match continued {
        Some(m) => (
            m.at,
            sample.cpu_seconds - m.cpu_seconds,
            (m.memory_bytes as f64 + sample.memory_bytes as f64) / 2.0,
            m.memory_bytes.max(sample.memory_bytes),
        ),
        None => (
            sample
                .started_at
                .filter(|t| *t <= now)
                .map_or(now, |t| prev.map_or(t, |m| t.max(m.at))),
            sample.cpu_seconds,
            sample.memory_bytes as f64,
            sample.memory_bytes,
        ),
    };
    let mark = Mark {
        at: now,
        cpu_seconds: sample.cpu_seconds,
        memory_bytes: sample.memory_bytes,
    };
    let secs = (now - from).num_microseconds()? as f64 / 1e6;
    if secs <= 0.0 {
        return None;
    }
    let r = &meta.resources;
    Some((
        UsageRecord {
            seq: 0,
            workspace: workspace.to_owned(),
            project: meta.project.clone(),
            from,
            to: now,
            allocated_core_seconds: f64::from(r.cpus) * secs,
            used_cpu_seconds: cpu.max(0.0),
            allocated_memory_gib_seconds: r.memory_mib as f64 / 1024.0 * secs,
            used_memory_gib_seconds: mem_avg / GIB * secs,
            peak_memory_bytes: peak,
            gpu_seconds: f64::from(r.gpus) * secs,
        },
        mark,
    ))
}

/// The meter: the journal, what is known of each workspace, and the backend to sample.
pub struct Meter {
    backend: Arc<dyn Backend>,
    journal: Mutex<Journal>,
    known: Mutex<BTreeMap<String, Metered>>,
    appended: Notify,
    interval: Duration,
}

impl Meter {
    /// Opens the journal in `state_dir`.
    pub fn open(
        backend: Arc<dyn Backend>,
        state_dir: &std::path::Path,
        config: &MeteringConfig,
    ) -> Result<Self, JournalError> {
        let journal = Journal::open(&state_dir.join(journal::FILE))?;
        Ok(Self {
            backend,
            journal: Mutex::new(journal),
            known: Mutex::default(),
            appended: Notify::new(),
            interval: Duration::from_secs(config.interval_s.max(1)),
        })
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learns (or updates) what the workspaces are; the reconciler calls this each pass with
    /// the desired assignments. Workspaces are remembered until [`Meter::forget_except`].
    pub fn learn(&self, workspaces: impl IntoIterator<Item = (String, Metered)>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(workspaces);
    }

    /// Forgets workspaces the backend no longer has.
    pub fn forget_except(&self, live: &std::collections::BTreeSet<&str>) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w, _| live.contains(w.as_str()));
        self.journal().retain_marks(|w| live.contains(w));
    }

    /// Records pending delivery.
    pub fn pending_len(&self) -> usize {
        self.journal().pending_len()
    }

    /// Samples one workspace now and journals the interval since its last sample.
    pub async fn sample(&self, workspace: &str) {
        let meta = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(workspace)
            .cloned();
        let Some(meta) = meta else {
            debug!(
                workspace,
                "not metered: its project and allocation are not known yet"
            );
            return;
        };
        let sample = match self.backend.usage(workspace).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                // The next sample covers this interval too.
                debug!(workspace, error = %e, "usage sample failed");
                return;
            }
        };
        let now = Utc::now();
        let mut journal = self.journal();
        let prev = journal.mark(workspace);
        let Some((record, mark)) = interval(workspace, &meta, prev, sample, now) else {
            return;
        };
        match journal.append(record, mark) {
            Ok(_) => {
                basho_core::crash_point!("agent.usage.appended");
                self.appended.notify_one()
            }
            Err(e) => {
                warn!(workspace, error = %e, "usage not journalled; the next sample covers it")
            }
        }
    }

    /// Samples every known workspace, one after the other.
    pub async fn sample_all(&self) {
        let ids: Vec<String> = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.sample(&id).await;
        }
    }

    /// Samples every `interval` until `stop`.
    pub async fn sample_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sample_all().await,
            }
        }
    }

    /// Sends the journal to the orchestrator and drops what it acknowledges, until `stop`. A
    /// fresh journal first learns where the orchestrator's numbering for the site stands.
    pub async fn deliver_loop(
        self: Arc<Self>,
        client: Client,
        site: Ident,
        stop: CancellationToken,
    ) {
        let mut backoff = Backoff::agent_default();
        let mut link = Link::default();
        loop {
            let (fresh, records) = {
                let j = self.journal();
                (j.is_fresh(), j.pending(MAX_BATCH))
            };
            if fresh || !records.is_empty() {
                let batch = UsageBatch {
                    site: site.clone(),
                    records: if fresh { Vec::new() } else { records },
                };
                let answer = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = client.usage(&batch) => a,
                };
                match answer {
                    Ok(ack) => {
                        if !batch.records.is_empty() {
                            basho_core::crash_point!("agent.usage.delivered");
                        }
                        link.up("usage");
                        backoff.reset();
                        let mut j = self.journal();
                        let done = if fresh {
                            j.resume_after(ack.acked_through)
                        } else {
                            j.ack(ack.acked_through)
                        };
                        if let Err(e) = done {
                            warn!(error = %e, "usage acknowledgement not journalled; records will be sent again");
                        }
                        let sent = batch.records.len();
                        let left = j.pending_len();
                        drop(j);
                        debug!(
                            sent,
                            acked_through = ack.acked_through,
                            left,
                            "usage delivered"
                        );
                        if left > 0 && sent > 0 {
                            continue;
                        }
                    }
                    Err(e) => {
                        link.down("usage", &e);
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(cpus: u32, gpus: u32) -> Metered {
        Metered {
            project: Ident::parse("P-1").unwrap(),
            resources: Resources {
                cpus,
                memory_mib: 2048,
                gpus,
            },
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn sample(cpu: f64, mem: u64, started: i64) -> UsageSample {
        UsageSample {
            cpu_seconds: cpu,
            memory_bytes: mem,
            started_at: Some(at(started)),
        }
    }

    #[test]
    fn the_first_interval_starts_at_the_start() {
        let (r, m) = interval("w", &meta(2, 1), None, sample(15.0, 1 << 30, 0), at(10)).unwrap();
        assert_eq!((r.from, r.to), (at(0), at(10)));
        assert_eq!(r.allocated_core_seconds, 20.0);
        assert_eq!(r.used_cpu_seconds, 15.0);
        assert_eq!(r.allocated_memory_gib_seconds, 20.0);
        assert_eq!(r.used_memory_gib_seconds, 10.0);
        assert_eq!(r.gpu_seconds, 10.0);
        assert_eq!((m.at, m.cpu_seconds), (at(10), 15.0));
    }

    #[test]
    fn later_intervals_count_the_difference() {
        let prev = Mark {
            at: at(10),
            cpu_seconds: 15.0,
            memory_bytes: 1 << 30,
        };
        let (r, _) = interval(
            "w",
            &meta(2, 0),
            Some(prev),
            sample(25.0, 3 << 30, 0),
            at(20),
        )
        .unwrap();
        assert_eq!((r.from, r.to), (at(10), at(20)));
        assert_eq!(r.allocated_core_seconds, 20.0);
        assert_eq!(r.used_cpu_seconds, 10.0);
        assert_eq!(r.used_memory_gib_seconds, 20.0);
        assert_eq!(r.peak_memory_bytes, 3 << 30);
    }

    #[test]
    fn a_restarted_process_starts_a_new_interval_and_nothing_is_negative() {
        let prev = Mark {
            at: at(10),
            cpu_seconds: 15.0,
            memory_bytes: 1,
        };
        let (r, _) = interval("w", &meta(1, 0), Some(prev), sample(2.0, 1, 18), at(20)).unwrap();
        assert_eq!((r.from, r.used_cpu_seconds), (at(18), 2.0));
        // A sample at the mark's own time is an empty interval.
        assert!(interval("w", &meta(1, 0), Some(prev), sample(15.0, 1, 0), at(10)).is_none());
    }

    #[test]
    fn a_full_delivery_fits_the_orchestrators_default_body_limit() {
        let (r, _) = interval(
            "ws-01a22e5a-b7e7-77f3-bb27-cb3014987472",
            &meta(64, 8),
            None,
            sample(123_456.789_012, u64::MAX / 3, 0),
            at(86_400),
        )
        .unwrap();
        let batch = UsageBatch {
            site: Ident::parse("a-site-with-a-rather-long-name-0001").unwrap(),
            records: vec![UsageRecord { seq: u64::MAX, ..r }; MAX_BATCH],
        };
        let bytes = serde_json::to_vec(&batch).unwrap().len();
        assert!(bytes < 256 * 1024 / 2, "{bytes} bytes");
    }

    #[test]
    fn consecutive_intervals_tile_time_without_gap_or_overlap() {
        let mut prev = None;
        let mut total = 0.0;
        for i in 1..=6 {
            let (r, m) = interval(
                "w",
                &meta(3, 0),
                prev,
                sample(f64::from(i) * 4.0, 1, 0),
                at(i64::from(i) * 10),
            )
            .unwrap();
            if let Some(p) = prev {
                assert_eq!(r.from, p.at);
            }
            total += r.allocated_core_seconds;
            prev = Some(m);
        }
        assert_eq!(total, 3.0 * 60.0);
    }
}
