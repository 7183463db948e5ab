//! The executor on the fake backend: what a verified launch hands the backend, what a refusal
//! reports (and that nothing starts), what a stop leaves behind.

use std::time::Duration;

use basho_core::State;
use basho_core::protocol::Assignment;

use super::*;
use crate::backend::RunState;
use crate::backend::fake::FakeBackend;
use crate::config::Paths;
use crate::fixtures::{AssignmentExt, catalog, id, trusted};
use crate::reconcile::StopReason;
use crate::reconcile::hostdirs::Ownership;

struct Site {
    root: tempfile::TempDir,
    fake: Arc<FakeBackend>,
    exec: Executor,
}

fn site() -> Site {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::seeded(id("sim"), Duration::ZERO, 0.0, 1));
    let dirs = HostDirs::new(Paths::under(root.path()), Ownership::WorldWritable);
    let exec = Executor::new(
        id("sim"),
        fake.clone(),
        trusted(),
        catalog(&root.path().join("data")),
        dirs,
        Isolation::default(),
    );
    Site { root, fake, exec }
}

fn assignment() -> Assignment {
    Assignment::test("ws-1")
        .with_dataset("JGAD000101")
        .with_dataset("JGAD000102")
        .expiring(Utc::now() + chrono::Duration::minutes(10))
}

fn states(o: &Outcome) -> Vec<(String, State)> {
    o.reports
        .iter()
        .map(|r| (r.workspace.clone(), r.state))
        .collect()
}

#[tokio::test]
async fn a_verified_launch_hands_the_backend_a_full_spec() {
    let s = site();
    let a = assignment();
    let out = s
        .exec
        .execute(vec![Action::Launch(Box::new(a.clone()))], Utc::now())
        .await;
    assert_eq!(states(&out), vec![("ws-1".into(), State::Running)]);
    assert!(out.refused.is_empty());

    let spec = s.fake.spec("ws-1").expect("launched");
    let root = s.root.path();
    assert_eq!(spec.image, *crate::fixtures::DEMO_IMAGE);
    assert_eq!(spec.user, "65534:65534");
    assert_eq!(spec.work_dir, root.join("work/ws-1"));
    assert_eq!(spec.results_dir, root.join("results/ws-1"));
    assert_eq!(
        spec.workspace_json,
        root.join("state/workspaces/ws-1/workspace.json")
    );
    assert!(spec.workspace_json.is_file());
    assert!(spec.work_dir.is_dir() && spec.results_dir.is_dir());
    let mounts: Vec<_> = spec.datasets.iter().map(|d| d.host_path.clone()).collect();
    assert_eq!(
        mounts,
        vec![root.join("data/JGAD000101"), root.join("data/JGAD000102")]
    );
    let env: std::collections::BTreeMap<_, _> = spec.env.iter().cloned().collect();
    assert_eq!(env["BASHO_WORKSPACE"], "ws-1");
    assert_eq!(env["BASHO_PROJECT"], "P-0001");
    assert_eq!(env["BASHO_DATASETS"], "JGAD000101,JGAD000102");
    assert_eq!(spec.expires_at, a.expires_at);
}

#[tokio::test]
async fn a_refused_launch_reports_failed_and_starts_nothing() {
    let s = site();
    let mut a = assignment();
    a.visas.pop(); // JGAD000102 is no longer covered
    let out = s
        .exec
        .execute(vec![Action::Launch(Box::new(a.clone()))], Utc::now())
        .await;
    assert_eq!(states(&out), vec![("ws-1".into(), State::Failed)]);
    let msg = out.reports[0].message.as_deref().unwrap();
    assert!(msg.contains("no visa grants dataset JGAD000102"), "{msg}");
    assert_eq!(out.refused, vec![a]);
    assert_eq!(s.fake.launch_count(), 0);
    assert!(!s.root.path().join("state/workspaces/ws-1").exists());
}

#[tokio::test]
async fn a_task_without_visas_runs_only_where_the_site_allows_it() {
    let mut a = Assignment::test("ws-1").expiring(Utc::now() + chrono::Duration::minutes(10));
    a.launch = Some(basho_core::protocol::Launch::default());
    let launch = vec![Action::Launch(Box::new(a))];
    let s = site();
    let out = s.exec.execute(launch.clone(), Utc::now()).await;
    assert_eq!(states(&out), vec![("ws-1".into(), State::Running)]);
    let mut refusing = site();
    refusing.exec.isolation.tasks_without_visas = false;
    let out = refusing.exec.execute(launch, Utc::now()).await;
    assert_eq!(states(&out), vec![("ws-1".into(), State::Failed)]);
    let msg = out.reports[0].message.as_deref().unwrap();
    assert!(msg.contains("carries no visa"), "{msg}");
    assert_eq!(refusing.fake.launch_count(), 0);
}

