//! `basho results`: the results airlock from the command line. A researcher asks for files of
//! their workspace's `/results` to be released, output checkers review, and once two of them
//! approve, the owner downloads the files, each checked against the digest that was reviewed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use basho_core::release::{
    CreateRelease, ReleaseFile, ReleaseRequest, ReleaseState, ReviewBody, Verdict,
};
use clap::{Args, Subcommand};
use sha2::{Digest as _, Sha256};

use crate::args::ClientArgs;
use crate::client::{Client, path_segment};
use crate::error::Error;
use crate::output::{self, Output};
use crate::proof::ProofArgs;
use crate::workspace::print_raw;

/// How long a request may take: the site copies and checks the files meanwhile.
const INTAKE_WAIT: Duration = Duration::from_secs(330);

/// `basho results ...`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: ResultsCmd,
}

/// The airlock's verbs.
#[derive(Debug, Subcommand)]
pub enum ResultsCmd {
    /// Ask for files under your workspace's /results to be released (they are copied and
    /// checked at the site; the copy is what is reviewed).
    Request {
        /// The workspace.
        workspace: String,
        /// Names under /results (`table.csv`, `figures/plot.png`).
        #[arg(required = true)]
        files: Vec<String>,
        /// Why they should leave (the checkers read it).
        #[arg(long)]
        justification: String,
        /// Keep it as a draft: `basho results submit` sends it to the checkers.
        #[arg(long)]
        draft: bool,
        /// How the site learns it is you.
        #[command(flatten)]
        proof: ProofArgs,
    },
    /// Release requests you may see (yours; every one for checkers and the platform).
    List {
        /// Only this workspace's.
        #[arg(long)]
        workspace: Option<String>,
        /// Only requests in this state.
        #[arg(long)]
        state: Option<String>,
    },
    /// One request: its files, what the site's checks found, and every review.
    Show {
        /// The request (`rr-...`).
        request: String,
    },
    /// Decide on a request, or on one of its files (output checker token).
    Review {
        /// The request (`rr-...`).
        request: String,
        /// Approve it (two checkers must).
        #[arg(long, group = "verdict")]
        approve: bool,
        /// Reject it, or with --file that file only.
        #[arg(long, group = "verdict")]
        reject: bool,
        /// Send it back to the requester for changes.
        #[arg(long = "return", group = "verdict")]
        return_: bool,
        /// Decide on this file only.
        #[arg(long)]
        file: Option<String>,
        /// What the requester should know (required to reject or return).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Submit a draft, or resubmit a returned request with its files taken again.
    Submit {
        /// The request (`rr-...`).
        request: String,
        /// Take these files again from /results (required after a return).
        files: Vec<String>,
        /// A new justification.
        #[arg(long)]
        justification: Option<String>,
        /// How the site learns it is you.
        #[command(flatten)]
        proof: ProofArgs,
    },
    /// Withdraw a request before a decision.
    Withdraw {
        /// The request (`rr-...`).
        request: String,
    },
    /// Download the approved files of a request.
    Download {
        /// The request (`rr-...`).
        request: String,
        /// Only these files (default: every approved one).
        files: Vec<String>,
        /// Where to write them (kept under their names).
        #[arg(short = 'o', long = "output-dir", default_value = ".")]
        dir: PathBuf,
    },
}

fn request_path(id: &str) -> String {
    format!("/v1/release-requests/{}", path_segment(id))
}

/// Runs `basho results ...`.
pub async fn run(args: ResultsArgs) -> Result<(), Error> {
    let c = &args.client;
    let client = c.connect()?;
    let out = c.output;
    let answer = match args.cmd {
        ResultsCmd::Request {
            workspace,
            files,
            justification,
            draft,
            proof,
        } => {
            let proof = proof
                .obtain(&workspace, &basho_core::proof::fresh_seed())
                .await?;
            let body = CreateRelease {
                files,
                justification,
                draft,
                proof,
            };
            let path = format!(
                "/v1/workspaces/{}/release-requests",
                path_segment(&workspace)
            );
            client.post(&path, &body, INTAKE_WAIT).await?
        }
        ResultsCmd::List { workspace, state } => {
            let mut q = Vec::new();
            q.extend(workspace.map(|w| ("workspace", w)));
            q.extend(state.map(|s| ("state", s)));
            let answer = client.get("/v1/release-requests", &q).await?;
            if out == Output::Table {
                let list: Vec<ReleaseRequest> = answer.parse(&client, "release requests")?;
                print!("{}", list_table(&list));
                return Ok(());
            }
            answer
        }
        ResultsCmd::Show { request } => client.get(&request_path(&request), &[]).await?,
        ResultsCmd::Review {
            request,
            approve,
            reject,
            return_,
            file,
            comment,
        } => {
            let verdict = match (approve, reject, return_) {
                (true, _, _) => Verdict::Approve,
                (_, true, _) => Verdict::Reject,
                (_, _, true) => Verdict::Return,
                _ => {
                    return Err(Error::Usage("say --approve, --reject or --return".into()));
                }
            };
            let body = ReviewBody {
                verdict,
                file,
                comment,
            };
            let path = format!("{}/reviews", request_path(&request));
            client.post(&path, &body, INTAKE_WAIT).await?
        }
        ResultsCmd::Submit {
            request,
            files,
            justification,
            proof,
        } => {
            let mut body = serde_json::json!({});
            if !files.is_empty() {
                let before: ReleaseRequest = client
                    .get(&request_path(&request), &[])
                    .await?
                    .parse(&client, "a release request")?;
                let proof = proof
                    .obtain(&before.workspace, &basho_core::proof::fresh_seed())
                    .await?;
                body["files"] = serde_json::json!(files);
                if let Some(p) = proof {
                    body["proof"] = serde_json::to_value(p).expect("proofs serialize");
                }
            }
            if let Some(j) = justification {
                body["justification"] = j.into();
            }
            let path = format!("{}/submit", request_path(&request));
            client.post(&path, &body, INTAKE_WAIT).await?
        }
        ResultsCmd::Withdraw { request } => {
            let path = format!("{}/withdraw", request_path(&request));
            client
                .post(&path, &serde_json::json!({}), INTAKE_WAIT)
                .await?
        }
        ResultsCmd::Download {
            request,
            files,
            dir,
        } => return download(&client, &request, &files, &dir, out).await,
    };
    match out {
        Output::Json => print_raw(&answer.body),
        Output::Table => {
            let r: ReleaseRequest = answer.parse(&client, "a release request")?;
            print!("{}", detail(&r));
        }
    }
    Ok(())
}

/// Requests as rows.
pub fn list_table(list: &[ReleaseRequest]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let flagged = r.files.iter().filter(|f| !f.checked.passed()).count();
            vec![
                r.id.clone(),
                r.workspace.clone(),
                r.state.to_string(),
                r.files.len().to_string(),
                flagged.to_string(),
                output::timestamp(&r.created_at),
            ]
        })
        .collect();
    output::table(
        &[
            "REQUEST",
            "WORKSPACE",
            "STATE",
            "FILES",
            "FLAGGED",
            "CREATED",
        ],
        &rows,
    )
}

