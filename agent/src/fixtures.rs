//! Builders for unit tests: assignments, backend observations, a site with its own issuer,
//! catalog and directories.

use std::sync::LazyLock;

use basho_core::protocol::Assignment;
use basho_core::visa::TrustedIssuers;
use basho_core::visa::mint::Issuer;
use basho_core::{Ident, Resources};
use chrono::{DateTime, Duration, Utc};

use crate::backend::{Observed, RunState};
use crate::catalog::Catalog;

/// The issuer the site trusts in unit tests.
pub const ISS: &str = "https://dac.test";
/// The pinned demo image.
pub static DEMO_IMAGE: LazyLock<String> = LazyLock::new(|| format!("sha256:{}", "d".repeat(64)));
/// One key pair for every test of the process (generation costs).
pub static ISSUER: LazyLock<Issuer> = LazyLock::new(|| Issuer::generate(ISS));

/// A fixed instant, so plans are compared exactly.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// An identifier.
pub fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

/// The site's trusted issuers: [`ISSUER`] only.
pub fn trusted() -> TrustedIssuers {
    let mut t = TrustedIssuers::new();
    t.add_json(ISS, &ISSUER.jwks_json()).unwrap();
    t
}

/// A catalog holding `JGAD000101` and `JGAD000102` under `root`, and the demo image.
pub fn catalog(root: &std::path::Path) -> Catalog {
    Catalog::default()
        .with_dataset(id("JGAD000101"), &root.join("JGAD000101"), None, &[ISS])
        .with_dataset(id("JGAD000102"), &root.join("JGAD000102"), None, &[ISS])
        .with_image("basho/demo", &DEMO_IMAGE)
}

/// Builder methods on assignments.
pub trait AssignmentExt {
    /// A workspace for `alice` of project `P-0001`, expiring an hour after [`t0`], no datasets.
    fn test(id: &str) -> Assignment;
    /// Adds a dataset together with a valid visa for it.
    fn with_dataset(self, dataset: &str) -> Self;
    /// Sets the expiry.
    fn expiring(self, at: DateTime<Utc>) -> Self;
}

impl AssignmentExt for Assignment {
    fn test(ws: &str) -> Assignment {
        Assignment {
            id: ws.to_owned(),
            project: id("P-0001"),
            owner: "alice".into(),
            template: id("shell"),
            image: "basho/demo".into(),
            command: vec!["sleep".into(), "infinity".into()],
            datasets: Vec::new(),
            resources: Resources {
                cpus: 1,
                memory_mib: 256,
                gpus: 0,
            },
            expires_at: t0() + Duration::hours(1),
            visas: Vec::new(),
            launch: None,
        }
    }

    fn with_dataset(mut self, dataset: &str) -> Self {
        self.datasets.push(id(dataset));
        self.visas.push(ISSUER.mint(&self.owner, dataset));
        self
    }

    fn expiring(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = at;
        self
    }
}

/// What a backend would list for `workspace` in `state`, labelled with an expiry an hour after
/// [`t0`].
pub fn observed(workspace: &str, state: RunState) -> Observed {
    Observed {
        workspace: workspace.to_owned(),
        handle: format!("h-{workspace}"),
        state,
        expires_at: Some(t0() + Duration::hours(1)),
    }
}
