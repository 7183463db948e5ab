//! The airlock's checks on small hand-made files, one rule at a time, and one table at scale.

use std::io::Read;

use super::sniff::TextGuard;
use super::*;

fn table_with(text: &str, delimiter: u8, rules: &Rules, index: &RowIndex) -> TableReport {
    check_table(text.as_bytes(), delimiter, rules, index).unwrap()
}

fn table(text: &str) -> TableReport {
    table_with(text, b',', &Rules::default(), &RowIndex::new())
}

fn file(name: &str, bytes: &[u8]) -> Checked {
    check_file(name, bytes, &Rules::default(), &RowIndex::new()).unwrap()
}

fn of(findings: &[Finding], check: Check) -> Vec<&Finding> {
    findings.iter().filter(|f| f.check == check).collect()
}

fn index_of(dataset: &str, delimiter: u8) -> RowIndex {
    let mut index = RowIndex::new();
    index.add_table(dataset.as_bytes(), delimiter).unwrap();
    index
}

/// A head of exactly `HEAD_LEN` bytes: `fill` then `tail`.
fn head_ending_in(tail: &[u8]) -> Vec<u8> {
    let mut head = vec![b'a'; HEAD_LEN - tail.len()];
    head.extend_from_slice(tail);
    head
}

const PNG_BYTES: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

// ---- tables ----

#[test]
fn one_small_cell_is_flagged_with_its_row_and_column() {
    let report = table("region,count\nnorth,120\nsouth,3\neast,45\n");
    assert_eq!(report.rows, 3);
    assert_eq!(report.omitted, 0);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(f.check, Check::SmallCell);
    assert_eq!(f.row, Some(2));
    assert_eq!(f.column.as_deref(), Some("count"));
    assert!(f.message.contains("line 3"), "{}", f.message);
    assert!(f.message.contains("count 3"), "{}", f.message);
}

#[test]
fn zero_threshold_decimals_signs_and_words_are_not_counts() {
    let report = table("a,b,c,d,e,f,g\n0,10,3.5,-3,+3,3e0,x3\n00,1000, ,,9.0,3 4,0x3\n");
    assert_eq!(report.rows, 2);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[test]
fn a_count_is_read_trimmed_and_unquoted_and_nine_is_below_ten() {
    let report = table("a,b,c\n\" 3 \", 9 ,007\n");
    let cells: Vec<_> = of(&report.findings, Check::SmallCell)
        .iter()
        .map(|f| f.column.clone().unwrap())
        .collect();
    assert_eq!(cells, ["a", "b", "c"]);
}

#[test]
fn the_threshold_comes_from_the_rules() {
    let rules = Rules {
        min_cell_count: 5,
        ..Rules::default()
    };
    let report = table_with("n\n4\n5\n", b',', &rules, &RowIndex::new());
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].row, Some(1));
    let off = Rules {
        min_cell_count: 0,
        ..Rules::default()
    };
    assert!(
        table_with("n\n1\n", b',', &off, &RowIndex::new())
            .findings
            .is_empty()
    );
}

#[test]
fn identifier_columns_by_name_and_by_id_suffix() {
    let report = table(
        "Participant ID,sample_id,PatientID,Email,paid,count,Date.Of.Birth\n1,2,3,4,5,50,6\n",
    );
    let ids: Vec<_> = of(&report.findings, Check::IdentifierColumn)
        .iter()
        .map(|f| (f.column.clone().unwrap(), f.row))
        .collect();
    assert_eq!(
        ids,
        [
            ("Participant ID".to_string(), None),
            ("sample_id".to_string(), None),
            ("PatientID".to_string(), None),
            ("Email".to_string(), None),
            ("Date.Of.Birth".to_string(), None),
        ]
    );
    let email = of(&report.findings, Check::IdentifierColumn)[3];
    assert!(email.message.contains("\"email\""), "{}", email.message);
    // Small values in identifier columns are ids, not counts; `paid` is neither.
    let small = of(&report.findings, Check::SmallCell);
    assert_eq!(small.len(), 1, "{small:?}");
    assert_eq!(small[0].column.as_deref(), Some("paid"));
}

