//! Kubernetes sites: one pod per workspace in the site's namespace, created with every isolation
//! default of the design (a deny-all NetworkPolicy, no service account token, non-root, read-only
//! root, no capabilities, RuntimeDefault seccomp, requests = limits, a deadline at expiry).
//!
//! - A pod is named `basho-<workspace id>` and labelled `io.basho.workspace`, `io.basho.project`,
//!   `io.basho.site` and `app.kubernetes.io/managed-by=basho`; its expiry is an annotation.
//! - State comes from a watch of the site's pods (see `pod_watch`), so a restarted agent finds its
//!   pods again by label and a launch never creates a second pod: the name is the lock.
//! - `/work` and `/results` are site volumes (a claim or a node directory) with the project or
//!   workspace id as `subPath`; datasets come from the catalog (a claim or a node directory),
//!   read-only; `/etc/basho/workspace.json` is projected from a pod annotation.
//! - Interactive sessions are `pods/exec` through the API server (see `exec`).

pub mod config;
mod error;
pub mod exec;
mod pod_watch;
pub mod policy;
pub mod spec;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use basho_core::{Ident, LABEL_SITE, LABEL_WORKSPACE};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use super::exec::{ExecIo, ExecRequest};
use super::{Backend, BackendError, Capabilities, LaunchSpec, Observed, RunState, UsageSample};
use crate::config::KubernetesConfig;
use error::{classify, code, forbidden, unavailable};
use pod_watch::PodWatch;
use spec::{LABEL_MANAGED_BY, MANAGED_BY, pod_name};

/// One RBAC rule the backend needs in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub api_group: &'static str,
    /// Resource, plural.
    pub resource: &'static str,
    /// Verbs used on it.
    pub verbs: &'static [&'static str],
}

/// Exactly the RBAC the backend's code uses, all in the site's namespace: the Helm chart's Role
/// grants these and nothing more (its test compares the two).
pub const REQUIRED_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    // Sessions: an exec is a WebSocket GET, authorized as `get`; API servers from 1.35 on also
    // require `create` for it (the verb of the SPDY POST).
    Permission {
        api_group: "",
        resource: "pods/exec",
        verbs: &["get", "create"],
    },
    Permission {
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["get"],
    },
    Permission {
        api_group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["get", "create"],
    },
];

/// How long a stop waits, beyond the pod's grace period, for the pod to be gone.
const STOP_SLACK: Duration = Duration::from_secs(30);
const STOP_POLL: Duration = Duration::from_millis(100);
/// Longest the agent waits for the API server's answer to one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A site's workspaces as pods in one namespace.
#[derive(Debug, Clone)]
pub struct KubernetesBackend {
    site: Ident,
    cfg: KubernetesConfig,
    pods: Api<Pod>,
    /// Pods on the client without an answer timeout: an exec's WebSocket may stay quiet for long.
    streams: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    policies: Api<NetworkPolicy>,
    watched: Arc<PodWatch>,
    /// The watch's task: ended by [`Backend::close`], or when the last clone of the backend goes.
    watch: Arc<Watch>,
}

