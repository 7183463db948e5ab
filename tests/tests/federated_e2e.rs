//! Federated jobs on the real Docker engine, through the in-process federation of three sites:
//! the cross-site count by ICD-10 code and age band, each site counting its own datasets and
//! suppressing cells under 10, tohoku's and ncbn's partials released by their sites' own rule,
//! bbj's by two checkers, the aggregation at bbj reading only the released partials (no
//! `/data`, `/inputs` read-only), its result an ordinary release request; then a job whose
//! site's dataset is revoked mid-job, finishing on the other sites under `min_sites`, one whose
//! partial holds a link (refused whole), and one whose aggregation site is down when its
//! partials are released, which waits and completes once its agent is back.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use reqwest::Method;
use serde_json::{Value, json};

const JOBS: &str = "/v1/federated-jobs";

/// Rows of one ICD-10 code and age band: (code, band, how many).
type Cells = &'static [(&'static str, &'static str, usize)];

/// Each demo dataset's rows.
const ROWS: [(&str, Cells); 4] = [
    (
        "JGAD000101",
        &[
            ("E11", "40-49", 14),
            ("I10", "50-59", 9),
            ("C50", "60-69", 3),
        ],
    ),
    ("JGAD000102", &[("E11", "40-49", 6), ("I10", "50-59", 11)]),
    (
        "JGAD000201",
        &[
            ("E11", "40-49", 12),
            ("I10", "50-59", 4),
            ("C50", "60-69", 10),
        ],
    ),
    ("JGAD000301", &[("E11", "40-49", 20), ("C50", "60-69", 5)]),
];

/// Counts one site's datasets by ICD-10 code and age band, keeping only cells of 10 or more:
/// the demo image's own script.
const SITE_STEP: &str = "count-cells";

/// Sums the released partials, keeping only cells of 10 or more (the demo image's script);
/// fails first if it could read any dataset or write its inputs.
const AGGREGATE: &str = r#"test -z "$(ls -A /data 2>/dev/null)" || exit 7
touch /inputs/x 2>/dev/null && exit 8
exec sum-cells"#;

/// Writes the rows of [`ROWS`] into the federation's datasets.
fn write_rows(fed: &Federation) {
    for (id, rows) in ROWS {
        let mut csv = String::from("record_id,age_band,sex,prefecture,icd10\n");
        let mut n = 0;
        for (code, band, count) in rows {
            for _ in 0..*count {
                csv.push_str(&format!("{id}-{n},{band},F,Miyagi,{code}\n"));
                n += 1;
            }
        }
        let path = fed.dir.path().join("datasets").join(id).join("records.csv");
        std::fs::write(path, csv).unwrap();
    }
}

fn body(fed: &Federation, datasets: &[&str], aggregation_site: &str) -> Value {
    let visas: Vec<String> = datasets
        .iter()
        .map(|d| fed.issuer.mint("alice", d))
        .collect();
    json!({
        "project": "P-FED",
        "name": "ICD-10 by age band",
        "visas": visas,
        "site_step": {"image": "basho/demo", "command": ["sh", "-c", SITE_STEP]},
        "aggregation": {"image": "basho/demo", "command": ["sh", "-c", AGGREGATE],
                        "site": fed.site(aggregation_site)},
    })
}

async fn job(fed: &Federation, id: &str) -> Value {
    let (s, j) = fed
        .api
        .call(Method::GET, &format!("{JOBS}/{id}"), None)
        .await;
    assert!(s.is_success(), "{j}");
    j
}

/// The job once its state is one of `states`.
async fn wait_job(fed: &Federation, id: &str, states: &[&str], within: Duration) -> Value {
    basho_tests::wait_for("the job's state", within, || async {
        let j = job(fed, id).await;
        states
            .contains(&j["state"].as_str().unwrap_or(""))
            .then_some(j)
    })
    .await
}

/// The job once it completed or failed (within 90 s).
async fn ended(fed: &Federation, id: &str) -> Value {
    wait_job(fed, id, &["completed", "failed"], Duration::from_secs(90)).await
}

fn step<'a>(fed: &Federation, j: &'a Value, site: &str) -> &'a Value {
    j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == fed.site(site))
        .unwrap_or_else(|| panic!("no step at {site}: {j}"))
}

