//! Telling a file's type by its content, and keeping a text file text to its end.

use std::io::{self, Read};

use serde::Deserialize;

use super::{Check, FileType, Finding};

/// How much of a file [`sniff`] looks at: [`super::check_file`] hands it the first `HEAD_LEN`
/// bytes. A shorter head is taken to be the whole file.
pub const HEAD_LEN: usize = 8 * 1024;

/// Archives and compressed data by their magic numbers: (offset, magic, what it is). bzip2 and
/// lzip start with ASCII, so they are matched with their version byte ([`archive_kind`]).
const ARCHIVES: &[(usize, &[u8], &str)] = &[
    (
        0,
        b"PK\x03\x04",
        "a zip archive (or a jar, docx, xlsx or odt, which are zip archives)",
    ),
    (0, b"PK\x05\x06", "an empty zip archive"),
    (0, b"PK\x07\x08", "a spanned zip archive"),
    (0, b"\x1f\x8b", "gzip-compressed"),
    (0, b"\x1f\x9d", "compress (.Z) compressed"),
    (0, b"\xfd7zXZ\x00", "xz-compressed"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (0, b"\x04\x22\x4d\x18", "lz4-compressed"),
    (0, b"LZIP\x01", "lzip-compressed"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (0, b"Rar!\x1a\x07", "a rar archive"),
    (0, b"MSCF\0\0\0\0", "a cabinet archive"),
    (0, b"!<arch>\n", "an ar archive (or a .deb package)"),
    (257, b"ustar", "a tar archive"),
];

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
const PDF: &[u8] = b"%PDF-";
const ELF: &[u8] = b"\x7fELF";

/// Tells a file's type from its name and the first [`HEAD_LEN`] bytes of its content (or all of
/// it, when shorter). The content decides; the name only chooses among what the content allows.
///
/// In order:
/// 1. Archives and compressed data (zip and its kin, gzip, bzip2, xz, zstd, lz4, lzip, .Z, 7z,
///    rar, cab, ar, and tar by `ustar` at offset 257): refused, [`Check::Archive`].
/// 2. ELF executables: refused, [`Check::TypeRefused`]. Other binaries fall to step 5.
/// 3. PNG by its 8-byte signature, PDF by a leading `%PDF-`.
/// 4. A name ending in `.csv`, `.tsv`, `.txt`, `.json`, `.png` or `.pdf` (any case) that
///    contradicts the content (a `.csv` that is a PNG, a `.png` that is text) is refused,
///    [`Check::TypeRefused`], with a message naming both.
/// 5. Otherwise the content must be UTF-8 text without NUL bytes (a multi-byte character cut by
///    the end of a head of `HEAD_LEN` bytes is fine; one cut by the end of a whole file is not),
///    or it is refused as binary data of no allowed type. Scripts (`#!`) are text.
/// 6. Text: a `.json` name is JSON. Then content that reads as a table (at least two records of
///    the same number of fields, two or more, among the first six, tried with a tab and then
///    with a comma) is TSV or CSV, whatever the name says: renaming a table `.txt`, or giving a
///    comma table a `.tsv` name, does not skip the table checks. Then a `.csv` or `.tsv` name
///    (a one-column or header-only table). Then content that starts with `{` or `[` and parses
///    as JSON (or is a valid beginning of JSON cut by the head) is JSON. Anything else is text.
pub fn sniff(name: &str, head: &[u8]) -> Result<FileType, Finding> {
    if let Some(kind) = archive_kind(head) {
        return Err(refusal(
            Check::Archive,
            format!(
                "{name} is {kind} data: archives and compressed files cannot be checked, so they \
                 are refused; release the files inside it one by one"
            ),
        ));
    }
    if head.starts_with(ELF) {
        return Err(refusal(
            Check::TypeRefused,
            format!(
                "{name} is an executable program (ELF), which cannot be released; release the \
                 source or the results it produced instead"
            ),
        ));
    }
    let named = named_type(name);
    let content = if head.starts_with(PNG) {
        Some(FileType::Png)
    } else if head.starts_with(PDF) {
        Some(FileType::Pdf)
    } else {
        None
    };
    let text_problem = text_problem(head);
    match (content, named) {
        (Some(content), Some(named)) if content != named => {
            Err(contradiction(name, named, content.describe()))
        }
        (Some(content), _) => Ok(content),
        (None, Some(named @ (FileType::Png | FileType::Pdf))) => Err(contradiction(
            name,
            named,
            if text_problem.is_none() {
                "text"
            } else {
                "binary data of another kind"
            },
        )),
        (None, named) => match text_problem {
            Some(problem) => Err(refusal(
                Check::TypeRefused,
                format!(
                    "{name} is binary data ({problem}) of no type that can be released; only \
                     UTF-8 text (CSV, TSV, JSON, plain text), PNG and PDF can be: convert it, \
                     or save text as UTF-8"
                ),
            )),
            None => Ok(text_type(named, head)),
        },
    }
}

fn refusal(check: Check, message: String) -> Finding {
    Finding::file(check, message)
}

fn contradiction(name: &str, named: FileType, content: &str) -> Finding {
    refusal(
        Check::TypeRefused,
        format!(
            "{name} is named as {} but its content is {content}; rename it to match its \
             content or release the right file",
            named.describe()
        ),
    )
}

fn archive_kind(head: &[u8]) -> Option<&'static str> {
    let found = ARCHIVES
        .iter()
        .find(|(at, magic, _)| head.get(*at..).is_some_and(|rest| rest.starts_with(magic)));
    if let Some((_, _, kind)) = found {
        return Some(kind);
    }
    // "BZh" and a block size 1-9: text starting with "BZh" is not enough.
    match head {
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some("bzip2-compressed"),
        _ => None,
    }
}

/// The type a name's extension claims, if it is one of ours.
fn named_type(name: &str) -> Option<FileType> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (_, ext) = base.rsplit_once('.')?;
    FileType::ALL
        .into_iter()
        .find(|t| ext.eq_ignore_ascii_case(t.as_str()))
}