fn file_state(r: &ReleaseRequest, f: &ReleaseFile) -> String {
    if f.checked.refused {
        return "refused by the site's checks".into();
    }
    if f.rejected {
        return "rejected".into();
    }
    let n = r.approvers(&f.name).len();
    match (r.state, f.checked.passed()) {
        (ReleaseState::Approved | ReleaseState::Released, _) => "approved".into(),
        (_, true) => format!("checks passed, {n} approval(s)"),
        (_, false) => format!("flagged, {n} approval(s)"),
    }
}

/// One request, for people: its files with their findings, then the reviews.
pub fn detail(r: &ReleaseRequest) -> String {
    let mut s = format!(
        "release request {} ({}, round {})\n  workspace {} at {}, owner {}, asked by {}\n  \
         justification: {}\n  compared with {} dataset table(s), {} row(s){}\n",
        r.id,
        r.state,
        r.round,
        r.workspace,
        r.site,
        r.owner,
        r.requester,
        r.justification,
        r.compared.tables,
        r.compared.rows,
        if r.compared.skipped > 0 {
            format!(", {} skipped", r.compared.skipped)
        } else {
            String::new()
        }
    );
    for f in &r.files {
        s.push_str(&format!(
            "  {}  {} bytes  sha256 {}  {}\n",
            f.name,
            f.size,
            f.sha256,
            file_state(r, f)
        ));
        for finding in &f.checked.findings {
            let at = match (finding.row, &finding.column) {
                (Some(row), Some(col)) => format!(" (row {row}, column {col})"),
                (Some(row), None) => format!(" (row {row})"),
                (None, Some(col)) => format!(" (column {col})"),
                (None, None) => String::new(),
            };
            s.push_str(&format!(
                "    - {:?}{at}: {}\n",
                finding.check, finding.message
            ));
        }
        if f.checked.omitted > 0 {
            s.push_str(&format!(
                "    - and {} more finding(s)\n",
                f.checked.omitted
            ));
        }
    }
    for v in &r.reviews {
        s.push_str(&format!(
            "  {} round {}: {} {:?}{}{}\n",
            output::timestamp(&v.at),
            v.round,
            v.checker,
            v.verdict,
            v.file
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            if v.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", v.comment)
            }
        ));
    }
    s
}

