//! `basho usage` (a project's metered use, by site and by workspace) and `basho quota set|show`.

use basho_core::usage::{Totals, UsageReport};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::args::ClientArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output;
use crate::workspace::print_raw;

/// How `basho usage` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, hours.
    Table,
    /// The API's answer as sent.
    Json,
    /// One row per site and per workspace, seconds, for spreadsheets.
    Csv,
}

/// `basho usage ...`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The project.
    #[arg(long)]
    pub project: String,
    /// Start of the period (RFC 3339), inclusive; the beginning when absent.
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// End of the period (RFC 3339), exclusive; now when absent.
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `basho quota ...`.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: QuotaCmd,
}

/// Quota verbs.
#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set a project's budget; a resource left out has no limit.
    Set {
        /// The project.
        project: String,
        /// Budget in allocated core-hours.
        #[arg(long)]
        core_hours: Option<f64>,
        /// Budget in GPU-hours.
        #[arg(long)]
        gpu_hours: Option<f64>,
    },
    /// Show a project's budget and balance.
    Show {
        /// The project.
        project: String,
    },
}

fn client(args: &ClientArgs) -> Result<Client, Error> {
    Ok(Client::with_ca(
        &args.addr,
        args.token.clone(),
        args.ca_file.as_deref(),
    )?)
}

fn hours(seconds: f64) -> String {
    format!("{:.3}", seconds / 3600.0)
}

fn row(kind: &str, name: &str, site: &str, t: &Totals) -> Vec<String> {
    vec![
        kind.to_owned(),
        name.to_owned(),
        site.to_owned(),
        t.records.to_string(),
        hours(t.allocated_core_seconds),
        hours(t.used_cpu_seconds),
        format!("{:.3}", t.allocated_memory_gib_seconds / 3600.0),
        format!("{:.3}", t.used_memory_gib_seconds / 3600.0),
        format!("{:.1}", t.peak_memory_bytes as f64 / f64::from(1u32 << 20)),
        hours(t.gpu_seconds),
    ]
}

/// The report as a table (hours) or CSV (seconds).
pub fn render(r: &UsageReport, format: Format) -> String {
    match format {
        Format::Csv => {
            let mut out = String::from(
                "scope,name,site,records,allocated_core_seconds,used_cpu_seconds,\
                 allocated_memory_gib_seconds,used_memory_gib_seconds,peak_memory_bytes,gpu_seconds\n",
            );
            let mut line = |scope: &str, name: &str, site: &str, t: &Totals| {
                out.push_str(&format!(
                    "{scope},{name},{site},{},{},{},{},{},{},{}\n",
                    t.records,
                    t.allocated_core_seconds,
                    t.used_cpu_seconds,
                    t.allocated_memory_gib_seconds,
                    t.used_memory_gib_seconds,
                    t.peak_memory_bytes,
                    t.gpu_seconds
                ));
            };
            line("project", &r.project, "", &r.totals);
            for s in &r.by_site {
                line("site", &s.site, &s.site, &s.totals);
            }
            for w in &r.by_workspace {
                line("workspace", &w.workspace, &w.site, &w.totals);
            }
            out
        }
        Format::Table | Format::Json => {
            let mut rows = vec![row("project", &r.project, "", &r.totals)];
            rows.extend(
                r.by_site
                    .iter()
                    .map(|s| row("site", &s.site, &s.site, &s.totals)),
            );
            rows.extend(
                r.by_workspace
                    .iter()
                    .map(|w| row("workspace", &w.workspace, &w.site, &w.totals)),
            );
            format!(
                "usage of {} from {} to {}\n{}",
                r.project,
                output::timestamp(&r.from),
                output::timestamp(&r.to),
                output::table(
                    &[
                        "SCOPE",
                        "NAME",
                        "SITE",
                        "RECORDS",
                        "CORE-H",
                        "CPU-H USED",
                        "MEM GIB-H",
                        "MEM GIB-H USED",
                        "PEAK MIB",
                        "GPU-H",
                    ],
                    &rows,
                )
            )
        }
    }
}

/// Runs `basho usage`.
pub async fn usage(args: UsageArgs) -> Result<(), Error> {
    let c = client(&args.client)?;
    let mut query = Vec::new();
    if let Some(f) = args.from {
        query.push(("from", f.to_rfc3339()));
    }
    if let Some(t) = args.to {
        query.push(("to", t.to_rfc3339()));
    }
    let answer = c.usage(&args.project, &query).await?;
    match args.format {
        Format::Json => print_raw(&answer.body),
        f => {
            let report: UsageReport = answer.parse(&c, "a usage report")?;
            print!("{}", render(&report, f));
        }
    }
    Ok(())
}

