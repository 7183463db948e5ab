//! Workspaces: the create request, the record the API answers with, resources, and the state machine.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Ident;

/// Upper bounds that refuse absurd requests before placement is even tried.
pub const MAX_CPUS: u32 = 1024;
/// 16 TiB.
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// More GPUs than any node has.
pub const MAX_GPUS: u32 = 64;
/// At most 31 days.
pub const MAX_DURATION_S: u64 = 31 * 24 * 3600;
/// At most this many visas in one request.
pub const MAX_VISAS: usize = 64;

/// Compute a workspace asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Whole CPU cores, at least 1.
    #[schema(minimum = 1, maximum = 1024)]
    pub cpus: u32,
    /// Memory in MiB, at least 16.
    #[schema(minimum = 16, maximum = 16_777_216)]
    pub memory_mib: u64,
    /// GPUs, 0 unless the work needs them.
    #[serde(default)]
    pub gpus: u32,
}

impl Resources {
    /// Refuses non-positive or absurd figures, saying which and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(format!(
                "resources.cpus is {}; ask for 1 to {MAX_CPUS}",
                self.cpus
            ));
        }
        if self.memory_mib < 16 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "resources.memory_mib is {}; ask for 16 to {MAX_MEMORY_MIB}",
                self.memory_mib
            ));
        }
        if self.gpus > MAX_GPUS {
            return Err(format!(
                "resources.gpus is {}; ask for 0 to {MAX_GPUS}",
                self.gpus
            ));
        }
        Ok(())
    }
}

/// The body of `POST /v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// The approved project.
    pub project: Ident,
    /// A workspace template known to the orchestrator (`shell`, ...).
    pub template: Ident,
    /// GA4GH Passport visas (JWTs) of type ControlledAccessGrants, all for the same `sub`.
    pub visas: Vec<String>,
    /// Datasets to mount; defaults to every dataset the visas grant.
    #[serde(default)]
    pub datasets: Option<Vec<Ident>>,
    /// Compute; defaults to the template's.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Lifetime in seconds; the workspace also ends at the earliest visa expiry.
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// Pin the workspace to one site.
    #[serde(default)]
    pub site: Option<Ident>,
    /// How long it may wait in the queue when no site has the compute free now (default 24
    /// hours, at most 7 days); 0 refuses it at once instead (409 `insufficient_capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 604800)]
    pub max_queue_s: Option<u64>,
}

/// A workspace as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    /// `ws-` followed by a UUID.
    pub id: String,
    /// The project.
    pub project: Ident,
    /// The researcher: the visas' `sub`.
    pub owner: String,
    /// The template.
    pub template: Ident,
    /// The site it was placed at; while `queued`, the site it waits for first.
    pub site: Ident,
    /// Where it is in its lifecycle.
    pub state: State,
    /// Why it is in that state, when there is something to say (a failure, a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The datasets mounted at `/data/<id>`.
    pub datasets: Vec<Ident>,
    /// Compute allocated.
    pub resources: Resources,
    /// When the platform asked for it.
    pub created_at: DateTime<Utc>,
    /// When it ends: the earlier of `duration_s` and the earliest visa `exp`. While `queued`,
    /// when it leaves the queue unplaced (`max_queue_s`, or a visa expiring first); its
    /// lifetime counts from its placement.
    pub expires_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// The release of each dataset it mounts, as its site last reported (a running workspace,
    /// shown one at a time). A consent withdrawal makes a new release and moves it there.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub releases: std::collections::BTreeMap<Ident, u32>,
    /// Files in its `/work` or `/results` that hold the ID of a participant who withdrew
    /// consent, as its site found them: they cannot leave through the airlock; delete them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn_copies: Vec<String>,
    /// Where it stands while `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<crate::queue::QueueInfo>,
}

