//! The store suite's cases for the results airlock's release requests.

use super::*;

fn release_request(
    request: &str,
    workspace: &str,
    owner: &str,
) -> basho_core::release::ReleaseRequest {
    use basho_core::release::{Compared, ReleaseRequest, ReleaseState};
    let now = to_millis(Utc::now());
    ReleaseRequest {
        id: request.into(),
        workspace: workspace.into(),
        project: id("P-0001"),
        site: id("tohoku"),
        requester: owner.into(),
        owner: owner.into(),
        justification: "for the paper".into(),
        state: ReleaseState::Submitted,
        round: 1,
        files: vec![],
        compared: Compared::default(),
        reviews: vec![],
        created_at: now,
        updated_at: now,
    }
}

pub(crate) async fn release_requests_change_under_their_lock(s: Arc<dyn Store>) {
    use crate::releases::Refused;
    use crate::store::ReleaseFilter;
    use basho_core::release::{ReleaseState, Review, Verdict};
    let a = release_request("rr-a", "ws-1", "alice");
    let b = release_request("rr-b", "ws-2", "bob");
    s.insert_release(&a).await.unwrap();
    s.insert_release(&b).await.unwrap();
    assert_eq!(s.release("rr-a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.release("rr-x").await.unwrap(), None);
    let list = |f: ReleaseFilter| {
        let s = s.clone();
        async move {
            s.list_releases(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(ReleaseFilter::default()).await, ["rr-a", "rr-b"]);
    let by_owner = ReleaseFilter {
        owner: Some("bob".into()),
        ..ReleaseFilter::default()
    };
    assert_eq!(list(by_owner).await, ["rr-b"]);
    let by_ws = ReleaseFilter {
        workspace: Some("ws-1".into()),
        states: vec![ReleaseState::Submitted, ReleaseState::Approved],
        ..ReleaseFilter::default()
    };
    assert_eq!(list(by_ws).await, ["rr-a"]);

    // A refused change writes nothing.
    let refuse = |_: &mut basho_core::release::ReleaseRequest| {
        Err(Refused {
            code: "not_reviewable",
            message: "no".into(),
        })
    };
    let got = s.change_release("rr-a", &refuse).await.unwrap().unwrap();
    assert_eq!(got.unwrap_err().code, "not_reviewable");
    assert_eq!(s.release("rr-a").await.unwrap(), Some(a));
    assert!(s.change_release("rr-x", &refuse).await.unwrap().is_none());

    // Sixteen reviews at once: each sees the others', none is lost.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let add = move |r: &mut basho_core::release::ReleaseRequest| {
                r.reviews.push(Review {
                    checker: format!("checker-{i}"),
                    verdict: Verdict::Approve,
                    file: None,
                    comment: String::new(),
                    at: r.updated_at,
                    round: 1,
                });
                r.state = ReleaseState::Approved;
                Ok(())
            };
            s.change_release("rr-b", &add)
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let b = s.release("rr-b").await.unwrap().unwrap();
    assert_eq!(b.reviews.len(), 16);
    assert_eq!(b.state, ReleaseState::Approved);
    let approved = ReleaseFilter {
        states: vec![ReleaseState::Approved],
        ..ReleaseFilter::default()
    };
    assert_eq!(
        list(approved).await,
        ["rr-b"],
        "the state column follows the body"
    );
}
