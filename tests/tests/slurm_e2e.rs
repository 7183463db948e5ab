//! A Slurm site end to end, on the real one-node cluster of `scripts/slurm-up`, reached over real
//! SSH: the `tohoku` site of the test federation runs on Slurm, its jobs start their containers
//! with the `docker` runtime on this machine's engine (Apptainer cannot be installed here; its
//! command line is covered by golden tests). Checked from the cluster's side with `squeue`/`sacct` and from the engine's side
//! with `docker inspect` and exec inside the container.

use std::time::Duration;

use basho_agent::config::{BackendConfig, Runtime};
use basho_tests::federation::Federation;
use basho_tests::slurm::{Testbed, jobs_ever, jobs_of, slurm};
use reqwest::StatusCode;

/// Cancels the test's jobs however the test ends.
struct Jobs(Vec<String>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for ws in &self.0 {
            let _ = std::process::Command::new("scancel")
                .arg(format!("--name=basho-{ws}"))
                .status();
        }
    }
}

/// The Slurm site's `[consent] max_delay_s`.
const CONSENT_DELAY_S: u64 = 30;

async fn federation(runtime: Runtime) -> (Federation, Testbed) {
    let testbed = Testbed::load();
    let backend = testbed.backend(runtime);
    let fed = Federation::start_with(|name, cfg| {
        // A federated job's clean partials leave by the site's rule.
        cfg.airlock.auto_release_partials = true;
        if name == "tohoku" {
            cfg.backend = BackendConfig::Slurm(backend.clone());
            // A job on an older release after a withdrawal ends this long after it.
            cfg.consent.max_delay_s = CONSENT_DELAY_S;
        }
    })
    .await
    .expect("a Docker engine (the jobs' runtime)");
    (fed, testbed)
}

async fn create(fed: &Federation, jobs: &mut Jobs, datasets: &[&str]) -> String {
    let (status, ws) = fed
        .api
        .create(&fed.create_body("P-SLURM", "alice", datasets))
        .await;
    assert_eq!(status, StatusCode::CREATED, "create: {ws}");
    let id = ws["id"].as_str().unwrap().to_owned();
    jobs.0.push(id.clone());
    fed.api
        .wait_state(&id, "running", Duration::from_secs(90))
        .await;
    id
}

/// The container the job started, once it is there.
async fn container(fed: &Federation, id: &str) -> String {
    basho_tests::wait_for(
        &format!("the job's container for {id}"),
        Duration::from_secs(60),
        || async {
            let cs = fed.containers(id).await;
            (cs.len() == 1).then(|| cs[0].clone())
        },
    )
    .await
}

