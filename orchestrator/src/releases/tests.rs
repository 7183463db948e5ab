use basho_core::airlock::{Check, Checked, FileType, Finding};
use basho_core::release::{Compared, Taken};

use super::*;

fn taken(name: &str, refused: bool) -> Taken {
    Taken {
        name: name.into(),
        size: 3,
        sha256: "ab".repeat(32),
        checked: Checked {
            file_type: Some(FileType::Csv),
            refused,
            findings: if refused {
                vec![Finding {
                    check: Check::Archive,
                    message: "an archive".into(),
                    row: None,
                    column: None,
                }]
            } else {
                Vec::new()
            },
            omitted: 0,
        },
    }
}

fn request(files: Vec<Taken>, draft: bool) -> ReleaseRequest {
    New {
        id: "rr-1".into(),
        workspace: &basho_test_util::workspace("ws-1"),
        requester: "alice".into(),
        justification: "counts for the paper".into(),
        draft,
        intake: Intake {
            files,
            compared: Compared::default(),
        },
        now: Utc::now(),
    }
    .request()
}

fn code(r: Result<(), Refused>) -> &'static str {
    r.unwrap_err().code
}

#[test]
fn two_different_checkers_approve_and_the_parties_never_review() {
    let mut r = request(vec![taken("a.csv", false), taken("b.csv", false)], false);
    assert_eq!(r.state, ReleaseState::Submitted);
    let now = Utc::now();
    assert_eq!(
        code(review(&mut r, "alice", Verdict::Approve, None, "", now)),
        "own_request"
    );
    review(&mut r, "carol", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(
        r.state,
        ReleaseState::Submitted,
        "one approval is not enough"
    );
    assert_eq!(
        code(review(&mut r, "carol", Verdict::Approve, None, "", now)),
        "already_reviewed"
    );
    assert_eq!(
        code(review(
            &mut r,
            "carol",
            Verdict::Approve,
            Some("a.csv"),
            "",
            now
        )),
        "already_reviewed",
        "a request approval covers each file"
    );
    review(&mut r, "dave", Verdict::Approve, Some("a.csv"), "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Submitted, "b.csv has one approval");
    review(&mut r, "dave", Verdict::Approve, Some("b.csv"), "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Approved);
    assert_eq!(
        code(review(&mut r, "erin", Verdict::Reject, None, "no", now)),
        "not_reviewable"
    );
    downloaded(&mut r, now).unwrap();
    assert_eq!(r.state, ReleaseState::Released);
    assert_eq!(code(withdraw(&mut r, now)), "not_withdrawable");
}

#[test]
fn a_rejected_file_stays_in_while_the_rest_is_approved() {
    let mut r = request(vec![taken("a.csv", false), taken("b.csv", false)], false);
    let now = Utc::now();
    assert_eq!(
        code(review(
            &mut r,
            "carol",
            Verdict::Reject,
            Some("b.csv"),
            "",
            now
        )),
        "comment_required"
    );
    review(
        &mut r,
        "carol",
        Verdict::Reject,
        Some("b.csv"),
        "cell of 3",
        now,
    )
    .unwrap();
    assert!(r.files[1].rejected && !r.files[1].releasable());
    assert_eq!(
        code(review(
            &mut r,
            "dave",
            Verdict::Approve,
            Some("b.csv"),
            "",
            now
        )),
        "invalid_request"
    );
    review(&mut r, "carol", Verdict::Approve, None, "", now).unwrap();
    review(&mut r, "dave", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Approved);
    assert!(r.files[0].releasable());
    // Rejecting the last releasable file rejects the request.
    let mut r = request(vec![taken("a.csv", false)], false);
    review(&mut r, "carol", Verdict::Reject, Some("a.csv"), "no", now).unwrap();
    assert_eq!(r.state, ReleaseState::Rejected);
}

#[test]
fn return_and_resubmit_start_a_new_round() {
    let mut r = request(vec![taken("a.csv", false)], false);
    let now = Utc::now();
    review(&mut r, "carol", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(
        code(review(&mut r, "dave", Verdict::Return, None, " ", now)),
        "comment_required"
    );
    assert_eq!(
        code(review(
            &mut r,
            "dave",
            Verdict::Return,
            Some("a.csv"),
            "x",
            now
        )),
        "invalid_request"
    );
    review(
        &mut r,
        "dave",
        Verdict::Return,
        None,
        "suppress the small cell",
        now,
    )
    .unwrap();
    assert_eq!(r.state, ReleaseState::Returned);
    assert_eq!(code(submit(&mut r, None, None, now)), "not_resubmittable");
    let again = Intake {
        files: vec![taken("a.csv", false)],
        compared: Compared::default(),
    };
    submit(&mut r, Some(again), None, now).unwrap();
    assert_eq!((r.state, r.round), (ReleaseState::Submitted, 2));
    // Carol's approval was for round 1.
    review(&mut r, "dave", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Submitted);
    review(&mut r, "carol", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Approved);
    assert_eq!(code(submit(&mut r, None, None, now)), "not_resubmittable");
}

#[test]
fn drafts_withdrawals_and_refused_files() {
    let now = Utc::now();
    let mut d = request(vec![taken("a.csv", false)], true);
    assert_eq!(d.state, ReleaseState::Draft);
    assert_eq!(
        code(review(&mut d, "carol", Verdict::Approve, None, "", now)),
        "not_reviewable"
    );
    submit(&mut d, None, Some("new reason".into()), now).unwrap();
    assert_eq!(
        (d.state, d.round, d.justification.as_str()),
        (ReleaseState::Submitted, 1, "new reason")
    );
    withdraw(&mut d, now).unwrap();
    assert_eq!(d.state, ReleaseState::Withdrawn);
    assert_eq!(code(downloaded(&mut d, now)), "not_approved");
    // Only refused files: nothing could leave, so it is rejected at once.
    let r = request(vec![taken("x.zip", true)], false);
    assert_eq!(r.state, ReleaseState::Rejected);
    // A refused file beside a good one is never approved; the good one is.
    let mut r = request(vec![taken("a.csv", false), taken("x.zip", true)], false);
    assert_eq!(
        code(review(
            &mut r,
            "carol",
            Verdict::Approve,
            Some("x.zip"),
            "",
            now
        )),
        "invalid_request"
    );
    review(&mut r, "carol", Verdict::Approve, None, "", now).unwrap();
    review(&mut r, "dave", Verdict::Approve, None, "", now).unwrap();
    assert_eq!(r.state, ReleaseState::Approved);
}

#[test]
fn requests_are_checked_before_the_site_is_asked() {
    assert_eq!(code(check_request(&[], "why")), "invalid_request");
    let two = vec!["a.csv".to_owned(), "a.csv".to_owned()];
    assert_eq!(code(check_request(&two, "why")), "invalid_request");
    assert_eq!(
        code(check_request(&["a.csv".into()], "  ")),
        "invalid_request"
    );
    let long = "x".repeat(MAX_TEXT + 1);
    assert_eq!(
        code(check_request(&["a.csv".into()], &long)),
        "invalid_request"
    );
    let many: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i}.csv")).collect();
    assert_eq!(code(check_request(&many, "why")), "invalid_request");
    check_request(&["a.csv".into()], "why").unwrap();
}
