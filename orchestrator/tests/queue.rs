//! The queue through the API: a workspace no site can start now waits, shows its place and why,
//! and is placed when compute frees, in priority and arrival order; bad input is refused; who
//! may set a priority; the queue across a restart.

mod common;

use axum::http::{Method, StatusCode};
use basho_orchestrator::Orchestrator;
use basho_orchestrator::store::{Role, SqliteStore};
use common::*;
use serde_json::{Value, json};

/// One site, tohoku, with 4 cores (the demo's other sites are not registered), on a database
/// file.
async fn one_site() -> Harness {
    let h = Harness::with(|c| c.database = None).await;
    h.register("tohoku", &["JGAD000101"], 4, 16384).await;
    h
}

/// A platform GET through another orchestrator's router.
async fn get_on(o: &Orchestrator, path: &str) -> Value {
    use tower::ServiceExt as _;
    let req = axum::http::Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {PLATFORM}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = o.router().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn sized(h: &Harness, project: &str, cpus: u32) -> Value {
    let mut b = h.body(&["JGAD000101"]);
    b["project"] = json!(project);
    b["resources"] = json!({"cpus": cpus, "memory_mib": 512});
    b
}

async fn created(h: &Harness, body: Value, state: &str) -> Value {
    let (status, w) = h.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(w["state"], state, "{w}");
    w
}

fn id(w: &Value) -> String {
    w["id"].as_str().unwrap().to_owned()
}

async fn show(h: &Harness, id: &str) -> Value {
    let (status, w) = h.get(&format!("/v1/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    w
}

/// Ends a placed workspace as its agent would: deleted, then reported stopped.
async fn end(h: &Harness, id: &str) {
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{id}"),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = h.observe("tohoku", &[(id, "stopped", None)]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

async fn pass(h: &Harness) -> usize {
    basho_orchestrator::queue::pass(&h.orchestrator)
        .await
        .unwrap()
}

async fn audit_actions(h: &Harness, target: &str) -> Vec<String> {
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    let auditor = token(&store, Role::Auditor, None).await;
    let (status, page) = h
        .call(Method::GET, "/v1/audit?limit=1000", &auditor, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target)
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_full_site_queues_and_places_in_arrival_order() {
    let h = one_site().await;
    let big = created(&h, sized(&h, "P-0001", 4), "placed").await;
    let w2 = created(&h, sized(&h, "P-0001", 2), "queued").await;
    let w3 = created(&h, sized(&h, "P-0001", 2), "queued").await;
    let msg = w2["message"].as_str().unwrap();
    assert!(msg.contains("site tohoku: 0 of 4 cpus free"), "{msg}");
    assert_eq!(w2["site"], "tohoku", "the site it waits for");

    assert_eq!(pass(&h).await, 0, "nothing fits yet");
    let q = show(&h, &id(&w2)).await;
    assert_eq!(q["queue"]["position"], 1, "{q}");
    assert_eq!(q["queue"]["length"], 2, "{q}");
    assert_eq!(show(&h, &id(&w3)).await["queue"]["position"], 2);
    // Nothing queued is in the site's desired state.
    let (_, d) = h
        .call(
            Method::GET,
            "/v1/agent/desired?site=tohoku",
            &agent_token("tohoku"),
            None,
        )
        .await;
    assert_eq!(d["workspaces"].as_array().unwrap().len(), 1, "{d}");
    let (_, sites) = h.get("/v1/sites").await;
    assert_eq!(sites[0]["allocated"]["cpus"], 4, "queued hold nothing");

    end(&h, &id(&big)).await;
    assert_eq!(pass(&h).await, 2);
    for w in [&w2, &w3] {
        let w = show(&h, &id(w)).await;
        assert_eq!(w["state"], "placed", "{w}");
        assert!(w.get("queue").is_none(), "{w}");
    }
    let actions = audit_actions(&h, &id(&w2)).await;
    assert_eq!(
        actions,
        ["workspace_create", "workspace_queued", "workspace_placed"]
    );
}

#[tokio::test]
async fn priority_goes_first_and_the_head_holds_its_site() {
    let h = one_site().await;
    let a = created(&h, sized(&h, "P-0001", 2), "placed").await;
    let _b = created(&h, sized(&h, "P-0001", 2), "placed").await;
    let low = created(&h, sized(&h, "P-0001", 2), "queued").await;
    let high = created(&h, sized(&h, "P-0002", 2), "queued").await;
    let (status, s) = h
        .call(
            Method::PUT,
            "/v1/projects/P-0002/scheduling",
            PLATFORM,
            Some(json!({"priority": 90, "share": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(
        (s["priority"].as_u64(), s["queued"].as_u64()),
        (Some(90), Some(1))
    );

    end(&h, &id(&a)).await;
    assert_eq!(pass(&h).await, 1);
    assert_eq!(show(&h, &id(&high)).await["state"], "placed");
    let w = show(&h, &id(&low)).await;
    assert_eq!(w["state"], "queued");
    assert_eq!(w["queue"]["position"], 1);

    // A large workspace at the head holds the site: a small one behind it does not pass it.
    let huge = created(&h, sized(&h, "P-0002", 4), "queued").await;
    let (_, s) = h
        .call(
            Method::PUT,
            "/v1/projects/P-0001/scheduling",
            PLATFORM,
            Some(json!({"priority": 10, "share": 1})),
        )
        .await;
    assert_eq!(s["priority"], 10);
    // Two cores free: enough for the small one, not for the head.
    end(&h, &id(&high)).await;
    assert_eq!(pass(&h).await, 0);
    let small = show(&h, &id(&low)).await;
    assert_eq!(small["queue"]["position"], 2, "{small}");
    let reason = small["queue"]["reason"].as_str().unwrap();
    assert!(reason.contains("held for workspaces ahead"), "{reason}");
    assert!(
        show(&h, &id(&huge)).await["queue"]["reason"]
            .as_str()
            .unwrap()
            .contains("2 of 4 cpus free")
    );
}

#[tokio::test]
async fn waits_end_and_bad_input_is_refused() {
    let h = one_site().await;
    created(&h, sized(&h, "P-0001", 4), "placed").await;
    // 0: refused at once, as before queues.
    let mut now = sized(&h, "P-0001", 1);
    now["max_queue_s"] = json!(0);
    let msg = refused_kept(&h, now, StatusCode::CONFLICT, "insufficient_capacity").await;
    assert!(msg.contains("tohoku 0 cpus"), "{msg}");
    // Larger than any site could hold: refused, never queued.
    let msg = refused_kept(
        &h,
        sized(&h, "P-0001", 8),
        StatusCode::CONFLICT,
        "insufficient_capacity",
    )
    .await;
    assert!(msg.contains("8 cpus"), "{msg}");
    let mut long = sized(&h, "P-0001", 1);
    long["max_queue_s"] = json!(604_801);
    let msg = refused_kept(
        &h,
        long,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("7 days"), "{msg}");

    // Past its max_queue_s it expires, saying why.
    let mut short = sized(&h, "P-0001", 1);
    short["max_queue_s"] = json!(1);
    let w = created(&h, short, "queued").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    basho_orchestrator::expiry::expire_once(&h.orchestrator)
        .await
        .unwrap();
    let w = show(&h, &id(&w)).await;
    assert_eq!(w["state"], "expired", "{w}");
    let msg = w["message"].as_str().unwrap();
    assert!(msg.contains("left the queue unplaced"), "{msg}");
    assert!(msg.contains("0 of 4 cpus free"), "{msg}");

    // Deleted while queued: stopped at once, and never placed.
    let q = created(&h, sized(&h, "P-0001", 1), "queued").await;
    let (status, v) = h
        .call(
            Method::DELETE,
            &format!("/v1/workspaces/{}", id(&q)),
            PLATFORM,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["message"], "deleted while queued");
}

/// A refusal that leaves what was there before (one placed workspace and any queued ones).
async fn refused_kept(h: &Harness, body: Value, status: StatusCode, code: &str) -> String {
    let before = h.workspaces().await.len();
    let got = h.create(body).await;
    assert_error(&got, status, code);
    assert_eq!(h.workspaces().await.len(), before, "nothing was stored");
    got.1["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn only_the_platform_sets_a_priority_within_range() {
    let h = Harness::with(|c| c.database = None).await;
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    let admin = token(&store, Role::Admin, None).await;
    let auditor = token(&store, Role::Auditor, None).await;
    let researcher = token(&store, Role::Researcher, Some("r-1")).await;
    let path = "/v1/projects/P-0001/scheduling";
    let good = json!({"priority": 60, "share": 2});
    for t in [admin.as_str(), auditor.as_str(), researcher.as_str()] {
        let got = h.call(Method::PUT, path, t, Some(good.clone())).await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    }
    for bad in [
        json!({"priority": 101, "share": 1}),
        json!({"priority": 50, "share": 0}),
        json!({"priority": 50, "share": 10001}),
        json!({"priority": -1, "share": 1}),
        json!({"priority": 50}),
        json!({"priority": 50, "share": 1, "weight": 3}),
    ] {
        let got = h.call(Method::PUT, path, PLATFORM, Some(bad.clone())).await;
        assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", got.1);
    }
    let got = h.call(Method::GET, path, PLATFORM, None).await;
    assert_eq!(
        (got.1["priority"].as_u64(), got.1["share"].as_u64()),
        (Some(50), Some(1))
    );
    let got = h.call(Method::PUT, path, PLATFORM, Some(good)).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    for t in [admin.as_str(), auditor.as_str()] {
        let got = h.call(Method::GET, path, t, None).await;
        assert_eq!(
            (got.0, got.1["priority"].as_u64()),
            (StatusCode::OK, Some(60))
        );
    }
    let got = h.call(Method::GET, path, &researcher, None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn the_queue_survives_a_restart_in_order() {
    let h = Harness::with(|c| c.database = None).await;
    h.register("tohoku", &["JGAD000101"], 4, 16384).await;
    let big = created(&h, sized(&h, "P-0001", 4), "placed").await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(id(&created(&h, sized(&h, "P-0001", 2), "queued").await));
    }
    // The same database, opened again as after a restart: order and positions kept.
    let again = Orchestrator::open(h.config.clone()).await.unwrap();
    assert_eq!(basho_orchestrator::queue::pass(&again).await.unwrap(), 0);
    for (i, q) in queued.iter().enumerate() {
        let w = get_on(&again, &format!("/v1/workspaces/{q}")).await;
        assert_eq!(w["state"], "queued");
        assert_eq!(w["queue"]["position"], i + 1, "{w}");
    }
    // The first one's compute frees, and the orchestrator restarts again: the next two in
    // order are placed, the last waits.
    end(&h, &id(&big)).await;
    let again = Orchestrator::open(h.config.clone()).await.unwrap();
    assert_eq!(basho_orchestrator::queue::pass(&again).await.unwrap(), 2);
    let states: Vec<Value> = {
        let mut v = Vec::new();
        for q in &queued {
            v.push(get_on(&again, &format!("/v1/workspaces/{q}")).await["state"].clone());
        }
        v
    };
    assert_eq!(states, [json!("placed"), json!("placed"), json!("queued")]);
}

async fn report(h: &Harness, site: &str, as_site: &str, body: Value) -> (StatusCode, Value) {
    let mut body = body;
    body["site"] = json!(site);
    h.call(
        Method::PUT,
        "/v1/agent/capacity",
        &agent_token(as_site),
        Some(body),
    )
    .await
}

/// A site's live report bounds placement: what it withholds (quiet hours, its own users' load)
/// queues work with the site's reason, and giving it back places the queue at once. The
/// ceiling, not the live figure, decides what may wait at all.
#[tokio::test]
async fn a_site_s_live_capacity_bounds_placement_and_its_ceiling_what_may_wait() {
    let h = one_site().await;
    let mut reg = registration("tohoku", &["JGAD000101"], 8, 16384);
    reg["ceiling"] = json!({"cpus": 4, "memory_mib": 8192, "gpus": 0});
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/agent/register",
            &agent_token("tohoku"),
            Some(reg.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("above the site's ceiling")
    );
    reg["capacity"] = json!({"cpus": 4, "memory_mib": 8192, "gpus": 0});
    h.register_as("tohoku", reg).await;

    let quiet = json!({"capacity": {"cpus": 0, "memory_mib": 0, "gpus": 0},
        "note": "quiet hours mon,tue,wed,thu,fri 09:00-18:00 +09:00"});
    let (status, v) = report(&h, "tohoku", "tohoku", quiet).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let site = h.site("tohoku").await;
    assert_eq!(site["capacity"]["cpus"], 0, "{site}");
    assert_eq!(site["ceiling"]["cpus"], 4, "{site}");
    assert!(
        site["capacity_note"]
            .as_str()
            .unwrap()
            .starts_with("quiet hours")
    );

    let w = created(&h, sized(&h, "P-0001", 2), "queued").await;
    let msg = w["message"].as_str().unwrap();
    assert!(
        msg.contains("site tohoku: 0 of 0 cpus") && msg.contains("(quiet hours mon,"),
        "{msg}"
    );
    // Larger than the ceiling: refused at once, even though the registered peak was 8.
    let (status, v) = h.create(sized(&h, "P-0001", 6)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // Bad reports change nothing.
    let above = json!({"capacity": {"cpus": 5, "memory_mib": 1024, "gpus": 0}});
    let (status, v) = report(&h, "tohoku", "tohoku", above).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let ok = json!({"capacity": {"cpus": 4, "memory_mib": 8192, "gpus": 0}});
    let (status, _) = report(&h, "tohoku", "ncbn", ok.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another site's token");
    let (status, v) = report(&h, "ncbn", "ncbn", ok.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "not_registered");
    let mut bad_note = ok.clone();
    bad_note["note"] = json!("line\nbreak");
    let (status, _) = report(&h, "tohoku", "tohoku", bad_note).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut unknown = ok.clone();
    unknown["spare"] = json!(1);
    let (status, _) = report(&h, "tohoku", "tohoku", unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(show(&h, &id(&w)).await["state"], "queued");

    // The site's own users leave 2 cores: the next pass (the report wakes it) places the
    // queued workspace there.
    let busy = json!({"capacity": {"cpus": 2, "memory_mib": 8192, "gpus": 0},
        "note": "the site's own work holds 6 of 8 cpus"});
    let (status, _) = report(&h, "tohoku", "tohoku", busy).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(pass(&h).await, 1);
    let placed = show(&h, &id(&w)).await;
    assert_eq!(placed["state"], "placed", "{placed}");
    let next = created(&h, sized(&h, "P-0001", 1), "queued").await;
    assert!(
        next["message"]
            .as_str()
            .unwrap()
            .contains("(the site's own work holds 6 of 8 cpus)"),
        "{next}"
    );
    // A re-registration carries the agent's latest offer, and the store keeps it.
    let store = SqliteStore::open(None, &h.config.data_dir).await.unwrap();
    let stored = basho_orchestrator::store::Store::sites(&store)
        .await
        .unwrap();
    assert_eq!(stored[0].registration.capacity.cpus, 2);
    assert_eq!(stored[0].registration.ceiling.unwrap().cpus, 4);
}
