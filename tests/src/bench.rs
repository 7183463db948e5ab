//! Figures of the benchmark binaries: printed for people, and appended as JSON lines to the file
//! `$BASHO_BENCH_OUT` names, which `scripts/bench` gathers into one results file per run.
//! `BASHO_BENCH_TRACE=1` (or any `BASHO_LOG`/`RUST_LOG`) logs to stderr with each span's duration
//! as it closes, so a slow step of a create or a revocation shows where its time went.

use std::io::Write;

use serde_json::{Value, json};

/// Which way a figure gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latencies, memory.
    Lower,
    /// Rates, throughput.
    Higher,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    name: String,
    label: String,
    value: f64,
    unit: String,
    better: Better,
    peer: Option<(String, f64)>,
    target: Option<Value>,
}

impl Figure {
    /// A figure where less is better (a latency, a size).
    pub fn lower(name: &str, label: &str, value: f64, unit: &str) -> Figure {
        Figure::new(name, label, value, unit, Better::Lower)
    }

    /// A figure where more is better (a rate).
    pub fn higher(name: &str, label: &str, value: f64, unit: &str) -> Figure {
        Figure::new(name, label, value, unit, Better::Higher)
    }

    fn new(name: &str, label: &str, value: f64, unit: &str, better: Better) -> Figure {
        Figure {
            name: name.into(),
            label: label.into(),
            value,
            unit: unit.into(),
            better,
            peer: None,
            target: None,
        }
    }

    /// The same quantity measured in the same run for what basho is compared with.
    pub fn peer(mut self, label: &str, value: f64) -> Figure {
        self.peer = Some((label.into(), value));
        self
    }

    /// The goal: at most `max`.
    pub fn at_most(mut self, max: f64) -> Figure {
        self.target = Some(json!({ "max": max }));
        self
    }

    /// The goal: at least `min`.
    pub fn at_least(mut self, min: f64) -> Figure {
        self.target = Some(json!({ "min": min }));
        self
    }

    fn line(&self) -> String {
        let mut s = format!("  {:<44} {:>10.2} {}", self.label, self.value, self.unit);
        if let Some((label, v)) = &self.peer {
            s.push_str(&format!("   ({label}: {v:.2} {}", self.unit));
            if *v > 0.0 {
                s.push_str(&format!(", ratio {:.2}x", self.value / v));
            }
            s.push(')');
        }
        s
    }

    fn json(&self, bench: &str) -> Value {
        json!({
            "kind": "figure", "bench": bench, "name": self.name, "label": self.label,
            "value": self.value, "unit": self.unit,
            "better": match self.better { Better::Lower => "lower", Better::Higher => "higher" },
            "peer": self.peer.as_ref().map(|(label, v)| json!({"label": label, "value": v, "unit": self.unit})),
            "target": self.target,
        })
    }
}

/// Where one benchmark's figures go.
#[derive(Debug, Clone)]
pub struct Report {
    bench: String,
}

impl Report {
    /// The report of benchmark `bench` (its name in `scripts/bench`); sets up tracing when asked.
    pub fn new(bench: &str) -> Report {
        let asked = ["BASHO_BENCH_TRACE", "BASHO_LOG", "RUST_LOG"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if asked {
            let _ = basho_core::logging::init_with_spans("info");
        }
        Report {
            bench: bench.into(),
        }
    }

    /// Another benchmark's report from the same binary.
    pub fn for_bench(&self, bench: &str) -> Report {
        Report {
            bench: bench.into(),
        }
    }

    /// Prints `f` and records it.
    pub fn figure(&self, f: Figure) {
        println!("{}", f.line());
        self.emit(f.json(&self.bench));
    }

    /// Records that this benchmark could not measure here, and why.
    pub fn skipped(&self, reason: &str) {
        println!("  skipped: {reason}");
        self.emit(json!({"kind": "skipped", "bench": self.bench, "reason": reason}));
    }

    /// Keeps a line of context with the figures.
    pub fn note(&self, text: &str) {
        println!("  {text}");
        self.emit(json!({"kind": "note", "bench": self.bench, "text": text}));
    }

    fn emit(&self, line: Value) {
        let Some(path) = std::env::var_os("BASHO_BENCH_OUT") else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
    }
}

/// The `p` quantile (0.0 to 1.0) of sorted durations, in milliseconds.
pub fn pct_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The flags a plain `docker run` is given to compare with basho's launch: the isolation basho
/// applies (docs/design.md), the demo's resources, and `data` bound read-only where a dataset
/// is mounted.
pub fn plain_isolation(data: &std::path::Path) -> Vec<String> {
    [
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,noexec,nosuid,size=64m",
        "--user",
        "65534:65534",
        "--pids-limit",
        "256",
        "--memory",
        "128m",
        "--cpus",
        "1",
        "--mount",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!(
        "type=bind,source={},target=/data/JGAD000101,readonly",
        data.display()
    )])
    .collect()
}
