//! Consent withdrawal as the orchestrator records it: each site's agent reports its datasets'
//! releases, its withdrawals and which release each running workspace mounts
//! (`POST /v1/agent/consent`); what changed goes into the audit chain; the platform and
//! auditors read the releases of a dataset and ask whether any workspace still reads data of
//! withdrawn participants. Counts and digests only: participant IDs never reach here.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use basho_core::consent::{ConsentAck, ConsentReport, ReleaseList, ReleaseUse, WithdrawalStatus};
use basho_core::{ErrorBody, Ident};
use chrono::Utc;
use serde_json::json;

use super::auth::{AgentSite, UsageReader};
use super::extract::ApiJson;
use super::{ApiError, ApiResult};
use crate::Orchestrator;
use crate::store::AuditEvent;

/// Most workspaces, withdrawals or datasets one report may list.
const MAX_ITEMS: usize = 100_000;

/// What changed between a site's `previous` report and this one, as audit events: each
/// release (once its digest is known), each withdrawal, each workspace moved to a newer
/// release and each copy of withdrawn data found in a workspace.
fn changes(report: &ConsentReport, previous: Option<&ConsentReport>) -> Vec<AuditEvent> {
    let site = report.site.as_str();
    let actor = format!("agent:{site}");
    let mut events = Vec::new();
    for d in &report.datasets {
        let before = previous.and_then(|p| p.dataset(&d.dataset));
        for r in d.releases.iter().filter(|r| r.digest.is_some()) {
            let known = before.is_some_and(|b| {
                b.releases
                    .iter()
                    .any(|o| o.release == r.release && o.digest.is_some())
            });
            if known {
                continue;
            }
            let target = format!("{site}/{}/{}", d.dataset, r.release);
            events.push(
                AuditEvent::new(
                    &actor,
                    "dataset_release",
                    &target,
                    json!({"site": site, "dataset": d.dataset, "release": r.release,
                        "parent": r.parent, "sha256": r.digest, "files": r.files,
                        "rows": r.rows, "participants": r.participants, "removed": r.removed,
                        "withdrawal": r.withdrawal, "current": d.current}),
                )
                .once(),
            );
        }
    }
    let seen: BTreeSet<&str> = previous
        .map(|p| p.withdrawals.iter().map(|w| w.id.as_str()).collect())
        .unwrap_or_default();
    for w in report
        .withdrawals
        .iter()
        .filter(|w| !seen.contains(w.id.as_str()))
    {
        events.push(
            AuditEvent::new(
                &actor,
                "consent_withdrawal",
                &w.id,
                json!({"site": site, "dataset": w.dataset, "at": w.at,
                    "participants": w.participants, "participants_sha256": w.participants_sha256,
                    "unknown": w.unknown, "previous": w.previous, "release": w.release,
                    "error": w.error}),
            )
            .once(),
        );
    }
    for (ws, mounted) in &report.workspaces {
        let Some(was) = previous.and_then(|p| p.workspaces.get(ws)) else {
            continue;
        };
        for (dataset, n) in mounted {
            if let Some(from) = was.get(dataset).filter(|from| *from < n) {
                events.push(AuditEvent::new(
                    &actor,
                    "workspace_moved",
                    ws,
                    json!({"site": site, "dataset": dataset, "from": from, "to": n}),
                ));
            }
        }
    }
    for (ws, files) in &report.copies {
        let before: BTreeSet<&String> = previous
            .and_then(|p| p.copies.get(ws))
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        let new: Vec<&String> = files.iter().filter(|f| !before.contains(f)).collect();
        if !new.is_empty() {
            events.push(AuditEvent::new(
                &actor,
                "withdrawn_data_copied",
                ws,
                json!({"site": site, "files": new}),
            ));
        }
    }
    events
}

/// Refuses a report that is not about the site's own datasets, or absurdly long.
fn check(o: &Orchestrator, report: &ConsentReport) -> ApiResult<()> {
    let held: BTreeSet<Ident> = o
        .inner()
        .sites
        .registration(report.site.as_str())
        .map(|r| r.datasets.into_iter().map(|d| d.id).collect())
        .unwrap_or_default();
    if let Some(d) = report.datasets.iter().find(|d| !held.contains(&d.dataset)) {
        return Err(ApiError::invalid(format!(
            "dataset {} is not in site {}'s registration; register it first",
            d.dataset, report.site
        )));
    }
    let longest = [
        report.datasets.len(),
        report.withdrawals.len(),
        report.workspaces.len(),
        report.copies.len(),
    ];
    if longest.iter().any(|n| *n > MAX_ITEMS) {
        return Err(ApiError::invalid(format!(
            "a consent report lists at most {MAX_ITEMS} of each kind"
        )));
    }
    Ok(())
}

