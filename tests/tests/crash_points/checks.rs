//! What a case asks of the federation and checks at its end: the API calls, and the state the
//! backend, the orchestrator's capacity, the usage ledger and the audit chain must be in.

use std::path::Path;
use std::time::{Duration, Instant};

use basho_agent::catalog::Catalog;
use basho_agent::config::SiteConfig;
use basho_agent::consent::desk::Spool;
use basho_core::Ident;
use basho_orchestrator::store::{AuditStore, SqliteStore, UsageStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::world::{Backend, World};
use crate::{DATASET, kube_fake};

/// The participant whose row the withdrawal cases remove.
const WITHDRAWN: &str = "JGAD000101-3";

impl World {
    pub(crate) async fn create(&self, body: &Value, key: &str) -> Option<(StatusCode, Value)> {
        let headers = [("Idempotency-Key", key)];
        self.fed
            .api
            .try_call_with(Method::POST, "/v1/workspaces", Some(body), &headers)
            .await
    }

    pub(crate) async fn delete(&self, id: &str) -> Option<Value> {
        let path = format!("/v1/workspaces/{id}");
        self.fed
            .api
            .try_call_with(Method::DELETE, &path, None, &[])
            .await
            .map(|(_, v)| v)
    }

    pub(crate) async fn revoke(&self) -> Option<Value> {
        let body = json!({"dataset": DATASET, "reason": "consent-withdrawn"});
        self.fed
            .api
            .try_call_with(Method::POST, "/v1/revocations", Some(&body), &[])
            .await
            .map(|(_, v)| v)
    }

    /// Records the withdrawal of [`WITHDRAWN`] from [`DATASET`] at `site`, as
    /// `basho-agent withdraw` does.
    pub(crate) fn withdraw(&self, site: &SiteConfig) -> Result<(), String> {
        let spool = Spool::new(&site.releases_dir());
        spool
            .record(
                &Catalog::from_config(site),
                &Ident::parse(DATASET).unwrap(),
                &[WITHDRAWN.to_owned()],
                "consent withdrawn",
                chrono::Utc::now(),
            )
            .map(drop)
            .map_err(|e| format!("withdrawal not recorded: {e}"))
    }

    /// [`World::release_made_now`] within 30 s.
    pub(crate) async fn release_made(&self, site: &SiteConfig, id: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.release_made_now(site, id) {
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }

    /// The withdrawal made release 2 current, complete and without the row; nothing half-made
    /// is left; the request is answered once; workspace `id`, where it still runs, mounts it.
    fn release_made_now(&self, site: &SiteConfig, id: &str) -> Result<(), String> {
        let d = Ident::parse(DATASET).unwrap();
        let catalog = Catalog::from_config(site);
        let releases = catalog.releases(&d).ok_or("no releases")?;
        let entry = catalog.dataset(&d).map_err(|e| e.to_string())?;
        let (n, path) = releases.current(&entry.path);
        if n != 2 {
            return Err(format!("release {n} is current, not 2"));
        }
        let rows = std::fs::read_to_string(path.join("records.csv")).map_err(|e| e.to_string())?;
        if rows.contains(&format!("{WITHDRAWN},")) || rows.lines().count() != 5 {
            return Err(format!(
                "release 2 is not the dataset without the row: {rows}"
            ));
        }
        let root = site.releases_dir().join(DATASET);
        for e in std::fs::read_dir(&root)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return Err(format!("{name} was left in {}", root.display()));
            }
        }
        let spool = Spool::new(&site.releases_dir());
        let answers = spool.answers();
        let made: Vec<Option<u32>> = answers
            .iter()
            .map(|a| a.made.as_ref().map(|m| m.release))
            .collect();
        if !spool.pending().is_empty() || made != [Some(2)] {
            return Err(format!(
                "the request is not answered once with release 2: {answers:?}"
            ));
        }
        let record = site
            .paths
            .state_dir
            .join("workspaces")
            .join(id)
            .join("workspace.json");
        if let Ok(bytes) = std::fs::read(&record) {
            let r: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if r["releases"][DATASET] != 2 {
                return Err(format!("workspace {id} still mounts {}", r["releases"]));
            }
        }
        Ok(())
    }

    pub(crate) async fn workspace(&self, id: &str) -> Result<Value, String> {
        match self
            .fed
            .api
            .try_call_with(Method::GET, &format!("/v1/workspaces/{id}"), None, &[])
            .await
        {
            Some((StatusCode::OK, ws)) => Ok(ws),
            other => Err(format!("GET {id}: {other:?}")),
        }
    }

    pub(crate) async fn wait_state(&self, id: &str, state: &str) -> Result<Value, String> {
        let found = self
            .poll(
                &format!("{id} {state}"),
                Duration::from_secs(90),
                || async {
                    let ws = self.workspace(id).await.ok()?;
                    // A workspace that ended elsewhere will not come back: say so at once.
                    let ended = ["failed", "stopped", "expired", "revoked"]
                        .contains(&ws["state"].as_str().unwrap_or_default());
                    (ws["state"] == state || ended).then_some(ws)
                },
            )
            .await;
        match found {
            Ok(ws) if ws["state"] == state => Ok(ws),
            Ok(ws) => Err(format!("{id} ended {} instead: {ws}", ws["state"])),
            Err(e) => Err(format!(
                "{e}; last seen {}",
                self.workspace(id).await.unwrap_or_default()
            )),
        }
    }

    pub(crate) async fn poll<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: F,
    ) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("not {what} within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The backend holds the workspace's one running instance (`live`) or nothing, and nothing
    /// else of the site in any state.
    pub(crate) async fn instances(&self, id: &str, live: bool) -> Result<(), String> {
        let docker = &self.fed.docker;
        let site = self.site();
        let mut seen = Vec::new();
        let mut filters = std::collections::HashMap::new();
        // A Slurm job's container carries the workspace label, not the site's.
        let (label, value) = match self.backend {
            Backend::Docker => (basho_core::LABEL_SITE, site.as_str()),
            Backend::Slurm => (basho_core::LABEL_WORKSPACE, id),
            Backend::Kubernetes => {
                let (api, _) = self
                    .kube
                    .as_ref()
                    .expect("the Kubernetes world has its fake");
                return pods(api, id, live);
            }
        };
        filters.insert("label".to_string(), vec![format!("{label}={value}")]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| e.to_string())?
        {
            let ws = c
                .labels
                .as_ref()
                .and_then(|l| l.get(basho_core::LABEL_WORKSPACE))
                .cloned()
                .unwrap_or_default();
            seen.push((ws, format!("{:?}", c.state)));
        }
        let want: Vec<(String, String)> = if live {
            vec![(id.to_owned(), "Some(RUNNING)".to_owned())]
        } else {
            Vec::new()
        };
        if seen != want {
            return Err(format!("containers {seen:?}, expected {want:?}"));
        }
        if self.backend == Backend::Slurm {
            let jobs = basho_tests::slurm::jobs_of(id);
            let live_jobs: Vec<_> = jobs
                .iter()
                .filter(|(_, s)| matches!(s.as_str(), "RUNNING" | "PENDING" | "CONFIGURING"))
                .collect();
            let expected = usize::from(live);
            if live_jobs.len() != expected || live_jobs.iter().any(|(_, s)| live && s != "RUNNING")
            {
                return Err(format!("jobs {jobs:?}, expected {expected} running"));
            }
        }
        Ok(())
    }

    /// The site's allocation is the live workspace's, or nothing.
    pub(crate) async fn capacity(&self, live: bool) -> Result<(), String> {
        let site = self.site();
        let (_, sites) = self
            .fed
            .api
            .try_call_with(Method::GET, "/v1/sites", None, &[])
            .await
            .ok_or("GET /v1/sites failed")?;
        let s = sites
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == site.as_str()))
            .ok_or("the site is not listed")?;
        let (cpus, n) = (s["allocated"]["cpus"].as_u64(), s["workspaces"].as_u64());
        let want = if live {
            (Some(1), Some(1))
        } else {
            (Some(0), Some(0))
        };
        if (cpus, n) != want {
            return Err(format!(
                "allocated {} with {} workspaces, expected {want:?}",
                s["allocated"], s["workspaces"]
            ));
        }
        Ok(())
    }

    /// Every usage record the agent journalled has been acknowledged.
    pub(crate) async fn delivered(&self, dir: &Path) -> Result<(), String> {
        let journal = dir
            .join("site")
            .join("state")
            .join(basho_agent::meter::journal::FILE);
        self.poll("usage delivered", Duration::from_secs(30), || async {
            let text = std::fs::read_to_string(&journal).ok()?;
            (basho_tests::pending_records(&text) == 0 && text.contains("\"record\"")).then_some(())
        })
        .await
    }

    /// With both processes gone: usage numbered 1..N once each, the audit chain whole, the
    /// creation recorded once.
    pub(crate) async fn ledgers(&self, data: &Path, project: &str, id: &str) -> Result<(), String> {
        let store = SqliteStore::open(None, data)
            .await
            .map_err(|e| e.to_string())?;
        let project = basho_core::Ident::parse(project).unwrap();
        let rows = store
            .usage_of(
                &project,
                chrono::DateTime::UNIX_EPOCH,
                chrono::Utc::now() + chrono::Duration::days(1),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut seqs: Vec<u64> = rows.iter().map(|r| r.record.seq).collect();
        seqs.sort_unstable();
        if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
            return Err(format!("usage records numbered {seqs:?}"));
        }
        let audit = all_audit(&store).await?;
        basho_core::audit::verify_chain(&audit).map_err(|e| format!("audit chain: {e:?}"))?;
        let creates = audit
            .iter()
            .filter(|e| e.action == "workspace_create" && e.target == id)
            .count();
        if creates != 1 {
            return Err(format!("{creates} workspace_create entries for {id}"));
        }
        Ok(())
    }
}

