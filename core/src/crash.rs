//! Named crash points: every step of the paths that change the world (a create, a launch, a stop,
//! a revocation, a usage delivery) has a name, and a debug build can be told to die there.
//!
//! A point is written `basho_core::crash_point!("agent.launch.created")`. The name must be in
//! [`POINTS`] (the build fails otherwise), so the list is the whole inventory and the
//! crash-point tests (`tests/tests/crash_points.rs`) can fail when a point has no test.
//!
//! In a debug build (`debug_assertions`, which is what tests and `cargo run` use) each point is
//! a [`fail`] point, armed from the `FAILPOINTS` environment variable with the `return` action:
//! `FAILPOINTS=agent.launch.created=return` ends the process at the first launch that gets
//! there, `FAILPOINTS=agent.launch.created=2*off->return` at the third. Ending is
//! [`std::process::abort`]: no destructor, no flush, no graceful shutdown, as a SIGKILL or a
//! power cut would leave things. Other `fail` actions (`sleep(ms)`, `pause`) work as documented
//! there. In a release build the macro expands to nothing: no lookup, no cost.

/// Every crash point in the code, by process and path. A point's name says where it is and what
/// has happened when it fires: `agent.launch.created` fires after the backend made the
/// container (job, pod) and before it is started.
pub const POINTS: &[&str] = &[
    // orchestrator: create
    "orchestrator.create.admitted",
    "orchestrator.create.inserted",
    "orchestrator.create.committed",
    "orchestrator.create.audited",
    // orchestrator: an agent's observations
    "orchestrator.observation.applied",
    // orchestrator: delete and revoke
    "orchestrator.delete.recorded",
    "orchestrator.revocation.recorded",
    "orchestrator.revocation.applied",
    // orchestrator: federated jobs (a step made, the aggregation placed)
    "orchestrator.federated.step_created",
    "orchestrator.federated.aggregation_placed",
    // agent: launch
    "agent.launch.verified",
    "agent.launch.host_dirs",
    "agent.launch.created",
    "agent.launch.started",
    "agent.launch.reported",
    // agent: stop
    "agent.stop.stopped",
    "agent.stop.removed",
    "agent.stop.reported",
    // agent: revocation
    "agent.revocation.screened",
    // agent: a federated job's partials staged for its aggregation
    "agent.inputs.staged",
    // agent: consent withdrawal (a release made without the participants)
    "agent.consent.recorded",
    "agent.consent.built",
    "agent.consent.placed",
    "agent.consent.current",
    "agent.consent.answered",
    // agent: metering
    "agent.usage.appended",
    "agent.usage.delivered",
];

/// Whether `name` is in [`POINTS`]; used by [`crash_point!`](crate::crash_point) at compile time.
pub const fn listed(name: &str) -> bool {
    let mut i = 0;
    while i < POINTS.len() {
        if same(POINTS[i].as_bytes(), name.as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[doc(hidden)]
pub use fail;

/// Reads `FAILPOINTS` once, and refuses names that are not crash points: a typo must not turn a
/// crash test into one that never crashes.
#[doc(hidden)]
pub fn arm_from_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(spec) = std::env::var("FAILPOINTS") else {
            return;
        };
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            let Some((name, actions)) = item.split_once('=') else {
                die(&format!("FAILPOINTS item {item:?} is not name=actions"));
            };
            let name = name.trim();
            if !POINTS.contains(&name) {
                die(&format!(
                    "FAILPOINTS names {name:?}, which is not a crash point; they are: {}",
                    POINTS.join(", ")
                ));
            }
            if let Err(e) = fail::cfg(name, actions.trim()) {
                die(&format!("FAILPOINTS {name}: {e}"));
            }
        }
    });
}

fn die(why: &str) -> ! {
    eprintln!("crash points: {why}");
    std::process::abort();
}

/// Ends the process where crash point `name` is: the one log line a test looks for, then abort.
#[doc(hidden)]
pub fn crash(name: &str) -> ! {
    use std::io::Write;
    // One write: a line written piecemeal interleaves with other processes writing to the same
    // log, and whoever reads it for this line would not find it.
    let line = format!("crash point {name}: ending the process (FAILPOINTS)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    std::process::abort();
}

/// A named crash point (see the module docs). Nothing in release builds.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {{
        const _: () = assert!(
            $crate::crash::listed($name),
            concat!(
                "crash point ",
                $name,
                " is not in basho_core::crash::POINTS"
            )
        );
        #[cfg(debug_assertions)]
        {
            $crate::crash::arm_from_env();
            (|| {
                $crate::crash::fail::fail_point!($name, |_| {
                    $crate::crash::crash($name);
                });
            })();
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut seen = std::collections::BTreeSet::new();
        for p in POINTS {
            assert!(seen.insert(*p), "{p} listed twice");
            assert!(
                p.split('.').count() == 3
                    && (p.starts_with("agent.") || p.starts_with("orchestrator.")),
                "{p} is process.path.step"
            );
        }
        assert!(listed("agent.launch.created"));
        assert!(!listed("agent.launch"));
    }

    #[test]
    fn an_unarmed_point_does_nothing() {
        crate::crash_point!("agent.launch.created");
    }
}
