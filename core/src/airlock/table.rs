//! The table checks: identifier columns, small cells, and rows copied from the datasets.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::Read;

use csv::ByteRecord;

use super::{AirlockError, Check, Collector, Finding, Rules};

/// Joins the fields of a normalized row before hashing, so `a,bc` and `ab,c` differ.
const UNIT_SEPARATOR: u8 = 0x1f;

/// The rows of the workspace's own datasets, to flag a result row that copies a record.
///
/// Holds one 64-bit hash per distinct row, not the rows: about 16 bytes a row, so millions of
/// rows fit. A row is normalized before hashing: each field trimmed of ASCII whitespace (and
/// unquoted by the parser), the fields joined by `\x1f`. A row with fewer than two non-empty
/// fields is not indexed (and never flagged): a single value is not a record, and would flag
/// every table that shares a value with a dataset.
///
/// Only exact copies are caught: a copied row with a column added, dropped or moved is not. The
/// hash is SipHash with keys drawn per index, so no one can craft rows that collide; a chance
/// collision (about n²/2⁶⁵ for n rows) only adds a false flag for the reviewers, never hides one.
#[derive(Debug, Clone, Default)]
pub struct RowIndex {
    rows: HashSet<u64, BuildHasherDefault<Prehashed>>,
    keys: RandomState,
}

impl RowIndex {
    /// An empty index: with it, [`check_table`] flags no copies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the rows of one dataset table split by `delimiter` (`b','`, `b'\t'`), skipping its
    /// first row as the header. Returns how many rows were new to the index (repeated rows and
    /// rows of fewer than two non-empty fields add nothing).
    pub fn add_table(&mut self, reader: impl Read, delimiter: u8) -> Result<u64, AirlockError> {
        let mut reader = table_reader(reader, delimiter);
        let mut record = ByteRecord::new();
        let mut added = 0;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => return Ok(added),
                Err(e) => return Err(table_error(e)),
            }
            let mut row = RowHasher::new(self);
            for field in &record {
                row.field(field.trim_ascii());
            }
            if let Some(hash) = row.finish() {
                added += u64::from(self.rows.insert(hash));
            }
        }
    }

    /// How many distinct rows the index holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the index holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Hashes one normalized row, field by field, without building it.
struct RowHasher {
    hasher: std::hash::DefaultHasher,
    fields: usize,
    filled: usize,
}

impl RowHasher {
    fn new(index: &RowIndex) -> Self {
        RowHasher {
            hasher: index.keys.build_hasher(),
            fields: 0,
            filled: 0,
        }
    }

    /// Adds the next field, already trimmed.
    fn field(&mut self, field: &[u8]) {
        if self.fields > 0 {
            self.hasher.write_u8(UNIT_SEPARATOR);
        }
        self.hasher.write(field);
        self.fields += 1;
        self.filled += usize::from(!field.is_empty());
    }

    /// The row's hash, or `None` when it has fewer than two non-empty fields.
    fn finish(&self) -> Option<u64> {
        (self.filled >= 2).then(|| self.hasher.finish())
    }
}

/// The hasher of the index's set: its keys are already SipHash values, so hashing them again
/// would be wasted work.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What [`check_table`] found in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Data rows read (the header not counted).
    pub rows: u64,
    /// Findings, at most [`Rules::max_findings_per_check`] of each check.
    pub findings: Vec<Finding>,
    /// Findings past the per-check cap: counted, not listed.
    pub omitted: u64,
}

