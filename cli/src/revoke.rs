//! `basho revoke`: end access by dataset, subject, project or visa `jti`. Every live workspace
//! the revocation covers becomes `revoked` at once and leaves its site's desired set; every site
//! also keeps the revocation and stops what it covers by itself.

use std::time::Duration;

use tokio::time::Instant;

use basho_core::revocation::{
    NOTHING_REPORTED, Reason, RevocationRequest, Revoked, SITE_CONFIRMED,
};
use basho_core::{Ident, State, Workspace};
use clap::Args;

use crate::args::ClientArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::{self, Output};
use crate::wait::POLL_INTERVAL;
use crate::workspace::print_raw;
use basho_core::duration::parse_duration;

/// `basho revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Every visa for this dataset issued until now.
    #[arg(long, value_name = "ID")]
    pub dataset: Option<Ident>,
    /// Every visa of this researcher (the visas' `sub`) issued until now.
    #[arg(long, value_name = "SUB")]
    pub subject: Option<String>,
    /// Every workspace of this project, and every later request for it.
    #[arg(long, value_name = "ID")]
    pub project: Option<Ident>,
    /// This visa, forever.
    #[arg(long = "visa-jti", value_name = "JTI")]
    pub visa_jti: Option<String>,
    /// Why.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Reason::ALL.map(Reason::as_str)))]
    pub reason: String,
    /// Wait until the site of every affected workspace has confirmed its container is gone (or
    /// had reported none to stop).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits for each workspace.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

/// Runs `basho revoke`.
pub async fn run(args: RevokeArgs) -> Result<(), Error> {
    let req = RevocationRequest {
        dataset: args.dataset,
        subject: args.subject,
        project: args.project,
        visa_jti: args.visa_jti,
        reason: args.reason,
    };
    req.validate().map_err(Error::Usage)?;
    let client = args.client.connect()?;
    let answer = client.revoke(&req).await?;
    let revoked: Revoked = answer.parse(&client, "a revocation")?;
    if args.wait {
        for id in &revoked.affected {
            confirmed(&client, id, args.timeout).await?;
        }
    }
    match args.client.output {
        Output::Json => print_raw(&answer.body),
        Output::Table => print!("{}", summary(&revoked)),
    }
    Ok(())
}

/// Whether the orchestrator's record of a revoked workspace says its site is done with it.
pub fn settled(ws: &Workspace) -> bool {
    let message = ws.message.as_deref().unwrap_or_default();
    ws.state == State::Revoked
        && (message.contains(SITE_CONFIRMED) || message.contains(NOTHING_REPORTED))
}

/// Polls workspace `id` until [`settled`], or fails at `deadline`.
async fn confirmed(client: &Client, id: &str, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get_workspace(id).await {
            Ok(answer) => {
                let ws: Workspace = answer.parse(client, "a workspace")?;
                if settled(&ws) {
                    return Ok(());
                }
                format!("{} (site not confirmed yet)", ws.state)
            }
            Err(e) if e.is_transient() => format!("unknown ({e})"),
            Err(e) => return Err(e.into()),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                id: id.to_owned(),
                goal: "stopped at its site",
                state: last,
                waited_s: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a person reads: the revocation and the workspaces it ended.
pub fn summary(r: &Revoked) -> String {
    let v = &r.revocation;
    let mut out = format!(
        "revocation {} ({}, {}) at {}: {} workspace(s) revoked\n",
        v.seq,
        v.reason,
        v.selectors(),
        output::timestamp(&v.at),
        r.affected.len()
    );
    if !r.affected.is_empty() {
        let rows: Vec<Vec<String>> = r.affected.iter().map(|id| vec![id.clone()]).collect();
        out.push_str(&output::table(&["WORKSPACE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn reasons_are_checked_before_any_request() {
        let cli = parse(&[
            "basho",
            "revoke",
            "--visa-jti",
            "v-1",
            "--reason",
            "dac-revoked",
            "--wait",
        ])
        .unwrap();
        let Command::Revoke(a) = cli.command else {
            panic!("not revoke")
        };
        assert_eq!(a.visa_jti.as_deref(), Some("v-1"));
        assert!(a.wait);
        let e = parse(&["basho", "revoke", "--dataset", "D1", "--reason", "whim"]).unwrap_err();
        assert!(e.to_string().contains("consent-withdrawn"), "{e}");
        assert!(parse(&["basho", "revoke", "--dataset", "../x", "--reason", "other"]).is_err());
    }

    #[test]
    fn the_summary_names_the_revocation_and_each_workspace() {
        let r: super::Revoked = serde_json::from_value(serde_json::json!({
            "affected": ["ws-1", "ws-2"],
            "revocation": {"seq": 3, "dataset": "JGAD000101", "reason": "consent-withdrawn",
                "at": "2026-01-01T00:00:00Z"},
        }))
        .unwrap();
        let text = super::summary(&r);
        assert!(
            text.contains("revocation 3 (consent-withdrawn, dataset=JGAD000101)"),
            "{text}"
        );
        assert!(text.contains("ws-1") && text.contains("ws-2"));
    }
}
