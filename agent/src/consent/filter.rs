//! Making a release without withdrawn participants, file by file: tables lose their rows, VCF
//! files their samples (`bcftools`), other files go through the dataset's filter command or are
//! linked unchanged.

use std::collections::BTreeSet;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::Source;

/// Why a file could not be filtered.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing.
    Io(io::Error),
    /// A tool failed, with what it said.
    Tool(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<csv::Error> for Error {
    fn from(e: csv::Error) -> Self {
        Error::Io(io::Error::other(e))
    }
}

/// What a release holds.
#[derive(Debug, Default)]
pub struct Stats {
    /// SHA-256 over each file's name and digest, hex.
    pub digest: String,
    /// Files.
    pub files: u64,
    /// Table rows.
    pub rows: u64,
    /// Distinct participants in participant columns and VCF samples.
    pub participants: u64,
    /// Rows and samples removed.
    pub removed: u64,
    /// The withdrawn IDs whose rows or samples were removed.
    pub found: BTreeSet<String>,
}

/// Distinct participants, counted by a 64-bit hash of their ID: a million of them without a
/// million strings. The site's own data, so a fast hash rather than a keyed one.
/// Not counting (`off`) when the count is known otherwise: a set of a million IDs is most of
/// the time a release of a large table takes.
#[derive(Default)]
struct Distinct {
    set: rustc_hash::FxHashSet<u64>,
    off: bool,
}

impl Distinct {
    fn counting(on: bool) -> Distinct {
        Distinct {
            set: Default::default(),
            off: !on,
        }
    }

    fn add(&mut self, id: &[u8]) {
        if self.off {
            return;
        }
        use std::hash::{Hash as _, Hasher as _};
        let mut h = rustc_hash::FxHasher::default();
        id.hash(&mut h);
        self.set.insert(h.finish());
    }

    fn extend(&mut self, other: Distinct) {
        self.set.extend(other.set);
    }
}

/// What a file is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A table with this delimiter.
    Table(u8),
    /// A VCF, plain or bgzipped.
    Vcf,
    /// Anything else.
    Other,
}

/// The kind of the file named `name`.
pub fn kind(name: &str) -> Kind {
    if name.ends_with(".csv") {
        Kind::Table(b',')
    } else if name.ends_with(".tsv") {
        Kind::Table(b'\t')
    } else if name.ends_with(".vcf") || name.ends_with(".vcf.gz") {
        Kind::Vcf
    } else {
        Kind::Other
    }
}