#[test]
fn a_byte_order_mark_does_not_hide_an_identifier() {
    let checked = file("ids.csv", "\u{feff}id,count\n1,50\n".as_bytes());
    let ids = of(&checked.findings, Check::IdentifierColumn);
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].column.as_deref(), Some("id"));
}

#[test]
fn the_sites_own_identifier_list_replaces_the_default() {
    let rules = Rules {
        identifier_columns: vec!["*-Key".into(), "Full Name".into()],
        ..Rules::default()
    };
    let report = table_with(
        "record_key,full_name,sample_id\nx,y,z\n",
        b',',
        &rules,
        &RowIndex::new(),
    );
    let ids: Vec<_> = report
        .findings
        .iter()
        .map(|f| f.column.clone().unwrap())
        .collect();
    assert_eq!(ids, ["record_key", "full_name"]);
}

#[test]
fn a_row_copied_from_a_dataset_is_flagged_whitespace_and_quotes_aside() {
    let mut index = RowIndex::new();
    let added = index
        .add_table(
            "subject,age,sex\nS17,34,F\nS18,51,M\nS18,51,M\nonly,\n".as_bytes(),
            b',',
        )
        .unwrap();
    assert_eq!(added, 2, "the repeat and the one-value row add nothing");
    assert_eq!(index.len(), 2);
    let report = table_with(
        "who,age,sex\n S17 , 34,\"F\"\nS18,51,F\nS18,52,M\nonly,\n",
        b',',
        &Rules::default(),
        &index,
    );
    let copies = of(&report.findings, Check::RecordCopy);
    assert_eq!(copies.len(), 1, "{:?}", report.findings);
    assert_eq!(copies[0].row, Some(1));
    assert_eq!(copies[0].column, None);
}

#[test]
fn a_tsv_dataset_matches_a_csv_result() {
    let index = index_of("a\tb\tc\nx\t40\ty\n", b'\t');
    let report = table_with("p,q,r\nx,40,y\n", b',', &Rules::default(), &index);
    assert_eq!(of(&report.findings, Check::RecordCopy).len(), 1);
}

#[test]
fn an_empty_index_flags_no_copies() {
    let index = RowIndex::new();
    assert!(index.is_empty());
    assert!(
        table_with("a,b\nx,y\n", b',', &Rules::default(), &index)
            .findings
            .is_empty()
    );
}

#[test]
fn tsv_tables() {
    let report = table_with(
        "group\tn\tnote\nA\t4\ta, b\n",
        b'\t',
        &Rules::default(),
        &RowIndex::new(),
    );
    let small = of(&report.findings, Check::SmallCell);
    assert_eq!(small.len(), 1);
    assert_eq!(small[0].column.as_deref(), Some("n"));
    let checked = file("counts.tsv", b"group\tn\nA\t4\nB\t40\n");
    assert_eq!(checked.file_type, Some(FileType::Tsv));
    assert_eq!(of(&checked.findings, Check::SmallCell).len(), 1);
}

#[test]
fn findings_past_the_cap_are_counted_not_listed() {
    let rules = Rules {
        max_findings_per_check: 3,
        ..Rules::default()
    };
    let mut text = String::from("a_id,b_id,c_id,d_id,n\n");
    for _ in 0..10 {
        text.push_str("x,x,x,x,2\n");
    }
    let report = table_with(&text, b',', &rules, &RowIndex::new());
    assert_eq!(of(&report.findings, Check::IdentifierColumn).len(), 3);
    let small = of(&report.findings, Check::SmallCell);
    assert_eq!(
        small.iter().map(|f| f.row.unwrap()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(report.omitted, 1 + 7);

    let checked = check_file("t.csv", text.as_bytes(), &rules, &RowIndex::new()).unwrap();
    assert_eq!(checked.findings.len(), 6);
    assert_eq!(checked.omitted, 8);
    assert!(!checked.passed());
}

#[test]
fn ragged_rows_are_read_and_named_by_column_number() {
    let report = table("a,b\n1x,20,5\n30\n,\n");
    assert_eq!(report.rows, 3);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].row, Some(1));
    assert_eq!(report.findings[0].column.as_deref(), Some("column 3"));
}