/// Report the site's consent state.
///
/// The site's datasets' releases, the withdrawals it applied (counts and digests of the IDs,
/// never the IDs) and which release each running workspace mounts. What changed since the
/// last report is appended to the audit chain before it is kept.
#[utoipa::path(
    post, path = "/v1/agent/consent", operation_id = "agentConsent", tag = "agent",
    request_body = ConsentReport,
    responses(
        (status = 200, description = "Kept; what it added to the audit chain", body = ConsentAck),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token belongs to another site", body = ErrorBody),
        (status = 409, description = "The site has not registered", body = ErrorBody),
        (status = 422, description = "Invalid report", body = ErrorBody),
        (status = 503, description = "The audit chain could not be written; send it again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "consent", skip_all)]
pub async fn ingest(
    agent: AgentSite,
    State(o): State<Orchestrator>,
    ApiJson(report): ApiJson<ConsentReport>,
) -> ApiResult<Json<ConsentAck>> {
    agent
        .check_audited(&o, "/v1/agent/consent", &report.site)
        .await?;
    super::agent::touch(&o, &report.site).await?;
    check(&o, &report)?;
    let previous = o.inner().store.consent(&report.site).await?;
    let events = changes(&report, previous.as_ref().map(|p| &p.report));
    let audited = events.len() as u64;
    if !events.is_empty() && !o.audit_events(events).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the report's changes could not be written to the audit chain; send it again",
        ));
    }
    if previous.as_ref().map(|p| &p.report) != Some(&report) || audited > 0 {
        o.inner().store.put_consent(&report, Utc::now()).await?;
    }
    Ok(Json(ConsentAck { audited }))
}

fn no_report(site: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_consent_report",
        format!(
            "site {site}'s agent has not reported its releases yet (it predates them, or has \
             not run since it registered)"
        ),
    )
}

/// A dataset's releases at a site.
///
/// Each release's number, digest, rows and participants (counts), the withdrawal that made it,
/// and how many running workspaces still mount it, as the site last reported.
#[utoipa::path(
    get, path = "/v1/sites/{site}/datasets/{id}/releases", operation_id = "datasetReleases",
    tag = "sites",
    params(
        ("site" = String, Path, description = "Site name", max_length = 64),
        ("id" = String, Path, description = "Dataset ID", max_length = 64),
    ),
    responses(
        (status = 200, description = "The releases", body = ReleaseList),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 404, description = "No such site, or it holds no such dataset", body = ErrorBody),
        (status = 409, description = "The site has not reported its releases", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn releases(
    _: UsageReader,
    State(o): State<Orchestrator>,
    Path((site, id)): Path<(String, String)>,
) -> ApiResult<Json<ReleaseList>> {
    let Some(reg) = o.inner().sites.registration(&site) else {
        return Err(ApiError::not_found(format!("no site {site} is registered")));
    };
    let Some(dataset) = reg.datasets.iter().find(|d| d.id.as_str() == id) else {
        return Err(ApiError::not_found(format!(
            "site {site} holds no dataset {id}"
        )));
    };
    let Some(row) = o.inner().store.consent(&reg.site).await? else {
        return Err(no_report(&site));
    };
    let Some(d) = row.report.dataset(&dataset.id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_releases",
            format!(
                "site {site} keeps no releases of {id} (a dataset its cluster provides through a \
                 volume claim)"
            ),
        ));
    };
    let releases = d
        .releases
        .iter()
        .map(|r| ReleaseUse {
            release: r.clone(),
            workspaces: row
                .report
                .workspaces
                .values()
                .filter(|m| m.get(&d.dataset) == Some(&r.release))
                .count() as u64,
        })
        .collect();
    Ok(Json(ReleaseList {
        site: reg.site,
        dataset: d.dataset.clone(),
        current: d.current,
        releases,
        reported_at: row.reported_at,
    }))
}