/// The regular files under `root`, relative to it, sorted; a link anywhere is refused (a
/// release holds its files, never a way out of it).
pub fn files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                out.push(path);
            } else {
                return Err(io::Error::other(format!(
                    "{} is a link or special file; a dataset release holds only files and \
                     directories",
                    path.display()
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `bcftools args... path` and returns what it printed; `what` names the step in errors.
fn bcftools(args: &[&std::ffi::OsStr], what: &str, path: &Path) -> Result<String, Error> {
    let out = Command::new("bcftools")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| Error::Tool(format!("bcftools could not run: {e}; install bcftools")))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "bcftools {what} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The samples of a VCF, from `bcftools query -l`.
pub fn vcf_samples(path: &Path) -> Result<Vec<String>, Error> {
    let listed = bcftools(&["query".as_ref(), "-l".as_ref()], "query -l", path)?;
    Ok(listed.lines().map(str::to_owned).collect())
}

/// The participant column's index in a table's header, when it has one.
fn column(header: &csv::ByteRecord, name: Option<&str>) -> Option<usize> {
    let name = name?.as_bytes();
    header.iter().position(|h| h == name)
}

fn reader(bytes: &[u8], delimiter: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes)
}

/// What the release in `root` holds, reading it and writing nothing: release 1's figures.
pub fn measure(root: &Path, source: &Source<'_>) -> Result<Stats, Error> {
    copy_without(root, None, source, &BTreeSet::new(), None)
}

/// Copies the release in `from` to `to` without `withdrawn`, and says what the copy holds; with
/// no `to`, only says what `from` holds (`withdrawn` must then be empty). With `from`'s count of
/// participants known, the copy's is that less the withdrawn ones found (every row and sample of
/// each goes), and they are not counted again.
pub fn copy_without(
    from: &Path,
    to: Option<&Path>,
    source: &Source<'_>,
    withdrawn: &BTreeSet<String>,
    known: Option<u64>,
) -> Result<Stats, Error> {
    debug_assert!(to.is_some() || withdrawn.is_empty());
    if let Some(to) = to {
        std::fs::create_dir_all(to)?;
    }
    let mut stats = Stats::default();
    let count = known.is_none();
    let mut participants = Distinct::counting(count);
    let lookup: rustc_hash::FxHashSet<&[u8]> = withdrawn.iter().map(|i| i.as_bytes()).collect();
    let mut digest = Sha256::new();
    for rel in files(from)? {
        let input = from.join(&rel);
        let Some((to, output)) = to.map(|to| (to, to.join(&rel))) else {
            let sha = match kind(&rel.to_string_lossy()) {
                Kind::Table(d) => {
                    let t = table(&input, None, d, source.participant_column, &lookup, true)?;
                    stats.rows += t.kept;
                    participants.extend(t.participants);
                    t.sha256
                }
                Kind::Vcf => {
                    vcf_samples(&input)?
                        .iter()
                        .for_each(|k| participants.add(k.as_bytes()));
                    file_digest(&input)?
                }
                Kind::Other => file_digest(&input)?,
            };
            stats.files += 1;
            digest.update(format!(
                "{}\0{}\n",
                rel.display(),
                basho_core::digest::hex(&sha)
            ));
            continue;
        };
        if let Some(parent) = output.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let ids_file = to.with_extension("withdrawn");
        let sha = match kind(&rel.to_string_lossy()) {
            Kind::Table(d) => {
                let t = table(
                    &input,
                    Some(&output),
                    d,
                    source.participant_column,
                    &lookup,
                    count,
                )?;
                stats.rows += t.kept;
                stats.removed += t.removed;
                stats.found.extend(t.found);
                participants.extend(t.participants);
                t.sha256
            }
            Kind::Vcf => {
                let samples = vcf_samples(&input)?;
                let (gone, kept): (Vec<String>, Vec<String>) =
                    samples.into_iter().partition(|s| withdrawn.contains(s));
                if gone.is_empty() {
                    link_or_copy(&input, &output)?;
                } else {
                    vcf(&input, &output, &gone)?;
                }
                stats.removed += gone.len() as u64;
                stats.found.extend(gone);
                kept.iter().for_each(|k| participants.add(k.as_bytes()));
                file_digest(&output)?
            }
            Kind::Other if !source.filter_command.is_empty() => {
                let list: String = withdrawn.iter().map(|i| format!("{i}\n")).collect();
                std::fs::write(&ids_file, list)?;
                let run = command(source.filter_command, &ids_file, &input, &output);
                let _ = std::fs::remove_file(&ids_file);
                run?;
                file_digest(&output)?
            }
            Kind::Other => {
                link_or_copy(&input, &output)?;
                file_digest(&output)?
            }
        };
        stats.files += 1;
        let sha = basho_core::digest::hex(&sha);
        digest.update(format!("{}\0{sha}\n", rel.display()).as_bytes());
    }
    stats.participants = match known {
        Some(n) => n.saturating_sub(stats.found.len() as u64),
        None => participants.set.len() as u64,
    };
    stats.digest = basho_core::digest::hex(&digest.finalize());
    Ok(stats)
}

/// A hard link when the release directory is on the same file system, a copy otherwise.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(from, to).map(drop),
    }
}

fn file_digest(path: &Path) -> io::Result<Vec<u8>> {
    let mut h = Sha256::new();
    io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(h.finalize().to_vec())
}

#[derive(Default)]
struct Table {
    kept: u64,
    removed: u64,
    participants: Distinct,
    found: BTreeSet<String>,
    sha256: Vec<u8>,
}

/// A line's content without its `\n` or `\r\n`.
fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The `[start, end)` of each line of `bytes`, its line end included.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i + 1);
        let line = (at, end);
        at = end;
        Some(line)
    })
}

