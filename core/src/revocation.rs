//! Revocations: a DAC or the platform ends access by dataset, subject, project or visa `jti`.
//! The request, the stored revocation, and the pure rule deciding whether a workspace (or a
//! create) falls under one. The orchestrator and every agent apply the same rule.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Ident;

/// Why access was revoked. Plain identifiers, so they can be metric labels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The data subject withdrew consent.
    ConsentWithdrawn,
    /// The DAC revoked its approval.
    DacRevoked,
    /// The project's approval ended.
    ProjectEnded,
    /// A security incident.
    SecurityIncident,
    /// Anything else.
    Other,
}

impl Reason {
    /// Every reason, as the API accepts them.
    pub const ALL: [Reason; 5] = [
        Reason::ConsentWithdrawn,
        Reason::DacRevoked,
        Reason::ProjectEnded,
        Reason::SecurityIncident,
        Reason::Other,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConsentWithdrawn => "consent-withdrawn",
            Reason::DacRevoked => "dac-revoked",
            Reason::ProjectEnded => "project-ended",
            Reason::SecurityIncident => "security-incident",
            Reason::Other => "other",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The allowed names, comma-separated, for error messages.
    pub fn allowed() -> String {
        Reason::ALL.map(Reason::as_str).join(", ")
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of `POST /v1/revocations`. At least one selector; every named selector must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// Every visa for this dataset issued at or before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Ident>,
    /// Every visa of this subject (`sub`) issued at or before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub subject: Option<String>,
    /// Every workspace of this project, and every later create for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// This visa, forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub visa_jti: Option<String>,
    /// One of `consent-withdrawn`, `dac-revoked`, `project-ended`, `security-incident`, `other`.
    #[schema(value_type = Reason)]
    pub reason: String,
}

/// Appended to a revoked workspace's message once its site reports the container gone.
pub const SITE_CONFIRMED: &str = "the site confirmed its container is gone";
/// Appended at revocation to a workspace its site had not reported starting: there was nothing
/// to stop unless a launch was under way, which the site's own deny-list then stops.
pub const NOTHING_REPORTED: &str = "its site had not reported a container";

/// Longest subject or `jti` accepted (visas carry short ones).
pub const MAX_SELECTOR_LEN: usize = 256;

impl RevocationRequest {
    /// Checks the selectors and the reason, saying what is wrong and what is allowed.
    pub fn validate(&self) -> Result<Reason, String> {
        if self.dataset.is_none()
            && self.subject.is_none()
            && self.project.is_none()
            && self.visa_jti.is_none()
        {
            return Err(
                "name at least one of dataset, subject, project or visa_jti to revoke".into(),
            );
        }
        for (name, v) in [("subject", &self.subject), ("visa_jti", &self.visa_jti)] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > MAX_SELECTOR_LEN || v.chars().any(char::is_control))
            {
                return Err(format!(
                    "{name} must be 1 to {MAX_SELECTOR_LEN} characters without control characters"
                ));
            }
        }
        Reason::parse(&self.reason).ok_or_else(|| {
            format!(
                "reason {:?} is not known; use one of {}",
                self.reason.chars().take(64).collect::<String>(),
                Reason::allowed()
            )
        })
    }
}

/// A recorded revocation, as the API answers it and as every agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revocation {
    /// Sequence number, from 1, in the order revocations were recorded.
    pub seq: i64,
    /// Dataset selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Ident>,
    /// Subject selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Project selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// Visa selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visa_jti: Option<String>,
    /// Why.
    pub reason: Reason,
    /// When it was recorded; visas issued later are not affected by a dataset or subject
    /// revocation.
    pub at: DateTime<Utc>,
}

/// The answer to a revocation (`POST /v1/revocations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Workspaces moved to `revoked`; their sites stop them.
    pub affected: Vec<String>,
    /// The revocation as recorded.
    pub revocation: Revocation,
}

/// A visa as revocation needs it: its id, when it was issued (Unix seconds) and which of its
/// holder's datasets it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisaId {
    /// `jti`.
    pub jti: String,
    /// `iat`.
    pub iat: i64,
    /// The holder's datasets this visa grants, as the holder's side resolved its grant URL;
    /// `None` when unknown, and then it counts for every dataset, so a revocation still covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<Vec<Ident>>,
}

impl VisaId {
    /// Whether this visa may be the one granting `dataset`.
    pub fn may_grant(&self, dataset: &Ident) -> bool {
        self.datasets.as_ref().is_none_or(|d| d.contains(dataset))
    }

    /// The same visa, known to grant `datasets`.
    #[must_use]
    pub fn granting(mut self, datasets: Vec<Ident>) -> Self {
        self.datasets = Some(datasets);
        self
    }
}

