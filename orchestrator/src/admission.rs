//! Admission of a create request: template, resources, duration, visas, datasets and placement,
//! all checked in memory before anything is written. The result is the record to store, with
//! its compute already reserved at the chosen site.

use std::collections::BTreeSet;

use basho_core::queue::MAX_QUEUE_S;
use basho_core::visa::{DEFAULT_GRANT_PREFIX, TrustedIssuers, VisaError, verify_all};
use basho_core::workspace::MAX_VISAS;
use basho_core::{CreateWorkspace, Ident, State, Workspace};
use chrono::{DateTime, TimeDelta, Utc};

use crate::placement::{Reservation, SiteCache};
use crate::scheduler::{Candidate, PlacementError, Request};
use crate::store::{QueueEntry, VisaRef, WorkspaceRecord, from_millis, to_millis};
use crate::templates::Templates;

/// Why a create request is refused. Nothing has been written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// No template of that name.
    #[error("template {name} does not exist; known templates: {}", .known.join(", "))]
    UnknownTemplate {
        /// The requested name.
        name: Ident,
        /// Known templates.
        known: Vec<String>,
    },
    /// Resources out of bounds.
    #[error("{0}")]
    InvalidResources(String),
    /// Duration out of the template's bounds.
    #[error("duration_s is {asked}; template {template} allows 1 to {max} seconds")]
    InvalidDuration {
        /// What was asked.
        asked: u64,
        /// The template.
        template: Ident,
        /// Its limit.
        max: u64,
    },
    /// No visa, too many visas, or an empty or repeated dataset list.
    #[error("{0}")]
    InvalidRequest(String),
    /// A visa was refused.
    #[error("visas[{index}]: {error}")]
    Visa {
        /// Its position in `visas`.
        index: usize,
        /// Why.
        error: VisaError,
    },
    /// The visas grant no dataset any site knows, and the request names none.
    #[error(
        "the visas grant no dataset known here (values: {}); name datasets explicitly or ask the DAC \
         for a grant of a dataset a site holds",
        .0.join(", ")
    )]
    NothingGranted(Vec<String>),
    /// Placement found no site.
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

impl AdmissionError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::UnknownTemplate { .. } => "unknown_template",
            AdmissionError::InvalidResources(_) => "invalid_resources",
            AdmissionError::InvalidDuration { .. } => "invalid_duration",
            AdmissionError::InvalidRequest(_) => "invalid_request",
            AdmissionError::Visa { error, .. } => error.code(),
            AdmissionError::NothingGranted(_) => "dataset_not_granted",
            AdmissionError::Placement(p) => p.code(),
        }
    }

    /// The HTTP status: 422 for a request that can never work as written, 403 for grants that
    /// do not authorize it, 409 for what the federation cannot offer right now.
    pub fn status(&self) -> u16 {
        match self {
            AdmissionError::Visa { .. } | AdmissionError::NothingGranted(_) => 403,
            AdmissionError::Placement(PlacementError::NotGranted { .. }) => 403,
            AdmissionError::Placement(PlacementError::UnknownSite { .. }) => 422,
            AdmissionError::Placement(_) => 409,
            _ => 422,
        }
    }
}

/// What admission reads: the templates, the trusted issuers and the sites, nothing else.
pub(crate) struct Admission<'a> {
    /// The deployment's templates.
    pub templates: &'a Templates,
    /// Whose visas are believed.
    pub issuers: &'a TrustedIssuers,
    /// Where workspaces can go.
    pub sites: &'a SiteCache,
    /// Sites silent for longer rank last.
    pub agent_silent_s: u64,
}

/// The datasets the grants name: a value a site catalog lists maps to that dataset, else a
/// value under the default prefix maps to its suffix. Values that map to nothing are skipped.
pub(crate) fn granted_datasets(sites: &SiteCache, values: &BTreeSet<String>) -> BTreeSet<Ident> {
    let by_url = sites.grant_urls();
    values
        .iter()
        .filter_map(|v| {
            by_url.get(v).cloned().or_else(|| {
                v.strip_prefix(DEFAULT_GRANT_PREFIX)
                    .and_then(|d| Ident::parse(d).ok())
            })
        })
        .collect()
}

