//! A fake Kubernetes API server for tests: an in-process HTTP server on `127.0.0.1:0` that keeps
//! pods, PersistentVolumeClaims and NetworkPolicies of one namespace in memory and answers get,
//! list (with a resourceVersion), watch (newline-delimited JSON events from a resourceVersion),
//! create (409 on a duplicate) and delete (404 when absent) the way the real API does. It is not
//! a Kubernetes: there is no scheduler and no kubelet; a created pod turns `Running` after a
//! moment when `auto_run` is on, and tests set any other status by hand.
//!
//! Faults: answer an error (500, 409, 410, 403...) to chosen requests, before or after doing
//! them; forbid NetworkPolicies (403); drop every open watch; forget the event history so a
//! resumed watch gets `410 Gone`; go down altogether. Every request is recorded as
//! `(verb, resource)` for the RBAC check.
//!
//! `pods/{name}/exec` runs the command for real on the test host (see `exec`).

#![allow(dead_code)]

mod exec;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use exec::ExecSeen;

/// The namespace the tests' sites run workspaces in.
pub const NS: &str = "basho-ws";
/// How long a test waits for the backend to see a change.
pub const WAIT: Duration = Duration::from_secs(20);

/// The tests' site.
pub fn site() -> basho_core::Ident {
    basho_core::Ident::parse("k8s-site").unwrap()
}

/// For the tests against a real cluster: a backend on the current kubeconfig context, in
/// `BASHO_K8S_NAMESPACE` (default `basho-test`), and the image `BASHO_K8S_IMAGE`.
pub async fn real_cluster() -> (basho_agent::backend::kubernetes::KubernetesBackend, String) {
    let image = std::env::var("BASHO_K8S_IMAGE").expect("BASHO_K8S_IMAGE");
    let namespace = std::env::var("BASHO_K8S_NAMESPACE").unwrap_or_else(|_| "basho-test".into());
    let mut cfg = config(30);
    cfg.namespace = namespace;
    cfg.results.host_path = Some("/tmp".into());
    let backend = basho_agent::backend::kubernetes::KubernetesBackend::connect(site(), cfg)
        .await
        .unwrap();
    (backend, image)
}

/// A site's configuration on the fake's namespace, its watch given `watch_grace_s` of grace.
pub fn config(watch_grace_s: u64) -> basho_agent::config::KubernetesConfig {
    toml::from_str(&format!(
        r#"
        namespace = "{NS}"
        work = {{ claim = "basho-work" }}
        results = {{ host_path = "/srv/basho/results" }}
        watch_grace_s = {watch_grace_s}
        stop_grace_s = 5
        "#
    ))
    .unwrap()
}

/// One request as RBAC sees it: `(verb, api group, resource)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

/// An error to answer instead of (or after) doing a request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub verb: &'static str,
    pub resource: &'static str,
    pub code: u16,
    /// Do the request first, then answer the error (a lost answer).
    pub after: bool,
    /// The status message; "injected fault" when `None`.
    pub message: Option<&'static str>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// Resource → name → object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Pod events after `horizon`: (rv, type, object).
    history: Vec<(u64, String, Value)>,
    horizon: u64,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    requests: Vec<Request>,
    faults: VecDeque<Fault>,
    deny_policies: bool,
    down: bool,
    auto_run: bool,
    /// Bodies of pod creates, as received.
    created: Vec<Value>,
    /// Exec requests, as received.
    execs: Vec<ExecSeen>,
    /// The directory execs run in (standing in for the container).
    dir: std::path::PathBuf,
}

/// The fake API server; stops when dropped.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    pub namespace: String,
    _server: Arc<tokio::task::JoinHandle<()>>,
    _dir: Arc<tempfile::TempDir>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn answer(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(code: u16, message: &str) -> Response {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        410 => "Expired",
        422 => "Invalid",
        _ => "InternalError",
    };
    answer(code, status(code, reason, message))
}