/// The pod watch running in the background.
#[derive(Debug)]
struct Watch {
    _stop: DropGuard,
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl KubernetesBackend {
    /// Connects with the config's kubeconfig (or in-cluster / the default kubeconfig), starts the
    /// watch of the site's pods and checks the NetworkPolicy.
    pub async fn connect(site: Ident, cfg: KubernetesConfig) -> Result<Self, BackendError> {
        let options = KubeConfigOptions {
            context: cfg.context.clone(),
            ..Default::default()
        };
        let config = match &cfg.kubeconfig {
            Some(path) => match Kubeconfig::read_from(path) {
                Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "cannot read backend.kubeconfig {}: {e}",
                    path.display()
                )),
            },
            None if cfg.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string()),
            None => kube::Config::infer().await.map_err(|e| e.to_string()),
        }
        .map_err(|e| {
            BackendError::refused(format!(
                "no usable Kubernetes client configuration: {e}; run the agent in the cluster \
                 with its service account, or set backend.kubeconfig"
            ))
        })?;
        let client = |config: kube::Config| {
            Client::try_from(config).map_err(|e| {
                BackendError::refused(format!("cannot set up the Kubernetes client: {e}"))
                    .caused_by(e)
            })
        };
        // Calls get an answer timeout, so a hung API server makes workspaces unknown instead of
        // stalling the agent; the watch has its own idle timeout and must not be cut short.
        let mut calls = config.clone();
        calls.read_timeout = Some(CALL_TIMEOUT);
        calls.reset_reader_on_write = true;
        Self::with_clients(client(calls)?, client(config)?, site, cfg).await
    }

    /// The backend on an existing client (tests point one at a fake API server).
    pub async fn with_client(
        client: Client,
        site: Ident,
        cfg: KubernetesConfig,
    ) -> Result<Self, BackendError> {
        Self::with_clients(client.clone(), client, site, cfg).await
    }

    /// The backend with one client for calls and one for the watch and sessions.
    async fn with_clients(
        client: Client,
        watch: Client,
        site: Ident,
        cfg: KubernetesConfig,
    ) -> Result<Self, BackendError> {
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(BackendError::refused(problems.join("; ")));
        }
        let ns = cfg.namespace.as_str();
        let watched = PodWatch::new(Duration::from_secs(cfg.watch_grace_s));
        let cancel = CancellationToken::new();
        let selector = format!("{LABEL_SITE}={site},{LABEL_MANAGED_BY}={MANAGED_BY}");
        let task = tokio::spawn(
            pod_watch::follow(
                Api::namespaced(watch.clone(), ns),
                selector,
                watched.clone(),
                cancel.clone(),
            )
            .instrument(info_span!("kubernetes watch", site = %site, namespace = ns)),
        );
        let backend = Self {
            pods: Api::namespaced(client.clone(), ns),
            streams: Api::namespaced(watch, ns),
            claims: Api::namespaced(client.clone(), ns),
            policies: Api::namespaced(client, ns),
            site,
            cfg,
            watched,
            watch: Arc::new(Watch {
                _stop: cancel.clone().drop_guard(),
                cancel,
                task: std::sync::Mutex::new(Some(task)),
            }),
        };
        // Checked again before every launch; at start only reported, so existing workspaces are
        // still followed while an admin fixes it.
        match policy::ensure(&backend.policies, &backend.cfg.namespace).await {
            Ok(()) => info!(site = %backend.site, namespace = %backend.cfg.namespace,
                "kubernetes backend ready; deny-all NetworkPolicy in place"),
            Err(e) => warn!(site = %backend.site, error = %e,
                "workspaces will not be launched until the NetworkPolicy is in place"),
        }
        Ok(backend)
    }

    fn ns(&self) -> &str {
        &self.cfg.namespace
    }

    /// Refuses the launch when a claim it would mount is missing or lost.
    async fn check_claim(&self, what: &str, claim: &str) -> Result<(), BackendError> {
        let resource = "persistentvolumeclaims";
        let found = match self.claims.get_opt(claim).await {
            Ok(found) => found,
            Err(e) => return Err(classify("get", resource, self.ns(), e)),
        };
        let Some(pvc) = found else {
            return Err(BackendError::refused(format!(
                "{what}: PersistentVolumeClaim {claim} does not exist in namespace {}; create it \
                 or fix the site config",
                self.ns()
            )));
        };
        let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Lost" {
            return Err(BackendError::refused(format!(
                "{what}: PersistentVolumeClaim {claim} has lost its volume (phase Lost)"
            )));
        }
        Ok(())
    }

    async fn check_claims(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        for d in &spec.datasets {
            if let Some(c) = &d.claim {
                self.check_claim(&format!("dataset {}", d.id), &c.name)
                    .await?;
            }
        }
        for (what, v) in [("work", &self.cfg.work), ("results", &self.cfg.results)] {
            if let Some(c) = &v.claim {
                self.check_claim(&format!("backend.{what}"), c).await?;
            }
        }
        Ok(())
    }

    /// The pod of a workspace, from the watch's view.
    async fn find(&self, workspace: &str) -> Result<Option<Pod>, BackendError> {
        let name = pod_name(workspace);
        self.watched
            .read(|pods| {
                pods.iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                    .or_else(|| {
                        pods.iter()
                            .find(|p| state::workspace_of(p) == Some(workspace))
                    })
                    .map(|p| (*p).clone())
            })
            .await
    }

    /// The pod holding a workspace's name after a create conflict: ours, or a refusal.
    async fn adopt(&self, workspace: &str) -> Result<Observed, BackendError> {
        let name = pod_name(workspace);
        let pod = self
            .pods
            .get(&name)
            .await
            .map_err(|e| classify("get", "pods", self.ns(), e))?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get(LABEL_SITE).map(String::as_str) != Some(self.site.as_str())
            || labels.get(LABEL_WORKSPACE).map(String::as_str) != Some(workspace)
        {
            return Err(BackendError::refused(format!(
                "pod name {name} is taken in namespace {} by a pod this site does not manage; \
                 remove it with `kubectl -n {} delete pod {name}`",
                self.ns(),
                self.ns()
            )));
        }
        debug!(pod = %name, "pod already there; adopting it");
        let observed = state::observe(&pod);
        self.watched.created(pod);
        observed.ok_or_else(|| BackendError::unavailable(format!("pod {name} has no labels")))
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn close(&self) {
        self.watch.cancel.cancel();
        let task = self
            .watch
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpus: true,
            // `recursiveReadOnly: IfPossible`: submounts are read-only only where the node can.
            recursive_readonly: false,
            host_dirs: false,
            relaunch: false,
            requeue: false,
        }
    }

    #[instrument(skip_all, fields(workspace = %spec.workspace, site = %self.site))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        if spec.site != self.site {
            return Err(BackendError::refused(format!(
                "workspace is for site {} but this backend serves site {}",
                spec.site, self.site
            )));
        }
        // Validate before looking anything up: a bad spec must fail the same way every time.
        let checked = spec::check(spec, chrono::Utc::now())?;
        let text = tokio::fs::read_to_string(&spec.workspace_json)
            .await
            .map_err(|e| {
                BackendError::refused(format!(
                    "cannot read workspace.json {}: {e}",
                    spec.workspace_json.display()
                ))
                .caused_by(e)
            })?;
        let workspace_json = spec::workspace_json(&text)?;
        if self.watched.trusted()
            && let Some(existing) = self.find(&spec.workspace).await?
            && let Some(observed) = state::observe(&existing)
        {
            debug!("pod already there");
            return Ok(observed);
        }
        policy::ensure(&self.policies, self.ns()).await?;
        self.check_claims(spec).await?;
        let body = spec::pod(spec, &self.cfg, &checked, &workspace_json);
        match self.pods.create(&PostParams::default(), &body).await {
            Ok(created) => {
                info!(pod = %pod_name(&spec.workspace), namespace = %self.ns(), "created workspace pod");
                basho_core::crash_point!("agent.launch.created");
                let observed = state::observe(&created);
                self.watched.created(created);
                observed.ok_or_else(|| {
                    BackendError::unavailable("the created pod came back without labels")
                })
            }
            // The name is taken: a launch before a restart, or a create that failed in flight.
            Err(e) if code(&e) == 409 => self.adopt(&spec.workspace).await,
            Err(e) if code(&e) == 403 && error::brief(&e).contains("PodSecurity") => {
                Err(BackendError::refused(format!(
                    "the Pod Security level of namespace {} refuses the workspace pod ({}); \
                     hostPath sources (a dataset path, backend.work or backend.results \
                     host_path) are allowed only at level privileged: serve them through \
                     PersistentVolumeClaims instead",
                    self.ns(),
                    error::brief(&e)
                )))
            }
            Err(e) if code(&e) == 403 => Err(forbidden("create", "pods", self.ns(), e)),
            Err(e) => Err(classify("create", "pods", self.ns(), e)),
        }
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn inspect(&self, workspace: &str) -> Result<Option<Observed>, BackendError> {
        Ok(self
            .find(workspace)
            .await?
            .as_ref()
            .and_then(state::observe))
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn stop(&self, workspace: &str) -> Result<(), BackendError> {
        let mut names = vec![pod_name(workspace)];
        if let Some(p) = self.find(workspace).await.ok().flatten()
            && let Some(n) = p.metadata.name
            && !names.contains(&n)
        {
            names.push(n);
        }
        let params = DeleteParams {
            grace_period_seconds: Some(self.cfg.stop_grace_s),
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        for name in &names {
            match self.pods.delete(name, &params).await {
                Ok(_) => info!(pod = %name, "deleting workspace pod"),
                Err(e) if code(&e) == 404 => self.watched.gone(name),
                Err(e) if code(&e) == 403 => {
                    return Err(forbidden("delete", "pods", self.ns(), e));
                }
                Err(e) => return Err(unavailable("delete pods", e)),
            }
        }
        basho_core::crash_point!("agent.stop.stopped");
        // Only positive evidence ends a workspace: wait until the watch shows the pods gone.
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::from(self.cfg.stop_grace_s))
            + STOP_SLACK;
        loop {
            let left = self
                .watched
                .read(|pods| {
                    pods.iter()
                        .filter(|p| {
                            p.metadata.name.as_ref().is_some_and(|n| names.contains(n))
                                || state::workspace_of(p) == Some(workspace)
                        })
                        .count()
                })
                .await?;
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::unavailable(format!(
                    "pod {} is still terminating; its node may be unreachable (see `kubectl -n {} \
                     describe pod {}`)",
                    names[0],
                    self.ns(),
                    names[0]
                )));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        self.watched
            .read(|pods| pods.into_iter().filter_map(state::observe).collect())
            .await
    }

    #[instrument(skip(self), fields(site = %self.site))]
    async fn usage(&self, workspace: &str) -> Result<Option<UsageSample>, BackendError> {
        Ok(self
            .find(workspace)
            .await?
            .and_then(|p| state::usage_of(&p, chrono::Utc::now())))
    }

    #[instrument(skip(self, req), fields(site = %self.site, tty = req.tty))]
    async fn exec(&self, workspace: &str, req: &ExecRequest) -> Result<ExecIo, BackendError> {
        exec::check(req)?;
        let Some(pod) = self.find(workspace).await? else {
            return Err(BackendError::refused(format!(
                "workspace {workspace} has no pod at this site"
            )));
        };
        let name = pod
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| pod_name(workspace));
        match state::observe(&pod).map(|o| o.state) {
            Some(RunState::Running) => {}
            state => {
                return Err(BackendError::refused(format!(
                    "workspace {workspace} is not running (pod {name}: {})",
                    match state {
                        Some(s) => format!("{s:?}"),
                        None => "not a workspace pod".into(),
                    }
                )));
            }
        }
        exec::start(&self.streams, self.ns(), &name, req).await
    }
}
