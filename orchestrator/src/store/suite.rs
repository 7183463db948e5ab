//! One store test suite, run against every implementation: SQLite in memory and PostgreSQL (a
//! fresh database per test on the server `scripts/postgres-up` starts). A case is a function of
//! `Arc<dyn Store>`; [`store_suite!`] turns each into a test for one implementation.

use std::sync::Arc;

use basho_core::audit::verify_chain;
use basho_core::protocol::{Capacity, DatasetEntry, Registration};
use basho_core::revocation::Reason;
use basho_core::usage::UsageRecord;
use basho_core::{Ident, Resources, State, State::*, Workspace};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::{
    AuditEvent, Created, IdempotencyKey, NewRevocation, Quota, Role, Store, StoreError,
    TokenRecord, Transition, TunnelHolder, VisaRef, WorkspaceFilter, WorkspaceRecord, to_millis,
};

mod audit;
mod ledger;
mod queue;
mod releases;
mod tasks;

pub(crate) use audit::*;
pub(crate) use ledger::*;
pub(crate) use queue::*;
pub(crate) use releases::*;
pub(crate) use tasks::*;

/// Defines one `#[tokio::test]` per case, each on a store from `$make` (an async expression
/// giving `(Arc<dyn Store>, guard)`; the guard lives until the test ends).
macro_rules! store_suite {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $make.await;
                crate::store::suite::$case(store).await;
            }
        )*
    };
}

macro_rules! every_case {
    ($make:expr) => {
        store_suite!($make;
            round_trips_a_workspace,
            transitions_follow_the_state_machine,
            idempotency_keys,
            concurrent_creates_with_one_key_make_one_workspace,
            creates_never_overbook_a_site,
            desired_lists_what_wants_a_container,
            filters_and_counts,
            sites_upsert_and_touch,
            concurrent_audit_appends_form_one_chain,
            once_events_are_written_once,
            revocations_are_kept_in_order_and_move_every_site_revision,
            revoked_notes_are_appended_once,
            usage_is_stored_once_and_acked_without_gaps,
            quotas_round_trip,
            tokens_round_trip,
            concurrent_transitions_apply_once,
            tunnel_holders_are_released_only_by_their_replica,
            release_requests_change_under_their_lock,
            tasks_are_listed_filtered_and_canceled,
            consent_reports_are_kept_per_site,
            federated_jobs_are_kept_and_listed,
            the_queue_keeps_order_and_places_once,
            scheduling_and_use_for_fair_share,
        );
    };
}

mod sqlite {
    use super::*;

    async fn make() -> (Arc<dyn Store>, ()) {
        (
            Arc::new(crate::store::SqliteStore::memory().await.unwrap()),
            (),
        )
    }

    every_case!(make());
}

mod postgres {
    use super::*;
    use crate::store::postgres::testdb::TestDatabase;

    async fn make() -> (Arc<dyn Store>, TestDatabase) {
        let db = TestDatabase::create().await;
        let store = crate::store::PostgresStore::open_with(&db.url, 8)
            .await
            .unwrap();
        (Arc::new(store), db)
    }

    every_case!(make());
}

pub(crate) fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

pub(crate) fn rec(ws: &str, site: &str) -> WorkspaceRecord {
    let now = to_millis(Utc::now());
    WorkspaceRecord {
        workspace: Workspace {
            id: ws.to_owned(),
            project: id("P-0001"),
            owner: "researcher-1".into(),
            template: id("shell"),
            site: id(site),
            state: Placed,
            message: None,
            datasets: vec![id("JGAD000101")],
            resources: Resources {
                cpus: 2,
                memory_mib: 512,
                gpus: 0,
            },
            created_at: now,
            expires_at: now + TimeDelta::hours(1),
            updated_at: now,
            releases: Default::default(),
            withdrawn_copies: Vec::new(),
            queue: None,
        },
        visas: vec!["header.payload.sig".into()],
        visa_refs: vec![VisaRef {
            iss: "https://dac.example".into(),
            jti: "j1".into(),
            exp: now.timestamp() + 3600,
            datasets: Some(vec![Ident::parse("JGAD000101").unwrap()]),
        }],
        image: "basho/demo".into(),
        command: vec!["sh".into()],
        revision: 0,
        launch: None,
    }
}

pub(crate) fn key(k: &str, hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: k.into(),
        request_hash: hash.into(),
    }
}

pub(crate) fn new(c: Created) -> WorkspaceRecord {
    match c {
        Created::New(r) => r,
        other => panic!("expected a new workspace, got {other:?}"),
    }
}

