//! The Slurm backend alone against the real cluster of `scripts/slurm-up` over real SSH: the
//! shared conformance suite, and every way the login node or Slurm can say no: unreachable,
//! unknown or changed host key, rejected key, a partition or account sbatch refuses.

use std::path::Path;
use std::process::Command;

use basho_agent::backend::slurm::SlurmBackend;
use basho_agent::backend::suite::run_suite;
use basho_agent::backend::{Backend, BackendError, LaunchSpec, RunState};
use basho_agent::config::{Runtime, SlurmConfig};
use basho_core::Ident;
use basho_tests::slurm::{Testbed, jobs_ever, jobs_of};

fn site() -> Ident {
    Ident::parse(&basho_tests::unique("slurm")).unwrap()
}

fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs")
        .success();
    assert!(ok);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public)
}

async fn refusal(cfg: SlurmConfig) -> String {
    let backend = SlurmBackend::new(site(), cfg).expect("config accepted");
    match backend.list_managed().await {
        Err(BackendError::Unavailable { message: m, .. }) => m,
        other => panic!("expected the login node to be unavailable, got {other:?}"),
    }
}

/// A spec the docker runtime inside a job can start: the demo image, real directories.
async fn runnable_spec(dir: &Path, site: &Ident, id: &str) -> LaunchSpec {
    let docker = basho_tests::docker().await.expect("a Docker engine");
    let image = basho_cli::dev::image::ensure_demo_image(&docker)
        .await
        .expect("demo image");
    basho_tests::slurm::runnable_spec(dir, site, &image, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slurm_backend_passes_the_conformance_suite() {
    let testbed = Testbed::load();
    let site = site();
    let backend = SlurmBackend::new(site.clone(), testbed.backend(Runtime::Docker)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = basho_tests::unique("conf");
    let spec = runnable_spec(dir.path(), &site, &id).await;
    let result = run_suite(&backend, |_| spec.clone()).await;
    let _ = backend.stop(&id).await;
    result.expect("conformance");
    assert_eq!(jobs_ever(&id), 1, "one job for the whole suite");

    // Launching a workspace whose job already ran does not run it again.
    let again = backend.launch(&spec).await.expect("launch after the end");
    assert!(
        matches!(again.state, basho_agent::backend::RunState::Exited(_)),
        "{again:?}"
    );
    assert_eq!(jobs_ever(&id), 1, "not resubmitted");

    // Accounting has the allocation basho asked for, and CPUTimeRAW = elapsed × CPUs.
    let a = backend
        .accounting(&id)
        .await
        .expect("sacct answers")
        .expect("the job is in accounting");
    assert_eq!(a.job_id.to_string(), again.handle);
    assert_eq!(a.cpus, u64::from(spec.resources.cpus));
    assert_eq!(a.memory_bytes, spec.resources.memory_mib << 20);
    assert_eq!(a.allocated_core_seconds, a.elapsed_s * a.cpus, "{a:?}");
}

#[tokio::test]
async fn an_unreachable_login_node_is_unavailable_with_the_reason() {
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    // Nothing listens on port 1 of loopback.
    cfg.login.port = 1;
    let m = refusal(cfg).await;
    assert!(m.contains("cannot connect"), "{m}");
}

#[tokio::test]
async fn a_host_key_not_in_known_hosts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, "").unwrap();
    cfg.login.known_hosts = file;
    let m = refusal(cfg).await;
    assert!(
        m.contains("host key rejected") && m.contains("is not in"),
        "{m}"
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    let (_, other) = keygen(dir.path(), "other");
    let file = dir.path().join("known_hosts");
    let key = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &file,
        format!("[{}]:{} {key}\n", cfg.login.host, cfg.login.port),
    )
    .unwrap();
    cfg.login.known_hosts = file;
    let m = refusal(cfg).await;
    assert!(m.contains("differs"), "{m}");
}

#[tokio::test]
async fn a_key_the_login_node_does_not_know_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    let (key, _) = keygen(dir.path(), "stranger");
    cfg.login.identity_file = key;
    let m = refusal(cfg).await;
    assert!(m.contains("refused the agent's key"), "{m}");
}

