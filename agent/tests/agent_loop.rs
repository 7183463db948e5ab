//! The agent loop end to end against a stub orchestrator (axum on 127.0.0.1:0) and the fake
//! backend: launch and report, stop what is no longer desired, re-adopt after a restart without
//! relaunching, notice exits and outages by itself, and enforce expiry with no orchestrator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basho_agent::backend::fake::FakeBackend;
use basho_agent::backend::{Backend, SiteLoad, suite};
use basho_agent::config::{
    BackendConfig, CatalogEntry, Isolation, OrchestratorLink, Paths, SiteConfig,
};
use basho_core::protocol::{Assignment, Capacity};
use basho_core::revocation::{Reason, Revocation};
use basho_core::visa::IssuerRef;
use basho_core::visa::mint::Issuer;
use basho_core::visa::mint::Visa;
use basho_core::{Ident, Resources, State};
use basho_test_util::stub::StubOrchestrator;
use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "agent-token-sim";
const ISS: &str = "https://dac.test";
const PATIENCE: Duration = Duration::from_secs(20);

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

// ---- the site ----

struct Site {
    dir: tempfile::TempDir,
    issuer: Issuer,
    config: SiteConfig,
    fake: Arc<FakeBackend>,
}

fn site(url: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISS);
    let jwks = dir.path().join("dac.jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let data = dir.path().join("data/JGAD000101");
    std::fs::create_dir_all(&data).unwrap();
    let config = SiteConfig {
        consent: Default::default(),
        site: id("sim"),
        orchestrator: OrchestratorLink {
            url: url.to_owned(),
            token: Some(TOKEN.into()),
            token_file: None,
            poll_wait_s: 1,
            ca_file: None,
            plain_http_on_loopback: true,
        },
        capacity: basho_agent::capacity::CapacityConfig::fixed(Capacity {
            cpus: 8,
            memory_mib: 8192,
            gpus: 0,
        }),
        backend: BackendConfig::Fake(basho_agent::config::FakeConfig {
            start_delay_ms: 0,
            failure_rate: 0.0,
            exit_after_ms: None,
        }),
        datasets: vec![CatalogEntry {
            participant_column: None,
            filter_command: Vec::new(),
            id: id("JGAD000101"),
            path: data,
            claim: None,
            grant_url: None,
            issuers: Vec::new(),
            source: None,
        }],
        images: BTreeMap::from([("basho/demo".into(), format!("sha256:{}", "d".repeat(64)))]),
        trusted_issuers: vec![IssuerRef {
            issuer: ISS.into(),
            jwks_file: jwks,
        }],
        paths: Paths::under(dir.path()),
        isolation: Isolation::default(),
        metrics: None,
        metering: Default::default(),
        sessions: Default::default(),
        airlock: Default::default(),
        reconcile: Default::default(),
    };
    assert_eq!(basho_agent::check_config(&config), Vec::<String>::new());
    let fake = Arc::new(FakeBackend::seeded(id("sim"), Duration::ZERO, 0.0, 1));
    Site {
        dir,
        issuer,
        config,
        fake,
    }
}

impl Site {
    fn assignment(&self, ws: &str, lifetime: chrono::Duration) -> Assignment {
        Assignment {
            id: ws.to_owned(),
            project: id("P-0001"),
            owner: "alice".into(),
            template: id("shell"),
            image: "basho/demo".into(),
            command: vec!["sleep".into(), "infinity".into()],
            datasets: vec![id("JGAD000101")],
            resources: Resources {
                cpus: 1,
                memory_mib: 256,
                gpus: 0,
            },
            expires_at: Utc::now() + lifetime,
            visas: vec![self.issuer.mint("alice", "JGAD000101")],
            launch: None,
        }
    }

