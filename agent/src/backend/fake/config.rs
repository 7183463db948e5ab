//! The `[backend]` table of a simulated site (tests and benchmarks only); and its checks.

use serde::{Deserialize, Serialize};

/// Simulated lifecycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    /// Time from launch to running, milliseconds.
    #[serde(default)]
    pub start_delay_ms: u64,
    /// Share of launches that fail, 0.0 to 1.0.
    #[serde(default)]
    pub failure_rate: f64,
    /// Simulated batch commands: each workspace writes `counts.csv` (one cell of 12) into its
    /// `/results` and exits 0 this long after it runs. None: they run until stopped.
    #[serde(default)]
    pub exit_after_ms: Option<u64>,
}

impl FakeConfig {
    /// Every problem of a fake `[backend]` table, empty when it is fine.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.failure_rate) {
            p.push(format!(
                "backend.failure_rate is {}; use a share from 0.0 to 1.0",
                self.failure_rate
            ));
        }
        p
    }
}
