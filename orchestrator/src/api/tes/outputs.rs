//! An ended task's outputs: its site took them into its airlock store as the workspace ended
//! (the agent's report carries what it took), and they become the task's release request,
//! reviewed as any other. The task's view points its outputs at that request's files.

use basho_core::Ident;
use basho_core::protocol::TaskOutputs;
use basho_core::release::{ReleaseRequest, ReleaseState, Review, Verdict};
use basho_core::tes::{TesOutputFileLog, TesTask};
use chrono::Utc;
use serde_json::json;

use crate::Orchestrator;
use crate::api::ApiResult;
use crate::api::releases::audited;
use crate::releases::New;
use crate::store::WorkspaceRecord;

/// The release request a task's outputs become: one per task, named after it.
pub fn release_id(task: &str) -> String {
    format!("rr-{}", task.strip_prefix("ws-").unwrap_or(task))
}

/// Where a released file of `r` is downloaded.
pub fn file_url(r: &ReleaseRequest, name: &str) -> String {
    format!("/v1/release-requests/{}/files/{name}", r.id)
}

/// Makes what `site` took of workspace `w`'s outputs its task's release request, once (a report
/// sent again changes nothing), and says what the task's log should add: outputs not found, or
/// none taken and why.
pub async fn taken(
    o: &Orchestrator,
    site: &Ident,
    rec: &WorkspaceRecord,
    outputs: &TaskOutputs,
) -> ApiResult<Option<String>> {
    let w = &rec.workspace;
    let partial = rec.launch.as_ref().is_some_and(|l| l.partial);
    let mut notes = Vec::new();
    if !outputs.missing.is_empty() {
        notes.push(format!(
            "outputs not found as files under /results: {}",
            outputs.missing.join(", ")
        ));
    }
    if let Some(e) = &outputs.error {
        notes.push(format!("outputs not taken by site {site}: {e}"));
    }
    let Some(intake) = outputs.intake.clone().filter(|i| !i.files.is_empty()) else {
        return Ok((!notes.is_empty()).then(|| notes.join("; ")));
    };
    let id = release_id(w.id.as_str());
    if o.inner().store.release(&id).await?.is_none() {
        let justification = if partial {
            format!(
                "the partial results of a federated job's step at site {site} (workspace {}), \
                 taken as it ended",
                w.id
            )
        } else {
            format!(
                "the outputs of TES task {}, taken by site {site} as the task ended",
                w.id
            )
        };
        let now = Utc::now();
        let mut r = New {
            id,
            workspace: w,
            requester: w.owner.clone(),
            justification,
            draft: false,
            intake,
            now,
        }
        .request();
        let actor = format!("agent:{site}");
        let detail = json!({"task": w.id, "automatic": true, "compared": r.compared,
            "partial": partial});
        audited(o, &actor, "release_requested", &r, detail).await?;
        // Only a federated job's partial may be released by the site's own rule; the site's
        // word is not taken for anything else.
        if let Some(rule) = outputs.released_by.as_ref().filter(|_| partial) {
            r.reviews.push(Review {
                checker: format!("{}{site}", crate::federated::SITE_RULE_PREFIX),
                verdict: Verdict::Approve,
                file: None,
                comment: rule.clone(),
                at: now,
                round: r.round,
            });
            r.state = ReleaseState::Approved;
            let detail = json!({"verdict": "approve", "rule": rule, "automatic": true});
            audited(o, &actor, "release_reviewed", &r, detail).await?;
        }
        o.inner().store.insert_release(&r).await?;
    }
    Ok((!notes.is_empty()).then(|| notes.join("; ")))
}

/// Points `t`'s outputs at the files of its release request `r`, and lists them in its log.
pub fn shown(t: &mut TesTask, r: &ReleaseRequest) -> (Vec<TesOutputFileLog>, String) {
    let mut files = Vec::new();
    for f in &r.files {
        let path = format!("/results/{}", f.name);
        if let Some(o) = t.outputs.iter_mut().flatten().find(|o| o.path == path) {
            o.url = file_url(r, &f.name);
        }
        files.push(TesOutputFileLog {
            url: file_url(r, &f.name),
            path,
            size_bytes: f.size.to_string(),
        });
    }
    let note = format!(
        "outputs are release request {} ({}): each file is downloaded from its url through \
         the orchestrator's API once two output checkers approve it",
        r.id, r.state
    );
    (files, note)
}