    fn start(&self) -> Agent {
        let cancel = CancellationToken::new();
        let backend: Arc<dyn Backend> = self.fake.clone();
        let task = tokio::spawn(basho_agent::run_with_backend(
            self.config.clone(),
            backend,
            cancel.clone(),
        ));
        Agent { cancel, task }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    async fn has(&self, ws: &str) -> bool {
        self.fake.inspect(ws).await.unwrap().is_some()
    }
}

struct Agent {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), basho_agent::Error>>,
}

impl Agent {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("agent stops promptly")
            .expect("agent task did not panic")
            .expect("agent ran without error");
    }
}

async fn wait_for<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    basho_test_util::wait_until(what, PATIENCE, f).await;
}

fn exists(p: &Path) -> bool {
    p.exists()
}

// ---- the tests ----

#[tokio::test]
async fn launches_stops_and_readopts_without_relaunching() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let hour = chrono::Duration::hours(1);
    let agent = s.start();
    wait_for("registration", || async {
        !orch.registrations().is_empty()
    })
    .await;
    let r = &orch.registrations()[0];
    assert_eq!(r.site.as_str(), "sim");
    assert_eq!(r.backend, "fake");
    assert_eq!(r.datasets.len(), 1, "the catalog, without paths");

    orch.set_desired(&[s.assignment("ws-1", hour)]);
    wait_for("ws-1 running", || async {
        orch.last_state("ws-1") == Some(State::Running)
    })
    .await;
    let polled = orch.polled_sites();
    assert!(
        !polled.is_empty() && polled.iter().all(|p| p == "sim"),
        "{polled:?}"
    );
    assert_eq!(s.fake.launch_count(), 1);
    let spec = s.fake.spec("ws-1").unwrap();
    assert_eq!(spec.datasets[0].host_path, s.path("data/JGAD000101"));
    assert!(exists(&s.path("state/workspaces/ws-1/workspace.json")));

    // Stopping the agent leaves the workspace running.
    agent.stop().await;
    assert!(s.has("ws-1").await);

    // A new agent on the same backend adopts it, tells the orchestrator again, launches nothing.
    orch.clear_observations();
    let agent = s.start();
    wait_for("re-registration", || async {
        orch.registrations().len() >= 2
    })
    .await;
    wait_for("ws-1 reported again", || async {
        orch.last_state("ws-1") == Some(State::Running)
    })
    .await;
    orch.set_desired(&[s.assignment("ws-1", hour), s.assignment("ws-2", hour)]);
    wait_for("ws-2 running", || async {
        orch.last_state("ws-2") == Some(State::Running)
    })
    .await;
    assert_eq!(s.fake.launch_count(), 2, "ws-1 adopted, only ws-2 launched");
    let listed = s.fake.list_managed().await.unwrap();
    assert_eq!(listed.len(), 2, "no duplicate: {listed:?}");

    // No longer desired: stopped, reported, its state dir gone, /results kept.
    orch.set_desired(&[s.assignment("ws-2", hour)]);
    wait_for("ws-1 stopped", || async {
        orch.last_state("ws-1") == Some(State::Stopped)
    })
    .await;
    assert!(!s.has("ws-1").await);
    assert!(s.has("ws-2").await);
    assert!(!exists(&s.path("state/workspaces/ws-1")));
    assert!(exists(&s.path("results/ws-1")));
    agent.stop().await;
    assert_eq!(s.fake.launch_count(), 2);
}

