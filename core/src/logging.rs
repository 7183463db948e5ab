//! One logging set-up for every basho binary: tracing to stderr, filtered by `BASHO_LOG` (or
//! `RUST_LOG`), JSON when stderr is not a terminal so log collectors get structured fields.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber; `default` is the filter when neither variable is set.
///
/// The Docker client logs whole request bodies (workspace environments among them) at debug, so it
/// stays at info unless the filter names it explicitly.
pub fn init(default: &str) -> Result<(), String> {
    install(default, FmtSpan::NONE)
}

/// As [`init`], and every span logs its duration (busy and idle time) when it closes: the
/// benchmarks' `--trace`, to see which step of a create or a revocation took the time.
pub fn init_with_spans(default: &str) -> Result<(), String> {
    install(default, FmtSpan::CLOSE)
}

fn install(default: &str, spans: FmtSpan) -> Result<(), String> {
    let mut filter = std::env::var("BASHO_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    if !filter.contains("bollard") {
        filter.push_str(",bollard=info");
    }
    let filter = EnvFilter::try_new(&filter).map_err(|e| format!("log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.try_init().map_err(|e| e.to_string())
    } else {
        builder.json().try_init().map_err(|e| e.to_string())
    }
}
