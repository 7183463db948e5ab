//! basho-bench-tunnel: what the session tunnel costs, on real Docker through an in-process
//! federation (orchestrator + three Docker agents on loopback): a keystroke's round trip through
//! a terminal session, `basho exec cat` throughput of a 100 MiB file, and the agent's
//! create-to-running latency with and without 20 busy sessions on the same site. Every session
//! is sealed end to end, as `basho` opens them; the keystroke and an in-process `cat` of the
//! same file are also measured in clear (the sites allow it here), so encryption's cost is read
//! from one run. The results airlock in the same run: the time from `basho results request` of
//! a table of the same size to its checked answer, and `basho results download` of it after two
//! approvals, beside `basho exec cat` of the same file.
//!
//!     cargo run --release -p basho-tests --bin basho-bench-tunnel -- [--keystrokes 500]
//!         [--mib 100] [--busy 20] [--creates 5]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basho_cli::session::Opened;
use basho_core::tunnel::{Kind, SessionSpec};
use basho_orchestrator::store::Role;
use basho_orchestrator::tokens::{NewToken, create, open_store};
use basho_tests::bench::{Figure, Report};
use basho_tests::federation::Federation;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Keystrokes timed.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    keystrokes: u64,
    /// Size of the file `basho exec cat` reads, MiB.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    mib: u64,
    /// Busy sessions during the control-loop run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    busy: u64,
    /// Workspaces created per control-loop run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    creates: u64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Seconds `argv` takes to run with its output to /dev/null.
