//! `scripts/bench`, the benchmark driver, run against fake benchmark binaries (small shell scripts
//! that speak the BASHO_BENCH_OUT protocol): the results file it writes, how it refuses bad
//! arguments, how it tells failed from skipped benchmarks, `--compare` and `--render`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use tempfile::TempDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A figure line as a benchmark binary appends it: milliseconds, lower is better.
fn figure_line(bench: &str, name: &str, value: f64) -> String {
    json!({
        "kind": "figure", "bench": bench, "name": name, "label": format!("{name} label"),
        "value": value, "unit": "ms", "better": "lower",
        "peer": {"label": "plain", "value": value / 2.0, "unit": "ms"}, "target": {"max": 2000}
    })
    .to_string()
}

/// A results file as the driver writes it, with one `revoke` benchmark holding `figures`.
fn results_file(figures: &[(&str, f64)]) -> String {
    let figures: Vec<Value> = figures
        .iter()
        .map(|(name, value)| {
            json!({"name": name, "label": format!("{name} label"), "value": value, "unit": "ms",
                   "better": "lower", "peer": null, "target": {"max": 100}})
        })
        .collect();
    json!({
        "format": "basho-bench/1", "date": "2026-01-01T00:00:00Z", "commit": "0".repeat(40),
        "dirty": false, "quick": false,
        "machine": {"cores": 2, "cpu": "test cpu", "memory_gib": 4.0, "kernel": "6.1", "os": "Debian"},
        "engine": null, "slurm": null,
        "benchmarks": {"revoke": {
            "command": "target/release/basho-bench-revoke --revocations 100", "sizes": {"revocations": 100},
            "status": "ok", "reason": null, "seconds": 1.0, "figures": figures, "notes": []
        }}
    })
    .to_string()
}

/// A temporary directory of fake benchmark binaries, also holding the driver's outputs.
struct Fakes {
    dir: TempDir,
}

