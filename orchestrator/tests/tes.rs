//! The GA4GH TES 1.1 facade through the orchestrator's real router, its sites played through the
//! agent API: tasks placed as batch workspaces where their datasets are, their state read from
//! the workspace's, listed in pages and filtered, canceled; and what bad input gets, each
//! answered `{"msg", "status_code"}` with nothing created.

mod common;

use axum::http::{Method, StatusCode};
use basho_orchestrator::store::{Role, SqliteStore};
use common::*;
use serde_json::{Value, json};

const BASE: &str = "/ga4gh/tes/v1";

async fn harness() -> (Harness, SqliteStore) {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    h.register_demo().await;
    (h, store)
}

/// A task counting rows of one of `dataset`'s files, for `sub`, its visas in the tag.
fn task(h: &Harness, sub: &str, dataset: &str, name: &str) -> Value {
    let file = format!("/data/{dataset}/table.csv");
    json!({
        "name": name,
        "inputs": [{"url": format!("basho://datasets/{dataset}/table.csv"), "path": file}],
        "outputs": [{"url": "s3://elsewhere/count.txt", "path": "/results/count.txt"}],
        "executors": [{"image": "basho/demo", "command": ["wc", "-l", file],
                       "workdir": "/work", "env": {"LANG": "C"}}],
        "tags": {"basho_project": "P-0001", "basho_visas": h.visa(sub, dataset), "run": "r1"},
    })
}

async fn post_task(h: &Harness, token: &str, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, &format!("{BASE}/tasks"), token, Some(body))
        .await
}

/// Asserts a TES error: status, and the `{"msg", "status_code"}` body with a message.
fn assert_tes_error(got: &(StatusCode, Value), status: StatusCode, says: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let keys: Vec<&String> = got.1.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["msg", "status_code"], "{}", got.1);
    assert_eq!(got.1["status_code"], status.as_u16());
    let msg = got.1["msg"].as_str().unwrap();
    assert!(msg.contains(says), "{msg:?} does not say {says:?}");
}

#[tokio::test]
async fn service_info_names_the_specification() {
    let (h, _) = harness().await;
    let (s, info) = h
        .raw(
            Method::GET,
            &format!("{BASE}/service-info"),
            None,
            &[],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(
        info["type"],
        json!({"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"})
    );
    assert_eq!(info["storage"], json!(["basho://datasets/"]));
    let description = info["description"].as_str().unwrap();
    assert!(
        description.ends_with("registered sites: fake."),
        "{description}"
    );
    for field in ["id", "name", "version"] {
        assert!(info[field].is_string(), "{field}: {info}");
    }
    assert!(info["organization"]["name"].is_string() && info["organization"]["url"].is_string());
    assert!(info["description"].as_str().unwrap().contains("airlock"));
}

#[tokio::test]
async fn a_task_is_a_batch_workspace_where_its_data_is() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let (s, made) = post_task(&h, &alice, task(&h, "r-1", "JGAD000201", "count-1")).await;
    assert_eq!(s, StatusCode::OK, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made, json!({"id": id}));

    // The workspace: at the site holding the dataset, the executor's image and argv in its
    // assignment, with its working directory and environment.
    let (_, w) = h.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(w["site"], "ncbn");
    assert_eq!(w["template"], "batch");
    assert_eq!(w["datasets"], json!(["JGAD000201"]));
    let (_, desired) = h
        .call(Method::GET, "/v1/agent/desired", &agent_token("ncbn"), None)
        .await;
    let a = &desired["workspaces"][0];
    assert_eq!(a["image"], "basho/demo");
    assert_eq!(
        a["command"],
        json!(["wc", "-l", "/data/JGAD000201/table.csv"])
    );
    assert_eq!(
        a["launch"],
        json!({"workdir": "/work", "env": {"LANG": "C"}, "outputs": ["count.txt"]}),
        "the site takes the outputs into its airlock store as the task ends"
    );

    // Views.
    let get = |view: &str| {
        let path = format!("{BASE}/tasks/{id}{view}");
        let alice = alice.clone();
        let h = &h;
        async move { h.call(Method::GET, &path, &alice, None).await }
    };
    let (s, minimal) = get("").await;
    assert_eq!(s, StatusCode::OK, "{minimal}");
    assert_eq!(
        minimal,
        json!({"id": id, "state": "QUEUED", "executors": []})
    );
    let (_, basic) = get("?view=BASIC").await;
    assert_eq!(basic["name"], "count-1");
    assert_eq!(basic["executors"][0]["image"], "basho/demo");
    assert!(basic["creation_time"].is_string());
    assert!(basic["logs"][0].get("system_logs").is_none(), "{basic}");
    assert!(
        basic["tags"].get("basho_visas").is_none(),
        "visas are never shown: {basic}"
    );
    let (_, full) = get("?view=FULL").await;
    let system = full["logs"][0]["system_logs"].to_string();
    assert!(system.contains("airlock"), "{system}");

    // The workspace's states read as TES states.
    for (state, message, tes) in [
        ("starting", None, "INITIALIZING"),
        ("running", None, "RUNNING"),
        ("failed", Some("exited with code 2"), "EXECUTOR_ERROR"),
    ] {
        let (s, v) = h.observe("ncbn", &[(&id, state, message)]).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, t) = get("?view=FULL").await;
        assert_eq!(t["state"], tes, "{t}");
    }
    let (_, t) = get("?view=FULL").await;
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 2, "{t}");
    assert_eq!(t["logs"][0]["logs"][0]["stdout"], "");
    assert!(t["logs"][0]["end_time"].is_string());

    // Canceling an ended task changes nothing.
    let cancel = format!("{BASE}/tasks/{id}:cancel");
    let got = h.call(Method::POST, &cancel, &alice, None).await;
    assert_tes_error(&got, StatusCode::BAD_REQUEST, "EXECUTOR_ERROR");
    assert_eq!(get("").await.1["state"], "EXECUTOR_ERROR");
}

