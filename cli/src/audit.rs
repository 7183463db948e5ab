//! `basho audit verify|list`: reads the whole audit log page by page and checks its hash chain
//! (`basho_core::audit::verify_chain`), naming the first entry altered or deleted.

use basho_core::audit::{AuditEntry, checkpoint, verify_chain};
use basho_core::consent::WithdrawalStatus;
use serde::Deserialize;

use crate::args::{AuditArgs, AuditCmd};
use crate::client::Client;
use crate::error::Error;
use crate::output::Output;

/// Entries asked for per request.
const PAGE: u32 = 1000;

#[derive(Deserialize)]
struct Page {
    entries: Vec<AuditEntry>,
    next: Option<i64>,
}

/// Every entry after `after`, oldest first.
pub async fn fetch(client: &Client, mut after: i64) -> Result<Vec<AuditEntry>, Error> {
    let mut out = Vec::new();
    loop {
        let answer = client.audit_page(after, PAGE).await?;
        let page: Page = answer.parse(client, "audit page")?;
        out.extend(page.entries);
        match page.next {
            // A server that does not move forward would loop forever; stop instead.
            Some(n) if n > after => after = n,
            _ => return Ok(out),
        }
    }
}

/// One line per entry for people: seq, time, actor, action, target.
pub fn table(entries: &[AuditEntry]) -> String {
    let mut s = String::from("SEQ\tAT\tACTOR\tACTION\tTARGET\n");
    for e in entries {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            e.seq,
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.actor,
            e.action,
            e.target
        ));
    }
    s
}

/// What left each workspace: session bytes (the owner saw them) beside released files (checkers
/// approved them), from the audit log.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Egress {
    /// The workspace.
    pub workspace: String,
    /// Exec sessions ended.
    pub sessions: u64,
    /// Port-forward connections ended.
    pub forwards: u64,
    /// Bytes sessions and forwards sent out of the workspace.
    pub session_bytes_out: u64,
    /// Release requests made.
    pub release_requests: u64,
    /// Files downloaded through the airlock.
    pub released_files: u64,
    /// Their bytes.
    pub released_bytes: u64,
}

/// Sums [`Egress`] per workspace from `entries`, optionally for one workspace only.
pub fn egress(entries: &[AuditEntry], only: Option<&str>) -> Vec<Egress> {
    let mut by: std::collections::BTreeMap<String, Egress> = std::collections::BTreeMap::new();
    for e in entries {
        let d = &e.detail;
        let workspace = match e.action.as_str() {
            "session_ended" => e.target.clone(),
            "release_requested" | "release_downloaded" => match d["workspace"].as_str() {
                Some(w) => w.to_owned(),
                None => continue,
            },
            _ => continue,
        };
        if only.is_some_and(|o| o != workspace) {
            continue;
        }
        let row = by.entry(workspace.clone()).or_insert_with(|| Egress {
            workspace,
            ..Egress::default()
        });
        match e.action.as_str() {
            "session_ended" => {
                if d["kind"] == "forward" {
                    row.forwards += 1;
                } else {
                    row.sessions += 1;
                }
                row.session_bytes_out += d["bytes_out"].as_u64().unwrap_or(0);
            }
            "release_requested" => row.release_requests += 1,
            _ => {
                row.released_files += 1;
                row.released_bytes += d["bytes"].as_u64().unwrap_or(0);
            }
        }
    }
    by.into_values().collect()
}

/// [`egress`] for people.
pub fn egress_table(rows: &[Egress]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.workspace.clone(),
                r.sessions.to_string(),
                r.forwards.to_string(),
                r.session_bytes_out.to_string(),
                r.release_requests.to_string(),
                r.released_files.to_string(),
                r.released_bytes.to_string(),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "WORKSPACE",
            "SESSIONS",
            "FORWARDS",
            "SESSION_BYTES_OUT",
            "RELEASE_REQUESTS",
            "RELEASED_FILES",
            "RELEASED_BYTES",
        ],
        &rows,
    )
}

