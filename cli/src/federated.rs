//! `basho federated run|list|show`: one question answered across several sites. `run` builds
//! the job from flags (each step a shell command run by the image's `/bin/sh`) or sends a JSON
//! body as it is, and with `--wait` follows it to its end, a line per change on stderr.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use basho_core::Ident;
use basho_core::duration::parse_duration;
use basho_core::federated::{
    AggregationSpec, CreateFederatedJob, FederatedJob, JobState, SiteStepSpec,
};
use clap::{Args, Subcommand};

use crate::args::ClientArgs;
use crate::client::{Client, path_segment};
use crate::error::Error;
use crate::output::Output;
use crate::workspace::{print_raw, read_visas};

/// `basho federated ...`.
#[derive(Debug, Args)]
pub struct FederatedArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The verb.
    #[command(subcommand)]
    pub cmd: FederatedCmd,
}

/// Federated job verbs.
#[derive(Debug, Subcommand)]
pub enum FederatedCmd {
    /// Start a job: its site step at every site holding its datasets, then its aggregation over
    /// the released partials (platform token, or a researcher's own with their visas).
    Run(Box<RunArgs>),
    /// List jobs, oldest first (a researcher's token lists their own).
    #[command(alias = "ls")]
    List {
        /// Only jobs in this state (`running`, `waiting_for_release`, `aggregating`,
        /// `completed`, `failed`).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one job: each site's step, its partial and who released it, and the aggregation.
    Show {
        /// The job (`fj-...`).
        id: String,
    },
    /// Cancel a job under way: it fails, saying who canceled it, and what of it runs stops
    /// (its owner, the platform or an admin).
    Cancel {
        /// The job (`fj-...`).
        id: String,
    },
}

/// `basho federated run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The whole request as JSON (the body of `POST /v1/federated-jobs`; `-` reads stdin),
    /// instead of the flags below.
    #[arg(long, conflicts_with_all = ["project", "step", "aggregate"])]
    pub file: Option<PathBuf>,
    /// The approved project.
    #[arg(long, required_unless_present = "file")]
    pub project: Option<Ident>,
    /// A name to know the job by.
    #[arg(long)]
    pub name: Option<String>,
    /// A GA4GH visa JWT; repeat for several.
    #[arg(long = "visa", value_name = "JWT")]
    pub visas: Vec<String>,
    /// A file of visa JWTs, one per line (`-` reads stdin); repeatable.
    #[arg(long = "visa-file", value_name = "FILE")]
    pub visa_files: Vec<PathBuf>,
    /// A dataset the site steps read; repeat for several. Default: every dataset the visas grant.
    #[arg(long = "dataset", value_name = "ID")]
    pub datasets: Vec<Ident>,
    /// A site to run the site step at; repeat for several. Default: every site holding one of
    /// the datasets.
    #[arg(long = "site", value_name = "SITE")]
    pub sites: Vec<Ident>,
    /// The image both steps run in (a name on the sites' allow-lists).
    #[arg(long, default_value = "basho/demo")]
    pub image: String,
    /// The aggregation step's image, when not --image.
    #[arg(long)]
    pub aggregation_image: Option<String>,
    /// The site step: a command the image's /bin/sh runs at each site, writing its partial
    /// results under /results.
    #[arg(long, required_unless_present = "file")]
    pub step: Option<String>,
    /// The aggregation step: a command the image's /bin/sh runs over /inputs/<site>/, writing
    /// the result under /results.
    #[arg(long, required_unless_present = "file")]
    pub aggregate: Option<String>,
    /// Where the aggregation runs. Default: the orchestrator's choice.
    #[arg(long)]
    pub aggregation_site: Option<Ident>,
    /// Finish on this many sites when others fail. Default: every site.
    #[arg(long)]
    pub min_sites: Option<u32>,
    /// Follow the job until it completes or fails (exit 1 when it fails).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
}

/// The request `args` describe.
pub fn request(args: &RunArgs) -> Result<CreateFederatedJob, Error> {
    if let Some(file) = &args.file {
        let text = crate::workspace::read_input(file)?;
        return serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{} is not a federated job: {e}", file.display())));
    }
    let visas = read_visas(&args.visas, &args.visa_files)?;
    let shell = |c: &Option<String>| -> Vec<String> {
        let c = c.clone().unwrap_or_default();
        vec!["/bin/sh".into(), "-c".into(), c]
    };
    Ok(CreateFederatedJob {
        project: args.project.clone().expect("clap requires --project"),
        name: args.name.clone(),
        visas,
        datasets: (!args.datasets.is_empty()).then(|| args.datasets.clone()),
        sites: (!args.sites.is_empty()).then(|| args.sites.clone()),
        site_step: SiteStepSpec {
            image: args.image.clone(),
            command: shell(&args.step),
            resources: None,
            duration_s: None,
        },
        aggregation: AggregationSpec {
            image: args
                .aggregation_image
                .clone()
                .unwrap_or_else(|| args.image.clone()),
            command: shell(&args.aggregate),
            site: args.aggregation_site.clone(),
            resources: None,
            duration_s: None,
            datasets: Vec::new(),
        },
        min_sites: args.min_sites,
    })
}