/// Checks a delimited table (`delimiter` `b','` or `b'\t'`; `"` quotes fields), streaming, with
/// its first row as the header. Rows may have any number of fields.
///
/// - [`Check::IdentifierColumn`]: one finding per column whose name matches
///   [`Rules::identifier_columns`].
/// - [`Check::SmallCell`]: a cell whose trimmed text is a base-10 unsigned integer (digits only:
///   no sign, decimal point or exponent, so `-3`, `3.5` and `3e0` are not counts) with
///   `0 < value < min_cell_count`, outside identifier columns (an id is not a count). Any column
///   can hold counts, so any small integer is flagged, and the reviewers judge.
/// - [`Check::RecordCopy`]: a row whose normalized form is in `index` (see [`RowIndex`]).
///
/// Errors only when reading fails: a table the parser cannot read is a [`Check::Unreadable`]
/// finding, after the findings of the rows before it.
pub fn check_table(
    reader: impl Read,
    delimiter: u8,
    rules: &Rules,
    index: &RowIndex,
) -> Result<TableReport, AirlockError> {
    let mut out = Collector::new(rules.max_findings_per_check);
    let mut reader = table_reader(reader, delimiter);
    let mut rows = 0u64;
    let columns: Vec<String> = match reader.byte_headers() {
        Ok(header) => header
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let name = String::from_utf8_lossy(name);
                let name = name.trim().trim_start_matches('\u{feff}').trim();
                if name.is_empty() {
                    column_number(i)
                } else {
                    name.to_string()
                }
            })
            .collect(),
        Err(e) => return unreadable(e, out, rows),
    };
    let mut identifier = Vec::with_capacity(columns.len());
    for name in &columns {
        let pattern = identifier_pattern(name, rules);
        if let Some(pattern) = pattern {
            out.push(Check::IdentifierColumn, || Finding {
                check: Check::IdentifierColumn,
                message: format!(
                    "column \"{name}\" looks like an identifier (its name matches \
                     \"{pattern}\"); remove it, or tell the reviewers why it is safe"
                ),
                row: None,
                column: Some(name.clone()),
            });
        }
        identifier.push(pattern.is_some());
    }

    let min = rules.min_cell_count;
    let copies = !index.is_empty();
    let mut record = ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => rows += 1,
            Ok(false) => break,
            Err(e) => return unreadable(e, out, rows),
        }
        let line = || record.position().map_or(0, |p| p.line());
        let mut row = RowHasher::new(index);
        for (i, field) in record.iter().enumerate() {
            let field = field.trim_ascii();
            if copies {
                row.field(field);
            }
            if identifier.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(value) = parse_count(field) else {
                continue;
            };
            if value == 0 || value >= min {
                continue;
            }
            out.push(Check::SmallCell, || {
                let column = columns.get(i).cloned().unwrap_or_else(|| column_number(i));
                Finding {
                    check: Check::SmallCell,
                    message: format!(
                        "count {value} in column \"{column}\" at row {rows} (line {}) is below \
                         the minimum cell count {min}; suppress, round or merge it, or tell the \
                         reviewers why it is safe",
                        line()
                    ),
                    row: Some(rows),
                    column: Some(column),
                }
            });
        }
        if copies && row.finish().is_some_and(|hash| index.rows.contains(&hash)) {
            out.push(Check::RecordCopy, || Finding {
                check: Check::RecordCopy,
                message: format!(
                    "row {rows} (line {}) is a copy of a record in the workspace's datasets; \
                     release aggregates, not records",
                    line()
                ),
                row: Some(rows),
                column: None,
            });
        }
    }
    Ok(TableReport {
        rows,
        findings: out.findings,
        omitted: out.omitted,
    })
}

fn table_reader<R: Read>(reader: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(reader)
}

/// Ends a table that stopped parsing with an [`Check::Unreadable`] finding, or fails on I/O.
fn unreadable(
    error: csv::Error,
    mut out: Collector,
    rows: u64,
) -> Result<TableReport, AirlockError> {
    if error.is_io_error() {
        return Err(table_error(error));
    }
    out.push(Check::Unreadable, || {
        Finding::file(
            Check::Unreadable,
            format!(
                "the table cannot be read past row {rows}: {error}; the reviewers must read the \
                 rest as plain text"
            ),
        )
    });
    Ok(TableReport {
        rows,
        findings: out.findings,
        omitted: out.omitted,
    })
}

fn table_error(error: csv::Error) -> AirlockError {
    let line = error.position().map_or(0, |p| p.line());
    let message = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(e) => AirlockError::Io(e),
        _ => AirlockError::Table { line, message },
    }
}

/// The name of a column the header does not name: `column 7` (1-based).
fn column_number(i: usize) -> String {
    format!("column {}", i + 1)
}

/// A base-10 unsigned integer: ASCII digits only, fitting `u64`.
fn parse_count(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    let mut value = 0u64;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// The entry of [`Rules::identifier_columns`] that `name` matches, if any.
fn identifier_pattern<'r>(name: &str, rules: &'r Rules) -> Option<&'r str> {
    let name = normalize_name(name);
    if name.is_empty() {
        return None;
    }
    let matches = |entry: &&String| match entry.strip_prefix('*') {
        Some(suffix) => {
            let suffix = normalize_name(suffix);
            !suffix.is_empty() && name.ends_with(&suffix)
        }
        None => normalize_name(entry) == name,
    };
    rules
        .identifier_columns
        .iter()
        .find(matches)
        .map(String::as_str)
}

/// Folds a column name for matching: trimmed (and of a byte-order mark), split at each
/// lower-to-upper step (`PatientID` → `patient_id`), lower case, `-`, space and `.` read as `_`
/// (`Sample.ID`, `date of birth`), runs of `_` as one.
pub(super) fn normalize_name(name: &str) -> String {
    let name = name.trim().trim_start_matches('\u{feff}').trim();
    let mut out = String::with_capacity(name.len() + 4);
    let mut after_lower = false;
    for c in name.chars() {
        let c = if matches!(c, '-' | ' ' | '.') { '_' } else { c };
        if c.is_uppercase() && after_lower {
            out.push('_');
        }
        after_lower = c.is_lowercase() || c.is_ascii_digit();
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.extend(c.to_lowercase());
    }
    out
}
