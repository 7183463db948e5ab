//! Helpers the tests of every crate share, so each test file does not grow its own copy: bounded
//! waits that poll and panic naming what never happened, and a stub orchestrator for agents.

pub mod stub;

use std::future::Future;
use std::time::Duration;

use basho_core::workspace::Workspace;
use basho_core::{Ident, Resources, State};

/// How often the waits poll.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `f` until it answers `true`, or panics after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let ready = f();
        async move { ready.await.then_some(()) }
    })
    .await;
}

/// Says that a test cannot run here because of `why` (no engine, no binary, no tool). Under CI
/// (`CI` set to anything but `false`, as every CI run sets it) the set-up was meant to provide it,
/// so this panics and the test fails; elsewhere it prints why and the caller skips.
pub fn unavailable(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !ci,
        "{why}; under CI nothing is skipped: scripts/setup must provide it"
    );
    eprintln!("skipping: {why}");
}

/// The statically linked `basho-init` that `scripts/build-init` makes (`scripts/test` runs it),
/// or `None`, saying why (and failing under CI), when it was not built.
pub fn init_binary() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/basho-init");
    match std::fs::canonicalize(&path) {
        Ok(p) => Some(p),
        Err(_) => {
            unavailable(&format!("no {}: run scripts/build-init", path.display()));
            None
        }
    }
}

/// A running workspace `id` of project `P-0001` for `alice` at `tohoku`, with no datasets, one
/// CPU and 256 MiB, every time at 2026-01-02T03:04:05Z: change what a test is about with
/// struct update syntax.
pub fn workspace(id: &str) -> Workspace {
    let t = "2026-01-02T03:04:05Z".parse().unwrap();
    Workspace {
        id: id.into(),
        project: Ident::parse("P-0001").unwrap(),
        owner: "alice".into(),
        template: Ident::parse("shell").unwrap(),
        site: Ident::parse("tohoku").unwrap(),
        state: State::Running,
        message: None,
        datasets: Vec::new(),
        resources: Resources {
            cpus: 1,
            memory_mib: 256,
            gpus: 0,
        },
        created_at: t,
        expires_at: t,
        updated_at: t,
        releases: Default::default(),
        withdrawn_copies: Vec::new(),
        queue: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_answers_what_came_and_names_what_never_did() {
        let mut tries = 0;
        let got = wait_for("the third try", Duration::from_secs(5), || {
            tries += 1;
            let now = tries;
            async move { (now == 3).then_some(now) }
        })
        .await;
        assert_eq!(got, 3);
        let never = tokio::spawn(wait_until("never", Duration::from_millis(120), || async {
            false
        }));
        let panic = never.await.unwrap_err().into_panic();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("waiting for never"), "{message}");
    }
}