/// `[capacity] only_idle`: the registration carries what the site's own work leaves within the
/// share, and each change of that load reaches the orchestrator as a capacity report, with the
/// reason; a load the backend cannot read offers nothing.
#[tokio::test]
async fn reports_the_capacity_the_site_leaves_idle_as_it_changes() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let mut s = site(orch.url());
    s.config.capacity.max_share = 0.5;
    s.config.capacity.only_idle = true;
    s.config.capacity.report_every_s = 1;
    assert_eq!(basho_agent::check_config(&s.config), Vec::<String>::new());
    let load = |cpus: u32| SiteLoad {
        total: Capacity {
            cpus: 8,
            memory_mib: 8192,
            gpus: 0,
        },
        others: Capacity {
            cpus,
            memory_mib: 0,
            gpus: 0,
        },
    };
    s.fake.set_load(Some(load(6)));
    let agent = s.start();
    wait_for("registration", || async {
        !orch.registrations().is_empty()
    })
    .await;
    let r = &orch.registrations()[0];
    assert_eq!(r.capacity.cpus, 2, "8 less the 6 the site's own work holds");
    assert_eq!(
        r.capacity.memory_mib, 4096,
        "half the memory: the share binds"
    );
    assert_eq!(r.ceiling.unwrap().cpus, 4);
    assert_eq!(
        r.capacity_note.as_deref(),
        Some("the site's own work holds 6 of 8 cpus")
    );

    s.fake.set_load(Some(load(0)));
    wait_for("the freed cores reported", || async {
        orch.capacity_reports()
            .last()
            .is_some_and(|c| c.capacity.cpus == 4 && c.note.is_none())
    })
    .await;
    s.fake.set_load(None);
    wait_for("an unreadable load reported as nothing offered", || async {
        orch.capacity_reports().last().is_some_and(|c| {
            c.capacity == Capacity::default()
                && c.note.as_deref()
                    == Some("the site's load cannot be read: the fake backend cannot tell")
        })
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn notices_exits_outages_and_expiry_by_itself() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let agent = s.start();
    let hour = chrono::Duration::hours(1);
    orch.set_desired(&[
        s.assignment("ws-short", chrono::Duration::seconds(4)),
        s.assignment("ws-crash", hour),
        s.assignment("ws-long", hour),
    ]);
    for ws in ["ws-short", "ws-crash", "ws-long"] {
        wait_for(ws, || async { orch.last_state(ws) == Some(State::Running) }).await;
    }

    // An exit the orchestrator never heard of is seen by the periodic re-inspection.
    s.fake.exit("ws-crash", 3);
    wait_for("ws-crash failed", || async {
        orch.last_state("ws-crash") == Some(State::Failed)
    })
    .await;
    assert_eq!(
        s.fake.launch_count(),
        3,
        "an exited workspace is not relaunched"
    );

    // The orchestrator goes away; the site still ends ws-short at its expiry.
    orch.set_down(true);
    wait_for("ws-short stopped at expiry", || async {
        !s.has("ws-short").await
    })
    .await;
    assert!(s.has("ws-long").await);
    orch.set_down(false);
    wait_for("ws-short reported expired", || async {
        orch.last_state("ws-short") == Some(State::Expired)
    })
    .await;

    // The backend stops answering: unknown, never stopped; then running again.
    s.fake.set_unavailable(true);
    wait_for("ws-long unknown", || async {
        orch.last_state("ws-long") == Some(State::Unknown)
    })
    .await;
    assert_eq!(
        orch.last_state("ws-crash"),
        Some(State::Failed),
        "an end stays an end"
    );
    s.fake.set_unavailable(false);
    assert!(s.has("ws-long").await);
    wait_for("ws-long running again", || async {
        orch.last_state("ws-long") == Some(State::Running)
    })
    .await;
    assert_eq!(s.fake.launch_count(), 3);
    agent.stop().await;
}

#[tokio::test]
async fn before_the_first_desired_state_only_expiry_stops_anything() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let mut live = suite::example_spec(&id("sim"), "ws-live");
    live.expires_at = Utc::now() + chrono::Duration::hours(1);
    let mut old = suite::example_spec(&id("sim"), "ws-old");
    old.expires_at = Utc::now() - chrono::Duration::seconds(1);
    s.fake.launch(&live).await.unwrap();
    s.fake.launch(&old).await.unwrap();

    orch.set_down(true);
    let agent = s.start();
    wait_for("ws-old stopped at its expiry", || async {
        !s.has("ws-old").await
    })
    .await;
    assert!(
        s.has("ws-live").await,
        "nothing is known to be unwanted before a desired state"
    );

    // An empty desired state, once it arrives, is meant.
    orch.set_down(false);
    wait_for("ws-live stopped", || async { !s.has("ws-live").await }).await;
    wait_for("ws-live reported", || async {
        orch.last_state("ws-live") == Some(State::Stopped)
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn refuses_what_the_site_cannot_verify() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let agent = s.start();
    let mut forged = s.assignment("ws-forged", chrono::Duration::hours(1));
    forged.visas = vec![Issuer::generate(ISS).mint("alice", "JGAD000101")];
    orch.set_desired(&[forged]);
    wait_for("ws-forged failed", || async {
        orch.last_state("ws-forged") == Some(State::Failed)
    })
    .await;
    assert!(
        orch.last_message("ws-forged").contains("signature"),
        "the reason is reported"
    );
    assert_eq!(s.fake.launch_count(), 0);
    agent.stop().await;
}

fn revoke_jti(seq: i64, jti: &str) -> Revocation {
    Revocation {
        seq,
        dataset: None,
        subject: None,
        project: None,
        visa_jti: Some(jti.into()),
        reason: Reason::DacRevoked,
        at: Utc::now(),
    }
}

impl Site {
    /// An assignment whose one visa has `jti`.
    fn with_jti(&self, ws: &str, jti: &str) -> Assignment {
        let mut a = self.assignment(ws, chrono::Duration::hours(1));
        a.visas = vec![self.issuer.sign(&Visa {
            jti: Some(jti.into()),
            ..Visa::new("alice", "JGAD000101")
        })];
        a
    }
}

#[tokio::test]
async fn the_site_applies_revocations_itself_whatever_the_orchestrator_lists() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let agent = s.start();
    let (bad, good) = (
        s.with_jti("ws-bad", "v-bad"),
        s.with_jti("ws-good", "v-good"),
    );
    orch.set_desired(&[bad.clone(), good.clone()]);
    for ws in ["ws-bad", "ws-good"] {
        wait_for(ws, || async { orch.last_state(ws) == Some(State::Running) }).await;
    }

    // The orchestrator still lists ws-bad (a bug, or a compromise): the site stops it anyway.
    orch.set_revocations(&[revoke_jti(4, "v-bad")]);
    wait_for("ws-bad revoked", || async {
        orch.last_state("ws-bad") == Some(State::Revoked)
    })
    .await;
    assert!(!s.has("ws-bad").await);
    assert!(s.has("ws-good").await);
    assert!(orch.last_message("ws-bad").contains("revocation 4"));

    // The revoked visa is never launched again, under any workspace id.
    let again = s.with_jti("ws-again", "v-bad");
    orch.set_desired(&[bad, good, again]);
    wait_for("ws-again refused", || async {
        orch.last_state("ws-again") == Some(State::Failed)
    })
    .await;
    assert!(orch.last_message("ws-again").contains("revoked"));
    assert!(!s.has("ws-again").await);
    assert!(
        !s.has("ws-bad").await,
        "a listed but revoked workspace stays stopped"
    );
    assert_eq!(
        orch.last_state("ws-bad"),
        Some(State::Revoked),
        "and stays revoked"
    );
    assert_eq!(s.fake.launch_count(), 2);
    agent.stop().await;
}

#[tokio::test]
async fn a_kept_revocation_stops_a_workspace_after_a_restart_without_the_orchestrator() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let s = site(orch.url());
    let agent = s.start();
    orch.set_desired(&[s.with_jti("ws-1", "v-1"), s.with_jti("ws-2", "v-2")]);
    for ws in ["ws-1", "ws-2"] {
        wait_for(ws, || async { orch.last_state(ws) == Some(State::Running) }).await;
    }
    // The engine stops answering, so the revocation cannot be carried out yet; it is kept.
    s.fake.set_unavailable(true);
    orch.set_revocations(&[revoke_jti(1, "v-1")]);
    let file = s.path("state/revocations.json");
    wait_for("the deny-list saved", || async {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("v-1"))
    })
    .await;
    agent.stop().await;

    // The orchestrator is gone and nothing names ws-1 any more; the engine is back.
    orch.set_down(true);
    s.fake.set_unavailable(false);
    assert!(s.has("ws-1").await);
    let agent = s.start();
    wait_for("ws-1 stopped by the site alone", || async {
        !s.has("ws-1").await
    })
    .await;
    assert!(s.has("ws-2").await, "only what the list covers is stopped");

    // Back online, an orchestrator that forgot the revocation cannot relaunch the visa, under
    // the old workspace id or a new one.
    orch.set_revocations::<Revocation>(&[]);
    orch.set_desired(&[
        s.with_jti("ws-1", "v-1"),
        s.with_jti("ws-2", "v-2"),
        s.with_jti("ws-3", "v-1"),
    ]);
    orch.set_down(false);
    wait_for("ws-3 refused", || async {
        orch.last_state("ws-3") == Some(State::Failed)
    })
    .await;
    assert!(orch.last_message("ws-3").contains("revocation 1"));
    wait_for("ws-1 reported revoked", || async {
        orch.last_state("ws-1") == Some(State::Revoked)
    })
    .await;
    assert!(!s.has("ws-1").await && !s.has("ws-3").await);
    assert_eq!(s.fake.launch_count(), 2);
    agent.stop().await;
}

