//! The site is sovereign: before anything is launched the agent re-verifies the assignment itself,
//! against its own trusted issuers, catalog and image allow-list. A compromised orchestrator
//! cannot get data mounted that no DAC granted.

use basho_core::WorkspaceId;
use basho_core::protocol::Assignment;
use basho_core::visa::{Grant, TrustedIssuers, VisaError, verify_all};
use chrono::{DateTime, Utc};

use crate::backend::{Capabilities, DatasetMount};
use crate::catalog::{Catalog, CatalogError};

/// What the site approved: everything a launch needs that the orchestrator does not decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The workspace's id, checked: what every backend names it by.
    pub workspace: WorkspaceId,
    /// The pinned image reference from the allow-list.
    pub image: String,
    /// Each requested dataset with its local path.
    pub datasets: Vec<DatasetMount>,
    /// The earlier of the assignment's expiry and the first visa expiry.
    pub expires_at: DateTime<Utc>,
    /// The verified grants, for the log (their `jti`s name the visas).
    pub grants: Vec<Grant>,
}

/// Why the site refuses to launch an assignment. Reported as the workspace's failure message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The workspace id would end up in paths and labels, so it must be a plain identifier.
    #[error("workspace id {0:?} is not a plain identifier; refusing to use it in paths and labels")]
    BadId(String),
    /// Past its expiry.
    #[error("workspace expired at {0}; an expired workspace is never launched")]
    Expired(DateTime<Utc>),
    /// No visa came with an assignment that needs one (all but a batch task mounting nothing).
    #[error("the assignment carries no visa; this site verifies every grant itself")]
    NoVisa,
    /// A visa does not verify against the site's trusted issuers.
    #[error("visa {index} refused by this site: {error}")]
    Visa {
        /// Its position in the assignment.
        index: usize,
        /// Why.
        error: VisaError,
    },
    /// The visas are someone else's.
    #[error("the visas name {sub:?} but the workspace owner is {owner:?}")]
    Owner {
        /// The visas' subject.
        sub: String,
        /// The assignment's owner.
        owner: String,
    },
    /// The dataset is not held here, or the image is not allow-listed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// No verified visa from an issuer bound to the dataset carries its grant URL (and, where
    /// the site binds one, its source).
    #[error(
        "no visa grants dataset {dataset}: a visa whose value is {grant_url}, issued by one of \
         [{issuers}]{dac}, is needed"
    )]
    NotGranted {
        /// The dataset.
        dataset: String,
        /// Its grant URL in this site's catalog.
        grant_url: String,
        /// The issuers bound to it, comma-separated.
        issuers: String,
        /// ` and source <dac>` when the site binds a source, else empty.
        dac: String,
    },
    /// GPUs asked of a backend that cannot give them.
    #[error("the workspace asks for {0} GPUs but this site's backend cannot pass GPUs")]
    NoGpus(u32),
    /// A batch workspace's working directory or environment is not one this site runs.
    #[error("{0}")]
    Launch(String),
}

