//! The harness: one federation per backend, each case its own orchestrator and agent processes
//! armed at one crash point, killed there, started again and replayed; and the start-timeout
//! case, a launch that hangs.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use basho_agent::config::{BackendConfig, SiteConfig};
use basho_tests::federation::Federation;
use basho_tests::procs::Proc;
use reqwest::{Method, StatusCode};

use crate::checks::fake_cluster;
use crate::{DATASET, Op, SIGABRT, kube_fake};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Docker,
    Slurm,
    Kubernetes,
}

/// The site's `[consent] max_delay_s` in every case: where a workspace cannot move to a new
/// release, it ends this long after the release is made.
const CONSENT_DELAY_S: u64 = 5;

/// One federation's configs, engine and issuer; each case runs its own processes on its own
/// state directories and site `tohoku` of the federation.
pub(crate) struct World {
    pub(crate) fed: Federation,
    pub(crate) backend: Backend,
    /// The fake API server of the Kubernetes site, and the directory of its kubeconfig.
    pub(crate) kube: Option<(kube_fake::FakeApi, tempfile::TempDir)>,
}

/// A case's configs and the log its processes share.
pub(crate) struct Files {
    pub(crate) config: basho_orchestrator::config::Config,
    pub(crate) orchestrator: std::path::PathBuf,
    pub(crate) agent: std::path::PathBuf,
    pub(crate) log: std::path::PathBuf,
    pub(crate) site: SiteConfig,
}

/// What one case ended with, for the table.
pub(crate) struct Row {
    pub(crate) point: &'static str,
    pub(crate) end: String,
    pub(crate) converged: Duration,
}

impl World {
    pub(crate) async fn start(backend: Backend) -> Option<World> {
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

    pub(crate) fn site(&self) -> String {
        self.fed.site("tohoku")
    }

    /// Runs every case of `points`, then fails naming each that did not converge.
    pub(crate) async fn run_all(&self, points: impl Iterator<Item = (&'static str, Op)>) {
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
    pub(crate) async fn clean(&self) {
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
    pub(crate) fn files(&self, dir: &Path, edit: impl FnOnce(&mut SiteConfig)) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = self.fed.config().clone();
        config.data_dir = dir.join("orchestrator");
        let orchestrator = dir.join("orchestrator.toml");
        std::fs::write(&orchestrator, toml::to_string(&config).unwrap()).unwrap();
        let mut site = self.fed.site_config("tohoku");
        site.paths = basho_agent::config::Paths::under(&dir.join("site"));
        edit(&mut site);
        let agent = dir.join("site.toml");
        std::fs::write(&agent, toml::to_string(&site).unwrap()).unwrap();
        Files {
            config,
            orchestrator,
            agent,
            log: dir.join("processes.log"),
            site,
        }
    }

    pub(crate) async fn run(&self, dir: &Path, point: &'static str, op: Op) -> Result<Row, String> {
        if op == Op::Federated {
            return self.run_federated(dir, point).await;
        }
        let Files {
            config,
            orchestrator: orch_toml,
            agent: site_toml,
            log,
            site,
        } = self.files(dir, |s| {
            // The stop past the delay is what these cases check; the requeue has its own test.
            s.consent.max_delay_s = CONSENT_DELAY_S;
            s.consent.requeue = false;
        });
        let ends = op.ends(self.backend);
        let armed = format!("{point}=return");
        let in_orchestrator = point.starts_with("orchestrator.");
        let (orch, agent) = starters(&orch_toml, &site_toml, &log);
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
            Op::Usage | Op::Federated => None,
            Op::Withdraw => {
                self.withdraw(&site)?;
                None
            }
        };
        if id.is_none() {
            id = answered
                .as_ref()
                .and_then(|ws| ws["id"].as_str().map(str::to_owned));
        }
        died_at(if in_orchestrator { &mut o } else { &mut a }, point).await?;

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
                Op::Usage | Op::Withdraw | Op::Federated => {}
            }
        } else {
            a = agent(None);
        }
        let id = id.ok_or("no workspace id was ever answered")?;
        let end = self.wait_state(&id, ends).await?;
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
        self.instances(&id, ends == "running").await?;
        self.capacity(ends == "running").await?;
        if op == Op::Usage {
            self.delivered(dir).await?;
        }
        if op == Op::Withdraw {
            self.release_made(&site, &id).await?;
        }
        o.kill();
        a.kill();
        self.ledgers(&config.data_dir, &project, &id).await?;
        Ok(Row {
            point,
            end: ends.to_owned(),
            converged,
        })
    }

    pub(crate) async fn up(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if Instant::now() > deadline {
                return Err("the orchestrator does not listen".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub(crate) async fn registered(&self) -> Result<(), String> {
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
}

impl World {
    /// The safety net: a launch that hangs (the agent sleeps 8 s right after the container is
    /// made, `agent.launch.created=1*sleep(8000)`) outlasts the site's 2 s start timeout. The
    /// workspace is marked `failed` with the reason, its compute released, and once the agent
    /// moves again it removes the container instead of starting it for good.
    pub(crate) async fn stuck_launch(&self, dir: &Path) -> Result<(Duration, Duration), String> {
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

/// Waits for `crashed` to end, and checks it was aborted at `point`.
pub(crate) async fn died_at(crashed: &mut Proc, point: &str) -> Result<(), String> {
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
    Ok(())
}

/// Starts a case's orchestrator and its agent, each armed (`FAILPOINTS`) or not.
pub(crate) fn starters<'a>(
    orchestrator: &'a Path,
    agent: &'a Path,
    log: &'a Path,
) -> (
    impl Fn(Option<&str>) -> Proc + 'a,
    impl Fn(Option<&str>) -> Proc + 'a,
) {
    (
        move |armed| Proc::start_armed("basho-orchestrator", orchestrator, log, armed),
        move |armed| Proc::start_armed("basho-agent", agent, log, armed),
    )
}
