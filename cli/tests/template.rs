//! `basho template validate|render` as a user runs them: the example Slurm site config, a
//! workspace as `basho workspace show --output json` prints it, the built-in job script template.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use basho_agent::reconcile::hostdirs::{HostDirs, Ownership, WorkspaceRecord};
use basho_core::template::Template;
use basho_core::workspace::Workspace;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn basho(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basho"))
        .args(args)
        .env_remove("BASHO_AGENT_TOKEN")
        .env_remove("BASHO_ORCHESTRATOR_URL")
        .output()
        .expect("basho runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn render_args<'a>(site: &'a str, ws: &'a str, wt: &'a str) -> Vec<&'a str> {
    vec![
        "template",
        "render",
        "--site",
        site,
        "--workspace",
        ws,
        "--workspace-template",
        wt,
        "--now",
        "2030-01-02T01:00:00Z",
    ]
}

fn paths() -> (String, String, String) {
    let s = |p: &str| repo(p).to_string_lossy().into_owned();
    (
        s("examples/site-slurm.toml"),
        s("cli/tests/fixtures/workspace-slurm.json"),
        s("templates/workspaces/shell.toml"),
    )
}

#[test]
fn render_prints_exactly_the_script_the_site_would_submit() {
    let (site, ws, wt) = paths();
    let out = basho(&render_args(&site, &ws, &wt));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);

    let golden = repo("cli/tests/golden/template-render-slurm.sh");
    if std::env::var_os("BASHO_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &script).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&golden).unwrap_or_default(),
        script,
        "{} differs; if the change is intended, rerun with BASHO_UPDATE_GOLDEN=1 and commit it",
        golden.display()
    );
    // What the example config and the workspace say, as the agent would resolve it.
    for line in [
        "#SBATCH --job-name=basho-ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b\n",
        "#SBATCH --time=0-02:05:00\n",
        "#SBATCH --account=basho-research\n",
        "#SBATCH '--comment=basho site=tohoku expires=2030-01-02T03:04:05Z'\n",
        "--bind /shared/jga/JGAD000102:/data/JGAD000102:ro ",
        "--env 'BASHO_DATASETS=JGAD000101,JGAD000102' /shared/images/shell.sif sh -c ",
    ] {
        assert!(script.contains(line), "missing {line:?} in\n{script}");
    }
    let n = Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(n.success(), "bash -n refused the script");
}

#[test]
fn render_uses_a_template_given_on_the_command_line() {
    let (site, ws, wt) = paths();
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine.sh.j2");
    std::fs::write(
        &mine,
        "#!/bin/bash\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}echo {{ project }}\n",
    )
    .unwrap();
    let mut args = render_args(&site, &ws, &wt);
    let mine = mine.to_string_lossy().into_owned();
    args.extend(["--template", &mine]);
    let out = basho(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("#SBATCH --qos=normal\necho P-0001\n"));
}

#[test]
fn render_refuses_what_the_agent_would_refuse() {
    let (site, ws, wt) = paths();
    // Expired at the moment of submission.
    let mut args = render_args(&site, &ws, &wt);
    args[9] = "2030-01-02T03:04:05Z";
    let out = basho(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );

    // Not a Slurm site.
    let docker = repo("examples/site-docker.toml")
        .to_string_lossy()
        .into_owned();
    let out = basho(&render_args(&docker, &ws, &wt));
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("only Slurm sites"),
        "{}",
        text(&out.stderr)
    );

    // A dataset the site does not hold.
    let dir = tempfile::tempdir().unwrap();
    let mut w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ws).unwrap()).unwrap();
    w["datasets"] = serde_json::json!(["JGAD000301"]);
    let other = dir.path().join("ws.json");
    std::fs::write(&other, w.to_string()).unwrap();
    let out = basho(&render_args(&site, other.to_str().unwrap(), &wt));
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("JGAD000301"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_says_ok_or_names_the_problem() {
    let default = repo("templates/slurm/workspace.sh.j2")
        .to_string_lossy()
        .into_owned();
    let out = basho(&["template", "validate", &default]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sh.j2");
    std::fs::write(
        &bad,
        "#!/bin/bash\necho hi\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}",
    )
    .unwrap();
    let out = basho(&["template", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("after the first command"),
        "{}",
        text(&out.stderr)
    );

    let apptainer_only = dir.path().join("apptainer.sh.j2");
    std::fs::write(
        &apptainer_only,
        "#!/bin/bash\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}exec {{ run }} # {{ image_path }}\n",
    )
    .unwrap();
    let p = apptainer_only.to_str().unwrap();
    assert_eq!(basho(&["template", "validate", p]).status.code(), Some(1));
    let out = basho(&["template", "validate", "--runtime", "apptainer", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = basho(&["template", "validate", "/nonexistent/t.j2"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn render_puts_host_directories_where_the_agent_prepares_them() {
    let (site, ws, wt) = paths();
    let dir = tempfile::tempdir().unwrap();
    let mut config = basho_agent::config::load(Path::new(&site)).unwrap();
    config.paths.state_dir = dir.path().join("state");
    config.paths.work_root = dir.path().join("work");
    config.paths.results_root = dir.path().join("results");
    let ws: Workspace = serde_json::from_str(&std::fs::read_to_string(&ws).unwrap()).unwrap();
    let wt: Template = toml::from_str(&std::fs::read_to_string(&wt).unwrap()).unwrap();
    let spec = basho_cli::template::launch_spec(&config, &ws, &wt).unwrap();

    let prepared = HostDirs::new(config.paths.clone(), Ownership::AlreadyOwned)
        .prepare(&WorkspaceRecord {
            id: ws.id.clone(),
            project: ws.project.clone(),
            owner: ws.owner.clone(),
            datasets: ws.datasets.clone(),
            expires_at: ws.expires_at,
            releases: Default::default(),
        })
        .unwrap();
    assert_eq!(spec.work_dir, prepared.work_dir);
    assert_eq!(spec.results_dir, prepared.results_dir);
    assert_eq!(spec.workspace_json, prepared.workspace_json);
}