/// Two checkers approve release request `rr`.
async fn approve(fed: &Federation, rr: &str) {
    for checker in ["carol", "dave"] {
        let token = basho_tests::sessions::token(fed, Role::OutputChecker, Some(checker)).await;
        let api = basho_tests::api::Api::new(fed.api.base.clone(), token);
        let (s, v) = api
            .call(
                Method::POST,
                &format!("/v1/release-requests/{rr}/reviews"),
                Some(&json!({"verdict": "approve"})),
            )
            .await;
        assert!(s.is_success(), "{v}");
    }
}

/// The counts a CSV of `icd10,age_band,count` holds.
fn counts(csv: &str) -> BTreeMap<String, u64> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let (k, n) = l.rsplit_once(',').unwrap();
            (k.to_owned(), n.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cross_site_count_leaves_no_site_but_as_released_aggregates() {
    // tohoku and ncbn release clean partials by their own rule; bbj leaves them to checkers.
    let Some(fed) = Federation::start_with(|name, cfg| {
        cfg.airlock.auto_release_partials = name != "bbj";
    })
    .await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    write_rows(&fed);
    let all = ["JGAD000101", "JGAD000102", "JGAD000201", "JGAD000301"];
    let (s, j) = fed
        .api
        .call(Method::POST, JOBS, Some(&body(&fed, &all, "bbj")))
        .await;
    assert_eq!(s.as_u16(), 201, "{j}");
    let id = j["id"].as_str().unwrap().to_owned();
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["min_sites"], 3);
    // Each site's step reads only its own datasets, with only the visas for them.
    for (site, datasets) in [
        ("tohoku", json!(["JGAD000101", "JGAD000102"])),
        ("ncbn", json!(["JGAD000201"])),
        ("bbj", json!(["JGAD000301"])),
    ] {
        let s = step(&fed, &j, site);
        assert_eq!(s["datasets"], datasets, "{j}");
        let w = fed.api.workspace(s["workspace"].as_str().unwrap()).await;
        assert_eq!(
            (&w["site"], &w["datasets"]),
            (&json!(fed.site(site)), &datasets)
        );
    }

    // bbj's partial waits for two checkers; the others were released by their sites.
    let j = wait_job(
        &fed,
        &id,
        &["waiting_for_release", "failed"],
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(j["state"], "waiting_for_release", "{j}");
    for site in ["tohoku", "ncbn"] {
        let s = step(&fed, &j, site);
        assert_eq!(s["state"], "released", "{j}");
        let by = s["released_by"].as_str().unwrap();
        assert!(
            by.contains("auto_release_partials") && by.contains("site:"),
            "{by}"
        );
    }
    let waiting = step(&fed, &j, "bbj");
    assert_eq!(waiting["state"], "waiting_for_release", "{j}");
    assert!(
        j["message"].as_str().unwrap().contains(&fed.site("bbj")),
        "{j}"
    );
    let partial = waiting["partial"].as_str().unwrap().to_owned();
    approve(&fed, &partial).await;

    let j = ended(&fed, &id).await;
    assert_eq!(j["state"], "completed", "{j}");
    assert!(
        step(&fed, &j, "bbj")["released_by"]
            .as_str()
            .unwrap()
            .contains("carol")
    );
    let agg = &j["aggregation"];
    assert_eq!(agg["site"], fed.site("bbj"));
    assert_eq!(agg["inputs"].as_array().unwrap().len(), 3, "{j}");
    let w = fed.api.workspace(agg["workspace"].as_str().unwrap()).await;
    assert_eq!(
        w["datasets"],
        json!([]),
        "the aggregation mounts no dataset: {w}"
    );

    // The result is an ordinary release request: two approvals, then the platform downloads it.
    let result = agg["result"].as_str().unwrap().to_owned();
    let file = format!("/v1/release-requests/{result}/files/counts.csv");
    let (s, _) = fed.api.call(Method::GET, &file, None).await;
    assert_eq!(s.as_u16(), 409, "not released before two checkers approve");
    approve(&fed, &result).await;
    let resp = fed
        .api
        .http()
        .get(format!("{}{file}", fed.api.base))
        .bearer_auth(fed.api.token())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let csv = resp.text().await.unwrap();
    // Per site, cells under 10 were dropped before anything left: tohoku E11 20 (14+6) and
    // I10 20 (9+11), ncbn E11 12 and C50 10, bbj E11 20 (C50 5 dropped). Summed: E11 52,
    // I10 20, C50 10.
    let expected = BTreeMap::from([
        ("C50,60-69".to_owned(), 10),
        ("E11,40-49".to_owned(), 52),
        ("I10,50-59".to_owned(), 20),
    ]);
    assert_eq!(counts(&csv), expected, "{csv}");

    // The audit chain says which site ran what, who released each partial, and which fed it.
    let admin = basho_tests::sessions::token(&fed, Role::Admin, None).await;
    let entries = basho_tests::sessions::audit(&fed, &admin, &id).await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "federated_job_created",
        "federated_step",
        "federated_aggregation_placed",
        "federated_job_state",
    ] {
        assert!(actions.contains(&a), "{a} missing: {actions:?}");
    }
    let created = entries
        .iter()
        .find(|e| e["action"] == "federated_job_created")
        .unwrap();
    assert_eq!(
        created["detail"]["sites"][fed.site("ncbn")]["datasets"],
        json!(["JGAD000201"])
    );
    let placed = entries
        .iter()
        .find(|e| e["action"] == "federated_aggregation_placed")
        .unwrap();
    let fed_by: Vec<&str> = placed["detail"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["release"].as_str().unwrap())
        .collect();
    assert!(fed_by.contains(&partial.as_str()), "{placed}");
    assert!(
        placed["detail"]["inputs"][0]["files"][0]["sha256"]
            .as_str()
            .is_some_and(|d| d.len() == 64),
        "{placed}"
    );
    let auto = basho_tests::sessions::audit(
        &fed,
        &admin,
        step(&fed, &j, "ncbn")["partial"].as_str().unwrap(),
    )
    .await;
    assert!(
        auto.iter().any(|e| e["action"] == "release_reviewed"
            && e["actor"] == format!("agent:{}", fed.site("ncbn"))
            && e["detail"]["rule"].as_str().is_some()),
        "{auto:?}"
    );
    fed.shutdown().await;
}

