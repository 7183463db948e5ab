//! The store suite's cases for the audit chain and revocations.

use super::*;

pub(crate) async fn concurrent_audit_appends_form_one_chain(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let ev = AuditEvent::new(
                "platform",
                "workspace_create",
                &format!("ws-{i}"),
                json!({"n": i}),
            );
            s.append_audit(Utc::now(), &[ev.clone(), ev]).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.audit_page(0, 1000).await.unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(verify_chain(&all), Ok(100));
    let page = store.audit_page(10, 5).await.unwrap();
    let seqs: Vec<i64> = page.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![11, 12, 13, 14, 15]);
}

pub(crate) async fn once_events_are_written_once(store: Arc<dyn Store>) {
    let once = |target: &str, n: i32| {
        AuditEvent::new("platform", "workspace_create", target, json!({"n": n})).once()
    };
    let plain = AuditEvent::new("platform", "workspace_state", "ws-a", json!({}));
    // Twice in one batch, then again in a later one: one entry. Plain events repeat freely.
    let first = store
        .append_audit(
            Utc::now(),
            &[once("ws-a", 1), plain.clone(), once("ws-a", 2)],
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let again = store
        .append_audit(Utc::now(), &[once("ws-a", 3), plain, once("ws-b", 4)])
        .await
        .unwrap();
    let targets: Vec<(&str, &str)> = again
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        targets,
        vec![("workspace_state", "ws-a"), ("workspace_create", "ws-b")]
    );
    let all = store.audit_page(0, 100).await.unwrap();
    assert_eq!(verify_chain(&all), Ok(4));
    let created: Vec<&Value> = all
        .iter()
        .filter(|e| e.action == "workspace_create")
        .map(|e| &e.detail)
        .collect();
    assert_eq!(created, vec![&json!({"n": 1}), &json!({"n": 4})]);
}

pub(crate) async fn revocations_are_kept_in_order_and_move_every_site_revision(
    store: Arc<dyn Store>,
) {
    let site = id("tohoku");
    let (before, _) = store.desired(&site).await.unwrap();
    let new = NewRevocation {
        dataset: Some(id("JGAD000101")),
        subject: None,
        project: None,
        visa_jti: None,
        reason: Reason::ConsentWithdrawn,
    };
    let (first, rev) = store.record_revocation(&new, Utc::now()).await.unwrap();
    assert_eq!(first.seq, 1);
    assert!(rev > before);
    let (after, _) = store.desired(&site).await.unwrap();
    assert_eq!(after, rev, "a revocation is news for every site");
    let jti = NewRevocation {
        dataset: None,
        visa_jti: Some("v-1".into()),
        reason: Reason::Other,
        ..new
    };
    let (second, _) = store.record_revocation(&jti, Utc::now()).await.unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(store.revocations().await.unwrap(), vec![first, second]);
}

pub(crate) async fn revoked_notes_are_appended_once(s: Arc<dyn Store>) {
    open_sites(&*s).await;
    s.create_workspace(&rec("ws-1", "tohoku"), None)
        .await
        .unwrap();
    assert!(!s.note_revoked("ws-1", "stopped at tohoku").await.unwrap());
    s.transition("ws-1", Revoked, Some("consent withdrawn"), Utc::now())
        .await
        .unwrap();
    assert!(s.note_revoked("ws-1", "stopped at tohoku").await.unwrap());
    assert!(!s.note_revoked("ws-1", "stopped at tohoku").await.unwrap());
    let back = s.workspace("ws-1").await.unwrap().unwrap();
    assert_eq!(
        back.workspace.message.as_deref(),
        Some("consent withdrawn; stopped at tohoku")
    );
}
