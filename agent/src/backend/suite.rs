//! The suite every backend passes (like Nomad's driver harness, shaped like the orchestrator's
//! `store_suite!`): each case is a function of a [`Harness`], and [`backend_suite!`](crate::backend_suite)
//! turns each into a named test for one backend. A harness gives the backend and a spec it can
//! start; hooks it cannot offer (`make_exit`, `cut_connection`, `fresh_instance`) skip the cases
//! that need them, saying so. [`run_suite`] is the whole lifecycle on one workspace, for tests
//! that count what it asked of the backend.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use basho_core::{Ident, Resources, WorkspaceId};

use super::{Backend, BackendError, LaunchSpec, Observed, RunState};

/// How long a launched workspace may take to reach `Running`.
pub const RUNNING_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// How long a workspace made to exit may take to be seen `Exited`.
pub const EXITED_WITHIN: Duration = Duration::from_secs(60);

/// The check a backend failed, with what it did instead.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A backend call failed where the contract says it succeeds.
    #[error("{step}: backend call failed: {source}")]
    Call {
        /// The step of the suite.
        step: &'static str,
        /// The backend's error.
        source: BackendError,
    },
    /// A backend answered, but not as the contract says.
    #[error("{step}: {what}")]
    Contract {
        /// The step of the suite.
        step: &'static str,
        /// What was expected and what came back.
        what: String,
    },
}

fn call<T>(step: &'static str, r: Result<T, BackendError>) -> Result<T, Failure> {
    r.map_err(|source| Failure::Call { step, source })
}

fn ensure(step: &'static str, ok: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(Failure::Contract { step, what: what() })
    }
}

/// A spec with placeholder image and paths, for backends that do not look at them (the fake) and
/// as a base that real backends' tests adjust (image, directories).
pub fn example_spec(site: &Ident, workspace: &str) -> LaunchSpec {
    let tmp = std::env::temp_dir().join("basho-conformance");
    LaunchSpec {
        workspace: WorkspaceId::parse(workspace).expect("a plain identifier"),
        project: Ident::parse("P-conformance").expect("a plain identifier"),
        site: site.clone(),
        image: format!("sha256:{}", "0".repeat(64)),
        command: vec!["sleep".into(), "3600".into()],
        workdir: None,
        datasets: Vec::new(),
        work_dir: tmp.join("work").join(workspace),
        results_dir: tmp.join("results").join(workspace),
        inputs_dir: None,
        workspace_json: PathBuf::from("/dev/null"),
        env: vec![("BASHO_WORKSPACE".into(), workspace.to_owned())],
        resources: Resources {
            cpus: 1,
            memory_mib: 64,
            gpus: 0,
        },
        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        user: "65534:65534".into(),
        pids_limit: 64,
        tmp_size_mib: 16,
    }
}

/// Runs the suite against `backend` with the spec `make_spec` builds for a workspace id. The
/// workspace is stopped again whatever the outcome, so a failing run leaves nothing behind.
pub async fn run_suite<F>(backend: &dyn Backend, make_spec: F) -> Result<(), Failure>
where
    F: Fn(&str) -> LaunchSpec,
{
    let id = format!("conf-{:016x}", rand::random::<u64>());
    let spec = make_spec(&id);
    let outcome = checks(backend, &spec).await;
    if outcome.is_err() {
        let _ = backend.stop(&id).await;
    }
    outcome
}

async fn checks(backend: &dyn Backend, spec: &LaunchSpec) -> Result<(), Failure> {
    let id = spec.workspace.as_str();
    let before = call("inspect before launch", backend.inspect(id).await)?;
    ensure("inspect before launch", before.is_none(), || {
        format!("expected nothing, saw {before:?}")
    })?;

    let first = call("launch", backend.launch(spec).await)?;
    ensure("launch", first.workspace == id, || {
        format!("launch answered for workspace {:?}", first.workspace)
    })?;
    ensure(
        "launch",
        matches!(first.state, RunState::Starting | RunState::Running),
        || format!("a fresh launch is {:?}", first.state),
    )?;

    let running = wait_running(backend, id).await?;
    ensure("inspect", running.handle == first.handle, || {
        format!(
            "inspect shows handle {:?}, launch gave {:?}",
            running.handle, first.handle
        )
    })?;

    let again = call("launch again", backend.launch(spec).await)?;
    ensure("launch again", again.handle == first.handle, || {
        format!(
            "a second launch made {:?} beside {:?}",
            again.handle, first.handle
        )
    })?;
    let listed = call("list_managed", backend.list_managed().await)?;
    let mine: Vec<&Observed> = listed.iter().filter(|o| o.workspace == id).collect();
    ensure("list_managed", mine.len() == 1, || {
        format!("expected exactly one entry for {id}, found {mine:?}")
    })?;
    ensure("list_managed", mine[0].handle == first.handle, || {
        format!(
            "listed handle {:?} is not {:?}",
            mine[0].handle, first.handle
        )
    })?;

    let usage = call("usage", backend.usage(id).await)?;
    ensure("usage", usage.is_some(), || {
        "a running workspace has no usage sample".into()
    })?;

    call("stop", backend.stop(id).await)?;
    let after = call("inspect after stop", backend.inspect(id).await)?;
    ensure("inspect after stop", after.is_none(), || {
        format!("still there: {after:?}")
    })?;
    let listed = call("list_managed after stop", backend.list_managed().await)?;
    ensure(
        "list_managed after stop",
        listed.iter().all(|o| o.workspace != id),
        || format!("{id} is still listed"),
    )?;
    call("stop again", backend.stop(id).await)?;
    let usage = call("usage after stop", backend.usage(id).await)?;
    ensure("usage after stop", usage.is_none(), || {
        format!("a stopped workspace reports usage {usage:?}")
    })?;
    Ok(())
}

