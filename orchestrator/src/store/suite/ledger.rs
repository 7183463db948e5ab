//! The store suite's cases for the usage ledger, quotas and tokens.

use super::*;

fn usage(seq: u64, ws: &str) -> UsageRecord {
    let to = to_millis(Utc::now());
    UsageRecord {
        seq,
        workspace: ws.to_owned(),
        project: id("P-0001"),
        from: to - TimeDelta::seconds(60),
        to,
        allocated_core_seconds: 120.0,
        used_cpu_seconds: 30.0,
        allocated_memory_gib_seconds: 30.0,
        used_memory_gib_seconds: 10.0,
        peak_memory_bytes: 1 << 20,
        gpu_seconds: 0.0,
    }
}

pub(crate) async fn usage_is_stored_once_and_acked_without_gaps(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    let tohoku = id("tohoku");
    s.create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap();
    s.create_workspace(&rec("ws-2", "ncbn"), None)
        .await
        .unwrap();
    let now = Utc::now();
    // 1, 2 and 4: acked through 2 (3 is missing).
    let got = s
        .ingest_usage(
            &tohoku,
            &[usage(1, "ws-1"), usage(2, "ws-1"), usage(4, "ws-1")],
            now,
        )
        .await
        .unwrap();
    assert_eq!((got.acked_through, got.new.len(), got.rejected), (2, 3, 0));
    // A repeat and the missing 3, plus one about another site's workspace (kept, not counted).
    let got = s
        .ingest_usage(
            &tohoku,
            &[usage(2, "ws-1"), usage(3, "ws-1"), usage(5, "ws-2")],
            now,
        )
        .await
        .unwrap();
    assert_eq!((got.acked_through, got.new.len(), got.rejected), (5, 1, 1));
    let (cores, gpus) = s.usage_totals(&id("P-0001")).await.unwrap();
    assert_eq!((cores, gpus), (480.0, 0.0));
    let listed = s
        .usage_of(
            &id("P-0001"),
            now - TimeDelta::hours(1),
            now + TimeDelta::hours(1),
        )
        .await
        .unwrap();
    let seqs: Vec<u64> = listed.iter().map(|u| u.record.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    // Concurrent ingestions of one site (two replicas answering one agent) ack one ledger.
    let mut tasks = Vec::new();
    for round in 0..8u64 {
        let s = s.clone();
        let site = tohoku.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<UsageRecord> = (6..=20).map(|q| usage(q + round % 2, "ws-1")).collect();
            s.ingest_usage(&site, &batch, Utc::now()).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += t.await.unwrap().new.len();
    }
    assert_eq!(fresh, 16, "seqs 6..=21 stored once each");
    let again = s.ingest_usage(&tohoku, &[], Utc::now()).await.unwrap();
    assert_eq!(again.acked_through, 21);
}

pub(crate) async fn quotas_round_trip(s: Arc<dyn Store>) {
    let p = id("P-0001");
    assert_eq!(s.quota(&p).await.unwrap(), None);
    let q = Quota {
        core_hours: Some(10.5),
        gpu_hours: None,
    };
    s.set_quota(&p, q, Utc::now()).await.unwrap();
    let q2 = Quota {
        core_hours: Some(12.0),
        gpu_hours: Some(1.0),
    };
    s.set_quota(&p, q2, Utc::now()).await.unwrap();
    s.set_quota(&id("P-0002"), q, Utc::now()).await.unwrap();
    assert_eq!(s.quota(&p).await.unwrap(), Some(q2));
    assert_eq!(s.quotas().await.unwrap(), vec![(p, q2), (id("P-0002"), q)]);
}

pub(crate) async fn tokens_round_trip(s: Arc<dyn Store>) {
    let t0 = to_millis(Utc::now());
    let agent = TokenRecord {
        id: "tok-00000001".into(),
        role: Role::Agent,
        subject: None,
        site: Some(id("tohoku")),
        name: Some("tohoku agent".into()),
        created_at: t0,
        revoked_at: None,
        expires_at: Some(t0 + TimeDelta::days(90)),
    };
    let researcher = TokenRecord {
        id: "tok-00000002".into(),
        role: Role::Researcher,
        subject: Some("researcher-1".into()),
        site: None,
        name: None,
        created_at: t0 + TimeDelta::seconds(1),
        revoked_at: None,
        // A token made before tokens expired.
        expires_at: None,
    };
    s.insert_token(&agent, "hash-1").await.unwrap();
    s.insert_token(&researcher, "hash-2").await.unwrap();
    assert!(
        s.insert_token(&researcher, "hash-1").await.is_err(),
        "hashes are unique"
    );
    assert_eq!(
        s.token_by_hash("hash-1").await.unwrap(),
        Some(agent.clone())
    );
    assert_eq!(s.token_by_hash("nope").await.unwrap(), None);
    let t1 = t0 + TimeDelta::seconds(5);
    let revoked = s.revoke_token("tok-00000001", t1).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t1));
    // The first revocation time stays.
    let again = s
        .revoke_token("tok-00000001", t1 + TimeDelta::seconds(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(t1));
    assert_eq!(s.revoke_token("tok-nope", t1).await.unwrap(), None);
    let all = s.tokens().await.unwrap();
    assert_eq!(all, vec![again, researcher]);
}
