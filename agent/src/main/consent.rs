//! `basho-agent withdraw` and `basho-agent releases`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use basho_agent::catalog::Catalog;
use basho_agent::consent::desk::{Answer, Spool};
use basho_core::Ident;

use crate::{EXIT_CONFIG, fail};

/// Bad input: said, exit 64 (sysexits EX_USAGE), nothing recorded.
fn usage(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::from(EXIT_CONFIG)
}

/// sysexits EX_TEMPFAIL: recorded, not applied yet.
const EXIT_NOT_YET: u8 = 75;

fn load(
    config: &Path,
    dataset: &str,
) -> Result<(basho_agent::config::SiteConfig, Ident), ExitCode> {
    let config = basho_agent::load_config(config).map_err(fail)?;
    let id = Ident::parse(dataset).map_err(|e| usage(format!("dataset {dataset:?}: {e}")))?;
    Ok((config, id))
}

pub fn withdraw(
    config: &Path,
    dataset: &str,
    mut participants: Vec<String>,
    file: Option<PathBuf>,
    reason: &str,
    wait_s: u64,
) -> ExitCode {
    let (config, id) = match load(config, dataset) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = file {
        match std::fs::read_to_string(&f) {
            Ok(text) => participants.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            ),
            Err(e) => return usage(format!("cannot read {}: {e}", f.display())),
        }
    }
    let catalog = Catalog::from_config(&config);
    let spool = Spool::new(&config.releases_dir());
    let request = match spool.record(&catalog, &id, &participants, reason, chrono::Utc::now()) {
        Ok(r) => r,
        Err(e @ basho_agent::consent::ConsentError::Invalid(_)) => return usage(e),
        Err(e) => return fail(e),
    };
    println!(
        "recorded withdrawal {} of {} participant(s) from {id}; waiting up to {wait_s} s for the agent",
        request.id,
        request.participants.len()
    );
    let waited = spool.wait(&request.id, Duration::from_secs(wait_s), |t| {
        println!(
            "still waiting after {} s (the agent looks every {} s; is it running?)",
            t.as_secs(),
            basho_agent::consent::desk::POLL.as_secs()
        );
    });
    match waited {
        Some(a) => report(&a),
        None => {
            println!(
                "not applied yet: the withdrawal stays recorded and the agent applies it when it \
                 runs (basho-agent run); check with basho-agent releases --dataset {id}"
            );
            ExitCode::from(EXIT_NOT_YET)
        }
    }
}

fn report(a: &Answer) -> ExitCode {
    match a.summary() {
        Ok(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn releases(config: &Path, dataset: &str) -> ExitCode {
    let (config, id) = match load(config, dataset) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let catalog = Catalog::from_config(&config);
    let (Ok(d), Some(releases)) = (catalog.dataset(&id), catalog.releases(&id)) else {
        return fail(format!("dataset {id} is not in this site's catalog"));
    };
    let (current, path) = releases.current(&d.path);
    println!(
        "RELEASE  PARENT  FILES  ROWS  PARTICIPANTS  REMOVED  MADE                       SHA256"
    );
    println!(
        "{:<7}  {:<6}  (the catalog's path: {})",
        1,
        "-",
        d.path.display()
    );
    for m in releases.manifests() {
        println!(
            "{:<7}  {:<6}  {:<5}  {:<4}  {:<12}  {:<7}  {:<25}  {}",
            m.release,
            m.parent,
            m.files,
            m.rows,
            m.participants,
            m.removed,
            m.made_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            m.digest
        );
    }
    println!(
        "current: release {current} ({}); {} participant(s) withdrawn in all",
        path.display(),
        releases.withdrawn().len()
    );
    ExitCode::SUCCESS
}