/// A site registration holding `JGAD000101`, with `cpus` cores and 1 GiB per core.
pub(crate) fn registration(site: &str, cpus: u32) -> Registration {
    Registration {
        site: id(site),
        backend: "fake".into(),
        version: "0.1.0".into(),
        datasets: vec![DatasetEntry {
            id: id("JGAD000101"),
            grant_url: "https://x/JGAD000101".into(),
        }],
        capacity: Capacity {
            cpus,
            memory_mib: u64::from(cpus) * 1024,
            gpus: 0,
        },
        images: vec!["basho/demo".into()],
        start_timeout_s: 120,
        session_key: None,
        ceiling: None,
        capacity_note: None,
        features: Vec::new(),
    }
}

/// Registers the sites the cases place at, with room for every workspace they make.
pub(crate) async fn open_sites(s: &dyn Store) {
    for site in ["tohoku", "ncbn"] {
        s.upsert_site(&registration(site, 1024), Utc::now())
            .await
            .unwrap();
    }
}

pub(crate) async fn creates_never_overbook_a_site(s: Arc<dyn Store>) {
    // Unregistered: nothing fits.
    let full = s
        .create_workspace(&rec("ws-x", "tohoku"), None)
        .await
        .unwrap();
    assert!(
        matches!(full, Created::Full(held) if held.count == 0),
        "{full:?}"
    );
    // Room for three workspaces of 2 cpus; sixteen creates race for it, released together.
    s.upsert_site(&registration("tohoku", 6), Utc::now())
        .await
        .unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, start) = (s.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            s.create_workspace(&rec(&format!("ws-{i}"), "tohoku"), None)
                .await
                .unwrap()
        }));
    }
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Created::New(_) => made += 1,
            Created::Full(held) => {
                assert_eq!((held.count, held.cpus), (3, 6), "refused only when full")
            }
            Created::Replayed(r) => panic!("no key, yet replayed {r:?}"),
        }
    }
    assert_eq!(made, 3, "exactly the site's capacity is placed");
    // Memory counts too: 6 GiB registered and, once one has ended, 2 × 512 MiB held; 2 cpus are
    // free, but 5.5 GiB are not.
    let ended = s
        .list_workspaces(&WorkspaceFilter::default())
        .await
        .unwrap()
        .remove(0);
    let id_ended = ended.workspace.id.clone();
    s.transition(&id_ended, Failed, None, Utc::now())
        .await
        .unwrap();
    let mut big = rec("ws-big", "tohoku");
    big.workspace.resources.memory_mib = 5 * 1024 + 512;
    assert!(matches!(
        s.create_workspace(&big, None).await.unwrap(),
        Created::Full(_)
    ));
    // An ended workspace gives its compute back.
    new(s
        .create_workspace(&rec("ws-after", "tohoku"), None)
        .await
        .unwrap());
}

pub(crate) async fn round_trips_a_workspace(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let stored = new(s
        .create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap());
    assert!(stored.revision > 0);
    let back = s.workspace("ws-1").await.unwrap().unwrap();
    assert_eq!(back, stored);
    assert_eq!(s.workspace("ws-2").await.unwrap(), None);
}