/// Visas in the `GA4GH-Passport` header: a passport embedding them, or the visas themselves.
#[tokio::test]
async fn visas_come_in_the_passport_header_too() {
    use base64::Engine as _;
    let (h, _) = harness().await;
    let visa = h.visa("r-1", "JGAD000201");
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    // The broker's signature on the passport is not what grants: each visa is verified itself.
    let passport = format!(
        "{}.{}.unsigned",
        b64(json!({"alg": "RS256", "typ": "JWT"})),
        b64(json!({"iss": "https://broker.example", "sub": "r-1", "ga4gh_passport_v1": [visa]}))
    );
    let mut body = task(&h, "r-1", "JGAD000201", "from-header");
    body["tags"].as_object_mut().unwrap().remove("basho_visas");
    for header in [passport.as_str(), visa.as_str()] {
        let (s, made) = h
            .raw(
                Method::POST,
                &format!("{BASE}/tasks"),
                Some(PLATFORM),
                &[("GA4GH-Passport", header)],
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{made}");
        let id = made["id"].as_str().unwrap();
        let (_, w) = h.get(&format!("/v1/workspaces/{id}")).await;
        assert_eq!(
            (w["site"].as_str(), w["owner"].as_str()),
            (Some("ncbn"), Some("r-1"))
        );
    }
    // A passport whose visa does not verify places nothing.
    let forged = h.issuer.mint("r-1", "JGAD000201").replace('.', ".x");
    let got = h
        .raw(
            Method::POST,
            &format!("{BASE}/tasks"),
            Some(PLATFORM),
            &[("GA4GH-Passport", forged.as_str())],
            body.to_string().into_bytes(),
        )
        .await;
    assert!(got.0.is_client_error(), "{}", got.1);
    assert_eq!(h.workspaces().await.len(), 2);
}

#[tokio::test]
async fn a_canceled_task_is_stopped_by_its_site() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let (_, made) = post_task(&h, PLATFORM, task(&h, "r-1", "JGAD000101", "long")).await;
    let id = made["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&id, "running", None)]).await;
    let cancel = format!("{BASE}/tasks/{id}:cancel");
    let (s, v) = h.call(Method::POST, &cancel, &alice, None).await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({})), "{v}");
    let state = async |id: &str| {
        let path = format!("{BASE}/tasks/{id}");
        h.call(Method::GET, &path, &alice, None).await.1["state"].clone()
    };
    assert_eq!(state(&id).await, "CANCELING");
    assert_eq!(h.state(&id).await, "stopping");
    h.observe("tohoku", &[(&id, "stopped", Some("exited with code 143"))])
        .await;
    assert_eq!(state(&id).await, "CANCELED");
    // Cancel is idempotent only while the task runs.
    let got = h.call(Method::POST, &cancel, &alice, None).await;
    assert_tes_error(&got, StatusCode::BAD_REQUEST, "CANCELED");
    // Another researcher neither sees nor cancels it.
    let bob = token(&store, Role::Researcher, Some("r-2")).await;
    let got = h.call(Method::POST, &cancel, &bob, None).await;
    assert_tes_error(&got, StatusCode::NOT_FOUND, "no task");
    let got = h
        .call(Method::GET, &format!("{BASE}/tasks/{id}"), &bob, None)
        .await;
    assert_tes_error(&got, StatusCode::NOT_FOUND, "no task");
    // A revoked task reads as canceled, saying why.
    let (_, made) = post_task(&h, PLATFORM, task(&h, "r-1", "JGAD000101", "other")).await;
    let other = made["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&other, "revoked", Some("visa revoked"))])
        .await;
    let (_, t) = h
        .call(
            Method::GET,
            &format!("{BASE}/tasks/{other}?view=FULL"),
            &alice,
            None,
        )
        .await;
    assert_eq!(t["state"], "CANCELED");
    assert!(
        t["logs"][0]["system_logs"].to_string().contains("revoked"),
        "{t}"
    );
}

