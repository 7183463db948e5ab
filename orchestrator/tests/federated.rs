//! Federated jobs through the orchestrator's real router, their sites played through the agent
//! API: what bad input gets (a clear 4xx and nothing started anywhere), who sees which job,
//! a job driven to its end by the sites' reports, and the site's own release honoured only for
//! a federated job's partial.

mod common;

use axum::http::{Method, StatusCode};
use basho_orchestrator::store::{Role, SqliteStore};
use common::*;
use serde_json::{Value, json};

const JOBS: &str = "/v1/federated-jobs";

/// The demo sites, each agent staging partials.
async fn harness() -> (Harness, SqliteStore) {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    for (site, datasets) in DEMO {
        let mut reg = registration(site, datasets, 16, 65536);
        reg["features"] = json!(["airlock", "federated"]);
        h.register_as(site, reg).await;
    }
    (h, store)
}

fn job(h: &Harness, sub: &str, datasets: &[&str]) -> Value {
    let visas: Vec<String> = datasets.iter().map(|d| h.visa(sub, d)).collect();
    json!({
        "project": "P-FED",
        "visas": visas,
        "site_step": {"image": "basho/demo", "command": ["count"]},
        "aggregation": {"image": "basho/demo", "command": ["sum"], "site": "bbj"},
    })
}

const ALL: [&str; 4] = ["JGAD000101", "JGAD000102", "JGAD000201", "JGAD000301"];

/// Nothing was started: no workspace and no job.
async fn nothing_started(h: &Harness) {
    let (_, ws) = h.call(Method::GET, "/v1/workspaces", PLATFORM, None).await;
    assert_eq!(ws, json!([]), "{ws}");
    let (_, jobs) = h.call(Method::GET, JOBS, PLATFORM, None).await;
    assert_eq!(jobs, json!([]));
}

#[tokio::test]
async fn bad_jobs_get_a_clear_4xx_and_nothing_starts_anywhere() {
    let (h, store) = harness().await;
    let post = |body: Value| h.call(Method::POST, JOBS, PLATFORM, Some(body));

    // A site named whose datasets the visas do not cover.
    let mut b = job(&h, "alice", &["JGAD000101"]);
    b["sites"] = json!(["tohoku", "ncbn"]);
    let got = post(b).await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_datasets_at_site",
    );
    assert!(got.1["error"]["message"].as_str().unwrap().contains("ncbn"));
    // Each a whole job with one thing wrong: (what is changed, to what, status, code).
    let mixed = json!([h.visa("alice", "JGAD000101"), h.visa("bob", "JGAD000201")]);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        // An aggregation step that would read a dataset.
        (
            "/aggregation/datasets",
            json!(["JGAD000301"]),
            unprocessable,
            "aggregation_reads_no_data",
        ),
        (
            "/visas",
            mixed,
            StatusCode::FORBIDDEN,
            "visa_subject_mismatch",
        ),
        (
            "/site_step/image",
            json!("elsewhere/tool"),
            unprocessable,
            "image_not_allowed",
        ),
        (
            "/aggregation/site",
            json!("nowhere"),
            unprocessable,
            "unknown_site",
        ),
        ("/min_sites", json!(0), unprocessable, "invalid_request"),
        ("/min_sites", json!(4), unprocessable, "invalid_request"),
    ];
    for (pointer, value, status, code) in cases {
        let mut b = job(&h, "alice", &ALL);
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut b
        } else {
            b.pointer_mut(parent).unwrap()
        };
        parent[key] = value;
        assert_error(&post(b).await, status, code);
    }
    // Over the project's quota, counted over every site's step and the aggregation: the batch
    // template's 2 cores for 24 h each is far past 10 core-hours.
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/projects/P-FED/quota",
            PLATFORM,
            Some(json!({"core_hours": 10.0})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    assert_error(
        &post(job(&h, "alice", &ALL)).await,
        StatusCode::FORBIDDEN,
        "quota_exceeded",
    );
    // A researcher with someone else's visas; a role that starts no jobs.
    let alice = token(&store, Role::Researcher, Some("alice")).await;
    let got = h
        .call(
            Method::POST,
            JOBS,
            &alice,
            Some(job(&h, "bob", &["JGAD000201"])),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let checker = token(&store, Role::OutputChecker, Some("carol")).await;
    let got = h
        .call(Method::POST, JOBS, &checker, Some(job(&h, "carol", &ALL)))
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    // An aggregation site whose agent does not stage partials.
    h.register("bbj", &["JGAD000301"], 16, 65536).await;
    assert_error(
        &post(job(&h, "alice", &["JGAD000101"])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "aggregation_site_unsupported",
    );
    nothing_started(&h).await;
}

/// What a site reports of a step that ended: one file taken, and whether its rule released it.
fn ended(workspace: &str, released_by: Option<&str>) -> Value {
    json!({"site": "", "observations": [{
        "workspace": workspace, "state": "stopped", "message": "exited with code 0",
        "at": chrono::Utc::now(),
        "outputs": {"intake": {"files": [{"name": "counts.csv", "size": 20,
            "sha256": "a".repeat(64),
            "checked": {"file_type": "csv", "refused": false, "findings": [], "omitted": 0}}],
            "compared": {"tables": 1, "rows": 30, "skipped": 0}},
            "released_by": released_by},
    }]})
}

async fn report(h: &Harness, site: &str, workspace: &str, released_by: Option<&str>) {
    let mut body = ended(workspace, released_by);
    body["site"] = json!(site);
    for state in ["running"] {
        let (s, v) = h.observe(site, &[(workspace, state, None)]).await;
        assert!(s.is_success(), "{v}");
    }
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/agent/observations",
            &agent_token(site),
            Some(body),
        )
        .await;
    assert!(s.is_success(), "{v}");
}

/// The job once the driver (run here in the test's task: the harness starts no loops) moved it
/// to `state`.
/// `site`'s agent fetching a file of release request `partial`.
async fn fetch(h: &Harness, site: &str, partial: &str) -> (StatusCode, Value) {
    let path = format!("/v1/release-requests/{partial}/files/counts.csv");
    h.call(Method::GET, &path, &agent_token(site), None).await
}

async fn wait_job(h: &Harness, id: &str, state: &str) -> Value {
    for _ in 0..100 {
        basho_orchestrator::federated::driver::advance_all(&h.orchestrator)
            .await
            .unwrap();
        let (_, j) = h
            .call(Method::GET, &format!("{JOBS}/{id}"), PLATFORM, None)
            .await;
        if j["state"] == state {
            return j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} never {state}");
}

fn workspace_at<'a>(j: &'a Value, site: &str) -> &'a str {
    j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == site)
        .unwrap()["workspace"]
        .as_str()
        .unwrap()
}