/// What a workspace (or a create request) holds, as revocation sees it.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The project.
    pub project: &'a str,
    /// The owner (`sub` of its visas).
    pub owner: &'a str,
    /// Datasets mounted.
    pub datasets: &'a [Ident],
    /// Its visas.
    pub visas: &'a [VisaId],
}

impl Revocation {
    /// Whether this revocation ends `h`. Every selector named must hold:
    /// - `visa_jti`: one of its visas has that `jti` (void forever);
    /// - `subject`: its owner is that subject;
    /// - `dataset`: it mounts that dataset;
    /// - `project`: it belongs to that project.
    ///
    /// With a subject or dataset selector and no `visa_jti`, only visas issued at or before the
    /// revocation count: a workspace whose visas were all issued later (a fresh DAC approval) is
    /// not affected. With a dataset selector, only the visas that grant that dataset count: a
    /// fresh visa for it is not undone by an older visa for another dataset.
    pub fn matches(&self, h: Holder<'_>) -> bool {
        if let Some(p) = &self.project
            && p.as_str() != h.project
        {
            return false;
        }
        if let Some(s) = &self.subject
            && s != h.owner
        {
            return false;
        }
        if let Some(d) = &self.dataset
            && !h.datasets.contains(d)
        {
            return false;
        }
        if let Some(j) = &self.visa_jti {
            return h.visas.iter().any(|v| &v.jti == j);
        }
        // A task that reads no dataset holds no visa: its owner's revocation stops it outright.
        if (self.subject.is_some() || self.dataset.is_some()) && !h.visas.is_empty() {
            let at = self.at.timestamp();
            return h
                .visas
                .iter()
                .filter(|v| self.dataset.as_ref().is_none_or(|d| v.may_grant(d)))
                .any(|v| v.iat <= at);
        }
        true
    }

    /// What this revocation covers, for messages: `visa_jti=..., project=...`.
    pub fn selectors(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.dataset {
            parts.push(format!("dataset={v}"));
        }
        if let Some(v) = &self.subject {
            parts.push(format!("subject={v}"));
        }
        if let Some(v) = &self.project {
            parts.push(format!("project={v}"));
        }
        if let Some(v) = &self.visa_jti {
            parts.push(format!("visa_jti={v}"));
        }
        parts.join(", ")
    }
}

/// The first revocation in `list` that ends `h`.
pub fn first_match<'r>(list: &'r [Revocation], h: Holder<'_>) -> Option<&'r Revocation> {
    list.iter().find(|r| r.matches(h))
}

/// The `jti` and `iat` of a visa JWT, read without verifying it: for matching against a deny-list
/// only, never for granting anything. `None` when the payload does not decode.
pub fn visa_id(jwt: &str) -> Option<VisaId> {
    read_visa(jwt).map(|(id, _)| id)
}