#[tokio::test]
async fn an_ended_tasks_outputs_become_its_release_request() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let (_, made) = post_task(&h, &alice, task(&h, "r-1", "JGAD000101", "count")).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let rr = format!("rr-{}", id.strip_prefix("ws-").unwrap());
    h.observe("tohoku", &[(&id, "running", None)]).await;
    let ended = ("stopped", "exited with code 0");
    let (s, v) = h
        .end_task("tohoku", &id, ended, &["count.txt"], &["absent.txt"])
        .await;
    assert_eq!((s, v["applied"].clone()), (StatusCode::OK, json!(1)), "{v}");

    // The release request: the task's owner's, submitted for review, in the audit chain.
    let release = async |id: &str| {
        let path = format!(
            "/v1/release-requests/rr-{}",
            id.strip_prefix("ws-").unwrap()
        );
        h.call(Method::GET, &path, &alice, None).await
    };
    let (s, r) = release(&id).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (&r["workspace"], &r["requester"], &r["state"]),
        (&json!(id), &json!("r-1"), &json!("submitted")),
        "{r}"
    );
    assert_eq!(r["files"][0]["name"], "count.txt");
    let auditor = token(&store, Role::Auditor, None).await;
    let (_, chain) = h
        .call(Method::GET, "/v1/audit?limit=1000", &auditor, None)
        .await;
    let entries = chain["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{chain}"));
    let e = entries
        .iter()
        .find(|e| e["target"] == rr.as_str())
        .unwrap_or_else(|| panic!("no entry for {rr}: {chain}"));
    assert_eq!(
        (&e["actor"], &e["action"], &e["detail"]["automatic"]),
        (
            &json!("agent:tohoku"),
            &json!("release_requested"),
            &json!(true)
        ),
        "{e}"
    );

    // The task: COMPLETE, its output pointing at the release file, the absent one said.
    let (_, t) = h
        .call(
            Method::GET,
            &format!("{BASE}/tasks/{id}?view=FULL"),
            &alice,
            None,
        )
        .await;
    assert_eq!(t["state"], "COMPLETE", "{t}");
    let url = format!("/v1/release-requests/{rr}/files/count.txt");
    assert_eq!(t["outputs"][0]["url"], url.as_str(), "{t}");
    assert_eq!(
        t["logs"][0]["outputs"],
        json!([{"url": url, "path": "/results/count.txt", "size_bytes": "9"}])
    );
    let system = t["logs"][0]["system_logs"].to_string();
    assert!(
        system.contains("absent.txt") && system.contains(&rr),
        "{system}"
    );
    assert_eq!(t["logs"][0]["logs"][0]["exit_code"], 0, "{t}");
    // Not downloadable before two checkers approve.
    let (s, _) = h.call(Method::GET, &url, &alice, None).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The same report again changes nothing; a canceled task's end releases nothing.
    let (_, v) = h.end_task("tohoku", &id, ended, &["other.txt"], &[]).await;
    assert_eq!(v["applied"], 0, "{v}");
    let (_, r2) = release(&id).await;
    assert_eq!(r2["files"], r["files"]);
    let (_, made) = post_task(&h, &alice, task(&h, "r-1", "JGAD000101", "canceled")).await;
    let other = made["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&other, "running", None)]).await;
    let cancel = format!("{BASE}/tasks/{other}:cancel");
    assert_eq!(
        h.call(Method::POST, &cancel, &alice, None).await.0,
        StatusCode::OK
    );
    h.end_task(
        "tohoku",
        &other,
        ("stopped", "exited with code 143"),
        &["count.txt"],
        &[],
    )
    .await;
    let (s, _) = release(&other).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_task_reading_no_dataset_needs_no_visa() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let body = json!({
        "name": "no-data",
        "inputs": [{"path": "/work/run.sh", "content": "echo hi > /results/hi.txt\n"}],
        "executors": [{"image": "basho/demo", "command": ["sh", "/work/run.sh"]}],
        "tags": {"basho_project": "P-0001"},
    });
    let (s, made) = post_task(&h, &alice, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let (_, w) = h.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(
        (&w["owner"], &w["datasets"]),
        (&json!("r-1"), &json!([])),
        "{w}"
    );
    // The site is sent no visa and mounts nothing; its own check lets only this kind through.
    let site = w["site"].as_str().unwrap().to_owned();
    let (_, desired) = h
        .call(Method::GET, "/v1/agent/desired", &agent_token(&site), None)
        .await;
    let a = &desired["workspaces"][0];
    assert_eq!(
        (&a["visas"], &a["datasets"]),
        (&json!([]), &json!([])),
        "{a}"
    );
    // Revoking its owner ends it, and refuses the next.
    let revoke = json!({"subject": "r-1", "reason": "consent-withdrawn"});
    let (s, v) = h
        .call(Method::POST, "/v1/revocations", PLATFORM, Some(revoke))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["affected"], json!([id]), "{v}");
    let got = post_task(&h, &alice, body).await;
    assert_tes_error(&got, StatusCode::FORBIDDEN, "revoked");
}

