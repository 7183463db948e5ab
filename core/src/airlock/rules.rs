//! The site's `[airlock]` rule set.

use serde::{Deserialize, Serialize};

use super::{FileType, table};

/// The site's `[airlock]` rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// A count cell with `0 < value < min_cell_count` is flagged (default 10). Zero is not
    /// flagged: a zero reveals no one, and the usual threshold rule flags 1 to threshold − 1.
    /// 0 or 1 turns the check off.
    #[serde(default = "default_min_cell_count")]
    pub min_cell_count: u64,
    /// Types that may be released (default: all six). Any other file is refused.
    #[serde(default = "default_allowed_types")]
    pub allowed_types: Vec<FileType>,
    /// Column names that mark an identifier column. An entry matches the whole column name; an
    /// entry starting with `*` matches names ending in the rest (`"*_id"`: `sample_id`,
    /// `PatientID`). Names and entries are compared folded: trimmed, camelCase split at each
    /// lower-to-upper step, lower case, `-`, space and `.` read as `_`, runs of `_` as one.
    #[serde(default = "default_identifier_columns")]
    pub identifier_columns: Vec<String>,
    /// At most this many findings of each [`Check`](super::Check) are listed per file (default
    /// 50); the rest are only counted in [`Checked::omitted`](super::Checked::omitted), so a
    /// huge table cannot make a huge report.
    #[serde(default = "default_max_findings_per_check")]
    pub max_findings_per_check: usize,
}

fn default_min_cell_count() -> u64 {
    10
}

fn default_allowed_types() -> Vec<FileType> {
    FileType::ALL.to_vec()
}

fn default_identifier_columns() -> Vec<String> {
    [
        "*_id",
        "id",
        "name",
        "first_name",
        "last_name",
        "surname",
        "email",
        "phone",
        "address",
        "birth_date",
        "date_of_birth",
        "dob",
        "postcode",
        "postal_code",
        "zip",
        "zip_code",
        "mrn",
        "ssn",
        "nhs_number",
    ]
    .map(String::from)
    .to_vec()
}

fn default_max_findings_per_check() -> usize {
    50
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_cell_count: default_min_cell_count(),
            allowed_types: default_allowed_types(),
            identifier_columns: default_identifier_columns(),
            max_findings_per_check: default_max_findings_per_check(),
        }
    }
}

impl Rules {
    /// What in these rules is probably a mistake, one sentence each, for the site's
    /// configuration check. Empty when the rules look sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.min_cell_count <= 1 {
            out.push(format!(
                "airlock.min_cell_count = {}: the small-cell check flags nothing; set it to the \
                 site's threshold (commonly 10)",
                self.min_cell_count
            ));
        }
        if self.allowed_types.is_empty() {
            out.push(
                "airlock.allowed_types is empty: every file is refused; list the types that may \
                 be released (csv, tsv, txt, json, png, pdf)"
                    .into(),
            );
        }
        for entry in &self.identifier_columns {
            let (suffix, name) = match entry.strip_prefix('*') {
                Some(rest) => (true, rest),
                None => (false, entry.as_str()),
            };
            if table::normalize_name(name).is_empty() {
                out.push(if suffix {
                    format!(
                        "airlock.identifier_columns entry {entry:?} matches every column; write \
                         a suffix after the `*`, as in \"*_id\""
                    )
                } else {
                    format!(
                        "airlock.identifier_columns entry {entry:?} is empty and matches nothing; \
                         remove it"
                    )
                });
            }
        }
        if self.max_findings_per_check == 0 {
            out.push(
                "airlock.max_findings_per_check = 0: findings are only counted and reviewers see \
                 none of them listed; set it to at least 1 (default 50)"
                    .into(),
            );
        }
        out
    }
}