#[test]
fn a_header_only_table_has_no_rows() {
    let report = table("region,count\n");
    assert_eq!(report.rows, 0);
    assert!(report.findings.is_empty());
    let report = table("participant_id,count");
    assert_eq!(report.rows, 0);
    assert_eq!(of(&report.findings, Check::IdentifierColumn).len(), 1);
}

#[test]
fn rows_skip_blank_lines_and_messages_name_the_line() {
    let report = table("a,b\n\nx,20\n\"multi\nline\",30\ny,2\n");
    let f = &report.findings[0];
    assert_eq!(f.row, Some(3));
    assert!(f.message.contains("row 3 (line 6)"), "{}", f.message);
}

// ---- files ----

#[test]
fn a_clean_csv_passes() {
    let checked = file("summary.csv", b"group,mean,n\nA,1.5,120\nB,2.5,240\n");
    assert_eq!(checked.file_type, Some(FileType::Csv));
    assert!(checked.passed(), "{checked:?}");
}

#[test]
fn a_table_named_txt_or_unnamed_is_still_checked() {
    for name in ["summary.txt", "summary", "summary.md"] {
        let checked = file(name, b"group,n\nA,3\nB,40\n");
        assert_eq!(checked.file_type, Some(FileType::Csv), "{name}");
        assert_eq!(of(&checked.findings, Check::SmallCell).len(), 1, "{name}");
    }
    // A .tsv that is really comma-separated is read with commas.
    assert_eq!(file("x.tsv", b"a,b\n1,2\n").file_type, Some(FileType::Csv));
    // Prose with a comma is text.
    assert_eq!(
        file("notes", b"Hello, world.\nNothing here.\n").file_type,
        Some(FileType::Txt)
    );
}

#[test]
fn an_empty_file() {
    let checked = file("empty.csv", b"");
    assert_eq!(checked.file_type, Some(FileType::Csv));
    assert!(checked.passed());
    assert_eq!(file("empty", b"").file_type, Some(FileType::Txt));
    let json = file("empty.json", b"");
    assert!(!json.refused);
    assert_eq!(of(&json.findings, Check::Unreadable).len(), 1);
    assert!(file("empty.png", b"").refused);
}