/// Counts as [`SITE_STEP`] does, but first sleeps `secs` at the site holding `dataset`.
fn slow_at(dataset: &str, secs: u32) -> String {
    format!("case \"$BASHO_DATASETS\" in *{dataset}*) sleep {secs};; esac\n{SITE_STEP}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_site_fails_the_job_unless_min_sites_lets_it_finish_without_it() {
    let Some(fed) = Federation::start_with(|_, cfg| cfg.airlock.auto_release_partials = true).await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    write_rows(&fed);
    let all = ["JGAD000101", "JGAD000102", "JGAD000201", "JGAD000301"];
    // bbj's step is still counting when its dataset's grants are revoked.
    let mut lenient = body(&fed, &all, "ncbn");
    lenient["site_step"]["command"][2] = json!(slow_at("JGAD000301", 600));
    lenient["min_sites"] = json!(2);
    let mut strict = lenient.clone();
    strict.as_object_mut().unwrap().remove("min_sites");
    // A step whose partial holds a link to the dataset: refused whole at every site.
    let mut linked = body(&fed, &["JGAD000201"], "ncbn");
    linked["site_step"]["command"][2] = json!(format!("{SITE_STEP} && ln -s /data /results/data"));
    let (s, j) = fed.api.call(Method::POST, JOBS, Some(&linked)).await;
    assert_eq!(s.as_u16(), 201, "{j}");
    let linked = j["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for b in [&lenient, &strict] {
        let (s, j) = fed.api.call(Method::POST, JOBS, Some(b)).await;
        assert_eq!(s.as_u16(), 201, "{j}");
        ids.push(j["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let j = job(&fed, id).await;
        let ws = step(&fed, &j, "bbj")["workspace"]
            .as_str()
            .unwrap()
            .to_owned();
        fed.api
            .wait_state(&ws, "running", Duration::from_secs(60))
            .await;
    }
    let (s, v) = fed
        .api
        .call(
            Method::POST,
            "/v1/revocations",
            Some(&json!({"dataset": "JGAD000301", "reason": "dac-revoked"})),
        )
        .await;
    assert!(s.is_success(), "{v}");

    let j = ended(&fed, &ids[0]).await;
    assert_eq!(j["state"], "completed", "{j}");
    let bbj = step(&fed, &j, "bbj");
    assert_eq!(bbj["state"], "failed", "{j}");
    assert!(bbj["message"].as_str().unwrap().contains("revoked"), "{j}");
    let mut fed_by: Vec<String> = j["aggregation"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    fed_by.sort();
    let mut expected = vec![fed.site("ncbn"), fed.site("tohoku")];
    expected.sort();
    assert_eq!(fed_by, expected, "the result says which sites are in it");

    let j = ended(&fed, &ids[1]).await;
    assert_eq!(j["state"], "failed", "{j}");
    let why = j["message"].as_str().unwrap();
    assert!(
        why.contains(&fed.site("bbj")) && why.contains("revoked"),
        "{why}"
    );
    assert!(
        j["aggregation"]["workspace"].is_null(),
        "nothing aggregated: {j}"
    );

    let j = ended(&fed, &linked).await;
    assert_eq!(j["state"], "failed", "{j}");
    let why = j["message"].as_str().unwrap();
    assert!(why.contains("data, a link"), "{why}");
    assert!(
        step(&fed, &j, "ncbn")["partial"].is_null(),
        "nothing taken: {j}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_agent_down_mid_job_or_at_aggregation_time_makes_the_job_wait_not_fail() {
    let Some(mut fed) =
        Federation::start_with(|_, cfg| cfg.airlock.auto_release_partials = true).await
    else {
        eprintln!("skipped: no Docker engine");
        return;
    };
    write_rows(&fed);
    // The aggregation site is down before the partials are released: the job waits, says why.
    fed.stop_agent("bbj").await;
    basho_tests::wait_for("bbj silent", Duration::from_secs(30), || async {
        let (_, sites) = fed.api.call(Method::GET, "/v1/sites", None).await;
        let bbj = sites
            .as_array()?
            .iter()
            .find(|s| s["name"] == fed.site("bbj"))?
            .clone();
        let heard = chrono::DateTime::parse_from_rfc3339(bbj["last_contact"].as_str()?).ok()?;
        (chrono::Utc::now() - heard.to_utc() > chrono::TimeDelta::seconds(11)).then_some(())
    })
    .await;
    // tohoku's step sleeps while its agent is killed and comes back.
    let mut b = body(&fed, &["JGAD000101", "JGAD000201"], "bbj");
    b["site_step"]["command"][2] = json!(slow_at("JGAD000101", 6));
    let (s, j) = fed.api.call(Method::POST, JOBS, Some(&b)).await;
    assert_eq!(s.as_u16(), 201, "{j}");
    let id = j["id"].as_str().unwrap().to_owned();
    let ws = step(&fed, &j, "tohoku")["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    fed.api
        .wait_state(&ws, "running", Duration::from_secs(60))
        .await;
    let before = fed.containers(&ws).await;
    assert_eq!(before.len(), 1);
    fed.stop_agent("tohoku").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    fed.start_agent("tohoku").await;
    fed.wait_registered("tohoku").await;
    let after = fed.containers(&ws).await;
    assert!(
        after.is_empty() || after == before,
        "the step's container was adopted, never launched again: {before:?} then {after:?}"
    );

    let j = wait_job(
        &fed,
        &id,
        &["waiting_for_release", "failed"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(j["state"], "waiting_for_release", "{j}");
    assert_eq!(step(&fed, &j, "tohoku")["state"], "released", "{j}");
    assert_eq!(step(&fed, &j, "tohoku")["workspace"], ws.as_str());
    let why = j["message"].as_str().unwrap();
    assert!(
        why.contains(&format!("waiting for aggregation site {}", fed.site("bbj"))),
        "{why}"
    );
    assert!(j["aggregation"]["workspace"].is_null(), "{j}");

    fed.start_agent("bbj").await;
    let j = ended(&fed, &id).await;
    assert_eq!(j["state"], "completed", "{j}");
    let admin = basho_tests::sessions::token(&fed, Role::Admin, None).await;
    let created: Vec<Value> = basho_tests::sessions::audit(&fed, &admin, &ws)
        .await
        .into_iter()
        .filter(|e| e["action"] == "workspace_create")
        .collect();
    assert_eq!(created.len(), 1, "the step was made once");
    fed.shutdown().await;
}