/// Runs `basho quota ...`.
pub async fn quota(args: QuotaArgs) -> Result<(), Error> {
    let c = client(&args.client)?;
    let answer = match args.cmd {
        QuotaCmd::Set {
            project,
            core_hours,
            gpu_hours,
        } => {
            let body = json!({"core_hours": core_hours, "gpu_hours": gpu_hours});
            c.set_quota(&project, &body).await?
        }
        QuotaCmd::Show { project } => c.quota(&project).await?,
    };
    match args.client.output {
        crate::output::Output::Json => print_raw(&answer.body),
        crate::output::Output::Table => {
            let v: serde_json::Value = answer.parse(&c, "a quota")?;
            print!("{}", quota_text(&v));
        }
    }
    Ok(())
}

fn quota_text(v: &serde_json::Value) -> String {
    let project = v["project"].as_str().unwrap_or_default();
    let b = &v["balance"];
    if b.is_null() {
        return format!("project {project} has no quota\n");
    }
    let line = |what: &str,
                budget: &serde_json::Value,
                used: &serde_json::Value,
                held: &serde_json::Value| {
        match budget.as_f64() {
            None => format!(
                "  {what}: no limit (used {:.3})\n",
                used.as_f64().unwrap_or(0.0)
            ),
            Some(budget) => {
                let (u, h) = (used.as_f64().unwrap_or(0.0), held.as_f64().unwrap_or(0.0));
                format!(
                    "  {what}: {budget:.3} budget, {u:.3} used ({:.0}%), {h:.3} held by live workspaces, {:.3} free\n",
                    if budget > 0.0 {
                        u / budget * 100.0
                    } else {
                        0.0
                    },
                    (budget - u - h).max(0.0)
                )
            }
        }
    };
    format!(
        "project {project}\n{}{}",
        line(
            "core-hours",
            &b["quota"]["core_hours"],
            &b["used_core_hours"],
            &b["committed_core_hours"]
        ),
        line(
            "GPU-hours",
            &b["quota"]["gpu_hours"],
            &b["used_gpu_hours"],
            &b["committed_gpu_hours"]
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use basho_core::usage::{SiteUsage, WorkspaceUsage};

    fn report() -> UsageReport {
        let t = Totals {
            records: 2,
            allocated_core_seconds: 7200.0,
            used_cpu_seconds: 3600.0,
            allocated_memory_gib_seconds: 3600.0,
            used_memory_gib_seconds: 1800.0,
            peak_memory_bytes: 1 << 30,
            gpu_seconds: 0.0,
        };
        UsageReport {
            project: "P-1".into(),
            from: DateTime::UNIX_EPOCH,
            to: DateTime::UNIX_EPOCH,
            totals: t,
            by_site: vec![SiteUsage {
                site: "tohoku".into(),
                totals: t,
            }],
            by_workspace: vec![WorkspaceUsage {
                workspace: "ws-1".into(),
                site: "tohoku".into(),
                totals: t,
            }],
        }
    }

    #[test]
    fn csv_has_a_row_per_scope_in_seconds() {
        let csv = render(&report(), Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].starts_with("project,P-1,,2,7200,3600,3600,1800,1073741824,0"),
            "{csv}"
        );
        assert!(lines[3].starts_with("workspace,ws-1,tohoku,"), "{csv}");
    }

    #[test]
    fn the_table_is_in_hours() {
        let t = render(&report(), Format::Table);
        assert!(t.contains("2.000") && t.contains("1024.0"), "{t}");
    }

    #[test]
    fn quota_text_shows_the_balance() {
        let v = json!({"project": "P-1", "balance": {"quota": {"core_hours": 10.0, "gpu_hours": null},
            "used_core_hours": 4.0, "committed_core_hours": 1.0, "used_gpu_hours": 0.0,
            "committed_gpu_hours": 0.0}});
        let t = quota_text(&v);
        assert!(
            t.contains("10.000 budget, 4.000 used (40%)") && t.contains("5.000 free"),
            "{t}"
        );
        assert!(t.contains("GPU-hours: no limit"), "{t}");
        assert_eq!(
            quota_text(&json!({"project": "P-2", "balance": null})),
            "project P-2 has no quota\n"
        );
    }
}