/// Field `n` of a line without quotes.
fn field(line: &[u8], delimiter: u8, n: usize) -> &[u8] {
    let mut from = 0;
    let mut stops = memchr::memchr_iter(delimiter, line);
    for _ in 0..n {
        match stops.next() {
            Some(i) => from = i + 1,
            None => return b"",
        }
    }
    let to = stops.next().unwrap_or(line.len());
    &line[from..to]
}

/// The participant column's index in a table's header, when it has one: read as CSV when
/// `quoted`, else by lines and delimiters (the same for a table without a quote anywhere).
fn column_of(
    bytes: &[u8],
    quoted: bool,
    delimiter: u8,
    name: Option<&str>,
) -> Result<Option<usize>, Error> {
    let Some(name) = name else {
        return Ok(None);
    };
    if quoted {
        return Ok(column(reader(bytes, delimiter).byte_headers()?, Some(name)));
    }
    let Some(header) = lines(bytes)
        .map(|(s, e)| content(&bytes[s..e]))
        .find(|l| !l.is_empty())
    else {
        return Ok(None);
    };
    let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header);
    Ok(header
        .split(|b| *b == delimiter)
        .position(|h| h == name.as_bytes()))
}

/// Calls `row(start, end, id)` for each record after the header: its bytes (from the end of
/// the one before, so a blank line goes with the record after it) and its column `col`, trimmed
/// (empty without a column). A table with a quote anywhere is read as CSV (quoted delimiters
/// and line ends); one without, by lines and delimiters with `memchr`, several times faster.
fn each_row(
    bytes: &[u8],
    quoted: bool,
    delimiter: u8,
    col: Option<usize>,
    mut row: impl FnMut(usize, usize, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    if quoted {
        let mut r = reader(bytes, delimiter);
        r.byte_headers()?;
        let mut start = r.position().byte() as usize;
        let mut rec = csv::ByteRecord::new();
        while r.read_byte_record(&mut rec)? {
            let end = (r.position().byte() as usize).min(bytes.len());
            let id = col
                .and_then(|c| rec.get(c))
                .unwrap_or_default()
                .trim_ascii();
            row(start, end, id)?;
            start = end;
        }
        return Ok(());
    }
    let mut start = None;
    for (s, e) in lines(bytes) {
        let line = content(&bytes[s..e]);
        if line.is_empty() {
            continue;
        }
        let Some(from) = start else {
            // The header.
            start = Some(e);
            continue;
        };
        let id = col.map_or(&b""[..], |c| field(line, delimiter, c).trim_ascii());
        row(from, e, id)?;
        start = Some(e);
    }
    Ok(())
}

/// Writes `input` to `output` without the rows whose participant column names a withdrawn
/// participant; every other byte (quoting, line ends, the header) is kept as it was. Hashes
/// what it writes as it goes (and counts distinct participants when `count`). Without an
/// `output`, counts and hashes `input` as it is.
fn table(
    input: &Path,
    output: Option<&Path>,
    delimiter: u8,
    column_name: Option<&str>,
    withdrawn: &rustc_hash::FxHashSet<&[u8]>,
    count: bool,
) -> Result<Table, Error> {
    let bytes = std::fs::read(input)?;
    let quoted = memchr::memchr(b'"', &bytes).is_some();
    let col = column_of(&bytes, quoted, delimiter, column_name)?;
    let mut t = Table {
        participants: Distinct::counting(count),
        ..Table::default()
    };
    let (Some(c), Some(output)) = (col, output) else {
        each_row(&bytes, quoted, delimiter, col, |_, _, id| {
            t.kept += 1;
            if col.is_some() {
                t.participants.add(id);
            }
            Ok(())
        })?;
        if let Some(output) = output {
            link_or_copy(input, output)?;
        }
        t.sha256 = Sha256::digest(&bytes).to_vec();
        return Ok(t);
    };
    let mut out = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(output)?);
    let mut hash = Sha256::new();
    let mut kept_from = 0;
    each_row(&bytes, quoted, delimiter, Some(c), |start, end, id| {
        if withdrawn.contains(id) {
            // What was kept before this row goes out in one piece.
            out.write_all(&bytes[kept_from..start])?;
            hash.update(&bytes[kept_from..start]);
            kept_from = end;
            t.removed += 1;
            t.found.insert(String::from_utf8_lossy(id).into_owned());
        } else {
            t.kept += 1;
            t.participants.add(id);
        }
        Ok(())
    })?;
    out.write_all(&bytes[kept_from..])?;
    hash.update(&bytes[kept_from..]);
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    t.sha256 = hash.finalize().to_vec();
    Ok(t)
}