/// Why `head` is not UTF-8 text, if it is not.
fn text_problem(head: &[u8]) -> Option<String> {
    if let Some(at) = head.iter().position(|&b| b == 0) {
        return Some(format!("a NUL byte at byte {at}"));
    }
    match std::str::from_utf8(head) {
        Ok(_) => None,
        // Cut by the end of the head, not of the file.
        Err(e) if e.error_len().is_none() && head.len() >= HEAD_LEN => None,
        Err(e) => Some(format!(
            "bytes that are not UTF-8 at byte {}",
            e.valid_up_to()
        )),
    }
}

/// Which text type UTF-8 `head` is (step 6 of [`sniff`]).
fn text_type(named: Option<FileType>, head: &[u8]) -> FileType {
    if named == Some(FileType::Json) {
        return FileType::Json;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    let text = valid.strip_prefix('\u{feff}').unwrap_or(valid);
    let whole = head.len() < HEAD_LEN;
    if looks_delimited(text, b'\t', whole) {
        return FileType::Tsv;
    }
    if looks_delimited(text, b',', whole) {
        return FileType::Csv;
    }
    if let Some(named @ (FileType::Csv | FileType::Tsv)) = named {
        return named;
    }
    if looks_json(text, whole) {
        return FileType::Json;
    }
    FileType::Txt
}

/// At least two of the first six records split by `delimiter` into the same number (≥ 2) of
/// fields. The last record of a cut head may itself be cut, so it does not count.
fn looks_delimited(text: &str, delimiter: u8, whole: bool) -> bool {
    const RECORDS: usize = 6;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut record = csv::ByteRecord::new();
    let mut lens = Vec::with_capacity(RECORDS + 1);
    while lens.len() <= RECORDS {
        match reader.read_byte_record(&mut record) {
            Ok(true) => lens.push(record.len()),
            _ => break,
        }
    }
    if lens.len() > RECORDS {
        lens.truncate(RECORDS);
    } else if !whole {
        lens.pop();
    }
    lens.len() >= 2 && lens[0] >= 2 && lens.iter().all(|&n| n == lens[0])
}

/// Starts with `{` or `[` and parses as JSON; a cut head need only be a valid beginning. (R's
/// printed output starts with `[1]` too, and is not JSON.)
fn looks_json(text: &str, whole: bool) -> bool {
    let text = text.trim_start();
    if !text.starts_with(['{', '[']) {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end()) {
        Ok(()) => true,
        Err(e) => !whole && e.is_eof(),
    }
}

/// Passes a stream through while checking that it is UTF-8 without NUL bytes, across chunk
/// boundaries. At the first bad byte it records what and where, and ends the stream early (the
/// file will be refused, so reading on is wasted).
pub(super) struct TextGuard<R> {
    inner: R,
    /// Bytes passed so far.
    offset: u64,
    /// The start of a character cut by the end of the last chunk.
    pending: [u8; 4],
    pending_len: usize,
    problem: Option<String>,
}

impl<R: Read> TextGuard<R> {
    /// Checks `inner`, which starts `offset` bytes into the file (past a byte-order mark).
    pub(super) fn new(inner: R, offset: u64) -> Self {
        TextGuard {
            inner,
            offset,
            pending: [0; 4],
            pending_len: 0,
            problem: None,
        }
    }

    /// What made the stream not text, if anything; call after reading to the end.
    pub(super) fn finish(self) -> Option<String> {
        if self.problem.is_none() && self.pending_len > 0 {
            let at = self.offset - self.pending_len as u64;
            return Some(format!(
                "a UTF-8 character cut off by the end of the file at byte {at}"
            ));
        }
        self.problem
    }

    fn check(&mut self, mut chunk: &[u8]) {
        let start = self.offset;
        if chunk.contains(&0) {
            let at = chunk.iter().position(|&b| b == 0).unwrap_or_default();
            self.problem = Some(format!("a NUL byte at byte {}", start + at as u64));
            return;
        }
        // Finish the character the last chunk cut, one byte at a time (at most three).
        let mut used = 0u64;
        while self.pending_len > 0 {
            let Some((&b, rest)) = chunk.split_first() else {
                return;
            };
            self.pending[self.pending_len] = b;
            self.pending_len += 1;
            chunk = rest;
            used += 1;
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() && self.pending_len < 4 => {}
                Err(_) => {
                    let at = (start + used).saturating_sub(self.pending_len as u64);
                    self.problem = Some(format!("bytes that are not UTF-8 at byte {at}"));
                    return;
                }
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
            }
            Err(e) => {
                let at = start + used + e.valid_up_to() as u64;
                self.problem = Some(format!("bytes that are not UTF-8 at byte {at}"));
            }
        }
    }
}

impl<R: Read> Read for TextGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.problem.is_some() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.check(&buf[..n]);
        self.offset += n as u64;
        if self.problem.is_some() {
            return Ok(0);
        }
        Ok(n)
    }
}
