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
//! - the audit chain verifies and records the workspace's creation exactly once.
//!
//! Orchestrator points run once (the orchestrator does not know backends); agent points run on
//! each backend here: Docker on the real engine, Slurm on the `scripts/slurm-up` cluster over SSH,
//! Kubernetes against the agent's fake API server (`agent/tests/kube_fake`, a stand-in: no
//! Kubernetes can run here), which lives in this test process and so outlives the agent's crash.
//! Each prints one row of the table in docs/reliability.md:
//! `cargo nextest run -p basho-tests --test crash_points --no-capture`.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use basho_agent::config::{BackendConfig, SiteConfig};
use basho_core::crash::POINTS;
use basho_orchestrator::store::{AuditStore, SqliteStore, UsageStore};
use basho_tests::federation::Federation;
use basho_tests::procs::Proc;
use reqwest::{Method, StatusCode};

#[path = "../../agent/tests/kube_fake/mod.rs"]
mod kube_fake;
use serde_json::{Value, json};

/// What reaches a crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A create (with an `Idempotency-Key`), then the launch and its first reports.
    Create,
    /// A delete of a running workspace.
    Delete,
    /// A revocation of the dataset a running workspace holds.
    Revoke,
    /// A running workspace metered (every second) and its records delivered.
    Usage,
}

impl Op {
    fn ends(self) -> &'static str {
        match self {
            Op::Create | Op::Usage => "running",
            Op::Delete => "stopped",
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
    ("agent.usage.appended", Op::Usage),
    ("agent.usage.delivered", Op::Usage),
];

const DATASET: &str = "JGAD000101";

/// What `std::process::abort` ends a process with.
const SIGABRT: i32 = 6;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Docker,
    Slurm,
    Kubernetes,
}

/// One federation's configs, engine and issuer; each case runs its own processes on its own
/// state directories and site `tohoku` of the federation.
struct World {
    fed: Federation,
    backend: Backend,
    /// The fake API server of the Kubernetes site, and the directory of its kubeconfig.
    kube: Option<(kube_fake::FakeApi, tempfile::TempDir)>,
}

/// A case's configs and the log its processes share.
struct Files {
    config: basho_orchestrator::config::Config,
    orchestrator: std::path::PathBuf,
    agent: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// What one case ended with, for the table.
struct Row {
    point: &'static str,
    end: String,
    converged: Duration,
}

impl World {
    async fn start(backend: Backend) -> Option<World> {
        let slurm = match backend {
            Backend::Slurm => Some(
                basho_tests::slurm::Testbed::load().backend(basho_agent::config::Runtime::Docker),
            ),
            _ => None,
        };
        let kube = match backend {
            Backend::Kubernetes => Some(fake_cluster().await),
            _ => None,
        };
        let mut fed = Federation::start_with(|name, cfg| {
            cfg.metering.interval_s = 1;
            if name != "tohoku" {
                return;
            }
            if let Some(s) = &slurm {
                cfg.backend = BackendConfig::Slurm(s.clone());
            }
            if let Some((_, dir)) = &kube {
                let mut k = kube_fake::config(5);
                k.kubeconfig = Some(dir.path().join("kubeconfig"));
                cfg.backend = BackendConfig::Kubernetes(k);
                // A kubelet pulls by digest; the fake runs nothing, so any pinned name does.
                for (name, image) in &mut cfg.images {
                    *image = format!("registry.example/{name}@sha256:{}", "d".repeat(64));
                }
            }
        })
        .await?;
        for name in ["tohoku", "ncbn", "bbj"] {
            fed.stop_agent(name).await;
        }
        fed.stop_orchestrator().await;
        Some(World { fed, backend, kube })
    }

    fn site(&self) -> String {
        self.fed.site("tohoku")
    }