/// Where a file named `name` under /results lands in `dir`: its last component only, so no
/// name can write outside `dir`.
fn target(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let base = name.rsplit('/').next().unwrap_or_default();
    if base.is_empty() || base == "." || base == ".." {
        return Err(Error::Usage(format!(
            "{name:?} has no file name to save it under"
        )));
    }
    Ok(dir.join(base))
}

async fn download(
    client: &Client,
    request: &str,
    only: &[String],
    dir: &Path,
    out: Output,
) -> Result<(), Error> {
    let r: ReleaseRequest = client
        .get(&request_path(request), &[])
        .await?
        .parse(client, "a release request")?;
    let files: Vec<&ReleaseFile> = if only.is_empty() {
        r.files.iter().filter(|f| f.releasable()).collect()
    } else {
        only.iter()
            .map(|n| {
                r.files.iter().find(|f| f.name == *n).ok_or_else(|| {
                    Error::Usage(format!("release request {request} has no file {n:?}"))
                })
            })
            .collect::<Result<_, _>>()?
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Input {
        path: dir.display().to_string(),
        source,
    })?;
    let mut saved = Vec::new();
    for f in files {
        let path = target(dir, &f.name)?;
        let url = format!(
            "{}/files/{}",
            request_path(request),
            f.name
                .split('/')
                .map(path_segment)
                .collect::<Vec<_>>()
                .join("/")
        );
        fetch(client, &url, f, &path).await?;
        saved.push((f.name.clone(), path, f.sha256.clone()));
    }
    match out {
        Output::Json => {
            let v: Vec<_> = saved
                .iter()
                .map(|(n, p, d)| serde_json::json!({"name": n, "path": p, "sha256": d}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
        }
        Output::Table => {
            for (n, p, d) in &saved {
                println!("{n} -> {} (sha256 {d}, as reviewed)", p.display());
            }
        }
    }
    Ok(())
}

/// Downloads one file into `path` (written aside, renamed once its digest matches the one
/// reviewed), showing progress on stderr.
async fn fetch(client: &Client, url: &str, f: &ReleaseFile, path: &Path) -> Result<(), Error> {
    let mut part_name = path.as_os_str().to_owned();
    part_name.push(".basho-part");
    let part = PathBuf::from(part_name);
    let io = |source| Error::Input {
        path: part.display().to_string(),
        source,
    };
    // Where it goes is checked before anything is asked for.
    let mut file = std::fs::File::create(&part).map_err(io)?;
    let resp = match client.stream(url).await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.into());
        }
    };
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut resp = resp;
    let started = Instant::now();
    let mut shown = Instant::now();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(client.broken(e).into());
            }
        };
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io)?;
        got += chunk.len() as u64;
        if shown.elapsed() >= Duration::from_millis(250) {
            progress(&f.name, got, f.size, started);
            shown = Instant::now();
        }
    }
    progress(&f.name, got, f.size, started);
    eprintln!();
    file.sync_all().map_err(io)?;
    let digest = basho_core::digest::hex(&hasher.finalize());
    if got != f.size || digest != f.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Session(format!(
            "{}: got {got} bytes with sha256 {digest}, but {} bytes with sha256 {} were \
             reviewed; nothing was saved",
            f.name, f.size, f.sha256
        )));
    }
    std::fs::rename(&part, path).map_err(io)?;
    Ok(())
}

fn progress(name: &str, got: u64, size: u64, started: Instant) {
    let pct = (got * 100).checked_div(size).unwrap_or(100);
    let mib = got as f64 / (1024.0 * 1024.0);
    let rate = mib / started.elapsed().as_secs_f64().max(0.001);
    eprint!("\r{name}: {pct:>3}% {mib:.1} MiB ({rate:.1} MiB/s)");
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_files_stay_in_the_output_directory() {
        let dir = Path::new("/tmp/out");
        assert_eq!(
            target(dir, "figures/plot.png").unwrap(),
            dir.join("plot.png")
        );
        assert_eq!(target(dir, "t.csv").unwrap(), dir.join("t.csv"));
        assert!(target(dir, "figures/").is_err());
        assert!(target(dir, "a/..").is_err());
    }
}