/// [`visa_id`] and the visa's grant URL (`ga4gh_visa_v1.value`, when it has one), from one read
/// of the unverified payload: for resolving which dataset a visa stands for when matching a
/// deny-list, never for granting anything.
pub fn read_visa(jwt: &str) -> Option<(VisaId, Option<String>)> {
    #[derive(Deserialize)]
    struct Inner {
        value: Option<String>,
    }
    #[derive(Deserialize)]
    struct Claims {
        jti: String,
        iat: i64,
        ga4gh_visa_v1: Option<Inner>,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let c: Claims = serde_json::from_slice(&bytes).ok()?;
    let id = VisaId {
        jti: c.jti,
        iat: c.iat,
        datasets: None,
    };
    Some((id, c.ga4gh_visa_v1.and_then(|v| v.value)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn rev(f: impl FnOnce(&mut Revocation)) -> Revocation {
        let mut r = Revocation {
            seq: 1,
            dataset: None,
            subject: None,
            project: None,
            visa_jti: None,
            reason: Reason::DacRevoked,
            at: Utc.timestamp_opt(1_000, 0).unwrap(),
        };
        f(&mut r);
        r
    }

    fn id(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    fn visa(jti: &str, iat: i64) -> VisaId {
        VisaId {
            jti: jti.into(),
            iat,
            datasets: None,
        }
    }

    fn holder<'a>(datasets: &'a [Ident], visas: &'a [VisaId]) -> Holder<'a> {
        Holder {
            project: "P-1",
            owner: "alice",
            datasets,
            visas,
        }
    }

    #[test]
    fn jti_voids_that_visa_forever() {
        let ds = [id("D1")];
        let r = rev(|r| r.visa_jti = Some("j1".into()));
        assert!(r.matches(holder(&ds, &[visa("j0", 10), visa("j1", 5_000)])));
        assert!(!r.matches(holder(&ds, &[visa("j2", 10)])));
    }

    #[test]
    fn subject_voids_visas_issued_before_only() {
        let ds = [id("D1")];
        let r = rev(|r| r.subject = Some("alice".into()));
        assert!(r.matches(holder(&ds, &[visa("a", 1_000)])));
        assert!(!r.matches(holder(&ds, &[visa("b", 1_001)])));
        let old = [visa("a", 10)];
        let bob = Holder {
            owner: "bob",
            ..holder(&ds, &old)
        };
        assert!(!r.matches(bob));
        // A task that reads no dataset holds no visa: nothing newer to weigh, it is stopped.
        assert!(r.matches(holder(&[], &[])));
        let d = rev(|r| r.dataset = Some(id("D1")));
        assert!(!d.matches(holder(&[], &[])), "it mounts no dataset");
    }

    #[test]
    fn dataset_voids_older_visas_of_workspaces_mounting_it() {
        let ds = [id("D1"), id("D2")];
        let r = rev(|r| r.dataset = Some(id("D2")));
        assert!(r.matches(holder(&ds, &[visa("a", 999)])));
        assert!(!r.matches(holder(&ds, &[visa("a", 2_000)])));
        assert!(!r.matches(holder(&[id("D1")], &[visa("a", 999)])));
    }

    #[test]
    fn dataset_counts_only_the_visas_granting_it() {
        // D2's visa was issued after the revocation, D1's before: the revocation of D2 does not
        // reach back through D1's visa.
        let ds = [id("D1"), id("D2")];
        let r = rev(|r| r.dataset = Some(id("D2")));
        let fresh = [
            visa("d1", 500).granting(vec![id("D1")]),
            visa("d2", 2_000).granting(vec![id("D2")]),
        ];
        assert!(!r.matches(holder(&ds, &fresh)));
        // D2's own old visa is covered.
        let stale = [
            visa("d1", 2_000).granting(vec![id("D1")]),
            visa("d2", 500).granting(vec![id("D2")]),
        ];
        assert!(r.matches(holder(&ds, &stale)));
        // A visa whose datasets are unknown counts for every dataset.
        assert!(r.matches(holder(&ds, &[visa("d1", 500), fresh[1].clone()])));
    }

    #[test]
    fn the_grant_url_is_read_from_the_visa() {
        let issuer = crate::visa::mint::Issuer::generate("https://dac.test");
        let jwt = issuer.mint("alice", "JGAD000101");
        let (id, url) = read_visa(&jwt).unwrap();
        assert_eq!(
            url.as_deref(),
            Some("https://ddbj.nig.ac.jp/search/entry/jga-dataset/JGAD000101")
        );
        assert_eq!(visa_id(&jwt), Some(id));
        assert_eq!(read_visa("not.a-jwt"), None);
    }

    #[test]
    fn project_ends_every_workspace_of_it() {
        let r = rev(|r| r.project = Some(id("P-1")));
        assert!(r.matches(holder(&[], &[visa("a", 5_000)])));
        let other = Holder {
            project: "P-2",
            ..holder(&[], &[])
        };
        assert!(!r.matches(other));
    }

    #[test]
    fn every_named_selector_must_hold() {
        let ds = [id("D1")];
        let r = rev(|r| {
            r.project = Some(id("P-1"));
            r.subject = Some("bob".into());
        });
        assert!(!r.matches(holder(&ds, &[visa("a", 1)])));
    }

    #[test]
    fn requests_need_a_selector_and_a_known_reason() {
        let mut req = RevocationRequest {
            dataset: None,
            subject: None,
            project: None,
            visa_jti: None,
            reason: "dac-revoked".into(),
        };
        assert!(req.validate().unwrap_err().contains("at least one"));
        req.visa_jti = Some("j".into());
        assert_eq!(req.validate(), Ok(Reason::DacRevoked));
        req.reason = "because".into();
        let e = req.validate().unwrap_err();
        assert!(
            e.contains("consent-withdrawn") && e.contains("other"),
            "{e}"
        );
        req.reason = "other".into();
        req.subject = Some(String::new());
        assert!(req.validate().unwrap_err().contains("subject"));
        let err =
            serde_json::from_str::<RevocationRequest>(r#"{"reason":"other","x":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"));
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }

    #[test]
    fn visa_ids_are_read_from_the_payload() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"jti":"v-1","iat":42,"sub":"s"}"#);
        assert_eq!(visa_id(&format!("h.{claims}.s")), Some(visa("v-1", 42)));
        assert_eq!(visa_id("garbage"), None);
    }
}
