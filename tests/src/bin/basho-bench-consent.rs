//! basho-bench-consent: making a dataset's next release without withdrawn participants, beside
//! the plain tool doing only the filtering.
//!
//! - A CSV of `--rows` participants (synthetic), `--withdraw` of them withdrawn: the whole
//!   release (read, filter by the participant column, digest, sync, search every byte for every
//!   withdrawn ID, rename into place) against `grep -v -w -F -f IDS` of the same file. Release
//!   1 is measured first, untimed, as the agent does once when it starts.
//! - A VCF of `--samples` samples and `--variants` variant lines (1000 Genomes-sized header,
//!   synthetic), as many samples withdrawn: the release against `bcftools view -s ^IDS`.
//!
//! Each is run `--runs` times in turns with its peer; the medians are compared.
//!
//! - Reach: `--workspaces` running Docker workspaces spread over the three demo sites, each
//!   reading its site's dataset; a withdrawal is recorded at every site at once, `--rounds`
//!   times; each workspace's time from the withdrawal to its new container on the new release,
//!   p50, p99 and the last of each round (skipped without a Docker engine).
//!
//! ```text
//! cargo run --release -p basho-tests --bin basho-bench-consent -- [--rows 1000000]
//!     [--samples 2504] [--variants 2000] [--withdraw 100] [--runs 3]
//!     [--workspaces 20] [--rounds 3]
//! ```

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_agent::consent::{Releases, Source};
use basho_core::Ident;
use basho_tests::bench::{Figure, Report, pct_ms};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Rows (participants) of the CSV.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Samples of the VCF.
    #[arg(long, default_value_t = 2504, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Variant lines of the VCF.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    variants: u64,
    /// Participants withdrawn (spread over the file).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    withdraw: u64,
    /// Runs of each, in turns with its peer.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Running workspaces a withdrawal must reach, over three sites (0: skip).
    #[arg(long, default_value_t = 20)]
    workspaces: u64,
    /// Withdrawals in turn (each site's synthetic dataset has 5 participants).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=4))]
    rounds: u64,
}

/// The demo sites and the dataset each holds.
const SITES: [(&str, &str); 3] = [
    ("tohoku", "JGAD000101"),
    ("ncbn", "JGAD000201"),
    ("bbj", "JGAD000301"),
];