fn timed(argv: &[&str], env: &[(&str, &str)]) -> Result<f64> {
    let started = Instant::now();
    let status = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{argv:?} failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A session in clear (only where the site allows it), with alice's proof.
async fn clear_session(
    fed: &Federation,
    token: &str,
    id: &str,
    mut spec: SessionSpec,
) -> Result<Opened> {
    spec.proof = Some(fed.id_proof("alice", id, &basho_core::proof::fresh_seed()));
    let (ws, ready) = basho_cli::session::open(&fed.client(token), id, &spec).await?;
    anyhow::ensure!(
        ready.handshake.is_none(),
        "a clear session came back sealed"
    );
    Ok(Opened::clear(ws, ready))
}

/// A session of `argv` (alice's proof is added as the session is sealed).
fn spec(argv: &[&str], tty: bool) -> SessionSpec {
    SessionSpec {
        tty,
        cols: 80,
        rows: 24,
        ..SessionSpec::exec(argv.iter().copied())
    }
}

/// One keystroke's round trip (ms): one byte into a terminal running `cat`, until its echo
/// returns.
async fn keystroke(session: &mut Opened, i: u64) -> Result<f64> {
    let key = [b'a' + (i % 26) as u8];
    let started = Instant::now();
    session.send(Kind::Stdin, &key).await?;
    loop {
        let Some(f) = session.recv().await else {
            bail!("session ended")
        };
        let f = f?;
        if f.kind == Kind::Stdout && f.payload.contains(&key[0]) {
            let credit = (f.payload.len() as u32).to_be_bytes();
            session.send(Kind::Credit, &credit).await?;
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// MiB/s of a session's output, read and credited as fast as it comes, until its exit.
async fn drain(mut session: Opened) -> Result<f64> {
    let started = Instant::now();
    let mut bytes = 0u64;
    loop {
        let Some(f) = session.recv().await else {
            bail!("session ended without its exit")
        };
        let f = f?;
        match f.kind {
            Kind::Stdout => {
                bytes += f.payload.len() as u64;
                let credit = (f.payload.len() as u32).to_be_bytes();
                session.send(Kind::Credit, &credit).await?;
            }
            Kind::Exit => break,
            _ => {}
        }
    }
    Ok(bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

async fn create_to_running(fed: &Federation, n: usize, tag: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..n {
        let body = fed.create_body(&format!("P-{tag}-{i}"), "bob", &["JGAD000102"]);
        let started = Instant::now();
        let (s, ws) = fed.api.create(&body).await;
        if !s.is_success() {
            bail!("create: {ws}");
        }
        let id = ws["id"].as_str().context("id")?.to_owned();
        fed.api
            .wait_state(&id, "running", Duration::from_secs(120))
            .await;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
        fed.api.delete(&id).await;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let report = Report::new("sessions");
    let busy = args.busy as usize;
    let Some(fed) = Federation::start_with(move |_, c| {
        c.sessions.max_per_workspace = busy + 4;
        // Sessions in clear too, only to measure what sealing costs.
        c.sessions.encryption = basho_agent::session::seal::Encryption::Optional;
        c.capacity.cpus = 64;
        c.capacity.memory_mib = 65536;
    })
    .await
    else {
        report.skipped("no Docker engine answers on this machine");
        return Ok(());
    };
    let ws = fed.create_running("P-BENCH", &["JGAD000101"]).await;
    let id = ws["id"].as_str().context("id")?.to_owned();
    let config = fed.dir.path().join("orchestrator-bench.toml");
    std::fs::write(&config, toml::to_string(fed.config())?)?;
    let store = open_store(&config).await?;
    let new = NewToken {
        role: Role::Researcher,
        subject: Some("alice".into()),
        site: None,
        name: None,
        ttl: None,
    };
    let token = create(&*store, new, "bench").await?.1;
    let mut checkers = Vec::new();
    for name in ["carol", "dave"] {
        let new = NewToken {
            role: Role::OutputChecker,
            subject: Some(name.into()),
            site: None,
            name: None,
            ttl: None,
        };
        checkers.push(create(&*store, new, "bench").await?.1);
    }

    // A keystroke's round trip: one byte into a terminal running `cat`, until its echo returns.
    // Both open at once and taken in turns, so neither gets the quieter moments.
    let mut sealed = fed
        .session(&token, "alice", &id, &spec(&["cat"], true))
        .await?;
    let mut clear = clear_session(&fed, &token, &id, spec(&["cat"], true)).await?;
    let (mut rtts, mut clear_rtts) = (Vec::new(), Vec::new());
    for i in 0..args.keystrokes {
        rtts.push(keystroke(&mut sealed, i).await?);
        clear_rtts.push(keystroke(&mut clear, i).await?);
    }
    drop((sealed, clear));
    rtts.sort_by(f64::total_cmp);
    clear_rtts.sort_by(f64::total_cmp);
    println!("keystroke round trip (tty, cat echo), {} keys:", rtts.len());
    report.figure(
        Figure::lower(
            "keystroke_p50",
            "keystroke round trip p50",
            pct(&rtts, 0.5),
            "ms",
        )
        .peer("in clear", pct(&clear_rtts, 0.5)),
    );
    report.figure(
        Figure::lower(
            "keystroke_p99",
            "keystroke round trip p99",
            pct(&rtts, 0.99),
            "ms",
        )
        .peer("in clear", pct(&clear_rtts, 0.99)),
    );

    // `basho exec cat` of a large file, output to /dev/null.
    let container = fed
        .containers(&id)
        .await
        .into_iter()
        .next()
        .context("container")?;
    let make = format!("head -c {} /dev/zero > /work/bench.bin", args.mib << 20);
    let (code, out) = basho_tests::exec(&fed.docker, &container, &["sh", "-c", &make]).await;
    if code != 0 {
        bail!("making the file: {out}");
    }
    let basho = basho_tests::binary("basho");
    let basho = basho.to_str().context("binary path")?;
    let prove = fed.id_token_command("alice");
    let pins = fed.pins().path().to_owned();
    let env = [
        ("BASHO_KNOWN_SITES", pins.to_str().context("pin file path")?),
        ("BASHO_ADDR", fed.api.base.as_str()),
        ("BASHO_TOKEN", token.as_str()),
        ("BASHO_ID_TOKEN_COMMAND", prove.as_str()),
    ];
    let secs = timed(&[basho, "exec", &id, "--", "cat", "/work/bench.bin"], &env)?;
    // The engine's own exec of the same file: what the tunnel is measured against.
    let plain = timed(
        &["docker", "exec", &container, "cat", "/work/bench.bin"],
        &[],
    )?;
    println!(
        "basho exec cat of {} MiB: {secs:.2} s, docker exec {plain:.2} s",
        args.mib
    );
    let mib = args.mib as f64;
    // The same file through a session read in this process, sealed and in clear.
    // Three of each, in turns; the medians.
    let cat = spec(&["cat", "/work/bench.bin"], false);
    let (mut sealed, mut clear) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        sealed.push(drain(fed.session(&token, "alice", &id, &cat).await?).await?);
        clear.push(drain(clear_session(&fed, &token, &id, cat.clone()).await?).await?);
    }
    sealed.sort_by(f64::total_cmp);
    clear.sort_by(f64::total_cmp);
    let (sealed, clear) = (sealed[1], clear[1]);
    println!(
        "a session's cat of {} MiB: {sealed:.0} MiB/s sealed, {clear:.0} in clear",
        args.mib
    );
    report.figure(
        Figure::higher(
            "session_cat_mib_s",
            "session cat throughput (in process)",
            sealed,
            "MiB/s",
        )
        .peer("in clear", clear),
    );
    report.figure(
        Figure::higher(
            "exec_cat_mib_s",
            "basho exec cat throughput",
            mib / secs,
            "MiB/s",
        )
        .peer("docker exec cat", mib / plain)
        .at_least(250.0),
    );

    // The airlock: a table of the same size asked for release, approved twice, downloaded; and
    // `basho exec cat` of that very file, in turns.
    let rows = (args.mib << 20) / 18;
    let make = format!("yes 40-49,25,F,Miyagi | head -n {rows} > /results/bench.csv");
    let (code, out) = basho_tests::exec(&fed.docker, &container, &["sh", "-c", &make]).await;
    if code != 0 {
        bail!("making the table: {out}");
    }
    let started = Instant::now();
    let answer = std::process::Command::new(basho)
        .args([
            "results",
            "request",
            &id,
            "bench.csv",
            "--justification",
            "bench",
        ])
        .args(["--output", "json"])
        .envs(env.iter().copied())
        .output()?;
    let checked = started.elapsed().as_secs_f64();
    if !answer.status.success() {
        bail!(
            "results request: {}",
            String::from_utf8_lossy(&answer.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&answer.stdout)?;
    let rr = r["id"].as_str().context("request id")?.to_owned();
    let size = r["files"][0]["size"].as_u64().context("size")?;
    for checker in &checkers {
        let api = basho_tests::api::Api::new(fed.api.base.clone(), checker.clone());
        let body = serde_json::json!({"verdict": "approve"});
        let path = format!("/v1/release-requests/{rr}/reviews");
        let (s, v) = api.call(reqwest::Method::POST, &path, Some(&body)).await;
        if !s.is_success() {
            bail!("review: {v}");
        }
    }
    let out_dir = fed.dir.path().join("released");
    std::fs::create_dir_all(&out_dir)?;
    let out_dir = out_dir.to_str().context("path")?.to_owned();
    let (mut downloads, mut cats) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let download = ["results", "download", rr.as_str(), "-o", out_dir.as_str()];
        downloads.push(timed(&[&[basho][..], &download[..]].concat(), &env)?);
        cats.push(timed(
            &[basho, "exec", &id, "--", "cat", "/results/bench.csv"],
            &env,
        )?);
    }
    downloads.sort_by(f64::total_cmp);
    cats.sort_by(f64::total_cmp);
    let table_mib = size as f64 / (1 << 20) as f64;
    println!(
        "airlock, a {table_mib:.0} MiB table: request to checked {checked:.2} s; download \
         {:.2} s, basho exec cat {:.2} s (medians of 3)",
        downloads[1], cats[1]
    );
    report.figure(Figure::lower(
        "airlock_request_s",
        "release request to checked answer",
        checked,
        "s",
    ));
    report.figure(
        Figure::higher(
            "airlock_download_mib_s",
            "airlock download throughput",
            table_mib / downloads[1],
            "MiB/s",
        )
        .peer("basho exec cat of the same file", table_mib / cats[1]),
    );

    // The control loop with and without busy sessions on the same site.
    let idle = create_to_running(&fed, args.creates as usize, "idle").await?;
    let mut tasks = Vec::new();
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..args.busy {
        let mut s = fed
            .session(&token, "alice", &id, &spec(&["cat", "/dev/zero"], false))
            .await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = s.recv() => m,
                };
                let Some(Ok(f)) = m else {
                    break;
                };
                if f.kind == Kind::Stdout {
                    bytes += f.payload.len() as u64;
                    let credit = (f.payload.len() as u32).to_be_bytes();
                    if s.send(Kind::Credit, &credit).await.is_err() {
                        break;
                    }
                }
            }
            bytes
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let loaded = create_to_running(&fed, args.creates as usize, "busy").await?;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.cancel();
    let mut moved = 0u64;
    for t in tasks {
        moved += t.await.unwrap_or(0);
    }
    println!(
        "create->running on the same site, {} creates, idle and with {} busy sessions",
        args.creates, args.busy
    );
    report.figure(Figure::lower(
        "create_idle_p50",
        "create -> running, no session, p50",
        pct(&idle, 0.5),
        "ms",
    ));
    let label = format!("the same with {} busy sessions, p50", args.busy);
    report.figure(
        Figure::lower("create_busy_p50", &label, pct(&loaded, 0.5), "ms")
            .peer("no session", pct(&idle, 0.5)),
    );
    report.figure(Figure::higher(
        "busy_mib_s",
        "what the busy sessions moved meanwhile",
        moved as f64 / (1 << 20) as f64 / elapsed.max(0.001),
        "MiB/s",
    ));
    fed.shutdown().await;
    Ok(())
}