/// A job over every demo dataset, started with researcher alice's own token: it and its id.
async fn alice_job(h: &Harness, alice: &str) -> (Value, String) {
    let (s, j) = h
        .call(Method::POST, JOBS, alice, Some(job(h, "alice", &ALL)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{j}");
    let id = j["id"].as_str().unwrap().to_owned();
    (j, id)
}

#[tokio::test]
async fn a_job_moves_with_its_sites_reports_and_only_its_owner_and_readers_see_it() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("alice")).await;
    let (j, id) = alice_job(&h, &alice).await;
    // Each step is a batch workspace at its site, sent only the visas for its datasets.
    let (_, w) = h
        .call(
            Method::GET,
            &format!("/v1/workspaces/{}", workspace_at(&j, "ncbn")),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(
        (&w["site"], &w["datasets"]),
        (&json!("ncbn"), &json!(["JGAD000201"]))
    );
    let (_, desired) = h
        .call(
            Method::GET,
            "/v1/agent/desired?site=ncbn&after=-1&wait_s=0",
            &agent_token("ncbn"),
            None,
        )
        .await;
    let a = &desired["workspaces"][0];
    assert_eq!(a["visas"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["launch"]["partial"], true);
    assert_eq!(a["launch"]["all_results"], true);

    // Another researcher sees nothing of it; a checker follows no jobs.
    let bob = token(&store, Role::Researcher, Some("bob")).await;
    let got = h
        .call(Method::GET, &format!("{JOBS}/{id}"), &bob, None)
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let (_, list) = h.call(Method::GET, JOBS, &bob, None).await;
    assert_eq!(list, json!([]));
    let checker = token(&store, Role::OutputChecker, Some("carol")).await;
    let got = h.call(Method::GET, JOBS, &checker, None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");

    // tohoku and ncbn release their partials by rule; bbj's waits for checkers.
    for (site, rule) in [
        ("tohoku", Some("rule")),
        ("ncbn", Some("rule")),
        ("bbj", None),
    ] {
        report(&h, site, workspace_at(&j, site), rule).await;
    }
    let j = wait_job(&h, &id, "waiting_for_release").await;
    let bbj = &j["sites"][0];
    assert_eq!(
        (&bbj["site"], &bbj["state"]),
        (&json!("bbj"), &json!("waiting_for_release"))
    );
    // An agent fetches only a partial that feeds its own aggregation step: none yet.
    let partial = j["sites"][2]["partial"].as_str().unwrap();
    let got = fetch(&h, "bbj", partial).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    // Released by its site's rule, a partial still goes nowhere but into the aggregation: not to
    // its owner, not to the platform.
    for who in [alice.as_str(), PLATFORM] {
        let path = format!("/v1/release-requests/{partial}/files/counts.csv");
        let got = h.call(Method::GET, &path, who, None).await;
        assert_error(&got, StatusCode::FORBIDDEN, "partial_for_aggregation");
    }
    let rr = bbj["partial"].as_str().unwrap().to_owned();
    for c in ["carol", "dave"] {
        let t = token(&store, Role::OutputChecker, Some(c)).await;
        let (s, v) = h
            .call(
                Method::POST,
                &format!("/v1/release-requests/{rr}/reviews"),
                &t,
                Some(json!({"verdict": "approve"})),
            )
            .await;
        assert!(s.is_success(), "{v}");
    }
    let j = wait_job(&h, &id, "aggregating").await;
    let agg = j["aggregation"]["workspace"].as_str().unwrap().to_owned();
    let (_, desired) = h
        .call(
            Method::GET,
            "/v1/agent/desired?site=bbj&after=-1&wait_s=0",
            &agent_token("bbj"),
            None,
        )
        .await;
    let a = desired["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agg.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (&a["datasets"], &a["visas"]),
        (&json!([]), &json!([])),
        "{a}"
    );
    let inputs = a["launch"]["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 3, "{a}");
    assert_eq!(inputs[0]["files"][0]["sha256"], "a".repeat(64));
    // The partials feed bbj's aggregation now: bbj's agent may fetch them, ncbn's may not.
    let got = fetch(&h, "ncbn", partial).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let got = fetch(&h, "bbj", partial).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "site_unreachable");

    report(&h, "bbj", &agg, Some("rule")).await;
    let j = wait_job(&h, &id, "completed").await;
    let result = j["aggregation"]["result"].as_str().unwrap();
    let (_, r) = h
        .call(
            Method::GET,
            &format!("/v1/release-requests/{result}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(
        r["state"], "submitted",
        "the result is never released by a site's rule: {r}"
    );
    let (_, mine) = h.call(Method::GET, JOBS, &alice, None).await;
    assert_eq!(mine[0]["id"], id.as_str());
    let (_, done) = h
        .call(
            Method::GET,
            &format!("{JOBS}?state=completed"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(done.as_array().unwrap().len(), 1);
    let got = h
        .call(Method::GET, &format!("{JOBS}?state=done"), PLATFORM, None)
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

/// `body` started with the platform's token and Idempotency-Key `key`.
async fn post(h: &Harness, body: Value, key: &str) -> (StatusCode, Value) {
    let headers = [("idempotency-key", key)];
    let bytes = serde_json::to_vec(&body).unwrap();
    h.raw(Method::POST, JOBS, Some(PLATFORM), &headers, bytes)
        .await
}

#[tokio::test]
async fn an_idempotency_key_starts_a_job_once() {
    let (h, _) = harness().await;
    let body = job(&h, "alice", &ALL);
    let (s, first) = post(&h, body.clone(), "job-key-1").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, again) = post(&h, body.clone(), "job-key-1").await;
    assert_eq!(
        (s, &again),
        (StatusCode::OK, &first),
        "the retry answers the same job"
    );
    let (_, ws) = h.call(Method::GET, "/v1/workspaces", PLATFORM, None).await;
    assert_eq!(
        ws.as_array().unwrap().len(),
        3,
        "one step per site, once: {ws}"
    );
    let mut other = body;
    other["name"] = json!("another");
    let got = post(&h, other, "job-key-1").await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let got = post(&h, job(&h, "alice", &ALL), "bad key with spaces").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

#[tokio::test]
async fn a_job_is_canceled_by_its_owner_and_stays_canceled() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("alice")).await;
    let (_, id) = alice_job(&h, &alice).await;
    let cancel = format!("{JOBS}/{id}/cancel");
    let bob = token(&store, Role::Researcher, Some("bob")).await;
    let got = h.call(Method::POST, &cancel, &bob, None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let auditor = token(&store, Role::Auditor, None).await;
    let got = h.call(Method::POST, &cancel, &auditor, None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");

    let (s, j) = h.call(Method::POST, &cancel, &alice, None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["state"], "failed");
    assert_eq!(j["message"], "canceled by researcher:alice");
    for step in j["sites"].as_array().unwrap() {
        assert_eq!(step["state"], "stopped", "{j}");
        let (_, w) = h
            .call(
                Method::GET,
                &format!("/v1/workspaces/{}", step["workspace"].as_str().unwrap()),
                PLATFORM,
                None,
            )
            .await;
        assert_eq!(w["state"], "stopping", "its step is being stopped: {w}");
    }
    // The driver's next passes leave it as it ended; a second cancel is refused.
    for _ in 0..3 {
        basho_orchestrator::federated::driver::advance_all(&h.orchestrator)
            .await
            .unwrap();
    }
    let (_, again) = h
        .call(Method::GET, &format!("{JOBS}/{id}"), PLATFORM, None)
        .await;
    assert_eq!(again, j);
    // Canceled again, it is answered as it ended, nothing changed.
    let (s, once_more) = h.call(Method::POST, &cancel, PLATFORM, None).await;
    assert_eq!((s, once_more), (StatusCode::OK, j));
}
