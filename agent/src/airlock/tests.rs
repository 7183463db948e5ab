use std::os::unix::fs::PermissionsExt as _;

use basho_core::airlock::Check;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    results: PathBuf,
    outside: PathBuf,
    store: Store,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results/ws-1");
    let outside = dir.path().join("data");
    std::fs::create_dir_all(results.join("tables")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("records.csv"), "id,age\nP1,40\n").unwrap();
    std::fs::write(
        results.join("counts.csv"),
        "band,count\n40-49,3\n50-59,120\n",
    )
    .unwrap();
    std::fs::write(results.join("tables/summary.txt"), "all good\n").unwrap();
    let root = dir.path().join("airlock");
    let store = Store::open(&root).unwrap();
    Fixture {
        _dir: dir,
        results,
        outside,
        store,
        root,
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// Every copy in the store.
fn stored(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(root.join("sha256")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

fn take_(f: &Fixture, n: &[&str], config: &AirlockConfig) -> Result<Vec<Taken>, IntakeError> {
    take(&f.results, &names(n), config, &f.store, &RowIndex::new())
}

#[test]
fn files_are_copied_read_only_by_digest_and_checked() {
    let f = fixture();
    let taken = take_(
        &f,
        &["counts.csv", "/results/tables/summary.txt"],
        &AirlockConfig::default(),
    )
    .unwrap();
    assert_eq!(taken.len(), 2);
    let csv = &taken[0];
    assert_eq!(csv.name, "counts.csv");
    assert_eq!(taken[1].name, "tables/summary.txt");
    let bytes = std::fs::read(f.results.join("counts.csv")).unwrap();
    assert_eq!(csv.size, bytes.len() as u64);
    assert_eq!(csv.sha256, basho_core::digest::sha256_hex(&bytes));
    let copy = f.store.path(&csv.sha256).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(
        std::fs::metadata(&f.root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The cell of 3 is flagged for the reviewers; the text file passes.
    assert!(!csv.checked.passed());
    assert_eq!(csv.checked.findings[0].check, Check::SmallCell);
    assert!(taken[1].checked.passed());
    // Changed in /results afterwards, the copy under review is not.
    std::fs::write(f.results.join("counts.csv"), "band,count\n40-49,300\n").unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
}

#[test]
fn the_same_bytes_are_stored_once() {
    let f = fixture();
    std::fs::copy(f.results.join("counts.csv"), f.results.join("again.csv")).unwrap();
    let a = take_(&f, &["counts.csv"], &AirlockConfig::default()).unwrap();
    let b = take_(&f, &["again.csv"], &AirlockConfig::default()).unwrap();
    assert_eq!(a[0].sha256, b[0].sha256);
    assert_eq!(stored(&f.root).len(), 1);
}

#[test]
fn names_that_leave_results_are_refused_and_nothing_is_kept() {
    let f = fixture();
    std::os::unix::fs::symlink(f.outside.join("records.csv"), f.results.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(&f.outside, f.results.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("counts.csv", f.results.join("inside-link.csv")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("../../data/records.csv", "invalid_path"),
        ("tables/../../x", "invalid_path"),
        ("/etc/passwd", "invalid_path"),
        ("", "invalid_path"),
        ("/results/", "invalid_path"),
        ("a\0b", "invalid_path"),
        ("link.csv", "not_a_file"),
        ("inside-link.csv", "not_a_file"),
        ("linkdir/records.csv", "not_a_file"),
        ("tables", "not_a_file"),
        ("counts.csv/x", "not_a_file"),
        ("nope.csv", "no_such_file"),
    ];
    for (name, code) in cases {
        // A good file first: the refusal of the second keeps nothing of the first.
        let e = take_(&f, &["counts.csv", name], &AirlockConfig::default()).unwrap_err();
        assert_eq!(e.code(), *code, "{name:?}: {e}");
        assert!(
            e.to_string().contains(&format!("{name:?}")) || name.is_empty(),
            "{e}"
        );
    }
    assert!(stored(&f.root).is_empty(), "a refused request left copies");
}

#[test]
fn devices_fifos_and_duplicates_are_refused() {
    let f = fixture();
    let fifo = f.results.join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let e = take_(&f, &["pipe"], &AirlockConfig::default()).unwrap_err();
    assert!(e.to_string().contains("a FIFO"), "{e}");
    std::os::unix::fs::symlink("/dev/null", f.results.join("null")).unwrap();
    assert_eq!(
        take_(&f, &["null"], &AirlockConfig::default())
            .unwrap_err()
            .code(),
        "not_a_file"
    );
    let e = take_(
        &f,
        &["counts.csv", "./counts.csv"],
        &AirlockConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, IntakeError::Duplicate(_)), "{e}");
    let e = take_(&f, &[], &AirlockConfig::default()).unwrap_err();
    assert_eq!(e.code(), "invalid_path");
    assert!(stored(&f.root).is_empty());
}

#[test]
fn requests_over_the_sites_limits_are_refused() {
    let f = fixture();
    let few = AirlockConfig {
        max_files: 1,
        ..AirlockConfig::default()
    };
    let e = take_(&f, &["counts.csv", "tables/summary.txt"], &few).unwrap_err();
    assert_eq!(e.code(), "too_large");
    assert!(e.to_string().contains("airlock.max_files"), "{e}");
    let small = AirlockConfig {
        max_bytes: 20,
        ..AirlockConfig::default()
    };
    let e = take_(&f, &["counts.csv"], &small).unwrap_err();
    assert!(e.to_string().contains("airlock.max_bytes"), "{e}");
    assert!(stored(&f.root).is_empty());
    // A file that grows past the limit while it is copied keeps nothing either.
    let mut long = io::repeat(b'x');
    let e = f.store.put("growing", &mut long, 1000).unwrap_err();
    assert_eq!(e.code(), "too_large");
    assert!(stored(&f.root).is_empty());
}

#[test]
fn store_paths_take_only_hex_digests() {
    let f = fixture();
    assert!(f.store.path(&"a".repeat(64)).is_some());
    assert!(f.store.path(&"A".repeat(64)).is_none());
    assert!(f.store.path("../../etc/passwd").is_none());
    assert!(f.store.path(&"a".repeat(63)).is_none());
}

#[test]
fn config_defaults_and_problems() {
    let c: AirlockConfig = toml::from_str("").unwrap();
    assert_eq!(c, AirlockConfig::default());
    assert_eq!((c.max_files, c.max_bytes), (100, 100 << 20));
    assert!(c.problems().is_empty());
    let c: AirlockConfig = toml::from_str("max_files = 0\nstore_dir = \"rel\"\n").unwrap();
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());
    assert!(toml::from_str::<AirlockConfig>("max_file = 3\n").is_err());
    assert_eq!(
        c.store_path(Path::new("/var/lib/basho")),
        PathBuf::from("rel")
    );
    assert_eq!(
        AirlockConfig::default().store_path(Path::new("/var/lib/basho")),
        PathBuf::from("/var/lib/basho/airlock")
    );
}