/// Checks `a` at `now` against the site's own issuers, catalog and allow-list.
pub fn verify_assignment(
    a: &Assignment,
    trusted: &TrustedIssuers,
    catalog: &Catalog,
    capabilities: Capabilities,
    now: DateTime<Utc>,
) -> Result<Approved, Refusal> {
    let workspace = WorkspaceId::parse(&a.id).map_err(|_| Refusal::BadId(a.id.clone()))?;
    if a.expires_at <= now {
        return Err(Refusal::Expired(a.expires_at));
    }
    // Only a batch task that mounts no dataset comes without a visa (the site may refuse even
    // those: `[isolation] tasks_without_visas`).
    if a.visas.is_empty() && (!a.datasets.is_empty() || a.launch.is_none()) {
        return Err(Refusal::NoVisa);
    }
    let grants = verify_all(&a.visas, trusted, now.timestamp())
        .map_err(|(index, error)| Refusal::Visa { index, error })?;
    if let Some(g) = grants.iter().find(|g| g.sub != a.owner) {
        return Err(Refusal::Owner {
            sub: g.sub.clone(),
            owner: a.owner.clone(),
        });
    }
    let mut datasets = Vec::with_capacity(a.datasets.len());
    for id in &a.datasets {
        let d = catalog.dataset(id)?;
        if !grants.iter().any(|g| d.granted_by(g)) {
            return Err(Refusal::NotGranted {
                dataset: id.to_string(),
                grant_url: d.grant_url.clone(),
                issuers: d.issuers.join(", "),
                dac: d
                    .source
                    .as_ref()
                    .map(|s| format!(" and source {s}"))
                    .unwrap_or_default(),
            });
        }
        let (release, host_path) = catalog.current_release(id, d);
        datasets.push(DatasetMount {
            id: id.clone(),
            host_path,
            release,
            claim: d.claim.clone(),
        });
    }
    let image = catalog.image(&a.image)?.to_owned();
    if let Some(launch) = &a.launch {
        launch.check().map_err(Refusal::Launch)?;
        if !launch.inputs.is_empty() && !a.datasets.is_empty() {
            return Err(Refusal::Launch(
                "a workspace reading a federated job's partials (an aggregation step) mounts no \
                 dataset; this one names some"
                    .into(),
            ));
        }
        if !launch.inputs.is_empty() && !capabilities.host_dirs {
            return Err(Refusal::Launch(
                "this site's backend cannot bind a federated job's partials at /inputs; run the \
                 aggregation step at a Docker or Slurm site"
                    .into(),
            ));
        }
    }
    if a.resources.gpus > 0 && !capabilities.gpus {
        return Err(Refusal::NoGpus(a.resources.gpus));
    }
    let first_visa_exp = grants
        .iter()
        .filter_map(|g| DateTime::from_timestamp(g.exp, 0))
        .min();
    let expires_at = first_visa_exp.map_or(a.expires_at, |v| v.min(a.expires_at));
    Ok(Approved {
        workspace,
        image,
        datasets,
        expires_at,
        grants,
    })
}

#[cfg(test)]
mod tests {
    use basho_core::visa::mint::{Issuer, Visa};

    use super::*;
    use crate::fixtures::{AssignmentExt, ISS, ISSUER, catalog, id, trusted};

    const CAPS: Capabilities = Capabilities {
        gpus: false,
        recursive_readonly: true,
        host_dirs: true,
        relaunch: true,
        requeue: false,
    };

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn assignment() -> Assignment {
        Assignment::test("ws-1")
            .with_dataset("JGAD000101")
            .expiring(now() + chrono::Duration::minutes(30))
    }

    fn check(a: &Assignment) -> Result<Approved, Refusal> {
        let root = std::path::Path::new("/srv/jga");
        verify_assignment(a, &trusted(), &catalog(root), CAPS, now())
    }

    #[test]
    fn approves_a_granted_assignment() {
        let a = assignment().with_dataset("JGAD000102");
        let ok = check(&a).unwrap();
        assert_eq!(ok.image, *crate::fixtures::DEMO_IMAGE);
        assert_eq!(ok.datasets.len(), 2);
        assert_eq!(
            ok.datasets[0].host_path,
            std::path::Path::new("/srv/jga/JGAD000101")
        );
        // The visas last an hour, the workspace 30 minutes: the workspace's expiry holds.
        assert_eq!(ok.expires_at, a.expires_at);
    }

    #[test]
    fn ends_at_the_first_visa_expiry() {
        let mut a = assignment();
        let short = ISSUER.sign(&Visa::new("alice", "JGAD000102").expires_in(60));
        a.datasets.push(id("JGAD000102"));
        a.visas.push(short);
        let ok = check(&a).unwrap();
        assert!(ok.expires_at < a.expires_at);
        assert!(ok.expires_at <= now() + chrono::Duration::seconds(61));
    }