impl Fakes {
    fn new() -> Self {
        Fakes {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// A fake `binary` that records its arguments, appends `lines` to $BASHO_BENCH_OUT and exits
    /// with `code`.
    fn add(&self, binary: &str, lines: &[String], code: i32) {
        let mut script = String::from("#!/bin/sh\necho \"$*\" >> \"$0.ran\"\n");
        for line in lines {
            script += &format!("cat >> \"$BASHO_BENCH_OUT\" <<'EOF'\n{line}\nEOF\n");
        }
        script += &format!("exit {code}\n");
        let path = self.path(binary);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The arguments `binary` was run with, if it ran.
    fn ran(&self, binary: &str) -> Option<String> {
        fs::read_to_string(self.path(&format!("{binary}.ran"))).ok()
    }

    fn bench(&self, args: &[&str]) -> Output {
        Command::new(repo().join("scripts/bench"))
            .args(args)
            .current_dir(repo())
            .env("BASHO_BENCH_BIN_DIR", self.dir.path())
            .env_remove("BASHO_BENCH_OUT")
            .env_remove("BASHO_BENCH_TRACE")
            .output()
            .expect("running scripts/bench")
    }

    fn results(&self, name: &str) -> Value {
        let text = fs::read_to_string(self.path(name)).expect("the results file");
        serde_json::from_str(&text).expect("the results file is JSON")
    }
}

fn said(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_quick_run_writes_a_results_file_with_every_figure() {
    let fakes = Fakes::new();
    fakes.add(
        "basho-bench-revoke",
        &[figure_line("revoke", "gone_p99", 53.2)],
        0,
    );
    fakes.add(
        "basho-bench-slurm",
        &[figure_line("slurm", "submit_median", 914.0)],
        0,
    );
    let out = fakes.bench(&[
        "--quick",
        "--dev-build",
        "revoke",
        "slurm",
        "--out",
        &fakes.arg("results.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));

    let results = fakes.results("results.json");
    assert_eq!(results["format"], "basho-bench/1");
    assert_eq!(results["quick"], true);
    let commit = results["commit"].as_str().unwrap();
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "commit {commit}"
    );
    assert!(
        results["machine"]["cores"].as_u64().unwrap() >= 1,
        "{results}"
    );
    assert!(results["machine"]["kernel"].is_string(), "{results}");

    let revoke = &results["benchmarks"]["revoke"];
    assert_eq!(revoke["status"], "ok", "{revoke}");
    assert_eq!(revoke["sizes"]["revocations"], 30, "quick sizes: {revoke}");
    assert_eq!(
        revoke["command"],
        "target/debug/basho-bench-revoke --revocations 30 --per-site 5 --burst 30",
        "--dev-build takes the tests' dev-profile build"
    );
    assert_eq!(results["profile"], "debug");
    assert_eq!(revoke["figures"][0]["name"], "gone_p99");
    assert_eq!(revoke["figures"][0]["value"], 53.2);
    assert!(
        revoke["figures"][0].get("kind").is_none(),
        "kept as received, without kind: {revoke}"
    );
    let slurm = &results["benchmarks"]["slurm"];
    assert_eq!(slurm["status"], "ok", "{slurm}");
    assert_eq!(slurm["figures"][0]["value"], 914.0);
    assert_eq!(
        fakes.ran("basho-bench-revoke").unwrap().trim(),
        "--revocations 30 --per-site 5 --burst 30"
    );
}

#[test]
fn an_unknown_benchmark_is_refused_before_anything_runs() {
    let fakes = Fakes::new();
    fakes.add(
        "basho-bench-revoke",
        &[figure_line("revoke", "gone_p99", 53.2)],
        0,
    );
    let out = fakes.bench(&[
        "--quick",
        "revoke",
        "nosuch",
        "--out",
        &fakes.arg("results.json"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for known in [
        "placement",
        "placement-agents",
        "revoke",
        "slurm",
        "usage",
        "sessions",
    ] {
        assert!(stderr.contains(known), "stderr names {known}: {stderr}");
    }
    assert_eq!(fakes.ran("basho-bench-revoke"), None, "nothing may run");
    assert!(!fakes.path("results.json").exists());
}

#[test]
fn a_size_that_is_not_a_positive_integer_is_refused() {
    let fakes = Fakes::new();
    fakes.add(
        "basho-bench-revoke",
        &[figure_line("revoke", "gone_p99", 53.2)],
        0,
    );
    for size in [
        "revoke.revocations=0",
        "revoke.revocations=-4",
        "revoke.revocations=many",
        "revoke.nosuch=5",
        "nosuch.revocations=5",
    ] {
        let out = fakes.bench(&[
            "--quick",
            "--size",
            size,
            "revoke",
            "--out",
            &fakes.arg("r.json"),
        ]);
        assert_eq!(out.status.code(), Some(2), "--size {size}: {}", said(&out));
        assert_eq!(
            fakes.ran("basho-bench-revoke"),
            None,
            "--size {size}: nothing may run"
        );
    }
    // A good override does reach the binary, so the refusals above are about the values.
    let out = fakes.bench(&[
        "--quick",
        "--size",
        "revoke.revocations=7",
        "revoke",
        "--out",
        &fakes.arg("r.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        fakes
            .ran("basho-bench-revoke")
            .unwrap()
            .contains("--revocations 7 ")
    );
}

#[test]
fn compare_refuses_a_file_that_is_not_a_results_file() {
    let fakes = Fakes::new();
    fakes.add(
        "basho-bench-revoke",
        &[figure_line("revoke", "gone_p99", 53.2)],
        0,
    );
    fs::write(fakes.path("notes.txt"), "not JSON at all\n").unwrap();
    let out = fakes.bench(&[
        "--compare",
        &fakes.arg("notes.txt"),
        "revoke",
        "--out",
        &fakes.arg("r.json"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notes.txt"),
        "{}",
        said(&out)
    );
    assert_eq!(
        fakes.ran("basho-bench-revoke"),
        None,
        "refused before running"
    );

    fs::write(fakes.path("other.json"), r#"{"benchmarks": {}}"#).unwrap();
    fs::write(fakes.path("good.json"), results_file(&[("gone_p99", 50.0)])).unwrap();
    let out = fakes.bench(&[
        "--compare",
        &fakes.arg("other.json"),
        "--against",
        &fakes.arg("good.json"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "JSON without the format: {}",
        said(&out)
    );
    let out = fakes.bench(&[
        "--compare",
        &fakes.arg("good.json"),
        "--against",
        &fakes.arg("good.json"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a real results file: {}",
        said(&out)
    );
}

#[test]
fn a_broken_benchmark_fails_the_run_and_a_skipped_one_does_not() {
    let fakes = Fakes::new();
    fakes.add("basho-bench-slurm", &[], 1);
    let skipped =
        json!({"kind": "skipped", "bench": "usage", "reason": "no engine here"}).to_string();
    fakes.add("basho-bench-usage", &[skipped], 1);
    let out = fakes.bench(&[
        "--quick",
        "slurm",
        "usage",
        "--out",
        &fakes.arg("results.json"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let results = fakes.results("results.json");
    assert_eq!(
        results["benchmarks"]["slurm"]["status"], "failed",
        "{results}"
    );
    assert_eq!(
        results["benchmarks"]["usage"]["status"], "skipped",
        "{results}"
    );
    assert_eq!(
        results["benchmarks"]["usage"]["reason"], "no engine here",
        "{results}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "{}",
        said(&out)
    );

    let out = fakes.bench(&["--quick", "usage", "--out", &fakes.arg("skipped.json")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a skip alone is no failure: {}",
        said(&out)
    );

    // A figure line that does not follow the protocol is a broken benchmark too.
    fakes.add(
        "basho-bench-revoke",
        &[r#"{"kind":"figure","bench":"revoke","name":"x"}"#.to_string()],
        0,
    );
    let out = fakes.bench(&["--quick", "revoke", "--out", &fakes.arg("bad.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert_eq!(
        fakes.results("bad.json")["benchmarks"]["revoke"]["status"],
        "failed"
    );
}

#[test]
fn compare_marks_a_figure_that_got_more_than_a_fifth_worse() {
    let fakes = Fakes::new();
    fs::write(
        fakes.path("old.json"),
        results_file(&[("revoke_p99", 50.0), ("api_p50", 60.0)]),
    )
    .unwrap();
    fs::write(
        fakes.path("new.json"),
        results_file(&[("revoke_p99", 70.0), ("api_p50", 65.0)]),
    )
    .unwrap();
    let out = fakes.bench(&[
        "--compare",
        &fakes.arg("old.json"),
        "--against",
        &fakes.arg("new.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == name))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {name}:\n{stdout}");
        lines[0].to_owned()
    };
    let worse = line("revoke_p99");
    assert!(worse.contains("WORSE"), "50 → 70 ms: {worse}");
    assert!(
        worse.contains("50 ms") && worse.contains("70 ms"),
        "old and new values: {worse}"
    );
    let close = line("api_p50");
    assert!(
        !close.contains("WORSE") && !close.contains("better"),
        "60 → 65 ms: {close}"
    );
    assert!(close.contains("65 ms"), "{close}");
}

#[test]
fn render_replaces_only_the_marked_region() {
    let fakes = Fakes::new();
    let before = "# Benchmarks\n\nProse kept by hand, with `code`  \n\n";
    let after = "\n\nMore prose.\n\n<!-- bench:slurm -->\nslurm text, not in the results\n<!-- /bench -->\nend\n";
    let doc = format!("{before}<!-- bench:revoke -->\nstale table\n<!-- /bench -->{after}");
    fs::write(fakes.path("doc.md"), &doc).unwrap();
    fs::write(
        fakes.path("results.json"),
        results_file(&[("gone_p99", 3959.4)]),
    )
    .unwrap();
    let out = fakes.bench(&[
        "--render",
        &fakes.arg("results.json"),
        "--doc",
        &fakes.arg("doc.md"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));

    let rendered = fs::read_to_string(fakes.path("doc.md")).unwrap();
    let (head, rest) = rendered
        .split_once("<!-- bench:revoke -->\n")
        .expect("the start marker stays");
    let (region, tail) = rest
        .split_once("<!-- /bench -->")
        .expect("the end marker stays");
    assert_eq!(head, before, "text before the region");
    assert_eq!(tail, after, "text after the region, other markers included");
    assert!(!region.contains("stale table"), "{region}");
    assert!(
        region.contains("| figure | value | peer | ratio | target | met |"),
        "{region}"
    );
    assert!(region.contains("| gone_p99 label | 3,959 ms |"), "{region}");
    assert!(
        region.contains("MISSED"),
        "3,959 ms against a 100 ms target: {region}"
    );
    assert!(
        region.contains("`target/release/basho-bench-revoke --revocations 100`"),
        "{region}"
    );
}
