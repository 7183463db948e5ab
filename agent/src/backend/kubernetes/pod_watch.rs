//! The agent's view of its site's pods, kept by a watch: listed once, then followed event by
//! event. Any failure of the watch (410 Gone, a refused or dropped connection) starts it over with
//! a fresh list after a backoff, so the view is only ever a complete list plus the events after
//! it. While the watch fails the view is trusted for a short grace; past it, and before the first
//! list, every question is answered `Unavailable` (the workspaces are `unknown`, never `stopped`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::{end_reason, workspace_of};
use crate::backend::BackendError;

/// Longest a question waits for the first list after start.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(5);
/// A pod the agent created is answered from its create response until the watch shows it; after
/// this long without the watch showing it, the watch is the truth (it was deleted meanwhile).
const CREATED_TTL: Duration = Duration::from_secs(120);
/// Backoff between watch restarts.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Inner {
    /// By pod name: what the watch last said.
    pods: HashMap<String, Pod>,
    /// By pod name: pods this agent created that the watch has not shown yet.
    created: HashMap<String, (Pod, Instant)>,
    /// A complete list has been taken at least once.
    synced: bool,
    /// Since when, and why, the watch has been failing.
    failing: Option<(Instant, String)>,
}

/// The pods of one site in one namespace.
#[derive(Debug)]
pub struct PodWatch {
    inner: Mutex<Inner>,
    grace: Duration,
    synced: tokio::sync::watch::Sender<bool>,
}

