//! The site's airlock desk: a release request for one of its workspaces, taken from that
//! workspace's own `/results` and compared with the rows of the datasets the site itself mounted
//! in it (its `grants.json`, never the orchestrator's word).

use std::path::{Path, PathBuf};

use basho_core::Ident;
use basho_core::airlock::RowIndex;

use basho_core::protocol::{Launch, TaskOutputs};
use basho_core::release::{Compared, Intake};

use super::{AirlockConfig, IntakeError, Store, take};
use crate::catalog::Catalog;
use crate::reconcile::hostdirs::HostDirs;
use crate::revocations::recorded_grants;

/// Takes release requests for the site's workspaces.
#[derive(Debug, Clone)]
pub struct Desk {
    dirs: HostDirs,
    catalog: Catalog,
    config: AirlockConfig,
    store: Store,
}

/// What a partial the site released itself says released it.
pub const AUTO_RELEASE_RULE: &str =
    "the site's rule [airlock] auto_release_partials: every automated check passed";

/// How deep the dataset directories are searched for tables.
const MAX_DEPTH: usize = 8;

impl Desk {
    /// The desk of a site: its directories, catalog, airlock settings and store.
    pub fn new(dirs: HostDirs, catalog: Catalog, config: AirlockConfig, store: Store) -> Desk {
        Desk {
            dirs,
            catalog,
            config,
            store,
        }
    }

    /// The store the desk keeps copies in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Takes `names` from `workspace`'s `/results`. Blocking: run it off the runtime's threads.
    pub fn request(&self, workspace: &str, names: &[String]) -> Result<Intake, IntakeError> {
        let grants = recorded_grants(&self.dirs.state_dir(workspace)).ok_or_else(|| {
            IntakeError::Unknown(format!(
                "the site has no record of workspace {workspace}; it takes release requests \
                 only from workspaces it launched and still holds"
            ))
        })?;
        let results = self.dirs.results_dir(workspace);
        if !results.is_dir() {
            return Err(IntakeError::Unknown(format!(
                "workspace {workspace} has no /results at this site any more (stopped, expired \
                 or revoked); nothing more can be asked for release from it"
            )));
        }
        let (index, compared) = self.index(&grants.datasets);
        let mut files = take(&results, names, &self.config, &self.store, &index)?;
        self.refuse_withdrawn(&grants.datasets, &mut files);
        Ok(Intake { files, compared })
    }

    /// Takes what an ended batch workspace's `launch` names as outputs: those of its `outputs`
    /// that are files under its `/results`, and the files under those that are directories
    /// (links are never followed), the others reported missing; or, for a federated job's step,
    /// every file under `/results`. A federated job's partial holding a link or anything but
    /// files and directories is refused whole; one whose every file passed every automated check
    /// is released by the site itself where `[airlock] auto_release_partials` says so. Blocking.
    pub fn outputs(&self, workspace: &str, launch: &Launch) -> TaskOutputs {
        let results = self.dirs.results_dir(workspace);
        let (mut present, mut missing, mut odd) = (Vec::new(), Vec::new(), Vec::new());
        for name in &launch.outputs {
            match std::fs::symlink_metadata(results.join(name)) {
                Ok(m) if m.is_file() => present.push(name.clone()),
                Ok(m) if m.is_dir() => files_under(&results, name, &mut present, &mut odd),
                _ => missing.push(name.clone()),
            }
        }
        if launch.all_results {
            files_under(&results, "", &mut present, &mut odd);
        }
        let mut seen = std::collections::BTreeSet::new();
        present.retain(|n| seen.insert(n.clone()));
        let mut out = TaskOutputs {
            intake: None,
            missing,
            error: None,
            released_by: None,
        };
        if launch.partial {
            if let Some(o) = odd.first() {
                out.error = Some(format!(
                    "the partial results hold {o}, a link or something other than a file; a \
                     partial is files only, and none of it was taken"
                ));
                return out;
            }
            if present.is_empty() {
                out.error = Some("the step wrote no partial results under /results".into());
                return out;
            }
        }
        if !present.is_empty() {
            match self.request(workspace, &present) {
                Ok(intake) => {
                    let clean = intake.files.iter().all(|f| f.checked.passed());
                    if launch.partial && clean && self.config.auto_release_partials {
                        out.released_by = Some(AUTO_RELEASE_RULE.into());
                    }
                    out.intake = Some(intake);
                }
                Err(e) => out.error = Some(e.to_string()),
            }
        }
        out
    }