/// Workspace lifecycle states (docs/design.md section 4).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted, not yet placed.
    Pending,
    /// Waiting for compute: no site that could run it has enough free now.
    Queued,
    /// Assigned to a site; its agent has not started it yet.
    Placed,
    /// The site's agent is launching it.
    Starting,
    /// Running at its site.
    Running,
    /// Its site's own work took its compute back (Slurm preemption): requeued at the site with
    /// `/work` kept, it runs again there when the site allows.
    Preempted,
    /// Deletion asked; the site is stopping it.
    Stopping,
    /// Stopped and removed, or exited by itself.
    Stopped,
    /// Could not start, or crashed.
    Failed,
    /// Ended at its expiry.
    Expired,
    /// Ended because a grant was revoked.
    Revoked,
    /// Its site cannot currently tell; only positive evidence ends a workspace.
    Unknown,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 12] = [
        State::Pending,
        State::Queued,
        State::Placed,
        State::Starting,
        State::Running,
        State::Preempted,
        State::Stopping,
        State::Stopped,
        State::Failed,
        State::Expired,
        State::Revoked,
        State::Unknown,
    ];

    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Queued => "queued",
            State::Placed => "placed",
            State::Starting => "starting",
            State::Running => "running",
            State::Preempted => "preempted",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Unknown => "unknown",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A terminal state never changes again; its container must not exist.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Stopped | State::Failed | State::Expired | State::Revoked
        )
    }

    /// Whether a workspace in this state holds compute at its site: it is live and not
    /// waiting in the queue.
    pub fn holds_compute(self) -> bool {
        !self.is_terminal() && self != State::Queued
    }

    /// Whether the site should keep (or start) a container for a workspace in this state.
    pub fn wants_container(self) -> bool {
        matches!(
            self,
            State::Placed | State::Starting | State::Running | State::Preempted | State::Unknown
        )
    }

    /// Whether moving from `self` to `next` changes what the site's agent is told: the workspace
    /// enters or leaves the set it must run, or the set it must confirm stopped. Moves within the
    /// live states (placed, starting, running, unknown) are the agent's own reports and change
    /// nothing it needs to hear, so they must not wake its long-poll.
    pub fn changes_desired(self, next: State) -> bool {
        let role = |s: State| (s.wants_container(), s == State::Stopping);
        role(self) != role(next)
    }

    /// The state machine: may a workspace move from `self` to `next`?
    pub fn can_transition_to(self, next: State) -> bool {
        use State::*;
        if self == next {
            return false;
        }
        match self {
            Pending => matches!(next, Placed | Failed),
            // Deleted while queued it has no container to stop: straight to `stopped`.
            Queued => matches!(next, Placed | Stopped | Failed | Expired | Revoked),
            Placed | Starting | Running | Preempted | Unknown => {
                !matches!(next, Pending | Queued | Placed)
            }
            Stopping => matches!(next, Stopped | Failed | Expired | Revoked | Unknown),
            Stopped | Failed | Expired | Revoked => false,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(State::parse("gone"), None);
    }

    #[test]
    fn terminal_states_never_move() {
        for from in [Stopped, Failed, Expired, Revoked] {
            for to in State::ALL {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn lifecycle_paths() {
        let happy = [Pending, Placed, Starting, Running, Stopping, Stopped];
        for w in happy.windows(2) {
            assert!(w[0].can_transition_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(Running.can_transition_to(Unknown));
        assert!(Unknown.can_transition_to(Running));
        assert!(Running.can_transition_to(Revoked));
        assert!(Starting.can_transition_to(Failed));
        assert!(Placed.can_transition_to(Running));
        assert!(Stopping.can_transition_to(Revoked));
        assert!(Queued.can_transition_to(Placed));
        assert!(Queued.can_transition_to(Stopped));
        assert!(Queued.can_transition_to(Expired));
        assert!(!Queued.can_transition_to(Running));
        assert!(!Running.can_transition_to(Queued));
        assert!(!Queued.wants_container());
        assert!(Running.can_transition_to(Preempted));
        assert!(Preempted.can_transition_to(Running));
        assert!(Preempted.can_transition_to(Stopping));
        assert!(!Preempted.can_transition_to(Queued));
        assert!(Preempted.wants_container() && Preempted.holds_compute());
        assert!(!Running.changes_desired(Preempted));
        assert!(Queued.changes_desired(Placed));
    }

    #[test]
    fn no_going_back() {
        assert!(!Running.can_transition_to(Placed));
        assert!(!Running.can_transition_to(Pending));
        assert!(!Stopping.can_transition_to(Running));
        assert!(!Stopping.can_transition_to(Starting));
        assert!(!Pending.can_transition_to(Running));
        assert!(!Running.can_transition_to(Running));
    }

    #[test]
    fn only_entering_or_leaving_the_desired_set_changes_it() {
        assert!(!Placed.changes_desired(Starting));
        assert!(!Starting.changes_desired(Running));
        assert!(!Running.changes_desired(Unknown));
        assert!(Running.changes_desired(Stopping));
        assert!(Stopping.changes_desired(Stopped));
        assert!(Running.changes_desired(Failed));
        assert!(Pending.changes_desired(Placed));
        assert!(!Failed.changes_desired(Stopped));
    }

    #[test]
    fn containers_wanted_only_while_live() {
        let wanted: Vec<_> = State::ALL
            .into_iter()
            .filter(|s| s.wants_container())
            .collect();
        assert_eq!(wanted, vec![Placed, Starting, Running, Preempted, Unknown]);
    }

    #[test]
    fn resources_bounds() {
        let ok = Resources {
            cpus: 1,
            memory_mib: 512,
            gpus: 0,
        };
        assert!(ok.validate().is_ok());
        assert!(
            Resources { cpus: 0, ..ok }
                .validate()
                .unwrap_err()
                .contains("cpus")
        );
        assert!(
            Resources {
                cpus: 100_000,
                ..ok
            }
            .validate()
            .is_err()
        );
        assert!(
            Resources {
                memory_mib: 0,
                ..ok
            }
            .validate()
            .unwrap_err()
            .contains("memory_mib")
        );
        assert!(
            Resources {
                memory_mib: u64::MAX,
                ..ok
            }
            .validate()
            .is_err()
        );
        assert!(
            Resources { gpus: 1000, ..ok }
                .validate()
                .unwrap_err()
                .contains("gpus")
        );
    }

    #[test]
    fn create_refuses_unknown_fields() {
        let err = serde_json::from_str::<CreateWorkspace>(
            r#"{"project":"P","template":"shell","visas":[],"extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