async fn wait_running(backend: &dyn Backend, id: &str) -> Result<Observed, Failure> {
    let deadline = tokio::time::Instant::now() + RUNNING_WITHIN;
    loop {
        let seen = call("inspect", backend.inspect(id).await)?;
        match seen {
            Some(o) if o.state == RunState::Running => {
                ensure("inspect", o.workspace == id, || {
                    format!("inspect of {id} answered for {:?}", o.workspace)
                })?;
                return Ok(o);
            }
            Some(o) if o.state == RunState::Starting => {}
            other => {
                return Err(Failure::Contract {
                    step: "inspect",
                    what: format!("expected Starting then Running, saw {other:?}"),
                });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::Contract {
                step: "inspect",
                what: format!("not running within {RUNNING_WITHIN:?}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for_state(
    backend: &dyn Backend,
    id: &str,
    within: Duration,
    want: impl Fn(&RunState) -> bool,
) -> Result<Observed, Failure> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = call("inspect", backend.inspect(id).await)?;
        match seen {
            Some(o) if want(&o.state) => return Ok(o),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(Failure::Contract {
                    step: "inspect",
                    what: format!("not in the awaited state within {within:?}: {seen:?}"),
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// What a backend's tests give the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend under test.
    fn backend(&self) -> &dyn Backend;
    /// A spec for `workspace` that the backend can start and keep running.
    fn spec(&self, workspace: &str) -> LaunchSpec;
    /// Makes the running `workspace` exit by itself; `false` when this harness cannot.
    async fn make_exit(&self, workspace: &str) -> bool {
        let _ = workspace;
        false
    }
    /// Cuts the backend off from what it drives, for good; `false` when this harness cannot.
    async fn cut_connection(&self) -> bool {
        false
    }
    /// A second backend on the same system, as an agent restart makes; `None` when this harness
    /// cannot make one.
    async fn fresh_instance(&self) -> Option<Box<dyn Backend>> {
        None
    }
}

/// Defines one `#[tokio::test]` per case, each on a harness from `$make` (an async expression
/// giving `Option<impl Harness>`; `None` skips, having said why). Without a case list, every case.
#[macro_export]
macro_rules! backend_suite {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $make.await else { return };
                $crate::backend::suite::$case(&harness).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::backend_suite!($make;
            the_whole_lifecycle,
            nothing_is_there_before_a_launch,
            a_second_launch_finds_the_first,
            stopping_twice_succeeds,
            an_exit_is_seen,
            a_cut_connection_is_unavailable,
            a_fresh_instance_adopts_what_runs,
        );
    };
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn skip(what: &str) {
    eprintln!("skipping: this harness cannot {what}");
}

/// Stops `id` whatever the outcome, so a failing case leaves nothing behind, then fails on it.
async fn settle(backend: &dyn Backend, id: &str, outcome: Result<(), Failure>) {
    if outcome.is_err() {
        let _ = backend.stop(id).await;
    }
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Launch, idempotent relaunch, discovery by label, usage, stop, idempotent stop.
pub async fn the_whole_lifecycle(h: &impl Harness) {
    run_suite(h.backend(), |id| h.spec(id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// An id never launched is absent from inspect, the list and usage; stopping it succeeds.
pub async fn nothing_is_there_before_a_launch(h: &impl Harness) {
    let (b, id) = (h.backend(), unique("conf-none"));
    let seen = b.inspect(&id).await.expect("inspect");
    assert!(seen.is_none(), "expected nothing, saw {seen:?}");
    let listed = b.list_managed().await.expect("list_managed");
    assert!(listed.iter().all(|o| o.workspace != id), "{listed:?}");
    assert!(b.usage(&id).await.expect("usage").is_none());
    b.stop(&id).await.expect("stopping nothing succeeds");
}

/// A launch while the first is starting or running answers with the first's handle.
pub async fn a_second_launch_finds_the_first(h: &impl Harness) {
    let (b, id) = (h.backend(), unique("conf-again"));
    let spec = h.spec(&id);
    let outcome = async {
        let first = call("launch", b.launch(&spec).await)?;
        let again = call("launch again", b.launch(&spec).await)?;
        ensure("launch again", again.handle == first.handle, || {
            format!(
                "a second launch made {:?} beside {:?}",
                again.handle, first.handle
            )
        })?;
        call("stop", b.stop(&id).await)
    }
    .await;
    settle(b, &id, outcome).await;
}

/// Stop removes the workspace; a second stop succeeds and changes nothing.
pub async fn stopping_twice_succeeds(h: &impl Harness) {
    let (b, id) = (h.backend(), unique("conf-stop"));
    let outcome = async {
        call("launch", b.launch(&h.spec(&id)).await)?;
        call("stop", b.stop(&id).await)?;
        call("stop again", b.stop(&id).await)?;
        let after = call("inspect after stop", b.inspect(&id).await)?;
        ensure("inspect after stop", after.is_none(), || {
            format!("still there: {after:?}")
        })
    }
    .await;
    settle(b, &id, outcome).await;
}

/// A workspace that exits by itself is seen `Exited`, under the handle it was launched with.
pub async fn an_exit_is_seen(h: &impl Harness) {
    let (b, id) = (h.backend(), unique("conf-exit"));
    let outcome = async {
        let first = call("launch", b.launch(&h.spec(&id)).await)?;
        wait_running(b, &id).await?;
        if !h.make_exit(&id).await {
            skip("make a workspace exit");
            return call("stop", b.stop(&id).await);
        }
        let exited =
            wait_for_state(b, &id, EXITED_WITHIN, |s| matches!(s, RunState::Exited(_))).await?;
        ensure("inspect after exit", exited.handle == first.handle, || {
            format!("{:?} is not the launched {:?}", exited.handle, first.handle)
        })?;
        call("stop", b.stop(&id).await)
    }
    .await;
    settle(b, &id, outcome).await;
}

/// Cut off, the backend says `Unavailable`: never that the workspaces are gone.
pub async fn a_cut_connection_is_unavailable(h: &impl Harness) {
    let b = h.backend();
    if !h.cut_connection().await {
        return skip("cut the backend's connection");
    }
    match b.list_managed().await {
        Err(BackendError::Unavailable { .. }) => {}
        other => panic!("list_managed when cut off: expected unavailable, got {other:?}"),
    }
    match b.inspect("conf-cut").await {
        Err(BackendError::Unavailable { .. }) => {}
        other => panic!("inspect when cut off: expected unavailable, got {other:?}"),
    }
}

/// A second instance on the same system finds the running workspace with the same handle, and
/// its launch adopts it instead of making another.
pub async fn a_fresh_instance_adopts_what_runs(h: &impl Harness) {
    let (b, id) = (h.backend(), unique("conf-adopt"));
    let outcome = async {
        let first = call("launch", b.launch(&h.spec(&id)).await)?;
        wait_running(b, &id).await?;
        let Some(fresh) = h.fresh_instance().await else {
            skip("make a fresh backend instance");
            return call("stop", b.stop(&id).await);
        };
        let seen = call("inspect on the fresh instance", fresh.inspect(&id).await)?;
        ensure(
            "inspect on the fresh instance",
            seen.as_ref().is_some_and(|o| o.handle == first.handle),
            || format!("expected {:?}, saw {seen:?}", first.handle),
        )?;
        let again = call(
            "launch on the fresh instance",
            fresh.launch(&h.spec(&id)).await,
        )?;
        ensure(
            "launch on the fresh instance",
            again.handle == first.handle,
            || format!("made {:?} beside {:?}", again.handle, first.handle),
        )?;
        call("stop on the fresh instance", fresh.stop(&id).await)
    }
    .await;
    settle(b, &id, outcome).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::fake::FakeBackend;

    /// The fake: exits on demand, cut off by its switch; its state is its own, so no fresh
    /// instance.
    struct Fake {
        backend: FakeBackend,
        site: Ident,
    }

    #[async_trait]
    impl Harness for Fake {
        fn backend(&self) -> &dyn Backend {
            &self.backend
        }
        fn spec(&self, workspace: &str) -> LaunchSpec {
            example_spec(&self.site, workspace)
        }
        async fn make_exit(&self, workspace: &str) -> bool {
            self.backend.exit(workspace, 3)
        }
        async fn cut_connection(&self) -> bool {
            self.backend.set_unavailable(true);
            true
        }
    }

    async fn fake() -> Option<Fake> {
        let site = Ident::parse("sim").unwrap();
        Some(Fake {
            backend: FakeBackend::seeded(site.clone(), Duration::from_millis(50), 0.0, 7),
            site,
        })
    }

    crate::backend_suite!(fake());

    /// The suite can fail: a backend whose launches all die is caught.
    #[tokio::test]
    async fn catches_a_backend_whose_workspaces_never_run() {
        let site = Ident::parse("sim").unwrap();
        let backend = FakeBackend::seeded(site.clone(), Duration::from_millis(20), 1.0, 1);
        let err = run_suite(&backend, |id| example_spec(&site, id))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("inspect"), "{err}");
        assert!(backend.list_managed().await.unwrap().is_empty());
    }
}