    /// Runs every case of `points`, then fails naming each that did not converge.
    async fn run_all(&self, points: impl Iterator<Item = (&'static str, Op)>) {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        // BASHO_CRASH_POINT=<name> runs that case alone, to look into it.
        let only = std::env::var("BASHO_CRASH_POINT").ok();
        let chosen = points.filter(|(p, _)| only.as_deref().is_none_or(|o| o == *p));
        for (n, (point, op)) in chosen.enumerate() {
            let dir = self.fed.dir.path().join(format!("case-{n}"));
            match self.run(&dir, point, op).await {
                Ok(row) => rows.push(row),
                Err(e) => {
                    let log =
                        std::fs::read_to_string(dir.join("processes.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!(
                        "--- {point}: {e}\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                    failures.push(format!("{point}: {e}"));
                }
            }
            self.clean().await;
        }
        for r in &rows {
            eprintln!(
                "| {} | {:?} | {} | {} ms |",
                r.point,
                self.backend,
                r.end,
                r.converged.as_millis()
            );
        }
        assert!(
            failures.is_empty(),
            "{} cases did not converge:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Removes what a case left on the backend, whatever happened.
    async fn clean(&self) {
        let site = self.site();
        if self.backend == Backend::Slurm {
            let _ = std::process::Command::new("scancel")
                .args(["--user", "basho-svc", "--quiet"])
                .status();
            // scancel only asks: wait until the jobs are gone, or the next case's agent finds
            // this one's job at its site and stops it in the middle of that case.
            let gone = self
                .poll(
                    "the cancelled jobs gone",
                    Duration::from_secs(60),
                    || async {
                        let left = basho_tests::slurm::slurm(&[
                            "squeue",
                            "--user",
                            "basho-svc",
                            "--noheader",
                        ]);
                        left.trim().is_empty().then_some(())
                    },
                )
                .await;
            if let Err(e) = gone {
                eprintln!("clean: {e}");
            }
        }
        if let Some((api, _)) = &self.kube {
            api.clear_pods();
        }
        basho_tests::remove_labelled(&self.fed.docker, basho_core::LABEL_SITE, &site).await;
    }

    /// A case's own orchestrator and site configs under `dir`, the site's edited by `edit`.
    fn files(&self, dir: &Path, edit: impl FnOnce(&mut SiteConfig)) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = self.fed.config().clone();
        config.data_dir = dir.join("orchestrator");
        let orchestrator = dir.join("orchestrator.toml");
        std::fs::write(&orchestrator, toml::to_string(&config).unwrap()).unwrap();
        let mut site = self.fed.site_config("tohoku");
        site.paths = basho_tests::site_paths(&dir.join("site"));
        edit(&mut site);
        let agent = dir.join("site.toml");
        std::fs::write(&agent, toml::to_string(&site).unwrap()).unwrap();
        Files {
            config,
            orchestrator,
            agent,
            log: dir.join("processes.log"),
        }
    }

    async fn run(&self, dir: &Path, point: &'static str, op: Op) -> Result<Row, String> {
        let Files {
            config,
            orchestrator: orch_toml,
            agent: site_toml,
            log,
        } = self.files(dir, |_| {});
        let armed = format!("{point}=return");
        let in_orchestrator = point.starts_with("orchestrator.");
        let orch =
            |armed: Option<&str>| Proc::start_armed("basho-orchestrator", &orch_toml, &log, armed);
        let agent = |armed: Option<&str>| Proc::start_armed("basho-agent", &site_toml, &log, armed);
        let mut o = orch(in_orchestrator.then_some(armed.as_str()));
        self.up(config.listen).await?;
        // Usage points fire on the meter's first tick, which may come before the workspace is
        // reported running (a pod's start is seen on the next pass): the agent is armed for
        // them only once the workspace runs.
        let arm_now = !in_orchestrator && op != Op::Usage;
        let mut a = agent(arm_now.then_some(armed.as_str()));
        self.registered().await?;

        let project = basho_tests::unique("P-CRASH");
        let body = self.fed.create_body(&project, "alice", &[DATASET]);
        let key = basho_tests::unique("key");
        let mut id = None;
        if op != Op::Create {
            let (status, ws) = self.create(&body, &key).await.ok_or("create failed")?;
            if status != StatusCode::CREATED {
                return Err(format!("create answered {status}: {ws}"));
            }
            let ws_id = ws["id"].as_str().unwrap().to_owned();
            self.wait_state(&ws_id, "running").await?;
            id = Some(ws_id);
        }
        if op == Op::Usage {
            a.kill();
            a = agent(Some(armed.as_str()));
        }
        // The operation; the armed process dies on the way.
        let answered = match op {
            Op::Create => self.create(&body, &key).await.map(|(_, ws)| ws),
            Op::Delete => self.delete(id.as_deref().unwrap()).await,
            Op::Revoke => self.revoke().await,
            Op::Usage => None,
        };
        if id.is_none() {
            id = answered
                .as_ref()
                .and_then(|ws| ws["id"].as_str().map(str::to_owned));
        }
        let crashed = if in_orchestrator { &mut o } else { &mut a };
        let status = crashed
            .exited(Duration::from_secs(60))
            .await
            .ok_or_else(|| format!("{point} was never reached"))?;
        if status.signal() != Some(SIGABRT) {
            return Err(format!(
                "the process ended with {status}, not at the crash point"
            ));
        }
        if !crashed.log().contains(&format!("crash point {point}:")) {
            return Err(format!("the process died, but not at {point}"));
        }

        // Restart on the same state and replay what was never answered.
        let restarted = Instant::now();
        if in_orchestrator {
            o = orch(None);
            self.up(config.listen).await?;
            match op {
                Op::Create => {
                    let (status, ws) = self.create(&body, &key).await.ok_or("replay failed")?;
                    if !matches!(status, StatusCode::OK | StatusCode::CREATED) {
                        return Err(format!("the replayed create answered {status}: {ws}"));
                    }
                    let replayed = ws["id"].as_str().map(str::to_owned);
                    if id.is_some() && replayed != id {
                        return Err(format!("the replay made {replayed:?} beside {id:?}"));
                    }
                    id = replayed;
                }
                Op::Delete => {
                    self.delete(id.as_deref().unwrap())
                        .await
                        .ok_or("replayed delete failed")?;
                }
                Op::Revoke => {
                    self.revoke().await.ok_or("replayed revocation failed")?;
                }
                Op::Usage => {}
            }
        } else {
            a = agent(None);
        }
        let id = id.ok_or("no workspace id was ever answered")?;
        let end = self.wait_state(&id, op.ends()).await?;
        let converged = restarted.elapsed();
        // A few more passes, so whatever would go wrong next has the time to.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = self.workspace(&id).await?;
        if now["state"] != end["state"] {
            return Err(format!(
                "{} after converging, then {}",
                end["state"], now["state"]
            ));
        }
        self.instances(&id, op.ends() == "running").await?;
        self.capacity(op.ends() == "running").await?;
        if op == Op::Usage {
            self.delivered(dir).await?;
        }
        o.kill();
        a.kill();
        self.ledgers(&config.data_dir, &project, &id).await?;
        Ok(Row {
            point,
            end: op.ends().to_owned(),
            converged,
        })
    }

    async fn up(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if Instant::now() > deadline {
                return Err("the orchestrator does not listen".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn registered(&self) -> Result<(), String> {
        let site = self.site();
        self.poll("the site registered", Duration::from_secs(30), || async {
            let (s, v) = self
                .fed
                .api
                .try_call_with(Method::GET, "/v1/sites", None, &[])
                .await?;
            (s.is_success() && v.as_array()?.iter().any(|x| x["name"] == site.as_str()))
                .then_some(())
        })
        .await
    }

    async fn create(&self, body: &Value, key: &str) -> Option<(StatusCode, Value)> {
        let headers = [("Idempotency-Key", key)];
        self.fed
            .api
            .try_call_with(Method::POST, "/v1/workspaces", Some(body), &headers)
            .await
    }

    async fn delete(&self, id: &str) -> Option<Value> {
        let path = format!("/v1/workspaces/{id}");
        self.fed
            .api
            .try_call_with(Method::DELETE, &path, None, &[])
            .await
            .map(|(_, v)| v)
    }

    async fn revoke(&self) -> Option<Value> {
        let body = json!({"dataset": DATASET, "reason": "consent-withdrawn"});
        self.fed
            .api
            .try_call_with(Method::POST, "/v1/revocations", Some(&body), &[])
            .await
            .map(|(_, v)| v)
    }

    async fn workspace(&self, id: &str) -> Result<Value, String> {
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

    async fn wait_state(&self, id: &str, state: &str) -> Result<Value, String> {
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

    async fn poll<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> Result<T, String>
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
    async fn instances(&self, id: &str, live: bool) -> Result<(), String> {
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
    async fn capacity(&self, live: bool) -> Result<(), String> {
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
    async fn delivered(&self, dir: &Path) -> Result<(), String> {
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
    async fn ledgers(&self, data: &Path, project: &str, id: &str) -> Result<(), String> {
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

impl World {
    /// The safety net: a launch that hangs (the agent sleeps 8 s right after the container is
    /// made, `agent.launch.created=1*sleep(8000)`) outlasts the site's 2 s start timeout. The
    /// workspace is marked `failed` with the reason, its compute released, and once the agent
    /// moves again it removes the container instead of starting it for good.
    async fn stuck_launch(&self, dir: &Path) -> Result<(Duration, Duration), String> {
        let files = self.files(dir, |site| site.reconcile.start_timeout_s = 2);
        let o = Proc::start("basho-orchestrator", &files.orchestrator, &files.log);
        self.up(files.config.listen).await?;
        let armed = Some("agent.launch.created=1*sleep(8000)");
        let a = Proc::start_armed("basho-agent", &files.agent, &files.log, armed);
        self.registered().await?;
        let project = basho_tests::unique("P-STUCK");
        let body = self.fed.create_body(&project, "alice", &[DATASET]);
        let asked = Instant::now();
        let (status, ws) = self
            .create(&body, &basho_tests::unique("key"))
            .await
            .ok_or("create failed")?;
        if status != StatusCode::CREATED {
            return Err(format!("create answered {status}: {ws}"));
        }
        let id = ws["id"].as_str().unwrap().to_owned();
        let failed = self.wait_state(&id, "failed").await?;
        let timed_out = asked.elapsed();
        let msg = failed["message"].as_str().unwrap_or_default();
        if !msg.contains("start_timeout_s (2 s)") {
            return Err(format!("failed with {msg:?}, not the start timeout"));
        }
        self.capacity(false).await?;
        self.poll("the container removed", Duration::from_secs(30), || async {
            self.instances(&id, false).await.ok()
        })
        .await?;
        let removed = asked.elapsed();
        // Nothing comes back: the late launch's reports change nothing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.instances(&id, false).await?;
        if self.workspace(&id).await?["state"] != "failed" {
            return Err("the workspace left failed".into());
        }
        o.kill();
        a.kill();
        self.ledgers(&files.config.data_dir, &project, &id).await?;
        Ok((timed_out, removed))
    }
}

/// The fake API server with the namespace's work claim, and a kubeconfig naming it.
async fn fake_cluster() -> (kube_fake::FakeApi, tempfile::TempDir) {
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
fn pods(api: &kube_fake::FakeApi, id: &str, live: bool) -> Result<(), String> {
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

async fn all_audit(store: &SqliteStore) -> Result<Vec<basho_core::audit::AuditEntry>, String> {
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
    let agent_points = CASES
        .iter()
        .copied()
        .filter(|(p, _)| p.starts_with("agent."));
    world.run_all(agent_points).await;
    world.fed.shutdown().await;
}