/// The fake API server with the namespace's work claim, and a kubeconfig naming it.
pub(crate) async fn fake_cluster() -> (kube_fake::FakeApi, tempfile::TempDir) {
    let api = kube_fake::FakeApi::start(kube_fake::NS).await;
    api.add_claim("basho-work");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
         users: [{{name: fake, user: {{}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: {}}}}}]\n",
        api.url,
        kube_fake::NS
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    (api, dir)
}

/// The namespace holds the workspace's one running pod (`live`) or no pod at all.
pub(crate) fn pods(api: &kube_fake::FakeApi, id: &str, live: bool) -> Result<(), String> {
    let seen: Vec<(String, String)> = api
        .pods()
        .iter()
        .map(|p| {
            let ws = p["metadata"]["labels"][basho_core::LABEL_WORKSPACE].as_str();
            let phase = p["status"]["phase"].as_str();
            (
                ws.unwrap_or_default().to_owned(),
                phase.unwrap_or("none").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = if live {
        vec![(id.to_owned(), "Running".to_owned())]
    } else {
        Vec::new()
    };
    if seen != want {
        return Err(format!("pods {seen:?}, expected {want:?}"));
    }
    Ok(())
}

pub(crate) async fn all_audit(
    store: &SqliteStore,
) -> Result<Vec<basho_core::audit::AuditEntry>, String> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map_or(0, |e: &basho_core::audit::AuditEntry| e.seq);
        let page = store
            .audit_page(after, 1000)
            .await
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}
