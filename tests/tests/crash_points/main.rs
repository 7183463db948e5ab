//! Crash at any step: for every crash point in `basho_core::crash::POINTS`, the operation that
//! reaches it runs against real processes (`basho-orchestrator`, `basho-agent`) armed to die
//! there (`FAILPOINTS=<point>=return`: an abort, no clean-up), the dead process is started again
//! on the same state, the client replays what it never heard back (same `Idempotency-Key`, same
//! body), and the end state is checked:
//!
//! - the workspace ends where the operation leads (`running`, `stopped`, `revoked`), never stuck;
//! - the backend holds exactly the workspace's one live instance, or none: no container left
//!   `Created` or `Exited`, no second container or job;
//! - the capacity the orchestrator holds for the site equals its live workspaces;
//! - usage records are numbered 1..N without a gap or a repeat;
//! - the audit chain verifies and records the workspace's creation exactly once;
//! - a federated job completes, its step and its aggregation each made once.
//!
//! Orchestrator points run once (the orchestrator does not know backends); agent points run on
//! each backend here: Docker on the real engine, Slurm on the `scripts/slurm-up` cluster over SSH,
//! Kubernetes against the agent's fake API server (`agent/tests/kube_fake`, a stand-in: no
//! Kubernetes can run here), which lives in this test process and so outlives the agent's crash.
//! Each prints one row of the table in docs/reliability.md:
//! `cargo nextest run -p basho-tests --test crash_points --no-capture`.

use std::collections::BTreeSet;
use std::path::Path;

use basho_core::crash::POINTS;

mod checks;
mod federated;
#[path = "../../../agent/tests/kube_fake/mod.rs"]
mod kube_fake;
mod world;

use world::{Backend, World};

/// What reaches a crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A create (with an `Idempotency-Key`), then the launch and its first reports.
    Create,
    /// A delete of a running workspace.
    Delete,
    /// A revocation of the dataset a running workspace holds.
    Revoke,
    /// A running workspace metered (every second) and its records delivered.
    Usage,
    /// A consent withdrawal recorded at the site while a workspace reads the dataset.
    Withdraw,
    /// A federated job over the site, its step and its aggregation both there.
    Federated,
}

impl Op {
    /// Where the workspace ends on `backend`: a withdrawal moves it where the backend can
    /// launch it again, and stops it past `[consent] max_delay_s` elsewhere.
    fn ends(self, backend: world::Backend) -> &'static str {
        match self {
            Op::Create | Op::Usage => "running",
            Op::Federated => "completed",
            Op::Withdraw if backend == world::Backend::Docker => "running",
            Op::Delete | Op::Withdraw => "stopped",
            Op::Revoke => "revoked",
        }
    }
}

/// Every crash point and the operation that reaches it.
const CASES: &[(&str, Op)] = &[
    ("orchestrator.create.admitted", Op::Create),
    ("orchestrator.create.inserted", Op::Create),
    ("orchestrator.create.committed", Op::Create),
    ("orchestrator.create.audited", Op::Create),
    ("orchestrator.observation.applied", Op::Create),
    ("orchestrator.delete.recorded", Op::Delete),
    ("orchestrator.revocation.recorded", Op::Revoke),
    ("orchestrator.revocation.applied", Op::Revoke),
    ("agent.launch.verified", Op::Create),
    ("agent.launch.host_dirs", Op::Create),
    ("agent.launch.created", Op::Create),
    ("agent.launch.started", Op::Create),
    ("agent.launch.reported", Op::Create),
    ("agent.stop.stopped", Op::Delete),
    ("agent.stop.removed", Op::Delete),
    ("agent.stop.reported", Op::Delete),
    ("agent.revocation.screened", Op::Revoke),
    ("orchestrator.federated.step_created", Op::Federated),
    ("orchestrator.federated.aggregation_placed", Op::Federated),
    ("agent.inputs.staged", Op::Federated),
    ("agent.consent.recorded", Op::Withdraw),
    ("agent.consent.built", Op::Withdraw),
    ("agent.consent.placed", Op::Withdraw),
    ("agent.consent.current", Op::Withdraw),
    ("agent.consent.answered", Op::Withdraw),
    ("agent.usage.appended", Op::Usage),
    ("agent.usage.delivered", Op::Usage),
];

pub(crate) const DATASET: &str = "JGAD000101";

/// What `std::process::abort` ends a process with.
pub(crate) const SIGABRT: i32 = 6;

/// Every listed point is placed in the code, and every one has a case here: a new crash point
/// without a convergence test fails this.
#[test]
fn every_crash_point_is_placed_and_has_a_case() {
    let listed: BTreeSet<&str> = POINTS.iter().copied().collect();
    let cased: BTreeSet<&str> = CASES.iter().map(|(p, _)| *p).collect();
    assert_eq!(CASES.len(), cased.len(), "a point has two cases");
    let untested: Vec<_> = listed.difference(&cased).collect();
    assert!(
        untested.is_empty(),
        "crash points without a case: {untested:?}"
    );
    let stale: Vec<_> = cased.difference(&listed).collect();
    assert!(
        stale.is_empty(),
        "cases of points that do not exist: {stale:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut code = String::new();
    for dir in ["core/src", "orchestrator/src", "agent/src"] {
        read_rs(&root.join(dir), &mut code);
    }
    for p in POINTS {
        assert!(
            code.contains(&format!("crash_point!(\"{p}\")")),
            "{p} is listed in basho_core::crash::POINTS but placed nowhere"
        );
    }
}

fn read_rs(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_every_crash_point_converges() {
    let Some(world) = World::start(Backend::Docker).await else {
        return;
    };
    world.run_all(CASES.iter().copied()).await;
    world.fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_every_agent_crash_point_converges() {
    agent_points_converge(Backend::Slurm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_a_launch_stuck_past_the_start_timeout_fails_and_is_removed() {
    let Some(world) = World::start(Backend::Docker).await else {
        return;
    };
    let dir = world.fed.dir.path().join("stuck");
    let result = world.stuck_launch(&dir).await;
    world.clean().await;
    let (failed, removed) = result.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.join("processes.log")).unwrap_or_default();
        panic!("{e}\n{log}")
    });
    eprintln!(
        "| start timeout 2 s | Docker | failed after {} ms | container removed after {} ms |",
        failed.as_millis(),
        removed.as_millis()
    );
    world.fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_every_agent_crash_point_converges() {
    agent_points_converge(Backend::Kubernetes).await;
}

/// Every agent crash point on `backend`.
async fn agent_points_converge(backend: Backend) {
    let Some(world) = World::start(backend).await else {
        return;
    };
    // A Kubernetes site cannot aggregate (its volumes are not the agent's to stage into).
    let agent_points = CASES
        .iter()
        .copied()
        .filter(|(p, _)| p.starts_with("agent."))
        .filter(|(_, op)| !(backend == Backend::Kubernetes && *op == Op::Federated));
    world.run_all(agent_points).await;
    world.fed.shutdown().await;
}