/// Checks `req` and places it: the record to store, and its compute reserved at the record's
/// site until the reservation is committed or dropped.
///
/// `unlicensed` is the owner of a batch task that carries no visa because it reads no dataset:
/// it mounts none, and only such a request may come without visas.
pub(crate) fn admit<'a>(
    ctx: &Admission<'a>,
    req: &'a CreateWorkspace,
    now: DateTime<Utc>,
    unlicensed: Option<&'a str>,
    queue_s: u64,
) -> Result<Admitted<'a>, AdmissionError> {
    let now = to_millis(now);
    let template = ctx.templates.get(req.template.as_str()).ok_or_else(|| {
        AdmissionError::UnknownTemplate {
            name: req.template.clone(),
            known: ctx
                .templates
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    })?;
    let resources = req.resources.unwrap_or(template.resources);
    resources
        .validate()
        .map_err(AdmissionError::InvalidResources)?;
    let duration_s = req.duration_s.unwrap_or(template.max_duration_s);
    if duration_s == 0 || duration_s > template.max_duration_s {
        return Err(AdmissionError::InvalidDuration {
            asked: duration_s,
            template: template.name.clone(),
            max: template.max_duration_s,
        });
    }
    if req.max_queue_s.is_some_and(|q| q > MAX_QUEUE_S) {
        return Err(AdmissionError::InvalidRequest(format!(
            "max_queue_s is {}; wait at most {MAX_QUEUE_S} seconds (7 days), or 0 to be refused \
             at once when no site has the compute free",
            req.max_queue_s.unwrap_or_default()
        )));
    }
    if req.visas.is_empty() && unlicensed.is_none() {
        return Err(AdmissionError::InvalidRequest(
            "visas is empty; send at least one ControlledAccessGrants visa (a JWT) from the DAC"
                .into(),
        ));
    }
    if req.visas.len() > MAX_VISAS {
        return Err(AdmissionError::InvalidRequest(format!(
            "visas holds {} visas; send at most {MAX_VISAS}",
            req.visas.len()
        )));
    }
    let grants = verify_all(&req.visas, ctx.issuers, now.timestamp())
        .map_err(|(index, error)| AdmissionError::Visa { index, error })?;
    let values: BTreeSet<String> = grants.iter().map(|g| g.value.clone()).collect();

    let datasets: Vec<Ident> = match &req.datasets {
        // Only a task that reads no dataset comes without visas.
        Some(list) if req.visas.is_empty() && !list.is_empty() => {
            return Err(AdmissionError::InvalidRequest(
                "datasets are named without visas; send the visas that grant them".into(),
            ));
        }
        _ if req.visas.is_empty() => Vec::new(),
        Some(list) => {
            if list.is_empty() {
                return Err(AdmissionError::InvalidRequest(
                    "datasets is empty; name at least one dataset, or leave datasets out to \
                     mount every dataset the visas grant"
                        .into(),
                ));
            }
            let mut seen = BTreeSet::new();
            if let Some(d) = list.iter().find(|d| !seen.insert(*d)) {
                return Err(AdmissionError::InvalidRequest(format!(
                    "datasets names {d} more than once; list each dataset once"
                )));
            }
            list.clone()
        }
        None => {
            let granted = granted_datasets(ctx.sites, &values);
            if granted.is_empty() {
                return Err(AdmissionError::NothingGranted(values.into_iter().collect()));
            }
            granted.into_iter().collect()
        }
    };

    let online_s = i64::try_from(ctx.agent_silent_s).unwrap_or(i64::MAX);
    let online_since = now - TimeDelta::try_seconds(online_s).unwrap_or(TimeDelta::MAX);
    let placed = ctx.sites.place_and_reserve(
        &Request {
            datasets: &datasets,
            resources,
            site: req.site.as_ref(),
            granted: &values,
            held_back: None,
        },
        online_since,
    );
    let earliest_exp = grants.iter().map(|g| g.exp).min().unwrap_or(i64::MAX);
    let visa_exp_ms = earliest_exp.saturating_mul(1000);
    let duration_ms = i64::try_from(duration_s)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let made = Made {
        req,
        template,
        grants: &grants,
        datasets,
        resources,
        unlicensed,
        now,
    };
    match placed {
        Ok(reservation) => {
            let until = now.timestamp_millis().saturating_add(duration_ms);
            let expires_at = from_millis(until.min(visa_exp_ms));
            let site = reservation.site().clone();
            let record = made.record(ctx.sites, site, State::Placed, None, expires_at);
            Ok(Admitted::Placed(record, reservation))
        }
        Err(PlacementError::InsufficientCapacity {
            need, could_hold, ..
        }) if queue_s > 0 && !could_hold.is_empty() => {
            let wait_ms = i64::try_from(queue_s)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            let until = now.timestamp_millis().saturating_add(wait_ms);
            let expires_at = from_millis(until.min(visa_exp_ms));
            let reason = queue_reason(&could_hold, need);
            let site = could_hold[0].site.clone();
            let record = made.record(ctx.sites, site, State::Queued, Some(reason), expires_at);
            let entry = QueueEntry {
                seq: 0,
                pinned: req.site.clone(),
                grants: grants.iter().map(|g| g.value.clone()).collect(),
                duration_ms,
                visa_exp_ms,
            };
            Ok(Admitted::Queued(record, entry))
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`admit`] decided.
pub(crate) enum Admitted<'a> {
    /// Placed now, its compute reserved.
    Placed(WorkspaceRecord, Reservation<'a>),
    /// To wait in the queue: no site that could hold it has the compute free now.
    Queued(WorkspaceRecord, QueueEntry),
}

impl Admitted<'_> {
    /// The record, the reservation (if any) dropped: for a check that makes nothing yet.
    pub(crate) fn into_record(self) -> WorkspaceRecord {
        match self {
            Admitted::Placed(rec, _) | Admitted::Queued(rec, _) => rec,
        }
    }
}

/// Why a workspace waits, for its `message` and its place in the queue: what each site that
/// could hold it lacks now.
pub(crate) fn queue_reason(could_hold: &[Candidate], need: basho_core::Resources) -> String {
    let parts: Vec<String> = could_hold.iter().map(|c| c.shortfall(need)).collect();
    parts.join("; ")
}

/// The parts of an admitted request its record is made from.
struct Made<'r> {
    req: &'r CreateWorkspace,
    template: &'r basho_core::template::Template,
    grants: &'r [basho_core::visa::Grant],
    datasets: Vec<Ident>,
    resources: basho_core::Resources,
    unlicensed: Option<&'r str>,
    now: DateTime<Utc>,
}

