//! The conformance suite every backend passes (like Nomad's driver harness): launch, idempotent
//! relaunch, discovery by label, usage, stop, idempotent stop. Public so each backend's own tests,
//! including the Docker integration test, run the very same checks.

use std::path::PathBuf;
use std::time::Duration;

use basho_core::{Ident, Resources};

use super::{Backend, BackendError, LaunchSpec, Observed, RunState};

/// How long a launched workspace may take to reach `Running`.
pub const RUNNING_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

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
        workspace: workspace.to_owned(),
        project: Ident::parse("P-conformance").expect("a plain identifier"),
        site: site.clone(),
        image: format!("sha256:{}", "0".repeat(64)),
        command: vec!["sleep".into(), "3600".into()],
        datasets: Vec::new(),
        work_dir: tmp.join("work"),
        results_dir: tmp.join("results").join(workspace),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::fake::FakeBackend;

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