/// Runs a federated command.
pub async fn run(args: FederatedArgs) -> Result<(), Error> {
    let client = args.client.connect()?;
    let out = args.client.output;
    match args.cmd {
        FederatedCmd::Run(r) => {
            let body = request(&r)?;
            let answer = client
                .post("/v1/federated-jobs", &body, Duration::from_secs(60))
                .await?;
            let job: FederatedJob = answer.parse(&client, "the started job")?;
            if !r.wait {
                return show(out, &answer.body, &job);
            }
            eprintln!(
                "{}: started at {} site(s), following it",
                job.id,
                job.sites.len()
            );
            let (body, job) = follow(&client, &job.id, r.timeout).await?;
            show(out, &body, &job)?;
            match job.state {
                JobState::Failed => Err(Error::Job(format!(
                    "job {} failed: {}",
                    job.id,
                    job.message.unwrap_or_default()
                ))),
                _ => Ok(()),
            }
        }
        FederatedCmd::List { state } => {
            let query: Vec<(&str, String)> = state.into_iter().map(|s| ("state", s)).collect();
            let answer = client.get("/v1/federated-jobs", &query).await?;
            match out {
                Output::Json => print_raw(&answer.body),
                Output::Table => {
                    let jobs: Vec<FederatedJob> = answer.parse(&client, "federated jobs")?;
                    print!("{}", list_table(&jobs));
                }
            }
            Ok(())
        }
        FederatedCmd::Show { id } => {
            let answer = client
                .get(&format!("/v1/federated-jobs/{}", path_segment(&id)), &[])
                .await?;
            let job: FederatedJob = answer.parse(&client, "a federated job")?;
            show(out, &answer.body, &job)
        }
        FederatedCmd::Cancel { id } => {
            let path = format!("/v1/federated-jobs/{}/cancel", path_segment(&id));
            let answer = client
                .post(&path, &serde_json::json!({}), Duration::from_secs(60))
                .await?;
            let job: FederatedJob = answer.parse(&client, "the canceled job")?;
            show(out, &answer.body, &job)
        }
    }
}

fn show(out: Output, body: &str, job: &FederatedJob) -> Result<(), Error> {
    match out {
        Output::Json => print_raw(body),
        Output::Table => print!("{}", job_text(job)),
    }
    Ok(())
}

/// Polls job `id` until it completes or fails, a line on stderr whenever it or a step moves.
async fn follow(
    client: &Client,
    id: &str,
    timeout: Duration,
) -> Result<(String, FederatedJob), Error> {
    let started = Instant::now();
    let mut last = String::new();
    let path = format!("/v1/federated-jobs/{}", path_segment(id));
    loop {
        let answer = client.get(&path, &[]).await?;
        let job: FederatedJob = answer.parse(client, "a federated job")?;
        let now = progress(&job);
        if now != last {
            eprintln!("[{:>4}s] {now}", started.elapsed().as_secs());
            last = now;
        }
        if job.state.is_terminal() {
            return Ok((answer.body, job));
        }
        if started.elapsed() >= timeout {
            return Err(Error::Job(format!(
                "gave up after {}s: job {id} is still {}; `basho federated show {id}` shows it \
                 later (or raise --timeout)",
                timeout.as_secs(),
                job.state
            )));
        }
        tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
    }
}

/// One line: the job's state and each step's.
pub fn progress(job: &FederatedJob) -> String {
    let steps: Vec<String> = job
        .sites
        .iter()
        .map(|s| format!("{} {}", s.site, as_str(&s.state)))
        .collect();
    let mut line = format!("{} ({})", job.state, steps.join(", "));
    if let Some(m) = &job.message {
        line.push_str(&format!(": {m}"));
    }
    line
}