/// Withdrawal to move, per workspace: `workspaces` spread over the demo federation's sites.
async fn reach(report: &Report, workspaces: u64, rounds: u64) -> Result<()> {
    use basho_tests::federation::Federation;
    let Some(fed) = Federation::start_with(|_, cfg| {
        cfg.capacity.cpus = 64;
        cfg.capacity.memory_mib = 64 * 1024;
    })
    .await
    else {
        report.skipped("no Docker engine: the reach of a withdrawal was not measured");
        return Ok(());
    };
    let mut ws: Vec<(String, &str)> = Vec::new();
    for i in 0..workspaces as usize {
        let d = SITES[i % SITES.len()].1;
        let (status, w) = fed
            .api
            .create(&fed.create_body("P-BENCH", "alice", &[d]))
            .await;
        if status != reqwest::StatusCode::CREATED {
            bail!("create answered {status}: {w}");
        }
        ws.push((w["id"].as_str().context("an id")?.to_owned(), d));
    }
    for (id, _) in &ws {
        fed.api
            .wait_state(id, "running", Duration::from_secs(180))
            .await;
    }
    let mut all = Vec::new();
    for round in 0..rounds {
        let mut before = Vec::new();
        for (id, _) in &ws {
            before.push(fed.containers(id).await);
        }
        let started = Instant::now();
        for (site, d) in SITES {
            let config = fed.site_config(site);
            basho_agent::consent::desk::Spool::new(&config.releases_dir()).record(
                &basho_agent::catalog::Catalog::from_config(&config),
                &Ident::parse(d)?,
                &[format!("{d}-{}", round + 1)],
                "bench",
                chrono::Utc::now(),
            )?;
        }
        let mut took: Vec<Option<Duration>> = vec![None; ws.len()];
        while took.iter().any(Option::is_none) {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("not every workspace moved within 300 s");
            }
            for (i, (id, _)) in ws.iter().enumerate() {
                if took[i].is_some() {
                    continue;
                }
                let now = fed.containers(id).await;
                if now.len() == 1 && !before[i].contains(&now[0]) {
                    took[i] = Some(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last = took.iter().flatten().max().copied().unwrap_or_default();
        println!(
            "round {}: {} workspaces on 3 sites moved, the last {:.0} ms after the withdrawal",
            round + 1,
            ws.len(),
            last.as_secs_f64() * 1000.0
        );
        all.extend(took.into_iter().flatten());
    }
    // Every workspace mounts the last release: the move was to the new one.
    for (id, d) in &ws {
        let c = fed.containers(id).await;
        let out = basho_tests::exec(
            &fed.docker,
            &c[0],
            &["cat", &format!("/data/{d}/records.csv")],
        )
        .await
        .1;
        if out.contains(&format!("{d}-{rounds},")) {
            bail!("{id} still reads {d}-{rounds}: {out}");
        }
    }
    all.sort();
    report.figure(Figure::lower(
        "reach_p50_ms",
        &format!(
            "withdrawal to workspace moved p50 ({} workspaces, 3 sites)",
            ws.len()
        ),
        pct_ms(&all, 0.5),
        "ms",
    ));
    report.figure(
        Figure::lower(
            "reach_p99_ms",
            "withdrawal to workspace moved p99",
            pct_ms(&all, 0.99),
            "ms",
        )
        .at_most(60_000.0),
    );
    report.figure(Figure::lower(
        "reach_last_ms",
        "withdrawal to last workspace moved",
        pct_ms(&all, 1.0),
        "ms",
    ));
    fed.shutdown().await;
    Ok(())
}

fn csv(path: &Path, rows: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "participant_id,age_band,sex,prefecture,icd10")?;
    let bands = ["40-49", "50-59", "60-69", "70-79"];
    let codes = ["E11", "I10", "C50", "J45", "K21"];
    for i in 0..rows {
        let (b, c) = (bands[(i % 4) as usize], codes[(i % 5) as usize]);
        let sex = if i % 2 == 0 { "F" } else { "M" };
        writeln!(f, "P{i:08},{b},{sex},Miyagi,{c}")?;
    }
    f.flush()?;
    Ok(())
}

fn vcf(path: &Path, samples: u64, variants: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "##fileformat=VCFv4.2\n##contig=<ID=1,length=249250621>")?;
    writeln!(
        f,
        "##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">"
    )?;
    write!(f, "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT")?;
    for s in 0..samples {
        write!(f, "\tS{s:05}")?;
    }
    writeln!(f)?;
    let gts = ["0|0", "0|1", "1|0", "1|1"];
    for v in 0..variants {
        write!(f, "1\t{}\t.\tA\tG\t.\tPASS\t.\tGT", 1000 + v * 37)?;
        for s in 0..samples {
            write!(f, "\t{}", gts[((v * 7 + s * 13) % 4) as usize])?;
        }
        writeln!(f)?;
    }
    f.flush()?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Medians of `ours` and `plain`, run in turns `runs` times; each `ours` on a fresh releases
/// directory named by its run.
fn turns(
    runs: u64,
    mut ours: impl FnMut(u64) -> Result<()>,
    mut plain: impl FnMut() -> Result<()>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        ours(i)?;
        a.push(t.elapsed());
        let t = Instant::now();
        plain()?;
        b.push(t.elapsed());
    }
    a.sort();
    b.sort();
    Ok((a, b))
}

fn figures(
    report: &Report,
    what: &str,
    label: &str,
    peer: &str,
    ours: &[Duration],
    plain: &[Duration],
) {
    let (o, p) = (pct_ms(ours, 0.5), pct_ms(plain, 0.5));
    report.figure(
        Figure::lower(
            &format!("{what}_release_ms"),
            &format!("{label} release p50"),
            o,
            "ms",
        )
        .peer(peer, p),
    );
    report.figure(
        Figure::lower(
            &format!("{what}_ratio"),
            &format!("{label} ratio to {peer}"),
            o / p,
            "x",
        )
        .at_most(1.5),
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("consent");
    let dir = tempfile::tempdir()?;
    let id = Ident::parse("JGAD000101")?;

    // The CSV.
    let data = dir.path().join("csv");
    std::fs::create_dir_all(&data)?;
    csv(&data.join("records.csv"), args.rows)?;
    let step = (args.rows / args.withdraw).max(1);
    let ids: BTreeSet<String> = (0..args.withdraw.min(args.rows))
        .map(|i| format!("P{:08}", i * step))
        .collect();
    let list = dir.path().join("ids.txt");
    std::fs::write(
        &list,
        ids.iter().map(|i| format!("{i}\n")).collect::<String>(),
    )?;
    let source = Source {
        original: &data,
        participant_column: Some("participant_id"),
        filter_command: &[],
    };
    // Release 1 is measured once, when the agent starts, not at the withdrawal.
    for i in 0..args.runs {
        Releases::new(&dir.path().join(format!("csv-releases-{i}")), &id)
            .first(&source, chrono::Utc::now())?;
    }
    let out = dir.path().join("grep.csv");
    let (ours, plain) = turns(
        args.runs,
        |i| {
            let r = Releases::new(&dir.path().join(format!("csv-releases-{i}")), &id);
            let made = r.withdraw(&source, &ids, "bench", chrono::Utc::now())?;
            let m = made.made.context("a release is made")?;
            if m.removed != ids.len() as u64 {
                bail!("{} rows removed, not {}", m.removed, ids.len());
            }
            Ok(())
        },
        || {
            let f = std::fs::File::create(&out)?;
            // grep exits 1 when nothing is left, never here.
            run(Command::new("grep")
                .args(["-v", "-w", "-F", "-f"])
                .arg(&list)
                .arg(data.join("records.csv"))
                .stdout(f))
        },
    )?;
    println!(
        "CSV of {} rows, {} participants withdrawn, {} runs:",
        args.rows,
        ids.len(),
        args.runs
    );
    figures(&report, "csv", "CSV", "grep -v -w -F -f", &ours, &plain);

    // The VCF.
    let data = dir.path().join("vcf");
    std::fs::create_dir_all(&data)?;
    vcf(&data.join("cohort.vcf"), args.samples, args.variants)?;
    let step = (args.samples / args.withdraw).max(1);
    let gone: BTreeSet<String> = (0..args.withdraw.min(args.samples))
        .map(|i| format!("S{:05}", i * step))
        .collect();
    let excluded = format!("^{}", gone.iter().cloned().collect::<Vec<_>>().join(","));
    let source = Source {
        participant_column: None,
        original: &data,
        ..source
    };
    for i in 0..args.runs {
        Releases::new(&dir.path().join(format!("vcf-releases-{i}")), &id)
            .first(&source, chrono::Utc::now())?;
    }
    let out = dir.path().join("bcftools.vcf");
    let (ours, plain) = turns(
        args.runs,
        |i| {
            let r = Releases::new(&dir.path().join(format!("vcf-releases-{i}")), &id);
            let m = r
                .withdraw(&source, &gone, "bench", chrono::Utc::now())?
                .made
                .context("a release is made")?;
            if m.removed != gone.len() as u64 {
                bail!("{} samples removed, not {}", m.removed, gone.len());
            }
            Ok(())
        },
        || {
            run(Command::new("bcftools")
                .args(["view", "--no-version", "-O", "v", "-s", &excluded, "-o"])
                .arg(&out)
                .arg(data.join("cohort.vcf")))
        },
    )?;
    println!(
        "VCF of {} samples x {} variants, {} samples withdrawn, {} runs:",
        args.samples,
        args.variants,
        gone.len(),
        args.runs
    );
    figures(&report, "vcf", "VCF", "bcftools view -s ^", &ours, &plain);

    if args.workspaces > 0 {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(reach(&report, args.workspaces, args.rounds))?;
    }
    Ok(())
}