/// Runs an audit command.
fn checkpoint_key_at(path: &std::path::Path) -> Result<jsonwebtoken::DecodingKey, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::Input {
        path: path.display().to_string(),
        source,
    })?;
    jsonwebtoken::DecodingKey::from_ed_pem(&pem).map_err(|e| {
        Error::Usage(format!(
            "{}: not an Ed25519 public key in PEM ({e})",
            path.display()
        ))
    })
}

/// How many checkpoints recorded in `log` (the chain's own `audit_checkpoint` entries, a site's
/// `checkpoint_received`) verify with `key` and still hold in `chain`; the first that does not.
fn checkpoints_hold(
    log: &[AuditEntry],
    chain: &[AuditEntry],
    key: &jsonwebtoken::DecodingKey,
    whose: &str,
) -> Result<usize, Error> {
    let mut held = 0;
    for e in log {
        if !matches!(
            e.action.as_str(),
            "audit_checkpoint" | "checkpoint_received"
        ) {
            continue;
        }
        let jws = e.detail["checkpoint"].as_str().unwrap_or_default();
        let cp = checkpoint::verify(jws, key).map_err(|why| {
            Error::AuditMismatch(format!("{whose}, entry {}: a checkpoint that {why}", e.seq))
        })?;
        checkpoint::holds(chain, &cp)
            .map_err(|why| Error::AuditMismatch(format!("{whose}, entry {}: {why}", e.seq)))?;
        held += 1;
    }
    Ok(held)
}

pub async fn run(args: AuditArgs) -> Result<(), Error> {
    let client = args.client.connect()?;
    match args.cmd {
        AuditCmd::Verify {
            checkpoint_key,
            site_audits,
        } => {
            let entries = fetch(&client, 0).await?;
            let n = verify_chain(&entries)?;
            let key = match &checkpoint_key {
                Some(path) => Some(checkpoint_key_at(path)?),
                None if site_audits.is_empty() => None,
                None => {
                    return Err(Error::Usage(
                        "--site-audit needs --checkpoint-key, to tell the orchestrator's \
                         checkpoints from forged ones"
                            .into(),
                    ));
                }
            };
            let Some(key) = key else {
                println!("audit chain intact: {n} entries");
                return Ok(());
            };
            let mut held = checkpoints_hold(&entries, &entries, &key, "the chain")?;
            for path in &site_audits {
                let site = basho_agent::site_audit::read(path)
                    .map_err(|e| Error::AuditMismatch(e.to_string()))?;
                verify_chain(&site).map_err(|b| {
                    Error::AuditMismatch(format!("site audit log {}: {b}", path.display()))
                })?;
                held += checkpoints_hold(&site, &entries, &key, &path.display().to_string())?;
            }
            println!(
                "audit chain intact: {n} entries; {held} signed checkpoint(s) hold, from the \
                 chain and {} site audit log(s)",
                site_audits.len()
            );
        }
        AuditCmd::List { after } => {
            let entries = fetch(&client, after).await?;
            match args.client.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("entries serialize")
                ),
                Output::Table => print!("{}", table(&entries)),
            }
        }
        AuditCmd::Withdrawal { id } => {
            let path = format!("/v1/withdrawals/{}", crate::client::path_segment(&id));
            let answer = client.get(&path, &[]).await?;
            let status: WithdrawalStatus = answer.parse(&client, "a withdrawal")?;
            match args.client.output {
                Output::Json => crate::workspace::print_raw(&answer.body),
                Output::Table => print!("{}", crate::dataset::withdrawal_text(&status)),
            }
            if status.still_reading {
                let which: Vec<String> = status
                    .workspaces
                    .iter()
                    .map(|w| format!("{} (release {})", w.workspace, w.release))
                    .collect();
                return Err(Error::StillReading(format!(
                    "workspaces still read data of withdrawal {id}: {}",
                    which.join(", ")
                )));
            }
        }
        AuditCmd::Egress { workspace } => {
            let rows = egress(&fetch(&client, 0).await?, workspace.as_deref());
            match args.client.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialize")
                ),
                Output::Table => print!("{}", egress_table(&rows)),
            }
        }
    }
    Ok(())
}