fn as_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The job for people: its state and why, each site's step, and the aggregation.
pub fn job_text(j: &FederatedJob) -> String {
    let mut s = format!(
        "{}{} (project {}, owner {}): {}\n",
        j.id,
        j.name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default(),
        j.project,
        j.owner,
        j.state
    );
    if let Some(m) = &j.message {
        s.push_str(&format!("  {m}\n"));
    }
    s.push_str("SITE\tSTEP\tDATASETS\tWORKSPACE\tPARTIAL\tRELEASED BY OR WHY\n");
    for st in &j.sites {
        let datasets: Vec<&str> = st.datasets.iter().map(Ident::as_str).collect();
        let why = st
            .released_by
            .as_deref()
            .or(st.message.as_deref())
            .unwrap_or("-");
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{why}\n",
            st.site,
            as_str(&st.state),
            datasets.join(","),
            st.workspace,
            st.partial.as_deref().unwrap_or("-"),
        ));
    }
    let a = &j.aggregation;
    let inputs: Vec<&str> = a.inputs.iter().map(Ident::as_str).collect();
    s.push_str(&format!(
        "aggregation at {}: {}{}{}\n",
        a.site,
        a.workspace.as_deref().unwrap_or("not placed yet"),
        if inputs.is_empty() {
            String::new()
        } else {
            format!(" over the partials of {}", inputs.join(", "))
        },
        a.result
            .as_deref()
            .map(|r| format!("; result {r} (`basho results download {r}` once approved)"))
            .unwrap_or_default(),
    ));
    s
}

/// One line per job.
pub fn list_table(jobs: &[FederatedJob]) -> String {
    let mut s = String::from("JOB\tSTATE\tPROJECT\tOWNER\tSITES\tNAME\n");
    for j in jobs {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            j.id,
            j.state,
            j.project,
            j.owner,
            j.sites.len(),
            j.name.as_deref().unwrap_or("-")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: FederatedCmd,
        }
        match Cli::try_parse_from(["basho", "run"].iter().chain(args)) {
            Ok(Cli {
                cmd: FederatedCmd::Run(r),
            }) => *r,
            Ok(_) => unreachable!(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn flags_make_each_step_a_shell_command_and_every_site_the_default() {
        let r = parse(&[
            "--project",
            "P-0001",
            "--visa",
            "a.b.c",
            "--step",
            "count-cells",
            "--aggregate",
            "sum-cells 5",
            "--aggregation-site",
            "bbj",
            "--min-sites",
            "2",
        ]);
        let req = request(&r).unwrap();
        assert_eq!(req.site_step.command, ["/bin/sh", "-c", "count-cells"]);
        assert_eq!(req.aggregation.command, ["/bin/sh", "-c", "sum-cells 5"]);
        assert_eq!(req.aggregation.image, "basho/demo");
        assert_eq!(
            req.aggregation.site.as_ref().map(Ident::as_str),
            Some("bbj")
        );
        assert_eq!(
            (req.sites, req.datasets, req.min_sites),
            (None, None, Some(2))
        );
        assert_eq!(req.visas, ["a.b.c"]);
    }

    #[test]
    fn a_job_file_is_sent_as_it_is_and_no_visa_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.json");
        std::fs::write(
            &file,
            r#"{"project": "P-0001", "visas": ["x"], "sites": ["ncbn"],
                "site_step": {"image": "i", "command": ["c"]},
                "aggregation": {"image": "i", "command": ["s"]}}"#,
        )
        .unwrap();
        let req = request(&parse(&["--file", file.to_str().unwrap()])).unwrap();
        assert_eq!(req.sites.unwrap()[0].as_str(), "ncbn");
        std::fs::write(&file, "{}").unwrap();
        let e = request(&parse(&["--file", file.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("is not a federated job"), "{e}");
        let e = request(&parse(&[
            "--project",
            "P",
            "--step",
            "s",
            "--aggregate",
            "a",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("no visa given"), "{e}");
    }

    #[test]
    fn a_job_reads_as_its_state_each_step_and_the_aggregation() {
        let job: FederatedJob = serde_json::from_value(serde_json::json!({
            "id": "fj-1", "project": "P-0001", "owner": "alice", "state": "failed",
            "message": "site bbj failed: revoked", "min_sites": 2,
            "sites": [{"site": "bbj", "datasets": ["JGAD000301"], "workspace": "ws-1",
                "state": "failed", "workspace_state": "revoked", "message": "revoked: dac"}],
            "aggregation": {"site": "ncbn"},
            "created_at": "2026-12-07T00:00:00Z", "updated_at": "2026-12-07T00:00:00Z"
        }))
        .unwrap();
        let text = job_text(&job);
        assert!(
            text.starts_with("fj-1 (project P-0001, owner alice): failed\n"),
            "{text}"
        );
        assert!(text.contains("  site bbj failed: revoked\n"), "{text}");
        assert!(
            text.contains("bbj\tfailed\tJGAD000301\tws-1\t-\trevoked: dac\n"),
            "{text}"
        );
        assert!(
            text.ends_with("aggregation at ncbn: not placed yet\n"),
            "{text}"
        );
        assert_eq!(
            progress(&job),
            "failed (bbj failed): site bbj failed: revoked"
        );
    }
}
