//! Two orchestrator replicas on one PostgreSQL database, each serving the API on its own port:
//! both answer any request, exactly one leads (runs expiry, the silent-agent sweep and quotas),
//! a long-poll on one wakes on the other's change, and when the leader dies the other takes over
//! without losing or repeating work. Needs the server `scripts/postgres-up` starts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basho_core::audit::verify_chain;
use basho_core::visa::mint::Issuer;
use basho_orchestrator::Orchestrator;
use basho_orchestrator::config::Config;
use basho_orchestrator::store::postgres::testdb::TestDatabase;
use basho_orchestrator::store::{AuditStore as _, PostgresStore};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One replica serving on 127.0.0.1:<ephemeral>.
struct Replica {
    name: &'static str,
    base: String,
    orchestrator: Orchestrator,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), basho_orchestrator::Error>>,
}

impl Replica {
    async fn start(name: &'static str, config: Config) -> Replica {
        let orchestrator = Orchestrator::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(orchestrator.clone().serve(listener, stop.clone()));
        Replica {
            name,
            base,
            orchestrator,
            stop,
            task,
        }
    }

    /// Stops serving and drops everything the replica held: its pool, its listener and the
    /// leader lock's connection.
    async fn kill(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        drop(self.orchestrator);
    }

    async fn leader_metric(&self, http: &reqwest::Client) -> u8 {
        let text = http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(PLATFORM)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("basho_leader "))
            .unwrap_or_else(|| panic!("no basho_leader in /metrics of {}", self.name));
        line["basho_leader ".len()..].trim().parse().unwrap()
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> (StatusCode, Value) {
    call(http, reqwest::Method::GET, url, token, None, None).await
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

struct Bed {
    db: TestDatabase,
    issuer: Issuer,
    config: Config,
    _dir: tempfile::TempDir,
}

fn bed(db: TestDatabase) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate(ISSUER);
    let mut config = config(dir.path(), &issuer);
    config.database = Some(db.url.clone());
    Bed {
        db,
        issuer,
        config,
        _dir: dir,
    }
}

fn body(issuer: &Issuer, duration_s: u64) -> Value {
    json!({"project": "P-1", "template": "shell", "duration_s": duration_s,
        "visas": [issuer.mint("r-1", "JGAD000101")]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_serve_one_leads_and_failover_loses_and_repeats_nothing() {
    let bed = bed(TestDatabase::create().await);
    let http = reqwest::Client::new();
    let a = Replica::start("a", bed.config.clone()).await;
    wait_until("replica a leads", Duration::from_secs(10), async || {
        a.orchestrator.is_leader()
    })
    .await;
    let b = Replica::start("b", bed.config.clone()).await;
    // Give b a few tries at the lock: it must stay a follower.
    tokio::time::sleep(basho_orchestrator::replicas::LEADER_RETRY * 2).await;
    assert_eq!(
        (a.leader_metric(&http).await, b.leader_metric(&http).await),
        (1, 0),
        "exactly one replica leads"
    );

    // A site registered through a reaches b.
    let reg = registration("tohoku", &["JGAD000101"], 64, 1 << 20);
    let agent = agent_token("tohoku");
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/agent/register", a.base),
        &agent,
        None,
        Some(&reg),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let site_lag = wait_until("b knows the site", Duration::from_secs(10), async || {
        let (_, sites) = get(&http, format!("{}/v1/sites", b.base), PLATFORM).await;
        sites
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["name"] == "tohoku"))
    })
    .await;

    // The same Idempotency-Key sent to both replicas at once makes one workspace.
    let mut tasks = Vec::new();
    for i in 0..20 {
        // One request, sent twice: the retry of a client that does not know which replica took it.
        let request = body(&bed.issuer, 3600);
        for base in [a.base.clone(), b.base.clone()] {
            let http = http.clone();
            let body = request.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("key-{i}");
                let (status, v) = call(
                    &http,
                    reqwest::Method::POST,
                    format!("{base}/v1/workspaces"),
                    PLATFORM,
                    Some(&key),
                    Some(&body),
                )
                .await;
                assert!(status.is_success(), "{status} {v}");
                (key, v["id"].as_str().unwrap().to_owned())
            }));
        }
    }
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks {
        let (k, id) = t.await.unwrap();
        by_key.entry(k).or_default().push(id);
    }
    for (k, ids) in &by_key {
        assert!(ids.iter().all(|id| *id == ids[0]), "key {k} made {ids:?}");
    }
    let (_, listed) = get(&http, format!("{}/v1/workspaces", b.base), PLATFORM).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        20,
        "one workspace per key"
    );
    // Either replica reads what the other wrote.
    for ids in by_key.values() {
        for base in [&a.base, &b.base] {
            let (status, _) =
                get(&http, format!("{base}/v1/workspaces/{}", ids[0]), PLATFORM).await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    // A long-poll on b wakes when a changes the site's desired state.
    let (_, now) = get(
        &http,
        format!("{}/v1/agent/desired?site=tohoku", b.base),
        &agent,
    )
    .await;
    let rev = now["revision"].as_i64().unwrap();
    let poll = {
        let (http, base, agent) = (http.clone(), b.base.clone(), agent.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let (_, v) = get(
                &http,
                format!("{base}/v1/agent/desired?site=tohoku&after={rev}&wait_s=25"),
                &agent,
            )
            .await;
            (t.elapsed(), v)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let woke_by = Instant::now();
    let (status, made) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/workspaces", a.base),
        PLATFORM,
        None,
        Some(&body(&bed.issuer, 3600)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (_, woke) = poll.await.unwrap();
    let wake_lag = woke_by.elapsed();
    assert!(woke["revision"].as_i64().unwrap() > rev);
    assert!(
        woke["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == made["id"]),
        "b's answer carries a's new workspace: {woke}"
    );
    assert!(
        wake_lag < Duration::from_secs(20),
        "b's long-poll slept through a's change"
    );

    // A revocation recorded through a reaches b's deny-list.
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/revocations", a.base),
        PLATFORM,
        None,
        Some(&json!({"subject": "someone-else", "reason": "other"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let deny_lag = wait_until(
        "b's deny-list has a's revocation",
        Duration::from_secs(10),
        async || {
            let (_, d) = get(
                &http,
                format!("{}/v1/agent/desired?site=tohoku", b.base),
                &agent,
            )
            .await;
            d["revocations"].as_array().is_some_and(|r| r.len() == 1)
        },
    )
    .await;

    // Workspaces whose expiry falls in the failover: the leader dies just before they are due.
    let mut expiring = Vec::new();
    for i in 0..10 {
        let (status, v) = call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/workspaces", b.base),
            PLATFORM,
            Some(&format!("expiring-{i}")),
            Some(&body(&bed.issuer, 2)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        expiring.push(v["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired_list = async |base: &str| {
        let (_, l) = get(
            &http,
            format!("{base}/v1/workspaces?state=expired"),
            PLATFORM,
        )
        .await;
        l.as_array().map_or(0, Vec::len)
    };
    let before_kill = expired_list(&b.base).await;
    let killed = Instant::now();
    a.kill().await;
    let takeover = wait_until("b takes over", Duration::from_secs(15), async || {
        b.orchestrator.is_leader()
    })
    .await;
    let takeover_total = killed.elapsed();
    assert_eq!(b.leader_metric(&http).await, 1);
    wait_until(
        "every expiring workspace expired",
        Duration::from_secs(15),
        async || {
            let (_, l) = get(
                &http,
                format!("{}/v1/workspaces?state=expired", b.base),
                PLATFORM,
            )
            .await;
            l.as_array().is_some_and(|l| l.len() == expiring.len())
        },
    )
    .await;
    // Creates keep working on the survivor, and nothing acknowledged before the kill is lost.
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/workspaces", b.base),
        PLATFORM,
        None,
        Some(&body(&bed.issuer, 3600)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, all) = get(&http, format!("{}/v1/workspaces", b.base), PLATFORM).await;
    let all = all.as_array().unwrap().len();
    assert_eq!(all, 20 + 1 + 10 + 1, "lost: none");
    b.kill().await;

    // The audit chain, written by both replicas, verifies; each expiry is recorded once.
    let store = PostgresStore::open_with(&bed.db.url, 2).await.unwrap();
    let entries = store.audit_page(0, 100_000).await.unwrap();
    assert_eq!(verify_chain(&entries), Ok(entries.len()));
    let mut expired: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &entries {
        if e.action == "workspace_state" && e.detail["to"] == "expired" {
            *expired.entry(e.target.as_str()).or_default() += 1;
        }
    }
    let duplicated = expired.values().filter(|n| **n > 1).count();
    let lost = expiring
        .iter()
        .filter(|id| !expired.contains_key(id.as_str()))
        .count();
    assert_eq!((lost, duplicated), (0, 0), "expiries: {expired:?}");
    let created = entries
        .iter()
        .filter(|e| e.action == "workspace_create")
        .count();
    store.close().await;
    println!(
        "replicas: site seen by the other replica after {site_lag:?}; long-poll woken {wake_lag:?} \
         after the other replica's create; revocation in the other's deny-list after {deny_lag:?}; \
         leader killed, follower leads after {takeover:?} ({takeover_total:?} including the \
         shutdown); {} expiries across the failover ({before_kill} done by the old leader): lost 0, \
         duplicated 0; {created} creates \
         audited, {} audit entries from both replicas verify",
        expiring.len(),
        entries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_its_lock_connection_steps_down() {
    let bed = bed(TestDatabase::create().await);
    let a = Replica::start("a", bed.config.clone()).await;
    let b = Replica::start("b", bed.config.clone()).await;
    let both = [&a, &b];
    wait_until("one replica leads", Duration::from_secs(10), async || {
        both.iter().any(|r| r.orchestrator.is_leader())
    })
    .await;
    let leader = both.iter().find(|r| r.orchestrator.is_leader()).unwrap();
    let mut steps = leader.orchestrator.leadership();
    assert!(*steps.borrow_and_update());
    // The server ends the leader's session, as when its network or its host fails.
    let admin = PostgresStore::open_with(&bed.db.url, 1).await.unwrap();
    let cut = Instant::now();
    let ended: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'basho-orchestrator-leader' AND datname = current_database()",
    )
    .fetch_one(admin.pool())
    .await
    .unwrap();
    assert!(ended >= 1);
    tokio::time::timeout(Duration::from_secs(5), steps.wait_for(|l| !*l))
        .await
        .expect("the leader steps down within seconds")
        .unwrap();
    let stepped_down = cut.elapsed();
    wait_until("a leader again", Duration::from_secs(15), async || {
        both.iter().filter(|r| r.orchestrator.is_leader()).count() == 1
    })
    .await;
    let new_leader = cut.elapsed();
    // And it stays exactly one.
    for _ in 0..20 {
        assert_eq!(
            both.iter().filter(|r| r.orchestrator.is_leader()).count(),
            1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "lock connection cut: stepped down after {stepped_down:?}, one leader again after {new_leader:?}"
    );
    admin.close().await;
    a.kill().await;
    b.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_overbook_a_site() {
    let bed = bed(TestDatabase::create().await);
    let http = reqwest::Client::new();
    let a = Replica::start("a", bed.config.clone()).await;
    let b = Replica::start("b", bed.config.clone()).await;
    // Room for three workspaces of 2 cpus at tohoku and one at ncbn, both holding the dataset.
    for (site, cpus) in [("tohoku", 6), ("ncbn", 2)] {
        let reg = registration(site, &["JGAD000101"], cpus, 1 << 20);
        let (status, v) = call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/agent/register", a.base),
            &agent_token(site),
            None,
            Some(&reg),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    wait_until("b knows both sites", Duration::from_secs(10), async || {
        let (_, sites) = get(&http, format!("{}/v1/sites", b.base), PLATFORM).await;
        sites.as_array().is_some_and(|l| l.len() == 2)
    })
    .await;

    // Twelve creates, half through each replica, released together: each replica alone sees
    // room for four.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 { &a.base } else { &b.base }.clone();
        let (http, start) = (http.clone(), start.clone());
        let mut request = body(&bed.issuer, 3600);
        request["resources"] = json!({"cpus": 2, "memory_mib": 512, "gpus": 0});
        // Refused rather than queued: what is stored is exactly what fits.
        request["max_queue_s"] = json!(0);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            call(
                &http,
                reqwest::Method::POST,
                format!("{base}/v1/workspaces"),
                PLATFORM,
                None,
                Some(&request),
            )
            .await
        }));
    }
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = 0;
    for t in tasks {
        let got = t.await.unwrap();
        if got.0.is_success() {
            *placed
                .entry(got.1["site"].as_str().unwrap().to_owned())
                .or_default() += 1;
        } else {
            assert_error(&got, StatusCode::CONFLICT, "insufficient_capacity");
            refused += 1;
        }
    }
    let expected = BTreeMap::from([("ncbn".to_owned(), 1), ("tohoku".to_owned(), 3)]);
    assert_eq!(placed, expected, "placed exactly what fits");
    assert_eq!(refused, 8);
    let (_, listed) = get(&http, format!("{}/v1/workspaces", a.base), PLATFORM).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        4,
        "nothing else was stored"
    );
    a.kill().await;
    b.kill().await;
}
