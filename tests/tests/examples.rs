//! The example configs under `examples/` stay loadable as the code evolves, and `check-config`
//! finds in them only what a fresh machine lacks (the admin's own paths and keys).

use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn site_examples_load_and_only_miss_host_paths() {
    for name in ["site-docker.toml", "site-fake.toml", "site-slurm.toml"] {
        let cfg =
            basho_agent::load_config(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for problem in basho_agent::check_config(&cfg) {
            let host_specific = problem.contains("No such file or directory")
                || problem.starts_with("no trusted_issuers");
            assert!(host_specific, "{name}: {problem}");
        }
    }
}

#[test]
fn orchestrator_example_loads() {
    let text = std::fs::read_to_string(example("orchestrator.toml")).unwrap();
    let cfg: basho_orchestrator::config::Config = toml::from_str(&text).unwrap();
    assert_eq!(cfg.agents.len(), 2);
    assert_eq!(cfg.trusted_issuers.len(), 1);
}