pub(crate) async fn transitions_follow_the_state_machine(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let first = new(s
        .create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap());
    let now = Utc::now();

    let Transition::Changed { from, record } =
        s.transition("ws-1", Running, None, now).await.unwrap()
    else {
        panic!("placed -> running must apply")
    };
    assert_eq!(from, Placed);
    assert_eq!(record.workspace.state, Running);
    // The agent's own report changes nothing the agent must hear: the revision stays.
    assert_eq!(record.revision, first.revision);

    // Same state: nothing written, revision kept.
    let Transition::Unchanged(same) = s.transition("ws-1", Running, None, now).await.unwrap()
    else {
        panic!("running -> running is a no-op")
    };
    assert_eq!(same.revision, record.revision);

    // Illegal: back to placed.
    assert!(matches!(
        s.transition("ws-1", Placed, None, now).await.unwrap(),
        Transition::Refused(_)
    ));
    assert_eq!(
        s.workspace("ws-1").await.unwrap().unwrap().workspace.state,
        Running
    );

    let Transition::Changed { record, .. } = s
        .transition("ws-1", Failed, Some("exit 1"), now)
        .await
        .unwrap()
    else {
        panic!("running -> failed must apply")
    };
    assert_eq!(record.workspace.message.as_deref(), Some("exit 1"));
    assert!(
        record.revision > first.revision,
        "leaving the desired set moves the revision"
    );
    // Terminal states never move.
    assert!(matches!(
        s.transition("ws-1", Running, None, now).await.unwrap(),
        Transition::Refused(_)
    ));
    assert!(matches!(
        s.transition("nope", Running, None, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.workspace("ws-1").await.unwrap().unwrap(), record);
}

pub(crate) async fn idempotency_keys(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let a = new(s
        .create_workspace(&rec("ws-1", "tohoku"), Some(&key("k1", "h1")))
        .await
        .unwrap());
    // Same key, same hash: the first workspace, no second row.
    let again = s
        .create_workspace(&rec("ws-2", "tohoku"), Some(&key("k1", "h1")))
        .await
        .unwrap();
    assert_eq!(again, Created::Replayed(a.clone()));
    // Same key, other request.
    let err = s
        .create_workspace(&rec("ws-3", "tohoku"), Some(&key("k1", "h2")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyKeyReused { ref workspace } if workspace == "ws-1"),
        "{err}"
    );
    assert_eq!(
        s.list_workspaces(&WorkspaceFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let (hash, found) = s.idempotent_workspace("k1").await.unwrap().unwrap();
    assert_eq!((hash.as_str(), found), ("h1", a));
    assert!(s.idempotent_workspace("k2").await.unwrap().is_none());
}

pub(crate) async fn concurrent_creates(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_workspace(&rec(&format!("ws-{i}"), "tohoku"), Some(&key("same", "h")))
                .await
                .unwrap()
        }));
    }
    let mut fresh = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Created::New(r) => {
                fresh += 1;
                ids.insert(r.workspace.id);
            }
            Created::Replayed(r) => {
                ids.insert(r.workspace.id);
            }
            Created::Full(held) => panic!("the site has room, yet full: {held:?}"),
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(
        ids.len(),
        1,
        "every request sees the one workspace: {ids:?}"
    );
    let all = s
        .list_workspaces(&WorkspaceFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

pub(crate) async fn concurrent_creates_with_one_key_make_one_workspace(s: Arc<dyn Store>) {
    concurrent_creates(s).await;
}

pub(crate) async fn desired_lists_what_wants_a_container(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let now = Utc::now();
    for (ws, site) in [("ws-a", "tohoku"), ("ws-b", "tohoku"), ("ws-c", "ncbn")] {
        s.create_workspace(&rec(ws, site), None).await.unwrap();
    }
    let (rev0, list) = s.desired(&id("tohoku")).await.unwrap();
    assert_eq!(list.len(), 2);
    let Transition::Changed { record, .. } =
        s.transition("ws-b", Stopping, None, now).await.unwrap()
    else {
        panic!()
    };
    let (rev1, list) = s.desired(&id("tohoku")).await.unwrap();
    assert!(rev1 > rev0);
    assert_eq!(rev1, record.revision);
    let listed: Vec<(&str, State)> = list
        .iter()
        .map(|r| (r.workspace.id.as_str(), r.workspace.state))
        .collect();
    assert_eq!(listed, vec![("ws-a", Placed), ("ws-b", Stopping)]);
    s.transition("ws-b", Stopped, None, now).await.unwrap();
    let (rev2, list) = s.desired(&id("tohoku")).await.unwrap();
    assert!(rev2 > rev1);
    assert_eq!(list.len(), 1, "a stopped workspace leaves the desired set");
    // Another site's change leaves this site's revision alone.
    s.transition("ws-c", Running, None, now).await.unwrap();
    assert_eq!(s.desired(&id("tohoku")).await.unwrap().0, rev2);
    assert_eq!(s.desired(&id("nowhere")).await.unwrap(), (0, vec![]));
}

pub(crate) async fn filters_and_counts(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let now = Utc::now();
    for (ws, site) in [("ws-a", "tohoku"), ("ws-b", "tohoku"), ("ws-c", "ncbn")] {
        s.create_workspace(&rec(ws, site), None).await.unwrap();
    }
    s.transition("ws-b", Running, None, now).await.unwrap();
    let f = |site: Option<&str>, states: Vec<State>| WorkspaceFilter {
        site: site.map(id),
        states,
        ..WorkspaceFilter::default()
    };
    assert_eq!(
        s.list_workspaces(&f(Some("tohoku"), vec![]))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.list_workspaces(&f(None, vec![Running]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.list_workspaces(&f(None, vec![Running, Placed]))
            .await
            .unwrap()
            .len(),
        3
    );
    let by_project = WorkspaceFilter {
        project: Some(id("P-9")),
        ..WorkspaceFilter::default()
    };
    assert!(s.list_workspaces(&by_project).await.unwrap().is_empty());
    let due = WorkspaceFilter {
        expires_by: Some(now + TimeDelta::hours(2)),
        ..WorkspaceFilter::default()
    };
    assert_eq!(s.list_workspaces(&due).await.unwrap().len(), 3);
    let not_due = WorkspaceFilter {
        expires_by: Some(now),
        ..WorkspaceFilter::default()
    };
    assert!(s.list_workspaces(&not_due).await.unwrap().is_empty());

    let counts = s.counts().await.unwrap();
    let tohoku_placed = counts
        .iter()
        .find(|(site, st, _)| site.as_str() == "tohoku" && *st == Placed)
        .unwrap();
    assert_eq!(tohoku_placed.2.count, 1);
    assert_eq!(tohoku_placed.2.cpus, 2);
    assert_eq!(tohoku_placed.2.memory_mib, 512);
    assert_eq!(counts.len(), 3);
}

pub(crate) async fn sites_upsert_and_touch(s: Arc<dyn Store>) {
    let t0 = to_millis(Utc::now());
    let mut reg = registration("tohoku", 8);
    s.upsert_site(&reg, t0).await.unwrap();
    assert_eq!(s.sites().await.unwrap()[0].registration, reg);
    reg.capacity.cpus = 16;
    reg.start_timeout_s = 900;
    reg.session_key = Some(basho_core::e2e::encode_key(&[7; 32]));
    s.upsert_site(&reg, t0).await.unwrap();
    let t1 = t0 + TimeDelta::seconds(5);
    s.touch_site(&id("tohoku"), t1).await.unwrap();
    // An older touch never moves last contact back.
    s.touch_site(&id("tohoku"), t0).await.unwrap();
    let sites = s.sites().await.unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].registration, reg);
    assert_eq!(sites[0].last_contact, t1);
}

pub(crate) async fn concurrent_transitions_apply_once(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    for i in 0..8 {
        s.create_workspace(&rec(&format!("ws-{i}"), "tohoku"), None)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let msg = format!("pass {round}");
                s.transition(&format!("ws-{i}"), Expired, Some(&msg), Utc::now())
                    .await
                    .unwrap()
            }));
        }
    }
    let mut changed = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Transition::Changed { .. }) {
            changed += 1;
        }
    }
    assert_eq!(changed, 8, "each workspace expires once");
}

