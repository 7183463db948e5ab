//! The results airlock's automated disclosure checks: the site runs them on every file a
//! researcher asks to release from a workspace's `/results`, before two human reviewers see it.
//!
//! The checks are pure: the caller opens the files and hands over readers, and gets back a
//! [`Checked`] per file. A failed check never hides a file: it adds a [`Finding`] that marks the
//! file for the reviewers, who decide. The one exception is a file of a refused type (an archive,
//! compressed data, an executable, binary data of no allowed type, a type the site does not
//! allow, or a name that contradicts the content): it is `refused` and never goes to release,
//! because its contents cannot be checked or shown to the reviewers as what they claim to be.
//!
//! What is checked:
//! - the type, by content ([`sniff`]), never by the name alone;
//! - in tables (CSV, TSV): columns whose names look like identifiers, small counts
//!   ([`Rules::min_cell_count`]), and rows that copy a record of the workspace's own datasets
//!   ([`RowIndex`]);
//! - in JSON: that it parses;
//! - in every text type: that the whole file, not only its head, is UTF-8 text.
//!
//! Rows in findings are 1-based data rows: the header is not counted, so row 1 is the first
//! record after the header. Blank lines are not rows and a quoted field may span lines, so each
//! message also names the line of the file where the row starts.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

mod rules;
mod sniff;
mod table;

pub use rules::Rules;
pub use sniff::{HEAD_LEN, sniff};
pub use table::{RowIndex, TableReport, check_table};

/// A file type the airlock knows, as told by the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// Comma-separated table.
    Csv,
    /// Tab-separated table.
    Tsv,
    /// Any other UTF-8 text (including scripts and Markdown).
    Txt,
    /// A JSON document.
    Json,
    /// A PNG image.
    Png,
    /// A PDF document.
    Pdf,
}

impl FileType {
    /// Every type, in the order of the default [`Rules::allowed_types`].
    pub const ALL: [FileType; 6] = [
        FileType::Csv,
        FileType::Tsv,
        FileType::Txt,
        FileType::Json,
        FileType::Png,
        FileType::Pdf,
    ];

    /// The name as in the rules (`"csv"`, `"png"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Csv => "csv",
            FileType::Tsv => "tsv",
            FileType::Txt => "txt",
            FileType::Json => "json",
            FileType::Png => "png",
            FileType::Pdf => "pdf",
        }
    }

    /// How a message names content of this type.
    fn describe(self) -> &'static str {
        match self {
            FileType::Csv => "a CSV table",
            FileType::Tsv => "a TSV table",
            FileType::Txt => "text",
            FileType::Json => "JSON",
            FileType::Png => "a PNG image",
            FileType::Pdf => "a PDF document",
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which check a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A count below [`Rules::min_cell_count`].
    SmallCell,
    /// A row equal to a row of the workspace's datasets.
    RecordCopy,
    /// A column whose name looks like an identifier.
    IdentifierColumn,
    /// The type is not allowed, not a known type, or contradicts the name: the file is refused.
    TypeRefused,
    /// An archive or compressed data: the file is refused.
    Archive,
    /// The content does not parse as its type (JSON that does not parse, a table the parser
    /// cannot read): the reviewers must look at it themselves.
    Unreadable,
    /// The ID of a participant who withdrew consent from one of the workspace's datasets: the
    /// file is refused.
    Withdrawn,
}

impl Check {
    /// How many checks there are, to count findings per check.
    const COUNT: usize = 7;
}

/// One thing the checks found, for the reviewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// What was found and what to do about it, for reviewers and the researcher.
    pub message: String,
    /// 1-based data row (the header is not counted), when the finding is about one row.
    pub row: Option<u64>,
    /// The column's name from the header (or `column N`, 1-based, past the header's end).
    pub column: Option<String>,
}

impl Finding {
    /// A finding about the whole file.
    fn file(check: Check, message: String) -> Self {
        Finding {
            check,
            message,
            row: None,
            column: None,
        }
    }
}

impl Checked {
    /// Refuses the file: the ID of a participant who withdrew consent is in it, at `at` (a
    /// byte offset, never the ID).
    pub fn withdrawn(&mut self, at: &str) {
        self.refused = true;
        self.findings.push(Finding::file(
            Check::Withdrawn,
            format!(
                "the ID of a participant who withdrew consent is in this file ({at}); remove \
                 their data and ask again"
            ),
        ));
    }
}

/// The outcome of the checks on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checked {
    /// The type the content was recognised as; `None` when it is none of the known types.
    pub file_type: Option<FileType>,
    /// The file may not be released at all (see [`Check::TypeRefused`] and [`Check::Archive`]).
    pub refused: bool,
    /// What the checks found, at most [`Rules::max_findings_per_check`] of each check.
    pub findings: Vec<Finding>,
    /// Findings past the per-check cap: counted, not listed.
    pub omitted: u64,
}

impl Checked {
    /// Not refused and nothing found: the reviewers see a clean file.
    pub fn passed(&self) -> bool {
        !self.refused && self.findings.is_empty() && self.omitted == 0
    }

