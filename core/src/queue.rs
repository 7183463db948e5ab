//! The queue: where a queued workspace stands, and the scheduling a platform sets per project.
//! The order itself is the orchestrator's (docs/architecture.md, "The queue").

use serde::{Deserialize, Serialize};

/// The longest a request may ask to wait: 7 days.
pub const MAX_QUEUE_S: u64 = 7 * 24 * 3600;
/// How long a request waits unless it says otherwise: 24 hours.
pub const DEFAULT_QUEUE_S: u64 = 24 * 3600;
/// The highest priority the platform may give a project; higher goes first.
pub const MAX_PRIORITY: u32 = 100;
/// A project's priority until the platform sets one.
pub const DEFAULT_PRIORITY: u32 = 50;
/// The largest fair-share weight.
pub const MAX_SHARE: u32 = 10_000;

/// Where a queued workspace stands, as the orchestrator's scheduler last ordered the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueInfo {
    /// 1 is next.
    pub position: u64,
    /// Workspaces queued in all.
    pub length: u64,
    /// Why it waits: the compute free at the sites that could run it, or earlier workspaces
    /// holding them.
    pub reason: String,
}

/// A project's place in the queue, set by the platform (`PUT /v1/projects/{id}/scheduling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scheduling {
    /// 0 to 100: a queued workspace of a higher priority is placed before any of a lower one.
    #[schema(minimum = 0, maximum = 100)]
    pub priority: u32,
    /// 1 to 10000: the fair-share weight; among projects of one priority, the project furthest
    /// below its weight's share of recent use goes first.
    #[schema(minimum = 1, maximum = 10000)]
    pub share: u32,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self {
            priority: DEFAULT_PRIORITY,
            share: 1,
        }
    }
}

impl Scheduling {
    /// Refuses figures outside their ranges, saying which and the range.
    pub fn validate(&self) -> Result<(), String> {
        if self.priority > MAX_PRIORITY {
            return Err(format!(
                "priority is {}; the platform's range is 0 to {MAX_PRIORITY}",
                self.priority
            ));
        }
        if self.share == 0 || self.share > MAX_SHARE {
            return Err(format!(
                "share is {}; give a weight of 1 to {MAX_SHARE}",
                self.share
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(Scheduling::default().validate().is_ok());
        let p = Scheduling {
            priority: 101,
            share: 1,
        };
        assert!(p.validate().unwrap_err().contains("0 to 100"));
        let s = Scheduling {
            priority: 1,
            share: 0,
        };
        assert!(s.validate().unwrap_err().contains("1 to 10000"));
    }
}