impl Made<'_> {
    fn record(
        self,
        sites: &SiteCache,
        site: Ident,
        state: State,
        message: Option<String>,
        expires_at: DateTime<Utc>,
    ) -> WorkspaceRecord {
        let workspace = Workspace {
            id: format!("ws-{}", uuid::Uuid::now_v7()),
            project: self.req.project.clone(),
            owner: self
                .grants
                .first()
                .map(|g| g.sub.clone())
                .or(self.unlicensed.map(str::to_owned))
                .unwrap_or_default(),
            template: self.template.name.clone(),
            site,
            state,
            message,
            datasets: self.datasets,
            resources: self.resources,
            created_at: self.now,
            expires_at,
            updated_at: self.now,
            releases: Default::default(),
            withdrawn_copies: Vec::new(),
            queue: None,
        };
        let bare: Vec<VisaRef> = self
            .grants
            .iter()
            .map(|g| VisaRef {
                iss: g.iss.clone(),
                jti: g.jti.clone(),
                exp: g.exp,
                datasets: None,
            })
            .collect();
        let values: Vec<String> = self.grants.iter().map(|g| g.value.clone()).collect();
        let visa_refs = visa_refs(sites, &workspace, &bare, &values);
        WorkspaceRecord {
            workspace,
            visas: self.req.visas.clone(),
            visa_refs,
            image: self.template.image.clone(),
            command: self.template.command.clone(),
            revision: 0,
            launch: None,
        }
    }
}

/// The visas' references `refs`, each naming which of the workspace's datasets it grants (its
/// value in `values`, in the same order) by the grant URLs of the workspace's site: a dataset
/// revocation then weighs only the visas for that dataset.
pub(crate) fn visa_refs(
    sites: &SiteCache,
    w: &Workspace,
    refs: &[VisaRef],
    values: &[String],
) -> Vec<VisaRef> {
    let urls = sites.site_grant_urls(&w.site, &w.datasets);
    refs.iter()
        .zip(values)
        .map(|(r, value)| VisaRef {
            datasets: Some(
                urls.iter()
                    .filter(|(_, url)| url == value)
                    .map(|(d, _)| d.clone())
                    .collect(),
            ),
            ..r.clone()
        })
        .collect()
}
