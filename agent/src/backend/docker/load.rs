//! The engine host's own load, for `[capacity] only_idle`: the host's CPUs and memory as the
//! engine reports them, and what every running container that is not one of this site's
//! workspaces holds. A container with a limit counts for its limit (what it may take at any
//! moment); one without counts for what it uses now (CPU over the engine's last collection
//! cycle, memory in use). GPUs are not reported by the engine and are left to the ceiling.

use basho_core::protocol::Capacity;
use basho_core::{LABEL_NAMESPACE, LABEL_SITE, LABEL_WORKSPACE};
use bollard::models::{ContainerStatsResponse, HostConfig};
use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures::StreamExt as _;

use super::DockerBackend;
use super::error::{is_not_found, unavailable};
use crate::backend::{BackendError, SiteLoad};

const MIB: f64 = 1024.0 * 1024.0;

/// What one container holds: cores and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Held {
    cpus: f64,
    memory_bytes: f64,
}

impl DockerBackend {
    /// The host's load from the engine.
    pub(super) async fn host_load(&self) -> Result<SiteLoad, BackendError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| unavailable("read the engine's info", e))?;
        let total = Capacity {
            cpus: u32::try_from(info.ncpu.unwrap_or(0)).unwrap_or(0),
            memory_mib: (info.mem_total.unwrap_or(0).max(0) as f64 / MIB) as u64,
            gpus: u32::MAX,
        };
        let running = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().build()))
            .await
            .map_err(|e| unavailable("list containers", e))?;
        let others = running.into_iter().filter(|c| {
            let labels = c.labels.as_ref();
            let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
            let ours = label(LABEL_SITE) == Some(self.site.as_str())
                && label(LABEL_WORKSPACE).is_some()
                && self
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| label(LABEL_NAMESPACE) == Some(ns));
            !ours
        });
        let held = futures::stream::iter(others.filter_map(|c| c.id))
            .map(|id| async move { self.held_by(&id).await })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let mut sum = Held::default();
        for h in held {
            let h = h?;
            sum.cpus += h.cpus;
            sum.memory_bytes += h.memory_bytes;
        }
        Ok(SiteLoad {
            total,
            others: Capacity {
                cpus: sum.cpus.ceil() as u32,
                memory_mib: (sum.memory_bytes / MIB).ceil() as u64,
                gpus: 0,
            },
        })
    }

    /// What container `id` holds; nothing when it went away meanwhile.
    async fn held_by(&self, id: &str) -> Result<Held, BackendError> {
        let details = match self.docker.inspect_container(id, None).await {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(Held::default()),
            Err(e) => return Err(unavailable("inspect container", e)),
        };
        let limits = limits(details.host_config.as_ref());
        if let (Some(cpus), Some(memory_bytes)) = limits {
            return Ok(Held { cpus, memory_bytes });
        }
        // Without a limit: what it uses now, over the engine's collection cycle.
        let options = StatsOptionsBuilder::default().stream(false).build();
        let sample = match self.docker.stats(id, Some(options)).next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) if is_not_found(&e) => return Ok(Held::default()),
            Some(Err(e)) => return Err(unavailable("read container stats", e)),
            None => return Ok(Held::default()),
        };
        let (cpus, memory) = in_use(&sample);
        Ok(Held {
            cpus: limits.0.unwrap_or(cpus),
            memory_bytes: limits.1.unwrap_or(memory),
        })
    }
}

/// A container's CPU limit in cores and memory limit in bytes, each when it has one.
fn limits(host: Option<&HostConfig>) -> (Option<f64>, Option<f64>) {
    let Some(h) = host else {
        return (None, None);
    };
    let cpus = match (h.nano_cpus, h.cpu_quota, h.cpu_period) {
        (Some(n), _, _) if n > 0 => Some(n as f64 / 1e9),
        (_, Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
        _ => None,
    };
    let memory = h.memory.filter(|m| *m > 0).map(|m| m as f64);
    (cpus, memory)
}

/// Cores in use (the CLI's formula: the container's share of the host's CPU time between the
/// two samples the engine took, times the online CPUs) and memory in use, bytes.
fn in_use(s: &ContainerStatsResponse) -> (f64, f64) {
    let total = |c: Option<&bollard::models::ContainerCpuStats>| {
        let c = c?;
        Some((c.cpu_usage.as_ref()?.total_usage?, c.system_cpu_usage?))
    };
    let cpus = match (total(s.cpu_stats.as_ref()), total(s.precpu_stats.as_ref())) {
        (Some((used, system)), Some((pre_used, pre_system))) if system > pre_system => {
            let online = s
                .cpu_stats
                .as_ref()
                .and_then(|c| c.online_cpus)
                .unwrap_or(1);
            (used.saturating_sub(pre_used)) as f64 / (system - pre_system) as f64
                * f64::from(online)
        }
        _ => 0.0,
    };
    let memory = s.memory_stats.as_ref().and_then(|m| m.usage).unwrap_or(0) as f64;
    (cpus, memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_counts_whole_and_quota_or_nano_cpus_both_read() {
        let nano = HostConfig {
            nano_cpus: Some(1_500_000_000),
            memory: Some(512 * 1024 * 1024),
            ..Default::default()
        };
        assert_eq!(limits(Some(&nano)), (Some(1.5), Some(512.0 * MIB)));
        let quota = HostConfig {
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory: Some(0),
            ..Default::default()
        };
        assert_eq!(limits(Some(&quota)), (Some(0.5), None));
        assert_eq!(limits(None), (None, None));
    }

    #[test]
    fn use_without_a_limit_is_the_share_of_host_time_between_samples() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64},
                          "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64},
                             "system_cpu_usage": 18_000_000_000u64},
            "memory_stats": {"usage": 1_048_576u64}
        }))
        .unwrap();
        assert_eq!(in_use(&stats), (1.0, MIB));
        let first: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5u64}, "system_cpu_usage": 9u64}
        }))
        .unwrap();
        assert_eq!(in_use(&first), (0.0, 0.0));
    }
}