    #[test]
    fn refuses_a_visa_from_an_untrusted_issuer() {
        let mut a = assignment();
        a.visas = vec![Issuer::generate("https://evil.test").mint("alice", "JGAD000101")];
        let err = check(&a).unwrap_err();
        assert!(
            matches!(
                &err,
                Refusal::Visa {
                    index: 0,
                    error: VisaError::UntrustedIssuer(_)
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not trusted"), "{err}");
    }

    #[test]
    fn refuses_a_forged_or_expired_visa() {
        let mut a = assignment();
        // Signed by a key the site does not know, under the trusted issuer's name.
        let forger = Issuer::generate(crate::fixtures::ISS);
        a.visas = vec![forger.mint("alice", "JGAD000101")];
        assert!(matches!(
            check(&a),
            Err(Refusal::Visa {
                error: VisaError::BadSignature(_),
                ..
            })
        ));
        a.visas = vec![ISSUER.sign(&Visa::new("alice", "JGAD000101").expires_in(-5))];
        assert!(matches!(
            check(&a),
            Err(Refusal::Visa {
                error: VisaError::Expired(_),
                ..
            })
        ));
    }

    #[test]
    fn refuses_visas_of_someone_else() {
        let mut a = assignment();
        a.owner = "mallory".into();
        assert!(matches!(check(&a), Err(Refusal::Owner { .. })));
    }

    #[test]
    fn refuses_no_visa_unless_a_batch_task_that_mounts_nothing() {
        let mut a = assignment();
        a.visas.clear();
        assert_eq!(check(&a), Err(Refusal::NoVisa));
        a.launch = Some(basho_core::protocol::Launch::default());
        assert_eq!(
            check(&a),
            Err(Refusal::NoVisa),
            "a batch task with a dataset"
        );
        a.datasets.clear();
        let approved = check(&a).expect("a batch task that reads no dataset");
        assert!(approved.grants.is_empty() && approved.datasets.is_empty());
        a.launch = None;
        assert_eq!(check(&a), Err(Refusal::NoVisa), "an interactive workspace");
    }

    #[test]
    fn refuses_a_dataset_not_in_the_catalog() {
        let a = assignment().with_dataset("JGAD000999");
        assert_eq!(
            check(&a),
            Err(Refusal::Catalog(CatalogError::UnknownDataset(id(
                "JGAD000999"
            ))))
        );
    }

    #[test]
    fn refuses_a_dataset_no_visa_covers() {
        let mut a = assignment();
        a.datasets.push(id("JGAD000102"));
        let err = check(&a).unwrap_err();
        assert!(
            matches!(&err, Refusal::NotGranted { dataset, .. } if dataset == "JGAD000102"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("https://ddbj.nig.ac.jp/search/entry/jga-dataset/JGAD000102"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_visa_from_a_trusted_issuer_not_bound_to_the_dataset() {
        // The site trusts two issuers; JGAD000102 is bound to the second only.
        let other = Issuer::generate("https://other-dac.test");
        let mut trusted = trusted();
        trusted
            .add_json("https://other-dac.test", &other.jwks_json())
            .unwrap();
        let root = std::path::Path::new("/srv/jga");
        let catalog = Catalog::default()
            .with_dataset(id("JGAD000101"), &root.join("JGAD000101"), None, &[ISS])
            .with_dataset(
                id("JGAD000102"),
                &root.join("JGAD000102"),
                None,
                &["https://other-dac.test"],
            )
            .with_image("basho/demo", &crate::fixtures::DEMO_IMAGE);
        let mut a = assignment();
        a.datasets.push(id("JGAD000102"));
        a.visas.push(ISSUER.mint("alice", "JGAD000102"));
        let err = verify_assignment(&a, &trusted, &catalog, CAPS, now()).unwrap_err();
        assert!(
            matches!(&err, Refusal::NotGranted { dataset, .. } if dataset == "JGAD000102"),
            "{err}"
        );
        assert!(err.to_string().contains("https://other-dac.test"), "{err}");
        // The bound issuer's visa grants it.
        a.visas[1] = other.mint("alice", "JGAD000102");
        let ok = verify_assignment(&a, &trusted, &catalog, CAPS, now()).unwrap();
        assert_eq!(ok.datasets.len(), 2);
    }

    #[test]
    fn a_bound_source_must_be_the_visas() {
        let root = std::path::Path::new("/srv/jga");
        let mut catalog = catalog(root);
        let a = assignment();
        catalog.bind_source(&id("JGAD000101"), "https://dac.elsewhere.test/JGAC000999");
        let err = verify_assignment(&a, &trusted(), &catalog, CAPS, now()).unwrap_err();
        assert!(
            err.to_string()
                .contains("source https://dac.elsewhere.test/JGAC000999"),
            "{err}"
        );
        // The minter's visas name this DAC as their source.
        catalog.bind_source(
            &id("JGAD000101"),
            "https://ddbj.nig.ac.jp/jga/dac/JGAC000001",
        );
        assert!(verify_assignment(&a, &trusted(), &catalog, CAPS, now()).is_ok());
    }

    #[test]
    fn refuses_an_image_off_the_allow_list() {
        let mut a = assignment();
        a.image = "evil/miner".into();
        assert_eq!(
            check(&a),
            Err(Refusal::Catalog(CatalogError::UnknownImage(
                "evil/miner".into()
            )))
        );
        // A pinned reference is not a name on the allow-list either.
        a.image = crate::fixtures::DEMO_IMAGE.clone();
        assert!(matches!(check(&a), Err(Refusal::Catalog(_))));
    }

    #[test]
    fn refuses_an_expired_workspace() {
        let a = assignment().expiring(now() - chrono::Duration::seconds(1));
        assert!(matches!(check(&a), Err(Refusal::Expired(_))));
    }

    #[test]
    fn refuses_a_path_like_id_and_gpus_it_cannot_give() {
        let mut a = assignment();
        a.id = "../../etc".into();
        assert!(matches!(check(&a), Err(Refusal::BadId(_))));
        let mut a = assignment();
        a.resources.gpus = 1;
        assert_eq!(check(&a), Err(Refusal::NoGpus(1)));
    }

    #[test]
    fn refuses_a_launch_the_site_would_not_run() {
        use basho_core::protocol::Launch;
        let launch = |workdir: &str, var: &str| Launch {
            workdir: Some(workdir.into()),
            env: [(var.to_owned(), "x".to_owned())].into(),
            outputs: vec!["out/counts.csv".into()],
            ..Launch::default()
        };
        let mut a = assignment();
        a.launch = Some(launch("/work/run", "LANG"));
        assert!(check(&a).is_ok());
        // An aggregation step reads partials, never a dataset.
        let mut reads_both = a.clone();
        reads_both.launch.as_mut().unwrap().inputs = vec![basho_core::federated::PartialInput {
            site: basho_core::Ident::parse("ncbn").unwrap(),
            release: "rr-1".into(),
            files: Vec::new(),
        }];
        let e = check(&reads_both).unwrap_err();
        assert!(e.to_string().contains("mounts no dataset"), "{e}");
        for bad in [
            launch("work", "LANG"),
            launch("/work/../etc", "LANG"),
            launch("/work//x", "LANG"),
            launch("/work", "BASHO_DATASETS"),
            launch("/work", "A=B"),
            launch("/work", "1A"),
            Launch {
                outputs: vec!["../../etc/shadow".into()],
                ..Launch::default()
            },
            Launch {
                outputs: vec!["/etc/shadow".into()],
                ..Launch::default()
            },
        ] {
            a.launch = Some(bad.clone());
            assert!(matches!(check(&a), Err(Refusal::Launch(_))), "{bad:?}");
        }
    }
}