fn uid(p: &Pod) -> Option<&str> {
    p.metadata.uid.as_deref()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

impl PodWatch {
    /// An empty, not yet synced view that is trusted for `grace` after the watch fails.
    pub fn new(grace: Duration) -> Arc<PodWatch> {
        Arc::new(PodWatch {
            inner: Mutex::default(),
            grace,
            synced: tokio::sync::watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; keep serving them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the view cannot be trusted now, if it cannot.
    fn distrust(&self, inner: &Inner) -> Option<BackendError> {
        if !inner.synced {
            let why = inner
                .failing
                .as_ref()
                .map_or("the first list is not done".to_string(), |(_, e)| e.clone());
            return Some(BackendError::unavailable(format!(
                "the agent has no list of its pods yet: {why}; check that the API server is \
                 reachable and the agent may list and watch pods"
            )));
        }
        match &inner.failing {
            Some((since, e)) if since.elapsed() > self.grace => {
                Some(BackendError::unavailable(format!(
                    "the watch of pods has failed for {}s: {e}; workspaces are unknown until \
                     the API server answers again",
                    since.elapsed().as_secs()
                )))
            }
            _ => None,
        }
    }

    /// Waits (briefly) for the first list, then runs `f` on the pods when the view is trusted.
    pub async fn read<T>(&self, f: impl FnOnce(Vec<&Pod>) -> T) -> Result<T, BackendError> {
        let mut rx = self.synced.subscribe();
        let _ = tokio::time::timeout(FIRST_SYNC_WAIT, rx.wait_for(|s| *s)).await;
        let mut inner = self.lock();
        if let Some(e) = self.distrust(&inner) {
            return Err(e);
        }
        inner
            .created
            .retain(|_, (_, at)| at.elapsed() < CREATED_TTL);
        let inner = &*inner;
        let mut pods: Vec<&Pod> = inner.pods.values().collect();
        for (n, (p, _)) in &inner.created {
            match inner.pods.get(n) {
                // The watch still shows an older pod of the name (being deleted): ours is newer.
                Some(old) if uid(old) != uid(p) => {
                    pods.retain(|q| name(q) != *n);
                    pods.push(p);
                }
                Some(_) => {}
                None => pods.push(p),
            }
        }
        Ok(f(pods))
    }

    /// Whether the view is trusted right now (no waiting).
    pub fn trusted(&self) -> bool {
        self.distrust(&self.lock()).is_none()
    }

    /// A pod the agent just created, answered until the watch shows it.
    pub fn created(&self, pod: Pod) {
        let mut inner = self.lock();
        let n = name(&pod);
        if inner.pods.get(&n).is_some_and(|p| uid(p) == uid(&pod)) {
            return;
        }
        inner.created.insert(n, (pod, Instant::now()));
    }

    /// Forgets a pod the API server says is gone.
    pub fn gone(&self, pod_name: &str) {
        let mut inner = self.lock();
        inner.pods.remove(pod_name);
        inner.created.remove(pod_name);
    }

    fn apply(&self, pod: Pod) {
        let mut inner = self.lock();
        let n = name(&pod);
        if let Some(old) = inner.pods.get(&n) {
            let was = old.status.as_ref().and_then(|s| s.phase.clone());
            let now = pod.status.as_ref().and_then(|s| s.phase.clone());
            if was != now && matches!(now.as_deref(), Some("Succeeded" | "Failed")) {
                info!(workspace = workspace_of(&pod).unwrap_or_default(), pod = %n,
                    phase = now.as_deref().unwrap_or_default(),
                    reason = end_reason(&pod).unwrap_or_default(), "workspace pod ended");
            }
        }
        if inner
            .created
            .get(&n)
            .is_some_and(|(c, _)| uid(c) == uid(&pod))
        {
            inner.created.remove(&n);
        }
        inner.pods.insert(n, pod);
    }

    fn delete(&self, pod: &Pod) {
        let mut inner = self.lock();
        let n = name(pod);
        if inner.pods.get(&n).is_some_and(|p| uid(p) == uid(pod)) {
            inner.pods.remove(&n);
        }
        if inner
            .created
            .get(&n)
            .is_some_and(|(c, _)| uid(c) == uid(pod))
        {
            inner.created.remove(&n);
        }
    }

    fn replace(&self, pods: HashMap<String, Pod>) {
        let mut inner = self.lock();
        inner
            .created
            .retain(|n, (c, _)| pods.get(n).is_none_or(|p| uid(p) != uid(c)));
        inner.pods = pods;
        inner.synced = true;
        if let Some((since, _)) = inner.failing.take() {
            info!(after_s = since.elapsed().as_secs(), "watch of pods is back");
        }
        drop(inner);
        self.synced.send_replace(true);
    }

    fn failed(&self, error: String) {
        let mut inner = self.lock();
        match &mut inner.failing {
            Some((_, e)) => *e = error,
            None => inner.failing = Some((Instant::now(), error)),
        }
    }
}

/// Follows the pods `selector` picks in `api` into `watched` until `cancel`.
pub async fn follow(
    api: Api<Pod>,
    selector: String,
    watched: Arc<PodWatch>,
    cancel: CancellationToken,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let config = watcher::Config::default().labels(&selector);
        let mut events = watcher::watcher(api.clone(), config).boxed();
        let mut listing: Option<HashMap<String, Pod>> = None;
        let error = loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(Event::Init)) => listing = Some(HashMap::new()),
                Some(Ok(Event::InitApply(pod))) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(name(&pod), pod);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    let pods = listing.take().unwrap_or_default();
                    debug!(pods = pods.len(), "listed pods");
                    watched.replace(pods);
                    backoff = BACKOFF_FIRST;
                }
                Some(Ok(Event::Apply(pod))) => watched.apply(pod),
                Some(Ok(Event::Delete(pod))) => watched.delete(&pod),
                Some(Err(e)) => break e.to_string(),
                None => break "the watch ended".to_string(),
            }
        };
        // Start over with a fresh list: the only way to be sure nothing was missed.
        warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "watch of pods failed; listing again");
        watched.failed(error);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, uid: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": uid,
                "labels": {"io.basho.workspace": name.trim_start_matches("basho-")}},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    async fn names(watched: &PodWatch) -> Result<Vec<String>, BackendError> {
        watched
            .read(|pods| {
                let mut n: Vec<String> = pods
                    .iter()
                    .map(|p| format!("{}/{}", name(p), uid(p).unwrap_or_default()))
                    .collect();
                n.sort();
                n
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_before_the_first_list_and_past_the_grace() {
        let watched = PodWatch::new(Duration::from_secs(30));
        assert!(
            matches!(names(&watched).await, Err(BackendError::Unavailable { message: m, .. }) if m.contains("no list"))
        );
        watched.replace(HashMap::from([(
            "basho-a".into(),
            pod("basho-a", "1", "Running"),
        )]));
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/1"]);

        watched.failed("connection refused".into());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            names(&watched).await.unwrap(),
            ["basho-a/1"],
            "within the grace"
        );
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(
            matches!(names(&watched).await, Err(BackendError::Unavailable { message: m, .. }) if m.contains("connection refused"))
        );
        assert!(!watched.trusted());

        watched.replace(HashMap::new());
        assert_eq!(names(&watched).await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_created_pod_shows_until_the_watch_has_it_and_old_events_do_not_hide_it() {
        let watched = PodWatch::new(Duration::from_secs(30));
        watched.replace(HashMap::from([(
            "basho-a".into(),
            pod("basho-a", "old", "Running"),
        )]));
        // Stopped and launched again before the watch reported the old pod's deletion.
        watched.created(pod("basho-a", "new", "Pending"));
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/new"]);
        watched.apply(pod("basho-a", "old", "Running"));
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/new"]);
        watched.delete(&pod("basho-a", "old", "Running"));
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/new"]);
        watched.apply(pod("basho-a", "new", "Running"));
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/new"]);
        assert!(watched.lock().created.is_empty());

        // Never seen by the watch: gone after its time to live.
        watched.created(pod("basho-b", "b1", "Pending"));
        assert_eq!(
            names(&watched).await.unwrap(),
            ["basho-a/new", "basho-b/b1"]
        );
        tokio::time::advance(CREATED_TTL).await;
        assert_eq!(names(&watched).await.unwrap(), ["basho-a/new"]);

        watched.gone("basho-a");
        assert_eq!(names(&watched).await.unwrap(), Vec::<String>::new());
    }
}