fn running_job(id: &str) -> u64 {
    let jobs = jobs_of(id);
    let running: Vec<_> = jobs.iter().filter(|(_, s)| s == "RUNNING").collect();
    assert_eq!(running.len(), 1, "exactly one running job: {jobs:?}");
    running[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slurm_workspace_runs_isolated_with_only_its_datasets_and_ends_with_scancel() {
    let (fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let id = create(&fed, &mut jobs, &["JGAD000101"]).await;

    let job = running_job(&id);
    let show = slurm(&["scontrol", "show", "job", &job.to_string()]);
    assert!(show.contains("JobState=RUNNING"), "{show}");
    assert!(show.contains(&format!("JobName=basho-{id}")), "{show}");
    assert!(
        show.contains("UserId=basho-svc"),
        "jobs run as the service account: {show}"
    );
    assert!(
        show.contains(&format!("Comment=basho site={}", fed.site("tohoku"))),
        "{show}"
    );

    let cid = container(&fed, &id).await;
    let c = fed.docker.inspect_container(&cid, None).await.unwrap();
    let host = c.host_config.clone().unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(
        host.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges")),
    );
    assert_eq!(host.privileged, Some(false));
    assert!(
        host.tmpfs.as_ref().is_some_and(|t| t.contains_key("/tmp")),
        "{:?}",
        host.tmpfs
    );
    assert!(host.pids_limit.unwrap_or(0) > 0);
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    let user = c.config.as_ref().and_then(|c| c.user.clone()).unwrap();
    assert_eq!(user, "65534:65534");
    let mounts = basho_tests::mounts(&fed.docker, &cid).await;
    assert_eq!(
        mounts,
        vec![
            ("/data/JGAD000101".to_string(), false),
            ("/etc/basho/workspace.json".to_string(), false),
            ("/results".to_string(), true),
            ("/work".to_string(), true),
        ],
        "exactly the approved dataset, read-only, and the workspace's own areas"
    );

    let (code, out) =
        basho_tests::exec(&fed.docker, &cid, &["cat", "/data/JGAD000101/records.csv"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("JGAD000101-0"), "{out}");
    let (code, _) = basho_tests::exec(&fed.docker, &cid, &["touch", "/data/JGAD000101/x"]).await;
    assert_ne!(code, 0, "datasets are read-only");
    let (code, _) = basho_tests::exec(&fed.docker, &cid, &["ls", "/data/JGAD000201"]).await;
    assert_ne!(code, 0, "an unapproved dataset is not there");

    let (status, _) = fed.api.delete(&id).await;
    assert!(status.is_success(), "{status}");
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    basho_tests::wait_for(
        "job gone after scancel",
        Duration::from_secs(60),
        || async {
            jobs_of(&id)
                .iter()
                .all(|(_, s)| s != "RUNNING" && s != "PENDING" && s != "COMPLETING")
                .then_some(())
        },
    )
    .await;
    basho_tests::wait_for("container gone", Duration::from_secs(60), || async {
        fed.containers(&id).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(jobs_ever(&id), 1, "one job was ever submitted");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ssh_outage_makes_the_workspace_unknown_and_never_resubmits() {
    let (fed, testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let id = create(&fed, &mut jobs, &["JGAD000102"]).await;
    let job = running_job(&id);

    /// Brings sshd back however the test ends: other tests need the login node.
    struct Restore<'a>(&'a Testbed);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.stop_sshd();
            self.0.start_sshd();
        }
    }
    let restore = Restore(&testbed);
    testbed.stop_sshd();
    let down = std::time::Instant::now();
    let ws = fed
        .api
        .wait_state(&id, "unknown", Duration::from_secs(30))
        .await;
    eprintln!("unknown after {:?}: {}", down.elapsed(), ws["message"]);
    while down.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            running_job(&id),
            job,
            "the job keeps running while the login node is away"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(fed.api.workspace(&id).await["state"], "unknown");
    testbed.start_sshd();
    let back = std::time::Instant::now();
    fed.api
        .wait_state(&id, "running", Duration::from_secs(60))
        .await;
    eprintln!("running again {:?} after sshd returned", back.elapsed());
    drop(restore);
    assert_eq!(running_job(&id), job, "the same job");
    assert_eq!(jobs_ever(&id), 1, "no second job was submitted");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_readopts_its_jobs() {
    let (mut fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let a = create(&fed, &mut jobs, &["JGAD000101"]).await;
    let b = create(&fed, &mut jobs, &["JGAD000101", "JGAD000102"]).await;
    let before = (running_job(&a), running_job(&b));

    fed.stop_agent("tohoku").await;
    fed.start_agent("tohoku").await;
    // Several reconcile passes of the new agent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for id in [&a, &b] {
        let ws = fed.api.workspace(id).await;
        assert_eq!(ws["state"], "running", "{ws}");
        assert_eq!(jobs_ever(id), 1, "{id}: re-adopted, not resubmitted");
    }
    assert_eq!((running_job(&a), running_job(&b)), before);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_metering_agrees_with_sacct() {
    let testbed = Testbed::load();
    let backend = testbed.backend(Runtime::Docker);
    let fed = Federation::start_with(|name, cfg| {
        cfg.metering.interval_s = 2;
        if name == "tohoku" {
            cfg.backend = BackendConfig::Slurm(backend.clone());
        }
    })
    .await
    .expect("a Docker engine (the jobs' runtime)");
    let mut jobs = Jobs(Vec::new());
    let id = create(&fed, &mut jobs, &["JGAD000101"]).await;
    let job = running_job(&id).to_string();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (status, _) = fed.api.delete(&id).await;
    assert!(status.is_success());
    fed.api
        .wait_state(&id, "stopped", Duration::from_secs(60))
        .await;
    // Accounting's own figures for the job, once it has ended.
    let (cputime, used) =
        basho_tests::wait_for("the job in accounting", Duration::from_secs(60), || async {
            let out = slurm(&[
                "sacct",
                "--noheader",
                "--parsable2",
                "--jobs",
                &job,
                "--format=JobIDRaw,State,CPUTimeRAW,TRESUsageInTot",
            ]);
            let mut lines = out.lines().map(|l| l.split('|').collect::<Vec<_>>());
            let main = lines.next()?;
            if main
                .get(1)
                .is_some_and(|s| s.starts_with("RUNNING") || s.starts_with("PENDING"))
            {
                return None;
            }
            let cputime: f64 = main.get(2)?.parse().ok()?;
            let used: f64 = lines
                .filter_map(|f| {
                    let tres = f.get(3)?;
                    tres.split(',')
                        .find_map(|kv| kv.strip_prefix("cpu="))
                        .and_then(basho_agent::backend::slurm::state::duration_s)
                })
                .sum();
            Some((cputime, used))
        })
        .await;
    let (status, report) = fed
        .api
        .call(reqwest::Method::GET, "/v1/projects/P-SLURM/usage", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let totals = &report["totals"];
    let allocated = totals["allocated_core_seconds"].as_f64().unwrap();
    let metered_used = totals["used_cpu_seconds"].as_f64().unwrap();
    eprintln!(
        "allocated: basho {allocated:.2} core-s, sacct CPUTimeRAW {cputime}; used: basho \
         {metered_used:.2} s, sacct TRESUsageInTot {used:.2} s"
    );
    assert!(
        (allocated - cputime).abs() <= 0.05 * cputime,
        "allocated {allocated} vs CPUTimeRAW {cputime}"
    );
    assert!(
        (metered_used - used).abs() <= 0.05 * used + 1.0,
        "used {metered_used} vs sacct {used}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_leave_a_slurm_job_through_the_airlock() {
    use basho_orchestrator::store::Role;
    use basho_tests::api::Api;
    use basho_tests::sessions::token;
    use reqwest::Method;
    use serde_json::json;

    let (fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let id = create(&fed, &mut jobs, &["JGAD000101"]).await;
    let cid = container(&fed, &id).await;
    // The job writes its result to /results, on the file system the agent shares with the node.
    let table = "age_band,count\n40-49,3\n50-59,41\n";
    let write = format!(
        "printf '{}' > /results/table.csv",
        table.replace('\n', "\\n")
    );
    let (code, out) = basho_tests::exec(&fed.docker, &cid, &["sh", "-c", &write]).await;
    assert_eq!(code, 0, "{out}");

    let api =
        async |role, sub: &str| Api::new(fed.api.base.clone(), token(&fed, role, Some(sub)).await);
    let alice = api(Role::Researcher, "alice").await;
    let proof = fed.id_proof("alice", &id, &basho_core::proof::fresh_seed());
    let body = json!({"files": ["table.csv"], "justification": "counts", "proof": proof});
    let (s, r) = alice
        .call(
            Method::POST,
            &format!("/v1/workspaces/{id}/release-requests"),
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let findings = r["files"][0]["checked"]["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "small_cell" && f["row"] == 1),
        "the 3 is flagged: {r}"
    );
    let rr = r["id"].as_str().unwrap().to_owned();
    for checker in ["carol", "dave"] {
        let (s, v) = api(Role::OutputChecker, checker)
            .await
            .call(
                Method::POST,
                &format!("/v1/release-requests/{rr}/reviews"),
                Some(&json!({"verdict": "approve", "comment": "a 3 of 44 in an age band is fine here"})),
            )
            .await;
        assert!(s.is_success(), "{v}");
    }
    let res = alice
        .http()
        .get(format!(
            "{}/v1/release-requests/{rr}/files/table.csv",
            fed.api.base
        ))
        .bearer_auth(token(&fed, Role::Researcher, Some("alice")).await)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let digest = res.headers()["x-basho-sha256"].to_str().unwrap().to_owned();
    assert_eq!(res.bytes().await.unwrap(), table.as_bytes());
    assert_eq!(digest, r["files"][0]["sha256"]);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tes_tasks_run_as_slurm_jobs_to_their_end() {
    use reqwest::Method;
    use serde_json::{Value, json};

    let (fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let visa = fed.issuer.mint("alice", "JGAD000101");
    let mut submit = async |executors: Value, outputs: Value| {
        let body = json!({
            "inputs": [{"url": "basho://datasets/JGAD000101/records.csv",
                        "path": "/data/JGAD000101/records.csv"},
                       {"path": "/work/note.txt", "content": "from the task\n"}],
            "executors": executors,
            "outputs": outputs,
            "tags": {"basho_project": "P-SLURM", "basho_visas": visa},
        });
        let (s, v) = fed
            .api
            .call(Method::POST, "/ga4gh/tes/v1/tasks", Some(&body))
            .await;
        assert!(s.is_success(), "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        jobs.0.push(id.clone());
        id
    };
    let check = r#"test "$(pwd)" = /tmp && test "$GREETING" = hello \
        && test "$(wc -l < /data/JGAD000101/records.csv)" = 6"#;
    let one = |script: &str| {
        json!([{"image": "basho/demo", "command": ["sh", "-c", script],
                "workdir": "/tmp", "env": {"GREETING": "hello"}}])
    };
    let ok = submit(one(check), json!([])).await;
    let failing = submit(one("exit 3"), json!([])).await;
    // Executors in order in the one job, after the inline input; the outputs leave through the
    // airlock as a release request.
    let steps = json!([
        {"image": "basho/demo", "command": ["wc", "-l", "/data/JGAD000101/records.csv"],
         "stdout": "/work/count.txt"},
        {"image": "basho/demo", "command": ["false"], "ignore_error": true},
        {"image": "basho/demo", "command": ["cat", "/work/count.txt", "/work/note.txt"],
         "stdout": "/results/summary.txt"},
    ]);
    let outputs = json!([{"path": "/results/summary.txt", "url": "s3://ignored/summary.txt"}]);
    let pipeline = submit(steps, outputs).await;
    let ended = async |id: &str| -> Value {
        basho_tests::wait_for("the task to end", Duration::from_secs(120), || async {
            let (_, t) = fed
                .api
                .call(
                    Method::GET,
                    &format!("/ga4gh/tes/v1/tasks/{id}?view=FULL"),
                    None,
                )
                .await;
            let state = t["state"].as_str().unwrap_or("");
            ["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"]
                .contains(&state)
                .then_some(t)
        })
        .await
    };
    let t = ended(&ok).await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    assert_eq!(t["logs"][0]["metadata"]["site"], fed.site("tohoku"));
    let t = ended(&failing).await;
    assert_eq!(t["state"], "EXECUTOR_ERROR", "{t}");
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 3, "{t}");
    let t = ended(&pipeline).await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    let rr = format!("rr-{}", pipeline.strip_prefix("ws-").unwrap());
    assert_eq!(
        t["logs"][0]["outputs"][0]["url"],
        format!("/v1/release-requests/{rr}/files/summary.txt"),
        "{t}"
    );
    let (_, r) = fed
        .api
        .call(Method::GET, &format!("/v1/release-requests/{rr}"), None)
        .await;
    let summary = fed
        .site_config("tohoku")
        .paths
        .results_root
        .join(&pipeline)
        .join("summary.txt");
    let bytes = std::fs::read(&summary).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "6 /data/JGAD000101/records.csv\nfrom the task\n"
    );
    assert_eq!(
        r["files"][0]["sha256"],
        basho_core::digest::sha256_hex(&bytes),
        "{r}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consent_withdrawal_requeues_the_running_slurm_job_on_the_new_release() {
    let (fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    let before = create(&fed, &mut jobs, &["JGAD000101"]).await;
    let first = running_job(&before);
    let gone = "JGAD000101-3";
    let read = async |id: &str| {
        let cid = container(&fed, id).await;
        let (code, out) =
            basho_tests::exec(&fed.docker, &cid, &["cat", "/data/JGAD000101/records.csv"]).await;
        assert_eq!(code, 0, "{out}");
        out
    };
    assert!(read(&before).await.contains(gone));
    let old = container(&fed, &before).await;
    let work = fed.site_config("tohoku").paths.work_root.join(&before);
    std::fs::write(work.join("notes.txt"), "kept across the requeue\n").unwrap();

    let answer = fed.withdraw("tohoku", "JGAD000101", &[gone]).await;
    assert_eq!(
        answer.made.as_ref().map(|m| m.release),
        Some(2),
        "{answer:?}"
    );
    // The next workspace's job mounts release 2 without the row.
    let after = create(&fed, &mut jobs, &["JGAD000101"]).await;
    let rows = read(&after).await;
    assert!(!rows.contains(gone), "{rows}");
    assert_eq!(rows.lines().count(), 5, "{rows}");
    // The running one is requeued: the same job, never submitted again, runs again after
    // Slurm's requeue delay (about 2 minutes) on release 2, its /work kept; the orchestrator
    // shows it running throughout.
    let new = basho_tests::wait_for(
        "the requeued job's new container",
        Duration::from_secs(CONSENT_DELAY_S + 240),
        || async {
            let cs = fed.containers(&before).await;
            (cs.len() == 1 && cs[0] != old).then(|| cs[0].clone())
        },
    )
    .await;
    let (code, rows) =
        basho_tests::exec(&fed.docker, &new, &["cat", "/data/JGAD000101/records.csv"]).await;
    assert_eq!(code, 0, "{rows}");
    assert!(!rows.contains(gone), "{rows}");
    let (_, notes) = basho_tests::exec(&fed.docker, &new, &["cat", "/work/notes.txt"]).await;
    assert_eq!(notes, "kept across the requeue\n");
    fed.api
        .wait_state(&before, "running", Duration::from_secs(30))
        .await;
    assert_eq!(running_job(&before), first, "the same job");
    assert_eq!(jobs_ever(&before), 1);
    basho_tests::wait_for(
        "the report of the move",
        Duration::from_secs(30),
        || async {
            (fed.api.workspace(&before).await["releases"]["JGAD000101"] == 2).then_some(())
        },
    )
    .await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federated_job_counts_and_aggregates_on_the_slurm_site() {
    use reqwest::Method;
    use serde_json::json;

    let (fed, _testbed) = federation(Runtime::Docker).await;
    let mut jobs = Jobs(Vec::new());
    // 12 records at tohoku (Slurm), 15 at ncbn (Docker), one ICD-10 code and age band.
    for (dataset, n) in [("JGAD000101", 12), ("JGAD000201", 15)] {
        let mut csv = String::from("record_id,age_band,sex,prefecture,icd10\n");
        for i in 0..n {
            csv.push_str(&format!("{dataset}-{i},40-49,F,Miyagi,E11\n"));
        }
        let path = fed
            .dir
            .path()
            .join("datasets")
            .join(dataset)
            .join("records.csv");
        std::fs::write(path, csv).unwrap();
    }
    // The aggregation runs at the Slurm site too: its partials bound read-only at /inputs in
    // the job's container, and no /data.
    let aggregate = r#"test -z "$(ls -A /data 2>/dev/null)" || exit 7
touch /inputs/x 2>/dev/null && exit 8
exec sum-cells"#;
    let body = json!({
        "project": "P-SLURM",
        "visas": [fed.issuer.mint("alice", "JGAD000101"), fed.issuer.mint("alice", "JGAD000201")],
        "site_step": {"image": "basho/demo", "command": ["count-cells"]},
        "aggregation": {"image": "basho/demo", "command": ["sh", "-c", aggregate],
                        "site": fed.site("tohoku")},
    });
    let (s, j) = fed
        .api
        .call(Method::POST, "/v1/federated-jobs", Some(&body))
        .await;
    assert_eq!(s.as_u16(), 201, "{j}");
    let id = j["id"].as_str().unwrap().to_owned();
    for step in j["sites"].as_array().unwrap() {
        jobs.0.push(step["workspace"].as_str().unwrap().to_owned());
    }
    let tohoku = j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == fed.site("tohoku"))
        .unwrap()["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = basho_tests::wait_for("the job to end", Duration::from_secs(180), || async {
        let (_, j) = fed
            .api
            .call(Method::GET, &format!("/v1/federated-jobs/{id}"), None)
            .await;
        ["completed", "failed"]
            .contains(&j["state"].as_str().unwrap_or(""))
            .then_some(j)
    })
    .await;
    let agg = done["aggregation"]["workspace"].as_str().map(str::to_owned);
    jobs.0.extend(agg.clone());
    assert_eq!(done["state"], "completed", "{done}");
    // Both ran as Slurm jobs, once each.
    assert_eq!(jobs_ever(&tohoku), 1, "the step at the Slurm site ran once");
    let agg = agg.unwrap();
    assert_eq!(jobs_ever(&agg), 1, "the aggregation ran as a Slurm job");
    let result = fed
        .site_config("tohoku")
        .paths
        .results_root
        .join(&agg)
        .join("counts.csv");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "icd10,age_band,count\nE11,40-49,27\n"
    );
    fed.shutdown().await;
}