    /// Refuses the files holding the ID of a participant who withdrew consent from one of
    /// `datasets` (as a whole token, in the copy the store keeps).
    fn refuse_withdrawn(&self, datasets: &[Ident], files: &mut [basho_core::release::Taken]) {
        let withdrawn: std::collections::BTreeSet<String> = datasets
            .iter()
            .filter_map(|d| self.catalog.releases(d))
            .flat_map(|r| r.withdrawn())
            .collect();
        let matcher = match crate::consent::scan::Matcher::new(&withdrawn) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "withdrawn IDs could not be searched for");
                return;
            }
        };
        for f in files {
            let bytes = self
                .store
                .path(&f.sha256)
                .and_then(|p| std::fs::read(p).ok());
            match bytes.map(|b| matcher.find(&b)) {
                Some(Some(at)) => f.checked.withdrawn(&format!("byte {at}")),
                Some(None) => {}
                // Not readable back: refused rather than let through unchecked.
                None => f.checked.withdrawn("its copy could not be read to check"),
            }
        }
    }

    /// The rows of `datasets`' CSV and TSV tables, up to the site's byte budget.
    fn index(&self, datasets: &[Ident]) -> (RowIndex, Compared) {
        let mut index = RowIndex::new();
        let mut compared = Compared::default();
        let mut budget = self.config.max_index_bytes;
        for id in datasets {
            let Ok(dataset) = self.catalog.dataset(id) else {
                continue;
            };
            for (path, delimiter) in tables(&dataset.path) {
                let size = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX);
                if size > budget {
                    compared.skipped += 1;
                    continue;
                }
                let added = std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| {
                        index
                            .add_table(std::io::BufReader::new(f), delimiter)
                            .map_err(|e| e.to_string())
                    });
                match added {
                    Ok(rows) => {
                        budget -= size;
                        compared.tables += 1;
                        compared.rows += rows;
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e,
                            "a dataset table could not be read for the copied-record check");
                        compared.skipped += 1;
                    }
                }
            }
        }
        (index, compared)
    }
}

/// The regular files under `results`/`dir` (`""`: all of it), by name relative to `results`, in
/// a stable order, into `out`; links are not followed, but named with anything else that is
/// neither a file nor a directory in `odd`.
fn files_under(results: &Path, dir: &str, out: &mut Vec<String>, odd: &mut Vec<String>) {
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(results.join(&dir)) else {
            continue;
        };
        let mut names: Vec<(String, std::fs::FileType)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if kind.is_file() {
                out.push(path);
            } else if kind.is_dir() {
                dirs.push(path);
            } else {
                odd.push(path);
            }
        }
    }
}