    fn refused(file_type: Option<FileType>, finding: Finding) -> Self {
        Checked {
            file_type,
            refused: true,
            findings: vec![finding],
            omitted: 0,
        }
    }
}

/// Why a check could not run at all. A file that can be read but not parsed is not an error: it
/// is a [`Check::Unreadable`] finding.
#[derive(Debug, thiserror::Error)]
pub enum AirlockError {
    /// Reading the file (or a dataset) failed.
    #[error("reading failed: {0}; check that the file is readable and run the checks again")]
    Io(#[from] io::Error),
    /// A dataset given to [`RowIndex::add_table`] is not a delimited table.
    #[error("dataset table unreadable at line {line}: {message}; check its delimiter and quoting")]
    Table {
        /// Line of the table where reading stopped.
        line: u64,
        /// The parser's message.
        message: String,
    },
}

/// Collects findings, listing at most `cap` per check and counting the rest.
struct Collector {
    cap: usize,
    listed: [usize; Check::COUNT],
    findings: Vec<Finding>,
    omitted: u64,
}

impl Collector {
    fn new(cap: usize) -> Self {
        Collector {
            cap,
            listed: [0; Check::COUNT],
            findings: Vec::new(),
            omitted: 0,
        }
    }

    /// Adds a finding of `check`; `make` runs only when it will be listed, so findings past the
    /// cap cost no formatting.
    fn push(&mut self, check: Check, make: impl FnOnce() -> Finding) {
        let listed = &mut self.listed[check as usize];
        if *listed < self.cap {
            *listed += 1;
            self.findings.push(make());
        } else {
            self.omitted += 1;
        }
    }
}

/// Runs every check on one file: reads its first [`HEAD_LEN`] bytes, tells its type by content
/// ([`sniff`]), refuses archives and types not in [`Rules::allowed_types`], then streams the rest
/// (never holding the whole file in memory): tables through [`check_table`] (CSV with `,`, TSV
/// with a tab), JSON through a parser. PNG and PDF files are not read past the head.
///
/// A text type (CSV, TSV, JSON, text) must be UTF-8 without NUL bytes to its end: binary data past
/// the head refuses the file as [`Check::TypeRefused`], so text cannot smuggle other content. A
/// UTF-8 byte-order mark at the start is skipped.
///
/// Errors only when reading fails; what does not parse is a [`Check::Unreadable`] finding.
pub fn check_file(
    name: &str,
    mut reader: impl Read,
    rules: &Rules,
    index: &RowIndex,
) -> Result<Checked, AirlockError> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&mut reader).take(HEAD_LEN as u64).read_to_end(&mut head)?;
    let file_type = match sniff(name, &head) {
        Ok(t) => t,
        Err(finding) => return Ok(Checked::refused(None, finding)),
    };
    if !rules.allowed_types.contains(&file_type) {
        let allowed: Vec<&str> = rules.allowed_types.iter().map(|t| t.as_str()).collect();
        let message = format!(
            "{name} is {}, and {file_type} files may not be released from this site (allowed: \
             {}); convert it to an allowed type or ask the site to allow {file_type}",
            file_type.describe(),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            },
        );
        return Ok(Checked::refused(
            Some(file_type),
            Finding::file(Check::TypeRefused, message),
        ));
    }
    let mut out = Checked {
        file_type: Some(file_type),
        refused: false,
        findings: Vec::new(),
        omitted: 0,
    };
    let delimiter = match file_type {
        FileType::Png | FileType::Pdf => return Ok(out),
        FileType::Csv => Some(b','),
        FileType::Tsv => Some(b'\t'),
        FileType::Txt | FileType::Json => None,
    };
    let body = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&head);
    let skipped = (head.len() - body.len()) as u64;
    let mut text = sniff::TextGuard::new(body.chain(reader), skipped);
    if let Some(delimiter) = delimiter {
        let report = check_table(&mut text, delimiter, rules, index)?;
        out.findings = report.findings;
        out.omitted = report.omitted;
    } else if file_type == FileType::Json {
        out.findings.extend(check_json(&mut text)?);
    }
    // Whatever a parser left unread (after a syntax error, or all of a text file) must be text
    // too.
    io::copy(&mut text, &mut io::sink())?;
    if let Some(problem) = text.finish() {
        let message = format!(
            "{name} starts as {} but has {problem}, so it is not a text file; only UTF-8 text, \
             PNG and PDF can be released: save it as UTF-8 text",
            file_type.describe()
        );
        return Ok(Checked::refused(
            None,
            Finding::file(Check::TypeRefused, message),
        ));
    }
    Ok(out)
}

/// Parses a JSON document without keeping it; `None` when it is valid.
fn check_json(reader: impl Read) -> Result<Option<Finding>, AirlockError> {
    let reader = io::BufReader::with_capacity(64 * 1024, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end());
    match parsed {
        Ok(()) => Ok(None),
        Err(e) if e.is_io() => Err(io::Error::from(e).into()),
        Err(e) => Ok(Some(Finding::file(
            Check::Unreadable,
            format!("not valid JSON: {e}; the reviewers must read it as plain text"),
        ))),
    }
}

#[cfg(test)]
mod tests;
