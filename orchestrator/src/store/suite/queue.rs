//! The queue's store cases: queued workspaces hold no compute, keep their arrival order and
//! entries, and are placed once, in their site's turn.

use basho_core::queue::Scheduling;

use super::*;
use crate::store::{Placed, Placement, QueueEntry};

fn queued(ws: &str) -> WorkspaceRecord {
    let mut r = rec(ws, "tohoku");
    r.workspace.state = Queued;
    r.workspace.message = Some("site tohoku: 0 of 2 cpus free".into());
    r
}

fn entry(pinned: Option<&str>) -> QueueEntry {
    QueueEntry {
        seq: 0,
        pinned: pinned.map(id),
        grants: vec!["https://x/JGAD000101".into()],
        duration_ms: 3_600_000,
        visa_exp_ms: 4_000_000_000_000,
    }
}

fn placement(site: &str) -> Placement {
    Placement {
        site: id(site),
        expires_at: to_millis(Utc::now() + TimeDelta::hours(1)),
        visa_refs: rec("x", site).visa_refs,
    }
}

pub(crate) async fn the_queue_keeps_order_and_places_once(s: Arc<dyn Store>) {
    // One site with room for one workspace, taken.
    s.upsert_site(&registration("tohoku", 2), Utc::now())
        .await
        .unwrap();
    let first = new(s
        .create_workspace(&rec("ws-a", "tohoku"), None)
        .await
        .unwrap());
    // Queued ones hold nothing, so they are stored although the site is full.
    let q1 = new(s
        .enqueue_workspace(&queued("ws-q1"), &entry(None), None)
        .await
        .unwrap());
    let k = key("k-q2", "h");
    let q2 = new(s
        .enqueue_workspace(&queued("ws-q2"), &entry(Some("tohoku")), Some(&k))
        .await
        .unwrap());
    assert!(q1.revision > first.revision && q2.revision > q1.revision);
    let again = s
        .enqueue_workspace(&queued("ws-q2-retry"), &entry(Some("tohoku")), Some(&k))
        .await
        .unwrap();
    assert!(
        matches!(&again, Created::Replayed(r) if r.workspace.id == "ws-q2"),
        "{again:?}"
    );
    let list = s.queued().await.unwrap();
    let ids: Vec<&str> = list.iter().map(|q| q.workspace.id.as_str()).collect();
    assert_eq!(ids, ["ws-q1", "ws-q2"], "arrival order");
    assert_eq!(list[1].entry.pinned, Some(id("tohoku")));
    assert_eq!(list[0].entry.grants, entry(None).grants);
    assert_eq!(list[0].entry.duration_ms, 3_600_000);
    assert_eq!(list[0].entry.seq, q1.revision);
    assert_eq!(list[0].workspace, q1.workspace, "read back as stored");
    assert_eq!(list[0].visa_refs, q1.visa_refs);
    // Only what joined after a given entry.
    let after = s.queued_after(list[0].entry.seq).await.unwrap();
    let ids: Vec<&str> = after.iter().map(|q| q.workspace.id.as_str()).collect();
    assert_eq!(ids, ["ws-q2"]);
    assert!(s.queued_after(list[1].entry.seq).await.unwrap().is_empty());
    // Nobody's desired state holds a queued workspace.
    let (_, desired) = s.desired(&id("tohoku")).await.unwrap();
    assert_eq!(desired.len(), 1, "{desired:?}");

    // Full while the first runs; placed once it ends.
    let full = s
        .place_queued("ws-q1", &placement("tohoku"), Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(full, Placed::Full(held) if held.count == 1),
        "{full:?}"
    );
    s.transition("ws-a", Stopping, None, Utc::now())
        .await
        .unwrap();
    s.transition("ws-a", Stopped, None, Utc::now())
        .await
        .unwrap();
    let p = placement("tohoku");
    let placed = match s.place_queued("ws-q1", &p, Utc::now()).await.unwrap() {
        Placed::Placed(r) => r,
        other => panic!("expected placed, got {other:?}"),
    };
    assert_eq!(placed.workspace.state, Placed);
    assert_eq!(placed.workspace.expires_at, p.expires_at);
    assert_eq!(placed.workspace.message, None);
    assert_eq!(s.workspace("ws-q1").await.unwrap().unwrap(), placed);
    let (revision, desired) = s.desired(&id("tohoku")).await.unwrap();
    assert_eq!(revision, placed.revision, "the site hears of it");
    assert!(desired.iter().any(|r| r.workspace.id == "ws-q1"));
    // Placed once: a second pass finds it gone from the queue.
    let twice = s
        .place_queued("ws-q1", &placement("tohoku"), Utc::now())
        .await
        .unwrap();
    assert!(matches!(twice, Placed::Gone(_)), "{twice:?}");
    let left: Vec<String> = s
        .queued()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.workspace.id)
        .collect();
    assert_eq!(left, ["ws-q2"]);
    // Deleted while queued: stopped at once, and never placed after.
    let t = s
        .transition("ws-q2", Stopped, Some("deleted while queued"), Utc::now())
        .await
        .unwrap();
    assert!(matches!(t, Transition::Changed { .. }), "{t:?}");
    let gone = s
        .place_queued("ws-q2", &placement("tohoku"), Utc::now())
        .await
        .unwrap();
    assert!(matches!(gone, Placed::Gone(_)), "{gone:?}");
    assert!(s.queued().await.unwrap().is_empty());
}

pub(crate) async fn scheduling_and_use_for_fair_share(s: Arc<dyn Store>) {
    assert!(s.schedulings().await.unwrap().is_empty());
    let p = id("P-0001");
    let one = Scheduling {
        priority: 80,
        share: 3,
    };
    s.set_scheduling(&p, one, Utc::now()).await.unwrap();
    let two = Scheduling {
        priority: 10,
        share: 7,
    };
    s.set_scheduling(&p, two, Utc::now()).await.unwrap();
    assert_eq!(s.schedulings().await.unwrap().get(&p), Some(&two));

    open_sites(&*s).await;
    s.create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap();
    let to = to_millis(Utc::now());
    let record = |seq: u64, ago_s: i64, cores: f64| basho_core::usage::UsageRecord {
        seq,
        workspace: "ws-1".into(),
        project: p.clone(),
        from: to - TimeDelta::seconds(ago_s + 10),
        to: to - TimeDelta::seconds(ago_s),
        allocated_core_seconds: cores,
        used_cpu_seconds: 1.0,
        allocated_memory_gib_seconds: 1.0,
        used_memory_gib_seconds: 1.0,
        peak_memory_bytes: 1,
        gpu_seconds: 2.0,
    };
    let records = [
        record(1, 5, 10.0),
        record(2, 6, 20.0),
        record(3, 7200, 99.0),
    ];
    s.ingest_usage(&id("tohoku"), &records, Utc::now())
        .await
        .unwrap();
    // The last hour in buckets of a minute: the two recent records in one or two buckets, the
    // old one left out.
    let since = Utc::now() - TimeDelta::hours(1);
    let buckets = s.usage_buckets(since, 60_000).await.unwrap();
    let cores: f64 = buckets.iter().map(|b| b.2).sum();
    let gpus: f64 = buckets.iter().map(|b| b.3).sum();
    assert_eq!((cores, gpus), (30.0, 4.0), "{buckets:?}");
    assert!(buckets.iter().all(|b| b.0 == p && b.1 % 60_000 == 0));
}
