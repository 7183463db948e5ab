//! `basho workspace create|list|show|delete`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use basho_core::{CreateWorkspace, Resources, Workspace};
use serde::de::DeserializeOwned;

use crate::args::{CreateArgs, DeleteArgs, ListArgs, WorkspaceArgs, WorkspaceCmd};
use crate::client::{Answer, ApiError, Client};
use crate::error::Error;
use crate::output::{self, Output};
use crate::wait::{Goal, wait_for};

/// How many times a create is sent when the orchestrator fails in a way a retry may fix; the
/// idempotency key makes the retries safe.
const CREATE_ATTEMPTS: u32 = 3;

/// Runs a workspace command.
pub async fn run(args: WorkspaceArgs) -> Result<(), Error> {
    let client = args.client.connect()?;
    let out = args.client.output;
    match args.cmd {
        WorkspaceCmd::Create(c) => create(&client, out, c).await,
        WorkspaceCmd::List(l) => list(&client, out, l).await,
        WorkspaceCmd::Show { id } => {
            let answer = client.get_workspace(&id).await?;
            print_workspace(&client, out, &answer)
        }
        WorkspaceCmd::Delete(d) => delete(&client, out, d).await,
    }
}

/// Builds the create request from the flags (and the visa files they name).
pub fn create_request(args: &CreateArgs) -> Result<CreateWorkspace, Error> {
    let visas = read_visas(&args.visas, &args.visa_files)?;
    let resources = match (args.cpus, args.memory_mib) {
        (Some(cpus), Some(memory_mib)) => {
            let r = Resources {
                cpus,
                memory_mib,
                gpus: args.gpus.unwrap_or(0),
            };
            r.validate().map_err(Error::Usage)?;
            Some(r)
        }
        _ => None,
    };
    let duration_s = match args.duration {
        Some(d) if d.is_zero() => {
            return Err(Error::Usage(
                "--duration is zero; give a lifetime such as 2h or 3600".into(),
            ));
        }
        Some(d) => Some(d.as_secs()),
        None => None,
    };
    Ok(CreateWorkspace {
        project: args.project.clone(),
        template: args.template.clone(),
        visas,
        datasets: (!args.datasets.is_empty()).then(|| args.datasets.clone()),
        resources,
        duration_s,
        site: args.site.clone(),
        max_queue_s: args.max_queue.map(|d| d.as_secs()),
    })
}

/// The visas of `--visa` flags and then of `--visa-file` files, in order; refused when none.
pub(crate) fn read_visas(flags: &[String], files: &[PathBuf]) -> Result<Vec<String>, Error> {
    let mut visas: Vec<String> = flags.iter().map(|v| v.trim().to_owned()).collect();
    for file in files {
        visas.extend(read_visa_file(file)?);
    }
    visas.retain(|v| !v.is_empty());
    if visas.is_empty() {
        return Err(Error::Usage(
            "no visa given: pass --visa JWT (repeatable) or --visa-file FILE; \
             with `basho dev`, `basho dev visa --dataset ID --subject S` mints one"
                .into(),
        ));
    }
    Ok(visas)
}

/// The text of a file named on the command line (`-`: stdin).
pub(crate) fn read_input(path: &Path) -> Result<String, Error> {
    let input_error = |source| Error::Input {
        path: path.display().to_string(),
        source,
    };
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(input_error)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(input_error)
    }
}