#[test]
fn json_valid_and_invalid() {
    let checked = file("model.json", br#"{"coef": [1.5, 2.5], "n": 4}"#);
    assert_eq!(checked.file_type, Some(FileType::Json));
    assert!(checked.passed(), "{checked:?}");

    let bad = file("model.json", br#"{"coef": [1.5, "#);
    assert_eq!(bad.file_type, Some(FileType::Json));
    assert!(!bad.refused);
    assert_eq!(bad.findings.len(), 1);
    assert_eq!(bad.findings[0].check, Check::Unreadable);

    let trailing = file("model.json", b"{} {}");
    assert_eq!(of(&trailing.findings, Check::Unreadable).len(), 1);

    // By content when the name says nothing; R's printed `[1]` is not JSON.
    assert_eq!(file("out", b" [1, 2]\n").file_type, Some(FileType::Json));
    assert_eq!(file("out.txt", b"[1] 2.5\n").file_type, Some(FileType::Txt));
}

#[test]
fn a_json_document_longer_than_the_head_is_json_by_content() {
    let mut doc = String::from("[");
    for i in 0..5000 {
        doc.push_str(&format!("{i},"));
    }
    doc.push_str("0]");
    let checked = file("values", doc.as_bytes());
    assert_eq!(checked.file_type, Some(FileType::Json));
    assert!(checked.passed(), "{checked:?}");
}

#[test]
fn a_type_the_site_does_not_allow_is_refused() {
    let rules = Rules {
        allowed_types: vec![FileType::Csv],
        ..Rules::default()
    };
    let checked = check_file("plot.png", PNG_BYTES, &rules, &RowIndex::new()).unwrap();
    assert!(checked.refused);
    assert_eq!(checked.file_type, Some(FileType::Png));
    assert_eq!(checked.findings.len(), 1);
    assert_eq!(checked.findings[0].check, Check::TypeRefused);
    assert!(
        checked.findings[0].message.contains("allowed: csv"),
        "{:?}",
        checked.findings
    );
    assert!(!checked.passed());
}

#[test]
fn png_and_pdf_pass_unread() {
    let png = file("plot.png", PNG_BYTES);
    assert_eq!(png.file_type, Some(FileType::Png));
    assert!(png.passed());
    let pdf = file("report.PDF", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n");
    assert_eq!(pdf.file_type, Some(FileType::Pdf));
    assert!(pdf.passed());
}

#[test]
fn an_archive_is_refused() {
    let mut tar = vec![0u8; 1024];
    tar[..9].copy_from_slice(b"table.csv");
    tar[257..263].copy_from_slice(b"ustar\0");
    let checked = file("results.tar", &tar);
    assert!(checked.refused);
    assert_eq!(checked.file_type, None);
    assert_eq!(checked.findings[0].check, Check::Archive);
    assert!(
        checked.findings[0].message.contains("tar"),
        "{:?}",
        checked.findings
    );
}

#[test]
fn text_that_turns_binary_past_the_head_is_refused() {
    let mut bytes = b"a,b\n".to_vec();
    while bytes.len() < 3 * HEAD_LEN {
        bytes.extend_from_slice(b"x,20\n");
    }
    let clean = file("t.csv", &bytes);
    assert!(clean.passed(), "{clean:?}");
    bytes.extend_from_slice(b"PK\x03\x04\0\0rest");
    let checked = file("t.csv", &bytes);
    assert!(checked.refused);
    assert_eq!(checked.findings.len(), 1);
    assert_eq!(checked.findings[0].check, Check::TypeRefused);
    assert!(
        checked.findings[0].message.contains("NUL"),
        "{:?}",
        checked.findings
    );

    let mut text = vec![b'x'; 2 * HEAD_LEN];
    text.extend_from_slice(b"\xff\n");
    let checked = file("notes.txt", &text);
    assert!(checked.refused, "{checked:?}");
}

#[test]
fn a_character_cut_by_the_head_is_read_whole() {
    let mut bytes = vec![b'a'; HEAD_LEN - 1];
    bytes.extend_from_slice("€ and more\n".as_bytes());
    let checked = file("notes.txt", &bytes);
    assert!(checked.passed(), "{checked:?}");
}

#[test]
fn the_text_guard_checks_across_one_byte_reads() {
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }
    let read = |bytes: &[u8]| {
        let mut guard = TextGuard::new(Dribble(bytes), 0);
        std::io::copy(&mut guard, &mut std::io::sink()).unwrap();
        guard.finish()
    };
    assert_eq!(read("naïve € 𝄞 ok".as_bytes()), None);
    assert!(read(b"caf\xc3").unwrap().contains("cut off"));
    assert!(read(b"ab\xe2\x82x").unwrap().contains("not UTF-8"));
    assert!(read(b"ab\x80").unwrap().contains("byte 2"));
}

// ---- sniff ----

fn refused_as(result: Result<FileType, Finding>, check: Check) -> String {
    match result {
        Err(f) => {
            assert_eq!(f.check, check, "{f:?}");
            f.message
        }
        Ok(t) => panic!("expected {check:?}, got {t:?}"),
    }
}

#[test]
fn sniff_png_and_pdf_by_content() {
    assert_eq!(sniff("plot.png", PNG_BYTES), Ok(FileType::Png));
    assert_eq!(sniff("plot", PNG_BYTES), Ok(FileType::Png));
    assert_eq!(sniff("dir/report.pdf", b"%PDF-1.4\n"), Ok(FileType::Pdf));
}

#[test]
fn sniff_refuses_archives_by_magic() {
    let cases: &[(&str, &[u8])] = &[
        ("results.xlsx", b"PK\x03\x04\x14\0\0\0"),
        ("table.csv.gz", b"\x1f\x8b\x08\0\0\0"),
        ("a.bz2", b"BZh91AY&SY"),
        ("a.xz", b"\xfd7zXZ\0\0"),
        ("a.zst", b"\x28\xb5\x2f\xfd\0"),
        ("a.7z", b"7z\xbc\xaf\x27\x1c\0"),
        ("a.rar", b"Rar!\x1a\x07\x01\0"),
        ("table.csv", b"PK\x03\x04"),
    ];
    for (name, head) in cases {
        let message = refused_as(sniff(name, head), Check::Archive);
        assert!(message.contains(name), "{message}");
    }
    let mut tar = vec![0u8; 512];
    tar[257..265].copy_from_slice(b"ustar  \0");
    refused_as(sniff("out.tar", &tar), Check::Archive);
    // Text that happens to start like bzip2's magic is text.
    assert_eq!(sniff("notes", b"BZh is not a number"), Ok(FileType::Txt));
}

#[test]
fn sniff_refuses_executables_and_other_binaries() {
    let message = refused_as(
        sniff("tool", b"\x7fELF\x02\x01\x01\0\0\0"),
        Check::TypeRefused,
    );
    assert!(message.contains("ELF"), "{message}");
    refused_as(
        sniff("photo.jpg", b"\xff\xd8\xff\xe0\0\x10JFIF"),
        Check::TypeRefused,
    );
    refused_as(sniff("data.rds", b"X\n\0\0\0\x03"), Check::TypeRefused);
    assert_eq!(sniff("run.sh", b"#!/bin/sh\necho hi\n"), Ok(FileType::Txt));
}

#[test]
fn sniff_refuses_a_name_that_contradicts_the_content() {
    let message = refused_as(sniff("table.csv", PNG_BYTES), Check::TypeRefused);
    assert!(
        message.contains("CSV") && message.contains("PNG"),
        "{message}"
    );
    let message = refused_as(sniff("plot.png", b"x,y\n1,2\n"), Check::TypeRefused);
    assert!(
        message.contains("PNG") && message.contains("text"),
        "{message}"
    );
    let message = refused_as(sniff("report.pdf", PNG_BYTES), Check::TypeRefused);
    assert!(
        message.contains("PDF") && message.contains("PNG"),
        "{message}"
    );
}

#[test]
fn sniff_refuses_text_that_is_not_utf8() {
    let message = refused_as(sniff("latin1.csv", b"caf\xe9,1\nx,2\n"), Check::TypeRefused);
    assert!(message.contains("UTF-8"), "{message}");
    refused_as(sniff("utf16.txt", b"\xff\xfea\0b\0"), Check::TypeRefused);
}

#[test]
fn sniff_accepts_a_character_cut_by_the_end_of_the_head_only() {
    let euro = "€".as_bytes();
    assert_eq!(
        sniff("notes.txt", &head_ending_in(&euro[..2])),
        Ok(FileType::Txt)
    );
    // The same cut at the end of a whole (shorter) file is not UTF-8.
    refused_as(sniff("notes.txt", b"price 5\xe2\x82"), Check::TypeRefused);
    // A bad byte before the end is not a cut.
    refused_as(
        sniff("notes.txt", &head_ending_in(b"\xe2\x82a")),
        Check::TypeRefused,
    );
}

#[test]
fn sniff_a_table_cut_by_the_head() {
    let mut head = b"a,b,c\n".to_vec();
    while head.len() < HEAD_LEN {
        head.extend_from_slice(b"1,2,3\n");
    }
    head.truncate(HEAD_LEN - 2);
    head.resize(HEAD_LEN, b'x');
    assert_eq!(sniff("cut", &head), Ok(FileType::Csv));
    // A quoted field cut by the head is one short record at the end: it does not count.
    let mut head = b"a,b\n1,2\n3,4\n\"".to_vec();
    head.resize(HEAD_LEN, b'x');
    assert_eq!(sniff("cut", &head), Ok(FileType::Csv));
    assert_eq!(sniff("whole", &head[..HEAD_LEN - 1]), Ok(FileType::Txt));
}

// ---- rules ----

#[test]
fn rules_default_from_an_empty_table() {
    let rules: Rules = toml::from_str("").unwrap();
    assert_eq!(rules, Rules::default());
    assert_eq!(rules.min_cell_count, 10);
    assert_eq!(rules.allowed_types, FileType::ALL);
    assert_eq!(rules.max_findings_per_check, 50);
    assert!(rules.identifier_columns.iter().any(|c| c == "*_id"));
    assert!(rules.problems().is_empty(), "{:?}", rules.problems());

    let some: Rules =
        toml::from_str("min_cell_count = 5\nallowed_types = [\"csv\", \"png\"]").unwrap();
    assert_eq!(some.min_cell_count, 5);
    assert_eq!(some.allowed_types, [FileType::Csv, FileType::Png]);
    assert_eq!(some.identifier_columns, Rules::default().identifier_columns);
}

#[test]
fn rules_refuse_unknown_fields() {
    let err = toml::from_str::<Rules>("min_cells = 5").unwrap_err();
    assert!(err.to_string().contains("min_cells"), "{err}");
    assert!(toml::from_str::<Rules>("allowed_types = [\"xlsx\"]").is_err());
}

#[test]
fn rules_problems_name_each_mistake() {
    let rules = Rules {
        min_cell_count: 0,
        allowed_types: vec![],
        identifier_columns: vec!["*".into(), " ".into(), "id".into()],
        max_findings_per_check: 0,
    };
    let problems = rules.problems();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert!(problems[0].contains("min_cell_count = 0") && problems[0].contains("flags nothing"));
    assert!(problems[1].contains("every file is refused"));
    assert!(problems[2].contains("matches every column"));
    assert!(problems[3].contains("matches nothing"));
    assert!(problems[4].contains("max_findings_per_check = 0"));
}

#[test]
fn checked_serializes_in_snake_case() {
    let checked = file("t.csv", b"n\n3\n");
    let json = serde_json::to_value(&checked).unwrap();
    assert_eq!(json["file_type"], "csv");
    assert_eq!(json["findings"][0]["check"], "small_cell");
    assert_eq!(json["findings"][0]["row"], 1);
    let back: Checked = serde_json::from_value(json).unwrap();
    assert_eq!(back, checked);
}

// ---- scale ----

/// A table of `rows` rows: every 1000th row has a small count, every 5000th copies a dataset
/// row; returns the table and the dataset.
fn generated(rows: u64) -> (Vec<u8>, String) {
    use std::io::Write;
    let mut table = Vec::with_capacity(rows as usize * 40);
    let mut dataset = String::from("person,site,age,visits,score,flag\n");
    table.extend_from_slice(b"person,site,age,visits,score,flag\n");
    for i in 1..=rows {
        let count = if i % 1000 == 0 { 4 } else { 10 + i % 90 };
        let flag = if i % 2 == 0 { "yes" } else { "no" };
        let line = format!(
            "p{i},site_{},{},{count},{}.{},{flag}\n",
            i % 7,
            20 + i % 60,
            i % 997,
            i % 10
        );
        if i % 5000 == 0 {
            dataset.push_str(&line);
        }
        table.write_all(line.as_bytes()).unwrap();
    }
    (table, dataset)
}

#[test]
fn twenty_thousand_rows() {
    let (table, dataset) = generated(20_000);
    let index = index_of(&dataset, b',');
    assert_eq!(index.len(), 4);
    let checked = check_file("big.csv", table.as_slice(), &Rules::default(), &index).unwrap();
    assert_eq!(checked.file_type, Some(FileType::Csv));
    let small: Vec<u64> = of(&checked.findings, Check::SmallCell)
        .iter()
        .map(|f| f.row.unwrap())
        .collect();
    assert_eq!(small, (1..=20).map(|k| k * 1000).collect::<Vec<_>>());
    let copies: Vec<u64> = of(&checked.findings, Check::RecordCopy)
        .iter()
        .map(|f| f.row.unwrap())
        .collect();
    assert_eq!(copies, [5000, 10000, 15000, 20000]);
    assert_eq!(checked.findings.len(), 24);
    assert_eq!(checked.omitted, 0);
}

#[test]
#[ignore = "measure: cargo test --release -p basho-core airlock -- --ignored --nocapture"]
fn measure_a_million_rows() {
    let rows = 1_000_000;
    let (table, dataset) = generated(rows);
    let index = index_of(&dataset, b',');
    let start = std::time::Instant::now();
    let checked = check_file("big.csv", table.as_slice(), &Rules::default(), &index).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        checked.findings.len() as u64 + checked.omitted,
        rows / 1000 + rows / 5000
    );
    let secs = elapsed.as_secs_f64();
    println!(
        "airlock check_file: {rows} rows, {:.1} MB in {:.3} s: {:.0} rows/s, {:.0} MB/s",
        table.len() as f64 / 1e6,
        secs,
        rows as f64 / secs,
        table.len() as f64 / 1e6 / secs,
    );
}