fn matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl FakeApi {
    /// Starts the server for `namespace`.
    pub async fn start(namespace: &str) -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            rv: 100,
            auto_run: true,
            dir: dir.path().to_path_buf(),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(list_pods).post(create_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).delete(delete_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/exec",
                get(exec::exec).post(exec::exec),
            )
            .route(
                "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
                get(get_pvc),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                get(list_policies).post(create_policy),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
                get(get_policy),
            )
            .fallback(|| async { error(404, "the fake API has no such path") })
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi {
            inner,
            url,
            namespace: namespace.to_string(),
            _server: Arc::new(server),
            _dir: Arc::new(dir),
        }
    }

    /// Exec requests so far, as received.
    pub fn execs(&self) -> Vec<ExecSeen> {
        self.lock().execs.clone()
    }

    /// The directory execs run in: the fake's stand-in for the container's working directory.
    pub fn container_dir(&self) -> std::path::PathBuf {
        self.lock().dir.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// A client of this server, with the namespace as its default.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.default_namespace = self.namespace.clone();
        config.read_timeout = Some(Duration::from_secs(30));
        kube::Client::try_from(config).unwrap()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// How many requests of `verb` on `resource` so far.
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    /// The pod bodies the server received in creates.
    pub fn created(&self) -> Vec<Value> {
        self.lock().created.clone()
    }

    /// Answers the next matching request with `fault`.
    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Answers 403 to everything about NetworkPolicies.
    pub fn deny_policies(&self, deny: bool) {
        self.lock().deny_policies = deny;
    }

    /// Answers 500 to everything and ends open watches while down.
    pub fn set_down(&self, down: bool) {
        let mut inner = self.lock();
        inner.down = down;
        if down {
            inner.watchers.clear();
        }
    }

    /// Whether created pods turn Running by themselves.
    pub fn set_auto_run(&self, on: bool) {
        self.lock().auto_run = on;
    }

    /// Ends every open watch, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Forgets the event history: a watch resumed from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        // Other objects changed meanwhile: every resourceVersion handed out so far is too old.
        inner.rv += 1;
        inner.horizon = inner.rv;
        inner.history.clear();
    }

    /// Adds a PersistentVolumeClaim (phase Bound).
    pub fn add_claim(&self, name: &str) {
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv.to_string();
        inner
            .objects
            .entry("persistentvolumeclaims")
            .or_default()
            .insert(
                name.to_string(),
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": self.namespace, "resourceVersion": rv,
                    "uid": format!("pvc-{name}")},
                "spec": {"accessModes": ["ReadOnlyMany"]},
                "status": {"phase": "Bound"}}),
            );
    }

    /// Every stored pod.
    pub fn pods(&self) -> Vec<Value> {
        self.lock()
            .objects
            .get("pods")
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets every pod at once, as if the namespace were emptied between tests.
    pub fn clear_pods(&self) {
        self.lock().objects.remove("pods");
    }

    /// The stored pod `name`.
    pub fn pod(&self, name: &str) -> Option<Value> {
        self.lock().objects.get("pods")?.get(name).cloned()
    }

    /// Puts a pod in the store (a pod made by someone else, or left by an earlier agent).
    pub fn insert_pod(&self, mut pod: Value) {
        let mut inner = self.lock();
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        inner.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        pod["metadata"]["uid"] = json!(format!("uid-{name}-{}", inner.rv));
        let rv = inner.rv;
        inner
            .objects
            .entry("pods")
            .or_default()
            .insert(name, pod.clone());
        emit(&mut inner, rv, "ADDED", pod);
    }

    /// Sets a pod's status, as the kubelet would.
    pub fn set_status(&self, name: &str, status: Value) {
        set_status(&self.inner, name, status);
    }
}

fn set_status(inner: &Mutex<Inner>, name: &str, status: Value) {
    let mut inner = inner.lock().unwrap();
    inner.rv += 1;
    let rv = inner.rv;
    let Some(pod) = inner.objects.get_mut("pods").and_then(|p| p.get_mut(name)) else {
        return;
    };
    pod["status"] = status;
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    let pod = pod.clone();
    emit(&mut inner, rv, "MODIFIED", pod);
}

fn emit(inner: &mut Inner, rv: u64, kind: &str, obj: Value) {
    let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})));
    inner
        .watchers
        .retain(|(selector, tx)| !matches(&obj, selector) || tx.send(line.clone()).is_ok());
    inner.history.push((rv, kind.to_string(), obj));
}

type Shared = State<Arc<Mutex<Inner>>>;
type Params = Query<HashMap<String, String>>;

/// Records the request and answers a fault when one applies: `Err` is the answer to send now,
/// `Ok(Some(code))` an error to send after doing the request.
fn gate(
    inner: &mut Inner,
    verb: &str,
    group: &str,
    resource: &str,
) -> Result<Option<u16>, (u16, String)> {
    inner.requests.push(Request {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
    });
    if inner.down {
        return Err((500, "the fake API server is down".into()));
    }
    if resource == "networkpolicies" && inner.deny_policies {
        return Err((
            403,
            format!(
                "networkpolicies.networking.k8s.io is forbidden: User \"system:serviceaccount:basho:agent\" cannot {verb} resource \"networkpolicies\""
            ),
        ));
    }
    let hit = inner
        .faults
        .iter()
        .position(|f| f.verb == verb && f.resource == resource);
    match hit.and_then(|i| inner.faults.remove(i)) {
        Some(f) if f.after => Ok(Some(f.code)),
        Some(f) => Err((f.code, f.message.unwrap_or("injected fault").into())),
        None => Ok(None),
    }
}