/// The CSV (`,`) and TSV (tab) files under `root`, by name, in a stable order; links are not
/// followed.
fn tables(root: &Path) -> Vec<(PathBuf, u8)> {
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_owned(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth < MAX_DEPTH {
                dirs.push((path, depth + 1));
            } else if kind.is_file() {
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                match ext.as_deref() {
                    Some("csv") => out.push((path, b',')),
                    Some("tsv") => out.push((path, b'\t')),
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use basho_core::airlock::Check;

    use super::*;
    use crate::config::Paths;
    use crate::reconcile::hostdirs::Ownership;

    struct Site {
        _dir: tempfile::TempDir,
        desk: Desk,
        dirs: HostDirs,
    }

    /// A site holding JGAD000101 (a CSV of two records and a TSV) and a launched workspace
    /// `ws-1` granted it.
    fn site(config: AirlockConfig) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data/JGAD000101");
        std::fs::create_dir_all(data.join("nested")).unwrap();
        std::fs::write(
            data.join("records.csv"),
            "id,age,icd10\nP1,40,E11\nP2,57,I10\n",
        )
        .unwrap();
        std::fs::write(data.join("nested/more.tsv"), "id\tage\tsex\nP3\t33\tF\n").unwrap();
        std::fs::write(data.join("readme.txt"), "not a table\n").unwrap();
        let paths = Paths::under(&dir.path().join("site"));
        let dirs = HostDirs::new(paths, Ownership::AlreadyOwned);
        let state = dirs.state_dir("ws-1");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            state.join(crate::revocations::GRANTS_FILE),
            r#"{"project":"P-0001","owner":"alice","datasets":["JGAD000101"],"visas":[]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dirs.results_dir("ws-1")).unwrap();
        let catalog = Catalog::default().with_dataset(
            Ident::parse("JGAD000101").unwrap(),
            &data,
            None,
            &["https://dac.example"],
        );
        let store = Store::open(&dir.path().join("airlock")).unwrap();
        Site {
            desk: Desk::new(dirs.clone(), catalog, config, store),
            dirs,
            _dir: dir,
        }
    }

    #[test]
    fn a_copied_record_and_a_small_cell_are_flagged_against_the_workspaces_own_datasets() {
        let s = site(AirlockConfig::default());
        let results = s.dirs.results_dir("ws-1");
        std::fs::write(
            results.join("table.csv"),
            "band,count\n40-49,3\n50-59,120\n",
        )
        .unwrap();
        std::fs::write(results.join("leak.csv"), "who,age,code\nP2, 57 ,I10\n").unwrap();
        std::fs::write(results.join("leak.tsv"), "a\tb\tc\nP3\t33\tF\n").unwrap();
        let names = ["table.csv", "leak.csv", "leak.tsv"].map(String::from);
        let intake = s.desk.request("ws-1", &names).unwrap();
        assert_eq!(
            intake.compared,
            Compared {
                tables: 2,
                rows: 3,
                skipped: 0
            }
        );
        let checks = |i: usize| -> Vec<Check> {
            intake.files[i]
                .checked
                .findings
                .iter()
                .map(|f| f.check)
                .collect()
        };
        assert_eq!(checks(0), [Check::SmallCell]);
        assert!(
            checks(1).contains(&Check::RecordCopy),
            "{:?}",
            intake.files[1]
        );
        assert!(
            checks(2).contains(&Check::RecordCopy),
            "{:?}",
            intake.files[2]
        );
    }

    #[test]
    fn tables_past_the_budget_are_not_compared_and_said_so() {
        let s = site(AirlockConfig {
            max_index_bytes: 40,
            ..AirlockConfig::default()
        });
        let results = s.dirs.results_dir("ws-1");
        std::fs::write(results.join("leak.csv"), "who,age,code\nP2,57,I10\n").unwrap();
        let intake = s.desk.request("ws-1", &["leak.csv".into()]).unwrap();
        assert_eq!((intake.compared.tables, intake.compared.skipped), (1, 1));
    }

    #[test]
    fn workspaces_the_site_did_not_launch_or_no_longer_holds_are_refused() {
        let s = site(AirlockConfig::default());
        let e = s.desk.request("ws-2", &["x.csv".into()]).unwrap_err();
        assert_eq!(e.code(), "unknown_workspace");
        assert!(e.to_string().contains("no record of workspace ws-2"), "{e}");
        std::fs::remove_dir_all(s.dirs.results_dir("ws-1")).unwrap();
        let e = s.desk.request("ws-1", &["x.csv".into()]).unwrap_err();
        assert!(e.to_string().contains("no /results"), "{e}");
    }

    #[test]
    fn an_ended_tasks_outputs_are_its_files_and_directories_never_links() {
        let s = site(AirlockConfig::default());
        let results = s.dirs.results_dir("ws-1");
        std::fs::create_dir_all(results.join("plots/deep")).unwrap();
        std::fs::write(results.join("counts.csv"), "band,count\n40-49,120\n").unwrap();
        std::fs::write(results.join("plots/b.txt"), "b\n").unwrap();
        std::fs::write(results.join("plots/deep/a.txt"), "a\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", results.join("plots/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", results.join("link.txt")).unwrap();
        let names = [
            "counts.csv",
            "plots",
            "link.txt",
            "absent.txt",
            "plots/b.txt",
        ];
        let out = s.desk.outputs("ws-1", &named(&names));
        let taken: Vec<&str> = out
            .intake
            .as_ref()
            .unwrap()
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            taken,
            ["counts.csv", "plots/b.txt", "plots/deep/a.txt"],
            "each file once, links left behind"
        );
        assert_eq!(out.missing, ["link.txt", "absent.txt"]);
        assert_eq!(out.error, None);
        // Nothing there: nothing taken, nothing asked of the store.
        let out = s.desk.outputs("ws-1", &named(&["nothing.txt"]));
        assert_eq!((out.intake, out.missing.len()), (None, 1));
        // A workspace the site does not hold: why, not a panic.
        let out = s.desk.outputs("ws-2", &named(&["counts.csv"]));
        assert_eq!(out.missing, ["counts.csv"]);
    }

    fn named(names: &[&str]) -> Launch {
        Launch {
            outputs: names.iter().map(|n| n.to_string()).collect(),
            ..Launch::default()
        }
    }

    fn partial() -> Launch {
        Launch {
            all_results: true,
            partial: true,
            ..Launch::default()
        }
    }

    #[test]
    fn a_partial_is_every_file_under_results_and_the_site_releases_a_clean_one_itself() {
        let config = AirlockConfig {
            auto_release_partials: true,
            ..AirlockConfig::default()
        };
        let s = site(config);
        let results = s.dirs.results_dir("ws-1");
        std::fs::create_dir_all(results.join("by_site")).unwrap();
        std::fs::write(results.join("counts.csv"), "band,count\n40-49,120\n").unwrap();
        std::fs::write(results.join("by_site/n.txt"), "n=120\n").unwrap();
        let out = s.desk.outputs("ws-1", &partial());
        let intake = out.intake.as_ref().expect("taken");
        let names: Vec<&str> = intake.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["counts.csv", "by_site/n.txt"]);
        assert_eq!(out.released_by.as_deref(), Some(AUTO_RELEASE_RULE));
        // A small cell: taken with its finding, and left for the checkers.
        std::fs::write(results.join("counts.csv"), "band,count\n40-49,3\n").unwrap();
        let out = s.desk.outputs("ws-1", &partial());
        assert!(out.intake.is_some());
        assert_eq!(out.released_by, None, "a finding leaves it to the checkers");
        // Without the site's rule, even a clean one waits.
        let s = site(AirlockConfig::default());
        let results = s.dirs.results_dir("ws-1");
        std::fs::write(results.join("counts.csv"), "band,count\n40-49,120\n").unwrap();
        let out = s.desk.outputs("ws-1", &partial());
        assert!(out.intake.is_some() && out.released_by.is_none());
    }

    #[test]
    fn a_partial_with_a_link_or_over_the_cap_or_empty_is_refused_whole() {
        let config = AirlockConfig {
            auto_release_partials: true,
            max_bytes: 64,
            ..AirlockConfig::default()
        };
        let s = site(config);
        let results = s.dirs.results_dir("ws-1");
        let out = s.desk.outputs("ws-1", &partial());
        assert!(
            out.error.as_deref().unwrap().contains("no partial results"),
            "{out:?}"
        );
        std::fs::write(results.join("counts.csv"), "band,count\n40-49,120\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", results.join("passwd")).unwrap();
        let out = s.desk.outputs("ws-1", &partial());
        assert!(out.intake.is_none() && out.released_by.is_none());
        assert!(
            out.error.as_deref().unwrap().contains("passwd, a link"),
            "{out:?}"
        );
        std::fs::remove_file(results.join("passwd")).unwrap();
        std::fs::write(results.join("big.txt"), "x".repeat(100)).unwrap();
        let out = s.desk.outputs("ws-1", &partial());
        assert!(out.intake.is_none() && out.released_by.is_none());
        assert!(out.error.is_some(), "over the site's cap: {out:?}");
    }

    #[test]
    fn a_file_holding_a_withdrawn_participants_id_is_refused() {
        let mut s = site(AirlockConfig::default());
        let id = Ident::parse("JGAD000101").unwrap();
        let releases = s._dir.path().join("releases");
        s.desk.catalog = s.desk.catalog.clone().with_releases(&releases);
        s.desk.catalog.set_participant_column(&id, "id");
        crate::consent::Releases::new(&releases, &id)
            .withdraw(
                &s.desk.catalog.dataset(&id).unwrap().consent_source(),
                &["P2".to_owned()].into(),
                "withdrawn",
                chrono::Utc::now(),
            )
            .unwrap();
        let results = s.dirs.results_dir("ws-1");
        std::fs::write(results.join("kept.txt"), "cohort P1 and P20: 2 people\n").unwrap();
        std::fs::write(results.join("leak.txt"), "see P2 for details\n").unwrap();
        let names = ["kept.txt", "leak.txt"].map(String::from);
        let intake = s.desk.request("ws-1", &names).unwrap();
        let withdrawn = |i: usize| -> bool {
            intake.files[i]
                .checked
                .findings
                .iter()
                .any(|f| f.check == Check::Withdrawn)
        };
        assert!(
            !withdrawn(0),
            "P1 and P20 are not P2: {:?}",
            intake.files[0]
        );
        assert!(
            withdrawn(1) && intake.files[1].checked.refused,
            "{:?}",
            intake.files[1]
        );
        let message = &intake.files[1].checked.findings[0].message;
        assert!(
            !message.contains("P2"),
            "the finding names where, not who: {message}"
        );
    }
}