pub(crate) async fn tunnel_holders_are_released_only_by_their_replica(s: Arc<dyn Store>) {
    let site = id("tohoku");
    assert_eq!(s.tunnel_holder(&site).await.unwrap(), None);
    let a = TunnelHolder {
        site: site.clone(),
        url: "https://orch-0.internal:8443".into(),
        replica: "a".into(),
        since: to_millis(Utc::now()),
    };
    s.hold_tunnel(&a).await.unwrap();
    assert_eq!(s.tunnel_holder(&site).await.unwrap(), Some(a.clone()));
    // The agent redials to another replica: it takes over, and a's late release is a no-op.
    let b = TunnelHolder {
        url: "https://orch-1.internal:8443".into(),
        replica: "b".into(),
        ..a.clone()
    };
    s.hold_tunnel(&b).await.unwrap();
    assert!(!s.release_tunnel(&site, "a").await.unwrap());
    assert_eq!(s.tunnel_holder(&site).await.unwrap(), Some(b));
    assert_eq!(s.tunnel_holder(&id("ncbn")).await.unwrap(), None);
    assert!(s.release_tunnel(&site, "b").await.unwrap());
    assert_eq!(s.tunnel_holder(&site).await.unwrap(), None);
}

pub(crate) async fn consent_reports_are_kept_per_site(store: Arc<dyn Store>) {
    use basho_core::consent::{ConsentReport, DatasetReleases, Release};
    let id = |s: &str| Ident::parse(s).unwrap();
    let report = |site: &str, current: u32| ConsentReport {
        site: id(site),
        datasets: vec![DatasetReleases {
            dataset: id("JGAD000101"),
            current,
            releases: (1..=current)
                .map(|n| Release {
                    release: n,
                    parent: (n > 1).then(|| n - 1),
                    digest: Some(format!("{n:064}")),
                    files: 2,
                    rows: 100 - u64::from(n),
                    participants: 50,
                    removed: u64::from(n > 1),
                    withdrawal: None,
                    made_at: None,
                })
                .collect(),
        }],
        withdrawals: Vec::new(),
        workspaces: [("ws-1".to_owned(), [(id("JGAD000101"), current)].into())].into(),
        copies: Default::default(),
    };
    assert_eq!(store.consent(&id("tohoku")).await.unwrap(), None);
    let at = to_millis(Utc::now());
    store.put_consent(&report("tohoku", 1), at).await.unwrap();
    store.put_consent(&report("ncbn", 1), at).await.unwrap();
    let later = at + TimeDelta::seconds(3);
    store
        .put_consent(&report("tohoku", 2), later)
        .await
        .unwrap();
    let row = store.consent(&id("tohoku")).await.unwrap().unwrap();
    assert_eq!(row.report, report("tohoku", 2));
    assert_eq!(row.reported_at, later);
    let all = store.consents().await.unwrap();
    let sites: Vec<&str> = all.iter().map(|r| r.report.site.as_str()).collect();
    assert_eq!(sites, ["ncbn", "tohoku"]);
    assert_eq!(all[0].report, report("ncbn", 1));
}