fn list(inner: &Inner, kind: &str, resource: &str, selector: &str) -> Value {
    let items: Vec<Value> = inner
        .objects
        .get(resource)
        .map(|m| {
            m.values()
                .filter(|o| matches(o, selector))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json!({"kind": kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items})
}

async fn list_pods(State(inner): Shared, Query(q): Params) -> Response {
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, if watch { "watch" } else { "list" }, "", "pods") {
        return error(r.0, &r.1);
    }
    if !watch {
        return answer(200, list(&guard, "PodList", "pods", &selector));
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    if from < guard.horizon {
        let gone = status(410, "Expired", "too old resource version");
        let _ = tx.send(Bytes::from(format!(
            "{}\n",
            json!({"type": "ERROR", "object": gone})
        )));
        drop(tx);
    } else {
        for (rv, kind, obj) in &guard.history {
            if *rv > from && matches(obj, &selector) {
                let _ = tx.send(Bytes::from(format!(
                    "{}\n",
                    json!({"type": kind, "object": obj})
                )));
            }
        }
        guard.watchers.push((selector, tx));
    }
    drop(guard);
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn create_pod(
    State(inner): Shared,
    Path(ns): Path<String>,
    axum::Json(mut pod): axum::Json<Value>,
) -> Response {
    let mut guard = inner.lock().unwrap();
    let late = match gate(&mut guard, "create", "", "pods") {
        Ok(late) => late,
        Err((code, message)) => return error(code, &message),
    };
    guard.created.push(pod.clone());
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if guard
        .objects
        .get("pods")
        .is_some_and(|p| p.contains_key(&name))
    {
        return error(409, &format!("pods \"{name}\" already exists"));
    }
    guard.rv += 1;
    let rv = guard.rv;
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(format!("uid-{name}-{rv}"));
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    pod["metadata"]["creationTimestamp"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    pod["status"] = json!({"phase": "Pending"});
    guard
        .objects
        .entry("pods")
        .or_default()
        .insert(name.clone(), pod.clone());
    emit(&mut guard, rv, "ADDED", pod.clone());
    if guard.auto_run {
        let inner = inner.clone();
        let name = name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            set_status(
                &inner,
                &name,
                json!({"phase": "Running", "startTime": now, "containerStatuses": [{
                    "name": "workspace", "image": "i", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": now}}}]}),
            );
        });
    }
    match late {
        Some(code) => error(code, "injected fault after the create"),
        None => answer(201, pod),
    }
}

async fn get_pod(State(inner): Shared, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, "get", "", "pods") {
        return error(r.0, &r.1);
    }
    match guard.objects.get("pods").and_then(|p| p.get(&name)) {
        Some(p) => answer(200, p.clone()),
        None => error(404, &format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod(State(inner): Shared, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut guard = inner.lock().unwrap();
    let late = match gate(&mut guard, "delete", "", "pods") {
        Ok(late) => late,
        Err((code, message)) => return error(code, &message),
    };
    let Some(mut pod) = guard.objects.get_mut("pods").and_then(|p| p.remove(&name)) else {
        return error(404, &format!("pods \"{name}\" not found"));
    };
    guard.rv += 1;
    let rv = guard.rv;
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    emit(&mut guard, rv, "DELETED", pod.clone());
    match late {
        Some(code) => error(code, "injected fault after the delete"),
        None => answer(200, pod),
    }
}

async fn get_pvc(State(inner): Shared, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, "get", "", "persistentvolumeclaims") {
        return error(r.0, &r.1);
    }
    match guard
        .objects
        .get("persistentvolumeclaims")
        .and_then(|p| p.get(&name))
    {
        Some(p) => answer(200, p.clone()),
        None => error(404, &format!("persistentvolumeclaims \"{name}\" not found")),
    }
}

async fn list_policies(State(inner): Shared) -> Response {
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, "list", "networking.k8s.io", "networkpolicies") {
        return error(r.0, &r.1);
    }
    let mut l = list(&guard, "NetworkPolicyList", "networkpolicies", "");
    l["apiVersion"] = json!("networking.k8s.io/v1");
    answer(200, l)
}

async fn get_policy(State(inner): Shared, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, "get", "networking.k8s.io", "networkpolicies") {
        return error(r.0, &r.1);
    }
    match guard
        .objects
        .get("networkpolicies")
        .and_then(|p| p.get(&name))
    {
        Some(p) => answer(200, p.clone()),
        None => error(
            404,
            &format!("networkpolicies.networking.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn create_policy(State(inner): Shared, axum::Json(mut np): axum::Json<Value>) -> Response {
    let mut guard = inner.lock().unwrap();
    if let Err(r) = gate(&mut guard, "create", "networking.k8s.io", "networkpolicies") {
        return error(r.0, &r.1);
    }
    let name = np["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if guard
        .objects
        .get("networkpolicies")
        .is_some_and(|p| p.contains_key(&name))
    {
        return error(409, &format!("networkpolicies \"{name}\" already exists"));
    }
    guard.rv += 1;
    np["apiVersion"] = json!("networking.k8s.io/v1");
    np["kind"] = json!("NetworkPolicy");
    np["metadata"]["resourceVersion"] = json!(guard.rv.to_string());
    guard
        .objects
        .entry("networkpolicies")
        .or_default()
        .insert(name, np.clone());
    answer(201, np)
}