/// Is any workspace still reading data of a withdrawal's participants?
///
/// Yes while a running workspace at the site mounts a release older than the one the
/// withdrawal made (every workspace on the dataset, when it failed to make one); which, and
/// which workspaces hold copies of withdrawn data in `/work` or `/results`.
#[utoipa::path(
    get, path = "/v1/withdrawals/{id}", operation_id = "getWithdrawal", tag = "audit",
    params(("id" = String, Path, description = "Withdrawal id (`wd-...`)", max_length = 64)),
    responses(
        (status = 200, description = "Where the withdrawal stands", body = WithdrawalStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a platform, admin or auditor token", body = ErrorBody),
        (status = 404, description = "No site reported such a withdrawal", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn withdrawal(
    _: UsageReader,
    State(o): State<Orchestrator>,
    Path(id): Path<String>,
) -> ApiResult<Json<WithdrawalStatus>> {
    for row in o.inner().store.consents().await? {
        if let Some(w) = row.report.withdrawals.iter().find(|w| w.id == id) {
            return Ok(Json(row.report.status(w, row.reported_at)));
        }
    }
    Err(ApiError::not_found(format!(
        "no site has reported a withdrawal {id}"
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use basho_core::consent::{DatasetReleases, Release, Withdrawal};

    use super::*;

    fn id(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    fn release(n: u32, digest: Option<&str>) -> Release {
        Release {
            release: n,
            parent: (n > 1).then(|| n - 1),
            digest: digest.map(str::to_owned),
            files: 1,
            rows: 10 - u64::from(n),
            participants: 10 - u64::from(n),
            removed: u64::from(n > 1),
            withdrawal: (n > 1).then(|| format!("wd-{n}")),
            made_at: None,
        }
    }

    fn report(releases: Vec<Release>, on: u32, withdrawals: u32) -> ConsentReport {
        let d = id("JGAD000101");
        ConsentReport {
            site: id("tohoku"),
            datasets: vec![DatasetReleases {
                dataset: d.clone(),
                current: releases.last().map_or(1, |r| r.release),
                releases,
            }],
            withdrawals: (2..2 + withdrawals)
                .map(|n| Withdrawal {
                    id: format!("wd-{n}"),
                    dataset: d.clone(),
                    at: Utc::now(),
                    participants: 1,
                    participants_sha256: "ab".repeat(32),
                    unknown: 0,
                    previous: n - 1,
                    release: Some(n),
                    error: None,
                })
                .collect(),
            workspaces: BTreeMap::from([("ws-1".to_owned(), BTreeMap::from([(d, on)]))]),
            copies: BTreeMap::new(),
        }
    }

    fn actions(events: &[AuditEvent]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|e| (e.action.as_str(), e.target.as_str()))
            .collect()
    }

    #[test]
    fn only_what_changed_is_audited() {
        // Release 1 not measured yet: nothing to record of it.
        let first = report(vec![release(1, None)], 1, 0);
        assert!(changes(&first, None).is_empty());
        let measured = report(vec![release(1, Some("d1"))], 1, 0);
        assert_eq!(
            actions(&changes(&measured, Some(&first))),
            [("dataset_release", "tohoku/JGAD000101/1")]
        );
        assert!(changes(&measured, Some(&measured)).is_empty());

        let withdrawn = report(vec![release(1, Some("d1")), release(2, Some("d2"))], 1, 1);
        assert_eq!(
            actions(&changes(&withdrawn, Some(&measured))),
            [
                ("dataset_release", "tohoku/JGAD000101/2"),
                ("consent_withdrawal", "wd-2")
            ]
        );
        let mut moved = withdrawn.clone();
        moved
            .workspaces
            .get_mut("ws-1")
            .unwrap()
            .insert(id("JGAD000101"), 2);
        moved
            .copies
            .insert("ws-1".into(), vec!["/work/copy.csv".into()]);
        let events = changes(&moved, Some(&withdrawn));
        assert_eq!(
            actions(&events),
            [
                ("workspace_moved", "ws-1"),
                ("withdrawn_data_copied", "ws-1")
            ]
        );
        assert_eq!(events[0].detail["from"], 1);
        assert_eq!(events[0].detail["to"], 2);
        assert!(changes(&moved, Some(&moved)).is_empty());
        // The same report again adds nothing; releases and withdrawals are written once even
        // when a lost report is sent again.
        assert!(events.iter().all(|e| !e.once));
        assert!(changes(&withdrawn, Some(&measured)).iter().all(|e| e.once));
    }

    #[test]
    fn a_withdrawal_is_still_read_until_every_workspace_moved() {
        let r = report(vec![release(1, Some("d1")), release(2, Some("d2"))], 1, 1);
        let s = r.status(&r.withdrawals[0], Utc::now());
        assert!(s.still_reading);
        assert_eq!(s.workspaces[0].workspace, "ws-1");
        assert_eq!(s.workspaces[0].release, 1);
        let mut moved = r.clone();
        moved
            .workspaces
            .get_mut("ws-1")
            .unwrap()
            .insert(id("JGAD000101"), 2);
        let s = moved.status(&moved.withdrawals[0], Utc::now());
        assert!(!s.still_reading);
        assert!(s.workspaces.is_empty());
        // One that failed leaves every workspace on the dataset reading them.
        let mut failed = moved.clone();
        failed.withdrawals[0].release = None;
        failed.withdrawals[0].error = Some("disk full".into());
        assert!(
            failed
                .status(&failed.withdrawals[0], Utc::now())
                .still_reading
        );
        // One that found none of its participants in the current release leaves none.
        failed.withdrawals[0].error = None;
        assert!(
            !failed
                .status(&failed.withdrawals[0], Utc::now())
                .still_reading
        );
    }
}
