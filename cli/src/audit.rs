//! `basho audit verify|list`: reads the whole audit log page by page and checks its hash chain
//! (`basho_core::audit::verify_chain`), naming the first entry altered or deleted.

use basho_core::audit::{AuditEntry, verify_chain};
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

/// Runs an audit command.
pub async fn run(args: AuditArgs) -> Result<(), Error> {
    let client = Client::with_ca(
        &args.client.addr,
        args.client.token.clone(),
        args.client.ca_file.as_deref(),
    )?;
    match args.cmd {
        AuditCmd::Verify => {
            let entries = fetch(&client, 0).await?;
            let n = verify_chain(&entries)?;
            println!("audit chain intact: {n} entries");
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
    }
    Ok(())
}