/// Reads visa JWTs from a file (`-`: stdin), one per line; blank lines and `#` comments are
/// skipped.
fn read_visa_file(path: &Path) -> Result<Vec<String>, Error> {
    let text = read_input(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

async fn create(client: &Client, out: Output, args: CreateArgs) -> Result<(), Error> {
    let body = create_request(&args)?;
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let answer = send_create(client, &body, &key).await?;
    if !args.wait {
        return print_workspace(client, out, &answer);
    }
    let ws: Workspace = answer.parse(client, "the created workspace")?;
    eprintln!("{}: created at {}, waiting for it to run", ws.id, ws.site);
    match wait_for(client, &ws.id, Goal::Running, args.timeout).await? {
        Some((_, last)) => print_workspace(client, out, &last),
        None => print_workspace(client, out, &answer),
    }
}

/// Sends the create, retrying with the same idempotency key when the orchestrator failed in a
/// way a retry may fix. A refused connection is not retried: nothing was sent.
async fn send_create(
    client: &Client,
    body: &CreateWorkspace,
    key: &str,
) -> Result<Answer, ApiError> {
    let mut attempt = 1;
    loop {
        match client.create_workspace(body, key).await {
            Err(e)
                if attempt < CREATE_ATTEMPTS
                    && e.is_transient()
                    && !matches!(e, ApiError::Unreachable { .. }) =>
            {
                tracing::warn!(error = %e, attempt, "create failed; retrying with the same idempotency key");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn list(client: &Client, out: Output, args: ListArgs) -> Result<(), Error> {
    let mut filters = Vec::new();
    if let Some(p) = &args.project {
        filters.push(("project", p.to_string()));
    }
    if let Some(s) = args.state {
        filters.push(("state", s.to_string()));
    }
    if let Some(s) = &args.site {
        filters.push(("site", s.to_string()));
    }
    let answer = client.list_workspaces(&filters).await?;
    match out {
        Output::Json => print_raw(&answer.body),
        Output::Table => {
            let list: Vec<Workspace> = parse_list(client, &answer, "workspaces")?;
            print!("{}", output::workspaces_table(&list));
        }
    }
    Ok(())
}

async fn delete(client: &Client, out: Output, args: DeleteArgs) -> Result<(), Error> {
    let answer = client.delete_workspace(&args.id).await?;
    if !args.wait {
        match out {
            Output::Json => print_raw(&answer.body),
            Output::Table => match serde_json::from_str::<Workspace>(&answer.body) {
                Ok(ws) => println!("{}: {}", ws.id, ws.state),
                Err(_) => println!("{}: deletion accepted", args.id),
            },
        }
        return Ok(());
    }
    match wait_for(client, &args.id, Goal::Ended, args.timeout).await? {
        Some((_, last)) => print_workspace(client, out, &last),
        None => {
            match out {
                Output::Json => print_raw(&answer.body),
                Output::Table => println!("{}: gone", args.id),
            }
            Ok(())
        }
    }
}

fn print_workspace(client: &Client, out: Output, answer: &Answer) -> Result<(), Error> {
    match out {
        Output::Json => print_raw(&answer.body),
        Output::Table => {
            let ws: Workspace = answer.parse(client, "a workspace")?;
            print!("{}", output::workspace_detail(&ws));
        }
    }
    Ok(())
}

/// Prints a body as the API sent it, ending in exactly one newline.
pub(crate) fn print_raw(body: &str) {
    if body.ends_with('\n') {
        print!("{body}");
    } else if !body.is_empty() {
        println!("{body}");
    }
}

/// A list answer: a JSON array, or an object holding the array under `key`.
pub(crate) fn parse_list<T: DeserializeOwned>(
    client: &Client,
    answer: &Answer,
    key: &str,
) -> Result<Vec<T>, Error> {
    let value: serde_json::Value = answer.parse(client, &format!("a list of {key}"))?;
    let items = match value {
        serde_json::Value::Object(mut o) if o.get(key).is_some_and(|v| v.is_array()) => {
            o.remove(key).unwrap_or_default()
        }
        v => v,
    };
    serde_json::from_value(items)
        .map_err(|e| client.decode_error(&format!("a list of {key}"), e).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create_args(extra: &[&str]) -> CreateArgs {
        let mut argv = vec![
            "basho",
            "workspace",
            "create",
            "--project",
            "P-0001",
            "--template",
            "shell",
        ];
        argv.extend_from_slice(extra);
        let cli = crate::args::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::args::Command::Workspace(WorkspaceArgs {
                cmd: WorkspaceCmd::Create(c),
                ..
            }) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn visas_from_flags_and_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("visas");
        std::fs::write(&file, "# from the DAC\nv2\n\n  v3  \n").unwrap();
        let args = create_args(&["--visa", "v1", "--visa-file", file.to_str().unwrap()]);
        let req = create_request(&args).unwrap();
        assert_eq!(req.visas, ["v1", "v2", "v3"]);
        assert_eq!(req.datasets, None);
        assert_eq!(req.resources, None);
    }

    #[test]
    fn no_visa_is_a_usage_error() {
        let e = create_request(&create_args(&[])).unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn missing_visa_file_names_the_path() {
        let e = create_request(&create_args(&["--visa-file", "/nonexistent/visas"])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/visas"), "{e}");
    }

    #[test]
    fn resources_duration_and_site_reach_the_body() {
        let req = create_request(&create_args(&[
            "--visa",
            "v",
            "--cpus",
            "2",
            "--memory-mib",
            "1024",
            "--gpus",
            "1",
            "--duration",
            "1h30m",
            "--site",
            "bbj",
            "--dataset",
            "JGAD000301",
        ]))
        .unwrap();
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json["resources"],
            serde_json::json!({"cpus": 2, "memory_mib": 1024, "gpus": 1})
        );
        assert_eq!(json["duration_s"], 5400);
        assert_eq!(json["site"], "bbj");
        assert_eq!(json["datasets"], serde_json::json!(["JGAD000301"]));
    }

    #[test]
    fn absurd_resources_and_zero_duration_are_refused_before_sending() {
        let e = create_request(&create_args(&[
            "--visa",
            "v",
            "--cpus",
            "0",
            "--memory-mib",
            "64",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
        let e = create_request(&create_args(&["--visa", "v", "--duration", "0"])).unwrap_err();
        assert!(e.to_string().contains("zero"), "{e}");
    }
}