#[tokio::test]
async fn a_partitioned_agent_applies_a_withdrawal_recorded_at_the_site_and_reports_it_later() {
    let orch = StubOrchestrator::start(TOKEN).await;
    let mut s = site(orch.url());
    let data = s.config.datasets[0].path.clone();
    std::fs::write(
        data.join("records.csv"),
        "participant_id,age\nP1,40\nP2,57\n",
    )
    .unwrap();
    s.config.datasets[0].participant_column = Some("participant_id".into());
    let agent = s.start();
    wait_for("registered", || async { !orch.registrations().is_empty() }).await;
    wait_for("the first consent report", || async {
        orch.consent().is_some()
    })
    .await;

    // Cut off from the orchestrator, the site still applies what its admin records.
    orch.set_down(true);
    let spool = basho_agent::consent::desk::Spool::new(&s.config.releases_dir());
    let catalog = basho_agent::catalog::Catalog::from_config(&s.config);
    let r = spool
        .record(
            &catalog,
            &id("JGAD000101"),
            &["P2".to_owned()],
            "consent withdrawn",
            Utc::now(),
        )
        .unwrap();
    wait_for("the answer while cut off", || async {
        spool.answer(&r.id).is_some()
    })
    .await;
    let answer = spool.answer(&r.id).unwrap();
    assert_eq!(
        answer.made.as_ref().map(|m| m.release),
        Some(2),
        "{answer:?}"
    );
    let d = catalog.dataset(&id("JGAD000101")).unwrap();
    let (n, dir) = catalog.current_release(&id("JGAD000101"), d);
    assert_eq!(n, 2);
    let rows = std::fs::read_to_string(dir.join("records.csv")).unwrap();
    assert_eq!(rows, "participant_id,age\nP1,40\n");

    // Back in touch, the orchestrator hears of it: counts and digests, never the ID.
    orch.set_down(false);
    wait_for("the report of the withdrawal", || async {
        orch.consent().is_some_and(|c| {
            c.withdrawals
                .iter()
                .any(|w| w.id == r.id && w.release == Some(2))
        })
    })
    .await;
    let sent = serde_json::to_string(&orch.consent().unwrap()).unwrap();
    assert!(!sent.contains("P2"), "{sent}");
    agent.stop().await;
}