/// `bcftools view -s ^gone`, keeping the compression.
fn vcf(input: &Path, output: &Path, gone: &[String]) -> Result<(), Error> {
    let format = if input.to_string_lossy().ends_with(".gz") {
        "z"
    } else {
        "v"
    };
    let excluded = format!("^{}", gone.join(","));
    let args: [&std::ffi::OsStr; 8] = [
        "view".as_ref(),
        "--no-version".as_ref(),
        "-O".as_ref(),
        format.as_ref(),
        "-s".as_ref(),
        excluded.as_ref(),
        "-o".as_ref(),
        output.as_os_str(),
    ];
    bcftools(&args, "view", input).map(drop)
}

/// The dataset's filter command: `argv... WITHDRAWN_FILE INPUT OUTPUT`, which must write OUTPUT.
fn command(argv: &[String], ids: &Path, input: &Path, output: &Path) -> Result<(), Error> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .arg(ids)
        .arg(input)
        .arg(output)
        .output()
        .map_err(|e| Error::Tool(format!("filter command {:?} could not run: {e}", argv[0])))?;
    if !out.status.success() || !output.is_file() {
        return Err(Error::Tool(format!(
            "filter command {:?} on {} failed ({}): {}",
            argv[0],
            input.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column, each record's ID, and the table without each record in turn, as one reader
    /// sees them.
    fn records(bytes: &[u8], quoted: bool, name: &str) -> (Option<usize>, Vec<(String, String)>) {
        let col = column_of(bytes, quoted, b',', Some(name)).unwrap();
        let mut out = Vec::new();
        each_row(bytes, quoted, b',', col, |s, e, id| {
            let without = [&bytes[..s], &bytes[e..]].concat();
            out.push((
                String::from_utf8_lossy(id).into_owned(),
                String::from_utf8_lossy(&without).into_owned(),
            ));
            Ok(())
        })
        .unwrap();
        (col, out)
    }

    #[test]
    fn a_table_without_quotes_is_read_as_the_csv_reader_reads_it() {
        for text in [
            "id,age\nP1,40\nP2,57\n",
            "\u{feff}age,id\r\nx,P1\r\n\r\ny, P2 \r\nshort\r\nz,P3\r\n",
            "id\nP1\nP2",
            "\n\nid\nP1\n\nP2\n\n",
            "a,b,id\n1,2,P1,extra\n1,2\n",
        ] {
            assert_eq!(
                records(text.as_bytes(), false, "id"),
                records(text.as_bytes(), true, "id"),
                "{text:?}"
            );
        }
        assert_eq!(records(b"x,y\n1,2\n", false, "id").0, None);
    }
}
