//! The site's own catalog: dataset ID → local path and grant URL, and the image allow-list
//! (template image name → pinned reference). The orchestrator never sends a host path or an image
//! reference; the agent resolves both here, and refuses what it does not hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use basho_core::Ident;
use basho_core::protocol::DatasetEntry;
use basho_core::visa::default_grant_url;

use crate::config::{ClaimSource, SiteConfig};

/// A dataset the site holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Where it lives on this site's storage.
    pub path: PathBuf,
    /// The PersistentVolumeClaim holding it, on a Kubernetes site that names one.
    pub claim: Option<ClaimSource>,
    /// The grant URL a visa's `value` must carry to grant it.
    pub grant_url: String,
    /// The issuers whose visas may grant it; none: no visa can.
    pub issuers: Vec<String>,
    /// The DAC a granting visa's `source` must name, when the site binds one.
    pub source: Option<String>,
    /// The participant ID column of its tables.
    pub participant_column: Option<String>,
    /// The filter command for its other files.
    pub filter_command: Vec<String>,
}

impl Dataset {
    /// The dataset as its releases are made from it.
    pub fn consent_source(&self) -> crate::consent::Source<'_> {
        crate::consent::Source {
            original: &self.path,
            participant_column: self.participant_column.as_deref(),
            filter_command: &self.filter_command,
        }
    }

    /// Whether the verified grant `g` grants this dataset: its value is the grant URL, its issuer
    /// one bound to the dataset, and its source the bound one when there is one.
    pub fn granted_by(&self, g: &basho_core::visa::Grant) -> bool {
        g.value == self.grant_url
            && self.issuers.contains(&g.iss)
            && self
                .source
                .as_ref()
                .is_none_or(|s| g.source.as_ref() == Some(s))
    }
}

/// What the catalog cannot resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The dataset is not held at this site.
    #[error(
        "dataset {0} is not in this site's catalog; the orchestrator placed it at the wrong site"
    )]
    UnknownDataset(Ident),
    /// The image name is not on the allow-list.
    #[error("image {0:?} is not on this site's image allow-list; a site admin must pin it first")]
    UnknownImage(String),
}

/// The catalog and allow-list of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    datasets: BTreeMap<Ident, Dataset>,
    images: BTreeMap<String, String>,
    /// Where the datasets' later releases are; none: every dataset is its release 1.
    releases_dir: Option<PathBuf>,
}

impl Catalog {
    /// The catalog a site config describes. A duplicated ID keeps its first entry (`check-config`
    /// reports the duplicate). A dataset that names no issuers is granted by the site's trusted
    /// issuer when it trusts exactly one, and by none when it trusts several (`check-config`
    /// reports that too).
    pub fn from_config(config: &SiteConfig) -> Self {
        let mut datasets = BTreeMap::new();
        let only_issuer: Vec<String> = match config.trusted_issuers.as_slice() {
            [one] => vec![one.issuer.clone()],
            _ => Vec::new(),
        };
        for d in &config.datasets {
            datasets.entry(d.id.clone()).or_insert_with(|| Dataset {
                path: d.path.clone(),
                claim: d.claim.clone(),
                grant_url: d
                    .grant_url
                    .clone()
                    .unwrap_or_else(|| default_grant_url(d.id.as_str())),
                issuers: if d.issuers.is_empty() {
                    only_issuer.clone()
                } else {
                    d.issuers.clone()
                },
                source: d.source.clone(),
                participant_column: d.participant_column.clone(),
                filter_command: d.filter_command.clone(),
            });
        }
        Self {
            datasets,
            images: config.images.clone(),
            releases_dir: Some(config.releases_dir()),
        }
    }

    /// Keeps the datasets' later releases under `dir` (builder).
    pub fn with_releases(mut self, dir: &Path) -> Self {
        self.releases_dir = Some(dir.to_owned());
        self
    }

    /// The releases of dataset `id` (kept under the site's releases directory).
    pub fn releases(&self, id: &Ident) -> Option<crate::consent::Releases> {
        Some(crate::consent::Releases::new(
            self.releases_dir.as_deref()?,
            id,
        ))
    }

    /// The release of `id` a workspace launched now mounts, and where it is.
    pub fn current_release(&self, id: &Ident, d: &Dataset) -> (u32, PathBuf) {
        match self.releases(id) {
            Some(r) => r.current(&d.path),
            None => (1, d.path.clone()),
        }
    }