pub(crate) async fn federated_jobs_are_kept_and_listed(store: Arc<dyn Store>) {
    use crate::store::JobRow;
    use basho_core::federated::{
        AggregationSpec, AggregationStep, FederatedJob, JobState, SiteStep, StepState,
    };
    let id = |s: &str| Ident::parse(s).unwrap();
    let at = to_millis(Utc::now());
    let row = |job: &str, owner: &str, offset: i64| JobRow {
        job: FederatedJob {
            id: job.into(),
            name: Some("icd10 by age band".into()),
            project: id("P-0001"),
            owner: owner.into(),
            state: JobState::Running,
            message: None,
            min_sites: 1,
            sites: vec![SiteStep {
                site: id("tohoku"),
                datasets: vec![id("JGAD000101")],
                workspace: format!("ws-{job}"),
                state: StepState::Running,
                workspace_state: State::Placed,
                message: None,
                partial: None,
                released_by: None,
            }],
            aggregation: AggregationStep {
                site: id("bbj"),
                workspace: None,
                workspace_state: None,
                inputs: Vec::new(),
                result: None,
            },
            created_at: at + TimeDelta::seconds(offset),
            updated_at: at + TimeDelta::seconds(offset),
        },
        aggregation: AggregationSpec {
            image: "counter".into(),
            command: vec!["sum".into()],
            site: None,
            resources: None,
            duration_s: None,
            datasets: Vec::new(),
        },
    };
    assert_eq!(store.job("fj-1").await.unwrap(), None);
    let (a, b, c) = (
        row("fj-1", "alice", 0),
        row("fj-2", "bob", 1),
        row("fj-3", "alice", 2),
    );
    for r in [&a, &b, &c] {
        store.put_job(r).await.unwrap();
    }
    let mut done = b.clone();
    done.job.state = JobState::Completed;
    done.job.aggregation.result = Some("rr-9".into());
    store.put_job(&done).await.unwrap();
    assert_eq!(store.job("fj-2").await.unwrap(), Some(done.clone()));
    // An ended job stays as it ended.
    store.put_job(&b).await.unwrap();
    assert_eq!(store.job("fj-2").await.unwrap(), Some(done.clone()));
    let ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.job.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.jobs(None, false).await.unwrap()),
        ["fj-1", "fj-2", "fj-3"]
    );
    assert_eq!(ids(store.jobs(None, true).await.unwrap()), ["fj-1", "fj-3"]);
    assert_eq!(ids(store.jobs(Some("bob"), false).await.unwrap()), ["fj-2"]);
    assert!(store.jobs(Some("bob"), true).await.unwrap().is_empty());
    // Once per Idempotency-Key: the same request answers the first job, another is refused.
    use crate::store::{IdempotencyKey, JobInsert};
    let key = |hash: &str| IdempotencyKey {
        key: "k-1".into(),
        request_hash: hash.into(),
    };
    let first = row("fj-4", "carol", 3);
    assert_eq!(
        store.insert_job(&first, Some(&key("h1"))).await.unwrap(),
        JobInsert::New
    );
    assert_eq!(
        store
            .insert_job(&row("fj-5", "carol", 4), Some(&key("h1")))
            .await
            .unwrap(),
        JobInsert::Replayed(Box::new(first.clone()))
    );
    assert_eq!(
        store
            .insert_job(&row("fj-6", "carol", 5), Some(&key("h2")))
            .await
            .unwrap(),
        JobInsert::KeyReused("fj-4".into())
    );
    assert_eq!(store.job("fj-5").await.unwrap(), None);
    assert_eq!(
        store.job_by_key("k-1").await.unwrap(),
        Some(("h1".to_owned(), first))
    );
    assert_eq!(
        store
            .insert_job(&row("fj-7", "carol", 6), None)
            .await
            .unwrap(),
        JobInsert::New
    );
}
