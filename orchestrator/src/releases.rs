//! The results airlock's review: how a release request moves between its states, who may do
//! what to it, and the orchestrator's side of the site's desk (asking it to take files, and
//! streaming a reviewed file back). The orchestrator keeps digests, findings and decisions; the
//! bytes stay in the site's airlock store until someone entitled downloads them.
//!
//! ```text
//! draft ─submit─▶ submitted ─return─▶ returned ─resubmit─▶ submitted (a new round)
//!                     │ two approvals of every releasable file ─▶ approved ─download─▶ released
//!                     └ reject (or every file rejected) ─▶ rejected
//! draft | submitted | returned ─withdraw─▶ withdrawn
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use basho_core::release::{
    Answer, Call, Intake, ReleaseFile, ReleaseRequest, ReleaseState, Review, Verdict,
};
use basho_core::tunnel::{Frame, Kind, Refusal};
use chrono::{DateTime, Utc};

use crate::tunnel::{SessionLink, Tunnels};

/// Most files one request names (the site has its own, usually lower, limit).
pub const MAX_FILES: usize = 1000;
/// Longest justification or comment, in characters.
pub const MAX_TEXT: usize = 4000;
/// Approvals by different checkers each releasable file needs.
pub const APPROVALS: usize = 2;
/// How long the site may take to copy and check a request's files.
pub const INTAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the site may take to start sending a file.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a change to a request was refused: an API error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `not_reviewable`, `own_request`, `already_reviewed`, `comment_required`, ...
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// Checks names and text of a request before anything is sent to the site.
pub fn check_request(files: &[String], justification: &str) -> Result<(), Refused> {
    if files.is_empty() {
        return Err(refused(
            "invalid_request",
            "files is empty; name at least one file under /results",
        ));
    }
    if files.len() > MAX_FILES {
        return Err(refused(
            "invalid_request",
            format!(
                "files names {} files; name at most {MAX_FILES}",
                files.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(f) = files.iter().find(|f| !seen.insert(f.as_str())) {
        return Err(refused(
            "invalid_request",
            format!("files names {f:?} twice; name each file once"),
        ));
    }
    check_justification(justification)
}

/// Checks a justification or comment: at most [`MAX_TEXT`] characters and, when `empty` names
/// the code to refuse it with, not blank.
fn check_text(what: &str, text: &str, empty: Option<&'static str>) -> Result<(), Refused> {
    if let Some(code) = empty
        && text.trim().is_empty()
    {
        return Err(refused(
            code,
            format!("{what} is empty; say why, for the record"),
        ));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(refused(
            "invalid_request",
            format!("{what} is longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// Checks a new justification.
pub fn check_justification(text: &str) -> Result<(), Refused> {
    check_text("justification", text, Some("invalid_request"))
}

/// A new request from what the site took.
pub struct New<'a> {
    /// `rr-...`.
    pub id: String,
    /// The workspace and its project, site and owner.
    pub workspace: &'a basho_core::Workspace,
    /// Who asked.
    pub requester: String,
    /// Why.
    pub justification: String,
    /// Kept as a draft.
    pub draft: bool,
    /// What the site took.
    pub intake: Intake,
    /// Now.
    pub now: DateTime<Utc>,
}

impl New<'_> {
    /// The request as stored.
    pub fn request(self) -> ReleaseRequest {
        let w = self.workspace;
        let mut r = ReleaseRequest {
            id: self.id,
            workspace: w.id.clone(),
            project: w.project.clone(),
            site: w.site.clone(),
            requester: self.requester,
            owner: w.owner.clone(),
            justification: self.justification,
            state: if self.draft {
                ReleaseState::Draft
            } else {
                ReleaseState::Submitted
            },
            round: 1,
            files: self
                .intake
                .files
                .into_iter()
                .map(ReleaseFile::taken)
                .collect(),
            compared: self.intake.compared,
            reviews: Vec::new(),
            created_at: self.now,
            updated_at: self.now,
        };
        settle(&mut r);
        r
    }
}

/// A request none of whose files may leave is rejected as soon as it is submitted.
fn settle(r: &mut ReleaseRequest) {
    if r.state == ReleaseState::Submitted && !r.files.iter().any(ReleaseFile::releasable) {
        r.state = ReleaseState::Rejected;
    }
}

/// Whether `who` is a party to the request (its requester or its workspace's owner): they never
/// review it.
pub fn is_party(r: &ReleaseRequest, who: &str) -> bool {
    r.requester == who || r.owner == who
}

/// Applies `checker`'s review to `r` at `now`.
pub fn review(
    r: &mut ReleaseRequest,
    checker: &str,
    verdict: Verdict,
    file: Option<&str>,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    if r.state != ReleaseState::Submitted {
        return Err(refused(
            "not_reviewable",
            format!(
                "release request {} is {}; only a submitted request is reviewed",
                r.id, r.state
            ),
        ));
    }
    if is_party(r, checker) {
        return Err(refused(
            "own_request",
            "a checker never reviews a request they made or one from their own workspace",
        ));
    }
    let needs_comment = (verdict != Verdict::Approve).then_some("comment_required");
    check_text("comment", comment, needs_comment)?;
    if let Some(name) = file {
        let Some(f) = r.files.iter().find(|f| f.name == name) else {
            return Err(refused(
                "no_such_file",
                format!("release request {} has no file {name:?}", r.id),
            ));
        };
        if verdict == Verdict::Return {
            return Err(refused(
                "invalid_request",
                "a request is returned whole; leave out file, and say in the comment what to \
                 change",
            ));
        }
        if verdict == Verdict::Approve && !f.releasable() {
            return Err(refused(
                "invalid_request",
                format!("{name} was refused by the site's checks or rejected; it cannot leave"),
            ));
        }
    }
    let again = r.reviews.iter().any(|v| {
        v.round == r.round
            && v.checker == checker
            && v.verdict == verdict
            && (v.file.is_none() || v.file.as_deref() == file)
    });
    if again {
        return Err(refused(
            "already_reviewed",
            format!(
                "{checker} already gave this decision in this round; a release needs {APPROVALS} \
                 different checkers"
            ),
        ));
    }
    r.reviews.push(Review {
        checker: checker.to_owned(),
        verdict,
        file: file.map(str::to_owned),
        comment: comment.to_owned(),
        at: now,
        round: r.round,
    });
    r.updated_at = now;
    match (verdict, file) {
        (Verdict::Return, _) => r.state = ReleaseState::Returned,
        (Verdict::Reject, None) => r.state = ReleaseState::Rejected,
        (Verdict::Reject, Some(name)) => {
            if let Some(f) = r.files.iter_mut().find(|f| f.name == name) {
                f.rejected = true;
            }
            settle(r);
        }
        (Verdict::Approve, _) => {}
    }
    if r.state == ReleaseState::Submitted {
        let releasable: Vec<&ReleaseFile> = r.files.iter().filter(|f| f.releasable()).collect();
        if !releasable.is_empty()
            && releasable
                .iter()
                .all(|f| r.approvers(&f.name).len() >= APPROVALS)
        {
            r.state = ReleaseState::Approved;
        }
    }
    Ok(())
}

/// Withdraws `r` before a decision.
pub fn withdraw(r: &mut ReleaseRequest, now: DateTime<Utc>) -> Result<(), Refused> {
    if r.state.is_decided() {
        return Err(refused(
            "not_withdrawable",
            format!("release request {} is already {}", r.id, r.state),
        ));
    }
    r.state = ReleaseState::Withdrawn;
    r.updated_at = now;
    Ok(())
}

/// Submits a draft as it is, or a returned (or draft) request with the files the site took
/// again: a new round, in which earlier approvals no longer count.
pub fn submit(
    r: &mut ReleaseRequest,
    intake: Option<Intake>,
    justification: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    match (r.state, &intake) {
        (ReleaseState::Draft, _) | (ReleaseState::Returned, Some(_)) => {}
        (ReleaseState::Returned, None) => {
            return Err(refused(
                "not_resubmittable",
                "a returned request is resubmitted with its files taken again: name them",
            ));
        }
        (s, _) => {
            return Err(refused(
                "not_resubmittable",
                format!(
                    "release request {} is {s}; only a draft or a returned one is submitted",
                    r.id
                ),
            ));
        }
    }
    if let Some(i) = intake {
        r.files = i.files.into_iter().map(ReleaseFile::taken).collect();
        r.compared = i.compared;
    }
    if let Some(j) = justification {
        r.justification = j;
    }
    if r.state == ReleaseState::Returned {
        r.round += 1;
    }
    r.state = ReleaseState::Submitted;
    r.updated_at = now;
    settle(r);
    Ok(())
}

/// Marks `r` released by its first whole download.
pub fn downloaded(r: &mut ReleaseRequest, now: DateTime<Utc>) -> Result<(), Refused> {
    match r.state {
        ReleaseState::Approved => {
            r.state = ReleaseState::Released;
            r.updated_at = now;
            Ok(())
        }
        ReleaseState::Released => Ok(()),
        s => Err(refused(
            "not_approved",
            format!("release request {} is {s}", r.id),
        )),
    }
}

/// What the site said to a call.
#[derive(Debug)]
pub enum DeskError {
    /// The site has no tunnel here.
    Unreachable,
    /// The site did not answer in time, or the tunnel closed.
    Silent(String),
    /// The site refused.
    Refused(Refusal),
}

/// Sends `call` to `site`'s desk and waits for the first answer frame.
pub async fn call(
    tunnels: &Tunnels,
    site: &basho_core::Ident,
    call: &Call,
    timeout: Duration,
) -> Result<(SessionLink, Answer), DeskError> {
    let payload = serde_json::to_vec(call).expect("calls serialize");
    let mut link = tunnels
        .open_as(site, Kind::Call, payload)
        .await
        .ok_or(DeskError::Unreachable)?;
    let first = tokio::time::timeout(timeout, link.rx.recv()).await;
    match first {
        Ok(Some(f)) if f.kind == Kind::Answer => match f.parse::<Answer>() {
            Ok(a) => Ok((link, a)),
            Err(e) => Err(DeskError::Silent(format!(
                "the site's answer does not parse: {e}"
            ))),
        },
        Ok(Some(f)) if f.kind == Kind::Refused => {
            link.ended();
            Err(DeskError::Refused(refusal_of(&f)))
        }
        Ok(Some(f)) => Err(DeskError::Silent(format!(
            "the site answered with a {:?} frame",
            f.kind
        ))),
        Ok(None) => Err(DeskError::Silent("the site's tunnel closed".into())),
        Err(_) => Err(DeskError::Silent(format!(
            "the site did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn refusal_of(f: &Frame) -> Refusal {
    f.parse().unwrap_or(Refusal {
        code: "refused".into(),
        message: "the site refused".into(),
    })
}

#[cfg(test)]
mod tests;