async fn sbatch_refusal(cfg: SlurmConfig) -> String {
    let site = site();
    let dir = tempfile::tempdir().unwrap();
    let backend = SlurmBackend::new(site.clone(), cfg).unwrap();
    let id = basho_tests::unique("bad");
    let spec = runnable_spec(dir.path(), &site, &id).await;
    let r = backend.launch(&spec).await;
    assert!(jobs_of(&id).is_empty(), "nothing was queued");
    match r {
        Err(BackendError::Refused { message: m, .. }) => m,
        other => panic!("expected sbatch to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn sbatch_refusing_a_partition_is_a_clear_refusal() {
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    cfg.partition = Some("nope".into());
    let m = sbatch_refusal(cfg).await;
    assert!(m.contains("sbatch") && m.contains("partition"), "{m}");
}

#[tokio::test]
async fn sbatch_refusing_an_account_is_a_clear_refusal() {
    let mut cfg = Testbed::load().backend(Runtime::Docker);
    cfg.default_account = Some("basho-other".into());
    let m = sbatch_refusal(cfg).await;
    assert!(m.contains("sbatch") && m.contains("account"), "{m}");
}

/// `[capacity] only_idle` on Slurm: a job of the site's own users holds a core and memory of
/// the partition, the backend sees it as the site's load, and basho's offer leaves it alone
/// within `max_share`. Other tests' jobs on this cluster can only add load, so every
/// assertion is a bound.
#[tokio::test]
async fn only_idle_leaves_what_the_site_s_own_jobs_hold() {
    let testbed = Testbed::load();
    let backend = SlurmBackend::new(site(), testbed.backend(Runtime::Docker)).unwrap();
    let local = LocalJob::submit(&[
        "--partition",
        "debug",
        "--cpus-per-task",
        "1",
        "--mem",
        "1024",
        "--time",
        "5",
        "--wrap",
        "sleep 300",
    ]);
    basho_test_util::wait_until(
        "the local job running",
        std::time::Duration::from_secs(180),
        || {
            let r = local.state() == "RUNNING";
            async move { r }
        },
    )
    .await;
    let load = backend
        .site_load()
        .await
        .unwrap()
        .expect("slurm reads its load");
    assert!(load.total.cpus >= 2, "{load:?}");
    assert!(
        load.others.cpus >= 1 && load.others.memory_mib >= 1024,
        "{load:?}"
    );
    for share in ["0.5", "1.0"] {
        let config: basho_agent::capacity::CapacityConfig = toml::from_str(&format!(
            "cpus = {}\nmemory_mib = {}\nmax_share = {share}\nonly_idle = true",
            load.total.cpus, load.total.memory_mib
        ))
        .unwrap();
        let offer = basho_agent::capacity::current(&config, &backend).await;
        assert!(offer.capacity.cpus <= config.ceiling().cpus, "{offer:?}");
        assert!(
            offer.capacity.cpus <= load.total.cpus - load.others.cpus,
            "never into the local job's cores: {offer:?} {load:?}"
        );
        if share == "1.0" {
            let note = offer.note.unwrap_or_default();
            assert!(note.contains("the site's own work holds"), "{note}");
        }
    }
}

/// The site's `GrpTRES` on basho's QOS (`scripts/slurm-up`: `basho-guest`, `cpu=1`) is read
/// from Slurm and bounds what basho offers, whatever `max_share` allows.
#[tokio::test]
async fn the_qos_grp_tres_bounds_the_offer() {
    let testbed = Testbed::load();
    let mut cfg = testbed.backend(Runtime::Docker);
    cfg.qos = Some("basho-guest".into());
    let backend = SlurmBackend::new(site(), cfg).unwrap();
    let (limit, why) = backend
        .site_limit()
        .await
        .unwrap()
        .expect("the QOS has GrpTRES");
    assert_eq!(limit.cpus, 1);
    assert_eq!(why, "QOS basho-guest allows cpu=1 at once (GrpTRES)");
    let config: basho_agent::capacity::CapacityConfig =
        toml::from_str("cpus = 2\nmemory_mib = 4096").unwrap();
    let offer = basho_agent::capacity::current(&config, &backend).await;
    assert_eq!(offer.capacity.cpus, 1, "{offer:?}");
    assert_eq!(offer.ceiling.cpus, 2);
    assert_eq!(offer.note.as_deref(), Some(why.as_str()));
    let plain = SlurmBackend::new(site(), testbed.backend(Runtime::Docker)).unwrap();
    assert_eq!(
        plain.site_limit().await.unwrap(),
        None,
        "no QOS configured: no limit read"
    );
}

/// Cancels a job of the site's own users when the test ends, also when it fails.
struct LocalJob(String);

impl LocalJob {
    fn submit(args: &[&str]) -> LocalJob {
        let mut argv = vec!["sbatch", "--parsable", "--output", "/dev/null"];
        argv.extend_from_slice(args);
        LocalJob(basho_tests::slurm::slurm(&argv).trim().to_owned())
    }

    fn state(&self) -> String {
        let out = Command::new("squeue")
            .args(["--noheader", "--jobs", &self.0, "--format", "%T"])
            .output()
            .expect("squeue runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for LocalJob {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.0).status();
    }
}

/// Preemption, opt-in at the site (`scripts/slurm-up`: QOS `basho-guest` with
/// `PreemptMode=requeue`, preempted by the site's QOS `normal`): a local user's job that needs
/// the whole node takes it back, the workspace shows preempted with the reason, Slurm requeues
/// it, and once the local job ends it runs again with its `/work` as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_workspace_is_requeued_and_runs_again_with_its_work_kept() {
    let testbed = Testbed::load();
    let site = site();
    let mut cfg = testbed.backend(Runtime::Docker);
    cfg.partition = Some("batch".into());
    cfg.qos = Some("basho-guest".into());
    let backend = SlurmBackend::new(site.clone(), cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = basho_tests::unique("preempt");
    let spec = runnable_spec(dir.path(), &site, &id).await;
    backend.launch(&spec).await.unwrap();
    let state = || async { backend.inspect(&id).await.unwrap().map(|o| o.state) };
    let patience = std::time::Duration::from_secs(300);
    basho_test_util::wait_until("the workspace running", patience, || async {
        state().await == Some(RunState::Running)
    })
    .await;
    std::fs::write(spec.work_dir.join("notes.txt"), "kept").unwrap();

    let cpus = basho_tests::slurm::slurm(&["scontrol", "--oneliner", "show", "node"]);
    let cpus = cpus
        .split_whitespace()
        .find_map(|w| w.strip_prefix("CPUTot="))
        .unwrap()
        .to_owned();
    let local = LocalJob::submit(&[
        "--partition",
        "batch",
        "--qos",
        "normal",
        "--cpus-per-task",
        &cpus,
        "--mem",
        "512",
        "--time",
        "5",
        "--wrap",
        "sleep 5",
    ]);
    basho_test_util::wait_until("the workspace preempted", patience, || async {
        matches!(state().await, Some(RunState::Preempted(_)))
    })
    .await;
    let Some(RunState::Preempted(why)) = state().await else {
        panic!("no longer preempted")
    };
    assert!(
        why.contains("requeued") && why.contains("/work kept"),
        "{why}"
    );
    basho_test_util::wait_until("the local job done", patience, || {
        let s = local.state();
        async move { s.is_empty() || s == "COMPLETED" }
    })
    .await;
    // Slurm's requeue delay (about two minutes) passes before it runs again.
    basho_test_util::wait_until("the workspace running again", patience, || async {
        state().await == Some(RunState::Running)
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(spec.work_dir.join("notes.txt")).unwrap(),
        "kept"
    );
    assert_eq!(
        jobs_ever(&id),
        1,
        "the same job, requeued, not a second submission"
    );
    backend.stop(&id).await.unwrap();
}

/// The shared backend suite on the test cluster, each case its own test (the whole lifecycle is
/// `the_slurm_backend_passes_the_conformance_suite` above, with the accounting checks); a fresh
/// instance is a second backend on the same login node, as an agent restart makes, and an exit
/// is the job's container killed on the node's engine. Not here: a cut connection (the `sshd`
/// tests below stop the cluster's sshd).
mod suite {
    use async_trait::async_trait;
    use basho_agent::backend::docker::container_name;
    use basho_agent::backend::suite::{EXITED_WITHIN, Harness};

    use super::*;

    struct Cluster {
        testbed: Testbed,
        site: Ident,
        image: String,
        dir: tempfile::TempDir,
        backend: SlurmBackend,
        docker: bollard::Docker,
    }

    #[async_trait]
    impl Harness for Cluster {
        fn backend(&self) -> &dyn Backend {
            &self.backend
        }
        fn spec(&self, workspace: &str) -> LaunchSpec {
            basho_tests::slurm::runnable_spec(self.dir.path(), &self.site, &self.image, workspace)
        }
        async fn fresh_instance(&self) -> Option<Box<dyn Backend>> {
            let cfg = self.testbed.backend(Runtime::Docker);
            Some(Box::new(SlurmBackend::new(self.site.clone(), cfg).unwrap()))
        }
        async fn make_exit(&self, workspace: &str) -> bool {
            // The job runs `docker run` on this host's engine: killing its container ends the
            // job script by itself, as a workspace that exits does. A running job may not have
            // made its container yet.
            let name = container_name(workspace);
            basho_test_util::wait_until("the job's container", EXITED_WITHIN, || async {
                self.docker
                    .kill_container(
                        &name,
                        None::<bollard::query_parameters::KillContainerOptions>,
                    )
                    .await
                    .is_ok()
            })
            .await;
            true
        }
    }

    async fn cluster() -> Option<Cluster> {
        let docker = basho_tests::docker().await.expect("a Docker engine");
        let image = basho_cli::dev::image::ensure_demo_image(&docker)
            .await
            .expect("demo image");
        let testbed = Testbed::load();
        let site = site();
        let backend = SlurmBackend::new(site.clone(), testbed.backend(Runtime::Docker)).unwrap();
        Some(Cluster {
            testbed,
            site,
            image,
            dir: tempfile::tempdir().unwrap(),
            backend,
            docker,
        })
    }

    basho_agent::backend_suite!(cluster();
        nothing_is_there_before_a_launch,
        a_second_launch_finds_the_first,
        stopping_twice_succeeds,
        an_exit_is_seen,
        a_fresh_instance_adopts_what_runs,
    );
}
