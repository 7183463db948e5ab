//! `basho dataset releases`: a dataset's releases at a site, and the text of
//! `basho audit withdrawal`.

use basho_core::consent::{ReleaseList, WithdrawalStatus};

use crate::args::{DatasetArgs, DatasetCmd};
use crate::client::path_segment;
use crate::error::Error;
use crate::output::Output;
use crate::workspace::print_raw;

/// Runs a dataset command.
pub async fn run(args: DatasetArgs) -> Result<(), Error> {
    let client = args.client.connect()?;
    match args.cmd {
        DatasetCmd::Releases { dataset, site } => {
            let path = format!(
                "/v1/sites/{}/datasets/{}/releases",
                path_segment(&site),
                path_segment(&dataset)
            );
            let answer = client.get(&path, &[]).await?;
            match args.client.output {
                Output::Json => print_raw(&answer.body),
                Output::Table => {
                    let list: ReleaseList = answer.parse(&client, "a dataset's releases")?;
                    print!("{}", releases_table(&list));
                }
            }
        }
    }
    Ok(())
}

/// One line per release, the current one marked.
pub fn releases_table(l: &ReleaseList) -> String {
    let mut s = format!(
        "{} at {}: release {} is current (reported {})\n\
         RELEASE\tSHA256\tROWS\tPARTICIPANTS\tREMOVED\tWORKSPACES\tWITHDRAWAL\n",
        l.dataset,
        l.site,
        l.current,
        l.reported_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for u in &l.releases {
        let r = &u.release;
        let mark = if r.release == l.current { "*" } else { "" };
        let digest = r
            .digest
            .as_deref()
            .map_or("(measuring)".to_owned(), |d| d.chars().take(16).collect());
        s.push_str(&format!(
            "{}{mark}\t{digest}\t{}\t{}\t{}\t{}\t{}\n",
            r.release,
            r.rows,
            r.participants,
            r.removed,
            u.workspaces,
            r.withdrawal.as_deref().unwrap_or("-"),
        ));
    }
    s
}

/// Yes or no, and which workspaces, for people.
pub fn withdrawal_text(s: &WithdrawalStatus) -> String {
    let w = &s.withdrawal;
    let mut out = format!(
        "withdrawal {} of {} participant(s) from {} at {} (sha256 of the IDs {})\n",
        w.id, w.participants, w.dataset, s.site, w.participants_sha256
    );
    out.push_str(&match (w.release, &w.error) {
        (Some(n), _) => format!("made release {n} (from {})\n", w.previous),
        (None, Some(e)) => format!("made no release: {e}\n"),
        (None, None) => format!(
            "made no release: none of them was in release {}\n",
            w.previous
        ),
    });
    if s.still_reading {
        out.push_str("still reading their data: yes\n");
        for r in &s.workspaces {
            out.push_str(&format!("  {} on release {}\n", r.workspace, r.release));
        }
    } else {
        out.push_str("still reading their data: no\n");
    }
    if !s.copies.is_empty() {
        out.push_str(&format!(
            "copies of withdrawn data in /work or /results: {}\n",
            s.copies.join(", ")
        ));
    }
    out.push_str(&format!(
        "as the site reported at {}\n",
        s.reported_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    out
}