#[tokio::test]
async fn an_unavailable_backend_is_retried_not_failed() {
    let s = site();
    s.fake.set_unavailable(true);
    let out = s
        .exec
        .execute(vec![Action::Launch(Box::new(assignment()))], Utc::now())
        .await;
    assert!(out.reports.is_empty(), "{:?}", out.reports);
    assert!(out.refused.is_empty());
}

#[tokio::test]
async fn stop_keeps_work_and_results_and_a_failed_stop_reports_nothing() {
    let s = site();
    s.exec.launch(&assignment(), Utc::now()).await.unwrap();
    let stopped = Observation {
        workspace: "ws-1".into(),
        state: State::Stopped,
        message: None,
        at: Utc::now(),
        outputs: None,
    };
    let stop = || Action::Stop {
        workspace: "ws-1".into(),
        reason: StopReason::NotDesired,
    };

    s.fake.set_unavailable(true);
    let out = s
        .exec
        .execute(vec![stop(), Action::Report(stopped.clone())], Utc::now())
        .await;
    assert!(
        out.reports.is_empty(),
        "a failed stop must not be reported as stopped"
    );
    s.fake.set_unavailable(false);
    assert!(s.fake.inspect("ws-1").await.unwrap().is_some());

    let out = s
        .exec
        .execute(vec![stop(), Action::Report(stopped.clone())], Utc::now())
        .await;
    assert_eq!(out.reports, vec![stopped]);
    assert!(s.fake.inspect("ws-1").await.unwrap().is_none());
    let root = s.root.path();
    assert!(!root.join("state/workspaces/ws-1").exists());
    assert!(root.join("results/ws-1").is_dir());
    assert!(root.join("work/ws-1").is_dir());
}

#[tokio::test]
async fn a_revoked_workspaces_work_and_results_go_to_quarantine_and_its_report_says_so() {
    let s = site();
    s.exec.launch(&assignment(), Utc::now()).await.unwrap();
    let root = s.root.path();
    std::fs::write(root.join("work/ws-1/copy.csv"), "rows").unwrap();
    let revoked = Observation {
        workspace: "ws-1".into(),
        state: State::Revoked,
        message: Some("stopped by this site: revocation 3".into()),
        at: Utc::now(),
        outputs: None,
    };
    let stop = Action::Stop {
        workspace: "ws-1".into(),
        reason: StopReason::Revoked,
    };
    let out = s
        .exec
        .execute(vec![stop, Action::Report(revoked)], Utc::now())
        .await;
    let message = out.reports[0].message.clone().unwrap();
    assert!(
        message.starts_with(
            "stopped by this site: revocation 3; its /work and /results are kept in quarantine"
        ),
        "{message}"
    );
    assert!(!root.join("work/ws-1").exists() && !root.join("results/ws-1").exists());
    let kept: Vec<_> = std::fs::read_dir(root.join("work/.quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(
        message.contains(&kept[0].display().to_string()),
        "{message}"
    );
    assert_eq!(std::fs::read(kept[0].join("copy.csv")).unwrap(), b"rows");
}

/// A backend that keeps no expiry (as a Slurm job name would not), over the fake.
struct Forgetful(FakeBackend);

#[async_trait::async_trait]
impl Backend for Forgetful {
    fn kind(&self) -> &'static str {
        "forgetful"
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.0.capabilities()
    }
    async fn launch(&self, spec: &LaunchSpec) -> Result<Observed, BackendError> {
        self.0.launch(spec).await
    }
    async fn inspect(&self, ws: &str) -> Result<Option<Observed>, BackendError> {
        self.0.inspect(ws).await
    }
    async fn stop(&self, ws: &str) -> Result<(), BackendError> {
        self.0.stop(ws).await
    }
    async fn list_managed(&self) -> Result<Vec<Observed>, BackendError> {
        let mut all = self.0.list_managed().await?;
        all.iter_mut().for_each(|o| o.expires_at = None);
        Ok(all)
    }
    async fn usage(&self, ws: &str) -> Result<Option<crate::backend::UsageSample>, BackendError> {
        self.0.usage(ws).await
    }
}

#[tokio::test]
async fn observe_fills_expiry_from_the_record() {
    let s = site();
    let backend = Arc::new(Forgetful(FakeBackend::seeded(
        id("sim"),
        Duration::ZERO,
        0.0,
        1,
    )));
    let exec = Executor::new(
        id("sim"),
        backend,
        trusted(),
        catalog(&s.root.path().join("data")),
        s.exec.dirs.clone(),
        Isolation::default(),
    );
    let a = assignment();
    exec.launch(&a, Utc::now()).await.unwrap();
    let seen = exec.observe().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].state, RunState::Running);
    assert_eq!(seen[0].expires_at, Some(a.expires_at));
}
