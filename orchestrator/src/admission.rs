//! Admission of a create request: template, resources, duration, visas, datasets and placement,
//! all checked in memory before anything is written. The result is the record to store, with
//! its compute already reserved at the chosen site.

use std::collections::BTreeSet;

use basho_core::visa::{DEFAULT_GRANT_PREFIX, TrustedIssuers, VisaError, verify_all};
use basho_core::workspace::MAX_VISAS;
use basho_core::{CreateWorkspace, Ident, State, Workspace};
use chrono::{DateTime, TimeDelta, Utc};

use crate::placement::{Reservation, SiteCache};
use crate::scheduler::{PlacementError, Request};
use crate::store::{VisaRef, WorkspaceRecord, from_millis, to_millis};
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
    req: &CreateWorkspace,
    now: DateTime<Utc>,
    unlicensed: Option<&str>,
) -> Result<(WorkspaceRecord, Reservation<'a>), AdmissionError> {
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
    let reservation = ctx.sites.place_and_reserve(
        &Request {
            datasets: &datasets,
            resources,
            site: req.site.as_ref(),
            granted: &values,
        },
        online_since,
    )?;

    let earliest_exp = grants.iter().map(|g| g.exp).min().unwrap_or(i64::MAX);
    let by_duration = now.timestamp_millis().saturating_add(
        i64::try_from(duration_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    );
    let expires_at = from_millis(by_duration.min(earliest_exp.saturating_mul(1000)));
    let workspace = Workspace {
        id: format!("ws-{}", uuid::Uuid::now_v7()),
        project: req.project.clone(),
        owner: grants
            .first()
            .map(|g| g.sub.clone())
            .or(unlicensed.map(str::to_owned))
            .unwrap_or_default(),
        template: template.name.clone(),
        site: reservation.site().clone(),
        state: State::Placed,
        message: None,
        datasets,
        resources,
        created_at: now,
        expires_at,
        updated_at: now,
        releases: Default::default(),
        withdrawn_copies: Vec::new(),
    };
    // Which of the workspace's datasets each visa grants, by the site's grant URLs: a dataset
    // revocation then weighs only the visas for that dataset.
    let urls = ctx
        .sites
        .site_grant_urls(&workspace.site, &workspace.datasets);
    let visa_refs = grants
        .iter()
        .map(|g| VisaRef {
            iss: g.iss.clone(),
            jti: g.jti.clone(),
            exp: g.exp,
            datasets: Some(
                urls.iter()
                    .filter(|(_, url)| *url == g.value)
                    .map(|(d, _)| d.clone())
                    .collect(),
            ),
        })
        .collect();
    let record = WorkspaceRecord {
        workspace,
        visas: req.visas.clone(),
        visa_refs,
        image: template.image.clone(),
        command: template.command.clone(),
        revision: 0,
        launch: None,
    };
    Ok((record, reservation))
}