#[tokio::test]
async fn tasks_are_listed_in_pages_newest_first_and_filtered() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let bob = token(&store, Role::Researcher, Some("r-2")).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let name = if i % 2 == 0 {
            format!("align-{i}")
        } else {
            format!("count-{i}")
        };
        let (s, made) = post_task(&h, &alice, task(&h, "r-1", "JGAD000101", &name)).await;
        assert_eq!(s, StatusCode::OK, "{made}");
        ids.push(made["id"].as_str().unwrap().to_owned());
    }
    let (_, made) = post_task(&h, &bob, task(&h, "r-2", "JGAD000101", "bobs")).await;
    let bobs = made["id"].as_str().unwrap().to_owned();
    h.observe("tohoku", &[(&ids[0], "running", None)]).await;

    let list = |token: String, query: String| {
        let h = &h;
        async move {
            h.call(Method::GET, &format!("{BASE}/tasks{query}"), &token, None)
                .await
        }
    };
    // Pages of three, newest first, until no next_page_token; alice's own only.
    let mut seen = Vec::new();
    let mut query = "?page_size=3".to_owned();
    loop {
        let (s, page) = list(alice.clone(), query.clone()).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for t in page["tasks"].as_array().unwrap() {
            assert_eq!(t.as_object().unwrap().len(), 3, "MINIMAL: {t}");
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
        match page["next_page_token"].as_str() {
            Some(next) => query = format!("?page_size=3&page_token={next}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // The platform sees bob's too.
    let (_, all) = list(PLATFORM.into(), String::new()).await;
    assert_eq!(all["tasks"][0]["id"], bobs);
    assert_eq!(all["tasks"].as_array().unwrap().len(), 8);
    // Filters.
    let count = |v: &Value| v["tasks"].as_array().unwrap().len();
    let (_, v) = list(alice.clone(), "?name_prefix=align".into()).await;
    assert_eq!(count(&v), 4);
    let (_, v) = list(alice.clone(), "?state=RUNNING".into()).await;
    assert_eq!(
        v["tasks"],
        json!([{"id": ids[0], "state": "RUNNING", "executors": []}])
    );
    let (_, v) = list(alice.clone(), "?state=QUEUED&view=BASIC".into()).await;
    assert_eq!(count(&v), 6);
    assert!(v["tasks"][0]["name"].is_string());
    let (_, v) = list(alice.clone(), "?tag_key=run&tag_value=r1".into()).await;
    assert_eq!(count(&v), 7);
    let (_, v) = list(alice.clone(), "?tag_key=run&tag_value=r2".into()).await;
    assert_eq!(count(&v), 0);
}

#[tokio::test]
async fn bad_requests_get_a_tes_error_and_create_nothing() {
    let (h, store) = harness().await;
    let alice = token(&store, Role::Researcher, Some("r-1")).await;
    let auditor = token(&store, Role::Auditor, None).await;
    let checker = token(&store, Role::OutputChecker, Some("carol")).await;
    let good = task(&h, "r-1", "JGAD000101", "good");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut t = good.clone();
        change(&mut t);
        t
    };
    let creates: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "not JSON",
            PLATFORM,
            json!("{"),
            StatusCode::BAD_REQUEST,
            "not a TES task",
        ),
        (
            "no executors",
            PLATFORM,
            with(&|t| t["executors"] = json!([])),
            StatusCode::BAD_REQUEST,
            "at least one",
        ),
        (
            "file url",
            PLATFORM,
            with(&|t| t["inputs"][0]["url"] = json!("file:///etc/passwd")),
            StatusCode::BAD_REQUEST,
            "fetches nothing",
        ),
        (
            "http url",
            PLATFORM,
            with(&|t| t["inputs"][0]["url"] = json!("http://evil.example/x")),
            StatusCode::BAD_REQUEST,
            "fetches nothing",
        ),
        (
            "url with ..",
            PLATFORM,
            with(&|t| t["inputs"][0]["url"] = json!("basho://datasets/JGAD000101/../x")),
            StatusCode::BAD_REQUEST,
            "..",
        ),
        (
            "output outside /results",
            PLATFORM,
            with(&|t| t["outputs"][0]["path"] = json!("/etc/x")),
            StatusCode::BAD_REQUEST,
            "/results",
        ),
        (
            "image not allowed",
            PLATFORM,
            with(&|t| t["executors"][0]["image"] = json!("evil/miner")),
            StatusCode::BAD_REQUEST,
            "allow-list",
        ),
        (
            "no visas",
            PLATFORM,
            with(&|t| {
                t["tags"].as_object_mut().unwrap().remove("basho_visas");
            }),
            StatusCode::BAD_REQUEST,
            "no visas",
        ),
        (
            "no visas from a researcher, reading a dataset",
            alice.as_str(),
            with(&|t| {
                t["tags"].as_object_mut().unwrap().remove("basho_visas");
            }),
            StatusCode::BAD_REQUEST,
            "no visas",
        ),
        (
            "no visas and no dataset, from the platform: no owner",
            PLATFORM,
            with(&|t| {
                t["tags"].as_object_mut().unwrap().remove("basho_visas");
                t.as_object_mut().unwrap().remove("inputs");
            }),
            StatusCode::BAD_REQUEST,
            "researcher token",
        ),
        (
            "forged visa",
            PLATFORM,
            with(&|t| t["tags"]["basho_visas"] = json!("e30.e30.sig")),
            StatusCode::FORBIDDEN,
            "visa",
        ),
        (
            "no project",
            PLATFORM,
            with(&|t| {
                t["tags"].as_object_mut().unwrap().remove("basho_project");
            }),
            StatusCode::BAD_REQUEST,
            "no project",
        ),
        (
            "someone else's visas",
            &alice,
            task(&h, "r-2", "JGAD000101", "x"),
            StatusCode::FORBIDDEN,
            "own visas",
        ),
        (
            "an auditor creates",
            &auditor,
            good.clone(),
            StatusCode::FORBIDDEN,
            "platform",
        ),
        (
            "a checker creates",
            &checker,
            good.clone(),
            StatusCode::FORBIDDEN,
            "platform",
        ),
        (
            "no token",
            "",
            good.clone(),
            StatusCode::UNAUTHORIZED,
            "token",
        ),
        (
            "datasets at two sites",
            PLATFORM,
            with(&|t| {
                t["inputs"] = json!([
                {"url": "basho://datasets/JGAD000101/a", "path": "/data/JGAD000101/a"},
                {"url": "basho://datasets/JGAD000201/b", "path": "/data/JGAD000201/b"}]);
                let visas = format!(
                    "{},{}",
                    h.visa("r-1", "JGAD000101"),
                    h.visa("r-1", "JGAD000201")
                );
                t["tags"]["basho_visas"] = json!(visas);
            }),
            StatusCode::CONFLICT,
            "site",
        ),
    ];
    for (what, token, body, status, says) in creates {
        let bytes = match &body {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let token = (!token.is_empty()).then_some(token);
        let got = h
            .raw(Method::POST, &format!("{BASE}/tasks"), token, &[], bytes)
            .await;
        assert_eq!(got.0, status, "{what}: {}", got.1);
        assert_tes_error(&got, status, says);
    }
    assert!(
        h.workspaces().await.is_empty(),
        "a refused task created a workspace"
    );

    let lists = [
        ("?view=EVERYTHING", "MINIMAL"),
        ("?page_size=0", "page_size"),
        ("?page_size=-5", "page_size"),
        ("?page_size=2049", "page_size"),
        ("?page_size=many", "whole number"),
        ("?page_token=tes1.AAAA", "not made by this server"),
        ("?page_token=garbage", "not made by this server"),
        ("?state=DONE", "not a TES state"),
        ("?tag_value=x", "tag_value"),
        ("?color=red", "unknown query parameter"),
        ("?view=FULL&view=BASIC", "more than once"),
    ];
    for (query, says) in lists {
        let got = h
            .call(Method::GET, &format!("{BASE}/tasks{query}"), PLATFORM, None)
            .await;
        assert_tes_error(&got, StatusCode::BAD_REQUEST, says);
    }
    let others = [
        (
            Method::GET,
            "/tasks".to_owned(),
            &checker,
            StatusCode::FORBIDDEN,
            "reads no tasks",
        ),
        (
            Method::GET,
            "/tasks/ws-none?view=ALL".into(),
            &PLATFORM.to_owned(),
            StatusCode::BAD_REQUEST,
            "MINIMAL",
        ),
        (
            Method::GET,
            "/tasks/ws-none".into(),
            &PLATFORM.to_owned(),
            StatusCode::NOT_FOUND,
            "no task",
        ),
        (
            Method::POST,
            "/tasks/ws-none:cancel".into(),
            &PLATFORM.to_owned(),
            StatusCode::NOT_FOUND,
            "no task",
        ),
    ];
    for (method, path, token, status, says) in others {
        let got = h.call(method, &format!("{BASE}{path}"), token, None).await;
        assert_tes_error(&got, status, says);
    }
}