    /// Adds a dataset that visas of `issuers` grant (builder, for tests and embedders).
    pub fn with_dataset(
        mut self,
        id: Ident,
        path: &Path,
        grant_url: Option<&str>,
        issuers: &[&str],
    ) -> Self {
        let grant_url = grant_url
            .map(str::to_owned)
            .unwrap_or_else(|| default_grant_url(id.as_str()));
        self.datasets.insert(
            id,
            Dataset {
                path: path.to_owned(),
                claim: None,
                grant_url,
                issuers: issuers.iter().map(|i| (*i).to_owned()).collect(),
                source: None,
                participant_column: None,
                filter_command: Vec::new(),
            },
        );
        self
    }

    /// Binds dataset `id`'s granting visas to DAC `source` (for tests and embedders).
    pub fn bind_source(&mut self, id: &Ident, source: &str) {
        if let Some(d) = self.datasets.get_mut(id) {
            d.source = Some(source.to_owned());
        }
    }

    /// Names dataset `id`'s participant ID column (for tests and embedders).
    pub fn set_participant_column(&mut self, id: &Ident, column: &str) {
        if let Some(d) = self.datasets.get_mut(id) {
            d.participant_column = Some(column.to_owned());
        }
    }

    /// Adds an allow-listed image (builder).
    pub fn with_image(mut self, name: &str, pinned: &str) -> Self {
        self.images.insert(name.to_owned(), pinned.to_owned());
        self
    }

    /// The dataset `id`, or why it cannot be mounted here.
    pub fn dataset(&self, id: &Ident) -> Result<&Dataset, CatalogError> {
        self.datasets
            .get(id)
            .ok_or_else(|| CatalogError::UnknownDataset(id.clone()))
    }

    /// Those of `datasets` this catalog holds whose entry `grants` accepts.
    pub fn granting(&self, datasets: &[Ident], grants: impl Fn(&Dataset) -> bool) -> Vec<Ident> {
        datasets
            .iter()
            .filter(|d| self.datasets.get(*d).is_some_and(&grants))
            .cloned()
            .collect()
    }

    /// Every dataset, by ID.
    pub fn entries(&self) -> impl Iterator<Item = (&Ident, &Dataset)> {
        self.datasets.iter()
    }

    /// The pinned reference of image `name`.
    pub fn image(&self, name: &str) -> Result<&str, CatalogError> {
        self.images
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| CatalogError::UnknownImage(name.to_owned()))
    }

    /// The datasets as the orchestrator may know them: IDs and grant URLs, never paths.
    pub fn inventory(&self) -> Vec<DatasetEntry> {
        self.datasets
            .iter()
            .map(|(id, d)| DatasetEntry {
                id: id.clone(),
                grant_url: d.grant_url.clone(),
            })
            .collect()
    }

    /// The allow-listed image names (not their references).
    pub fn image_names(&self) -> Vec<String> {
        self.images.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    #[test]
    fn grant_url_defaults_and_overrides() {
        let c = Catalog::default()
            .with_dataset(id("JGAD000101"), Path::new("/srv/a"), None, &[])
            .with_dataset(
                id("LOCAL1"),
                Path::new("/srv/b"),
                Some("https://site.example/grants/LOCAL1"),
                &[],
            );
        assert_eq!(
            c.dataset(&id("JGAD000101")).unwrap().grant_url,
            "https://ddbj.nig.ac.jp/search/entry/jga-dataset/JGAD000101"
        );
        assert_eq!(
            c.dataset(&id("LOCAL1")).unwrap().grant_url,
            "https://site.example/grants/LOCAL1"
        );
        assert_eq!(
            c.dataset(&id("JGAD000999")),
            Err(CatalogError::UnknownDataset(id("JGAD000999")))
        );
        let inv = c.inventory();
        assert_eq!(inv.len(), 2);
        assert!(inv.iter().all(|e| e.grant_url.starts_with("https://")));
    }

    #[test]
    fn images_resolve_only_from_the_allow_list() {
        let pinned = format!("sha256:{}", "a".repeat(64));
        let c = Catalog::default().with_image("basho/demo", &pinned);
        assert_eq!(c.image("basho/demo").unwrap(), pinned);
        assert_eq!(
            c.image(&pinned),
            Err(CatalogError::UnknownImage(pinned.clone()))
        );
        assert_eq!(c.image_names(), vec!["basho/demo".to_owned()]);
    }
}
