use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Duration;

use super::*;

const RUNTIMES: [Runtime; 3] = [Runtime::Apptainer, Runtime::Docker, Runtime::Podman];

fn example(runtime: Runtime) -> (SlurmConfig, LaunchSpec) {
    (example_config(runtime), example_spec(runtime))
}

fn render_default(cfg: &SlurmConfig, spec: &LaunchSpec) -> Result<String, ScriptError> {
    render(DEFAULT_TEMPLATE, cfg, spec, example_time())
}

fn fails_with<T: std::fmt::Debug>(r: Result<T, ScriptError>, needle: &str) {
    match r {
        Err(e) => assert!(e.0.contains(needle), "{e}"),
        Ok(v) => panic!("expected an error mentioning {needle:?}, got {v:?}"),
    }
}

/// Runs `script` with bash and returns its stdout, or panics with its stderr.
fn bash(script: &str, env: &[(&str, &Path)]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new("bash")
        .arg("-s")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bash_syntax_ok(script: &str) {
    let (code, _, err) = bash(&format!("set -n\n{script}"), &[]);
    assert_eq!(code, 0, "bash -n refused the script: {err}\n{script}");
}

/// The words bash makes of `words` (already quoted), NUL-separated through printf.
fn words_back(words: &str) -> Vec<String> {
    let (code, out, err) = bash(&format!("printf '%s\\0' {words}\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let mut v: Vec<String> = out
        .split(|b| *b == 0)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    v.pop();
    v
}

#[test]
fn default_scripts_match_the_golden_files() {
    for runtime in RUNTIMES {
        let (cfg, spec) = example(runtime);
        let script = render_default(&cfg, &spec).unwrap();
        bash_syntax_ok(&script);
        golden(&format!("workspace-{}.sh", runtime.name()), &script);
    }
}

#[test]
fn the_default_template_validates() {
    validate(DEFAULT_TEMPLATE).unwrap();
}

#[test]
fn directives_in_order() {
    let (cfg, spec) = example(Runtime::Apptainer);
    assert_eq!(
        directives(&cfg, &spec, example_time()).unwrap(),
        [
            "--job-name=basho-ws-1",
            "--time=0-01:30:00",
            "--cpus-per-task=2",
            "--mem=512M",
            "--account=basho-research",
            "--partition=debug",
            "--comment=basho site=tohoku expires=2030-01-02T03:04:05Z",
            "--output=/shared/basho/logs/basho-%j.out",
            "--qos=normal",
        ]
    );
    assert_eq!(
        comment(&spec),
        "basho site=tohoku expires=2030-01-02T03:04:05Z"
    );
}

#[test]
fn accounts_map_by_project_then_default_then_none() {
    let (mut cfg, mut spec) = example(Runtime::Apptainer);
    let account = |cfg: &SlurmConfig, spec: &LaunchSpec| {
        directives(cfg, spec, example_time())
            .unwrap()
            .into_iter()
            .find(|d| d.starts_with("--account="))
    };
    assert_eq!(
        account(&cfg, &spec).as_deref(),
        Some("--account=basho-research")
    );
    spec.project = basho_core::Ident::parse("P-0002").unwrap();
    assert_eq!(account(&cfg, &spec).as_deref(), Some("--account=basho"));
    cfg.default_account = None;
    assert_eq!(account(&cfg, &spec), None);
}

#[test]
fn the_site_s_qos_and_nice_are_sent_and_bad_ones_refused() {
    let (mut cfg, spec) = example(Runtime::Docker);
    cfg.qos = Some("basho-guest".into());
    cfg.nice = Some(500);
    let d = directives(&cfg, &spec, example_time()).unwrap();
    assert!(d.contains(&"--qos=basho-guest".to_string()), "{d:?}");
    assert!(d.contains(&"--nice=500".to_string()), "{d:?}");
    cfg.qos = Some("two words".into());
    cfg.nice = Some(crate::backend::slurm::config::MAX_NICE + 1);
    let p = cfg.check();
    assert!(
        p.iter()
            .any(|m| m.contains("\"two words\"") && m.contains("QOS")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m.contains("backend.nice")), "{p:?}");
}

#[test]
fn gpus_become_gres() {
    let (cfg, mut spec) = example(Runtime::Apptainer);
    spec.resources.gpus = 2;
    let d = directives(&cfg, &spec, example_time()).unwrap();
    assert!(d.contains(&"--gres=gpu:2".to_string()), "{d:?}");
}

#[test]
fn time_limit_rounds_up_to_minutes() {
    let now = example_time();
    let t = |d: Duration| time_limit(now + d, now);
    assert_eq!(t(Duration::seconds(1)).unwrap(), "0-00:01:00");
    assert_eq!(t(Duration::seconds(60)).unwrap(), "0-00:01:00");
    assert_eq!(t(Duration::seconds(61)).unwrap(), "0-00:02:00");
    assert_eq!(
        t(Duration::milliseconds(90 * 60_000 + 1)).unwrap(),
        "0-01:31:00"
    );
    assert_eq!(
        t(Duration::days(2) + Duration::hours(3) + Duration::minutes(4)).unwrap(),
        "2-03:04:00"
    );
    fails_with(t(Duration::zero()), "expired");
    fails_with(t(Duration::seconds(-5)), "expired");
}

#[test]
fn quoting_round_trips_through_bash() {
    for w in [
        "plain",
        "",
        "it's",
        "$(touch /tmp/basho-pwned)",
        "`id`",
        "a b\tc",
        "line\nbreak",
        "cr\rhere",
        "back\\slash'\\''",
        "FOO=bar",
        "--opt=a b",
        "~root",
        "*",
        "ünïcödé \u{85}",
    ] {
        let q = shell_quote(w).unwrap();
        assert!(!q.contains('\n') && !q.contains('\r'), "{q}");
        assert_eq!(words_back(&q), [w], "{w:?} quoted as {q}");
    }
    assert_eq!(
        shell_quote("--job-name=basho-ws-1").unwrap(),
        "--job-name=basho-ws-1"
    );
    assert_eq!(shell_quote("FOO=bar").unwrap(), "'FOO=bar'");
    assert!(shell_quote("nul\0").is_err());
}

/// A spec and config carrying hostile values wherever they can arrive: host paths from the
/// site catalog, environment values, the site's account names.
fn hostile(runtime: Runtime) -> (SlurmConfig, LaunchSpec) {
    let (mut cfg, mut spec) = example(runtime);
    spec.datasets[0].host_path = PathBuf::from("/data/it's $(rm -rf ~)/x");
    spec.work_dir = PathBuf::from("/srv/work/`touch /tmp/basho-pwned`");
    let quoted = if runtime == Runtime::Apptainer {
        "it's" // apptainer refuses '"' (tested in runtime)
    } else {
        "say \"hi\" it's"
    };
    spec.env.push((
        "HOSTILE".into(),
        format!("{quoted} $(id) `id` ${{HOME}}\nnext line"),
    ));
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        "echo '$HOME'; exit 0 # ; rm -rf /".into(),
    ];
    cfg.accounts.insert("P-0001".into(), "'; rm -rf / #".into());
    cfg.partition = Some("debug # --account=evil".into());
    (cfg, spec)
}

#[test]
fn hostile_values_are_quoted_so_bash_and_sbatch_get_them_back_intact() {
    for runtime in RUNTIMES {
        let (cfg, spec) = hostile(runtime);
        let script = render_default(&cfg, &spec).unwrap();
        bash_syntax_ok(&script);
        assert!(
            !script.contains("\nnext line"),
            "a value broke a line:\n{script}"
        );

        // The run line, read back by a real shell, gives exactly the argv.
        let tiny = "#!/bin/bash\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}\
                    printf '%s\\0' {{ run }}\n";
        let rendered = render(tiny, &cfg, &spec, example_time()).unwrap();
        let (code, out, err) = bash(&rendered, &[]);
        assert_eq!(code, 0, "{err}");
        let got: Vec<String> = out
            .split(|b| *b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .filter(|w| !w.is_empty())
            .collect();
        let program = runtime.name();
        assert_eq!(got, container_argv(runtime, program, &spec).unwrap());

        // Each #SBATCH line holds exactly one word: its directive (sbatch splits words as bash
        // does for what the renderer writes; no backslashes, no control characters).
        let wanted = directives(&cfg, &spec, example_time()).unwrap();
        let lines: Vec<&str> = script
            .lines()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect();
        assert_eq!(lines.len(), wanted.len());
        for (line, want) in lines.iter().zip(&wanted) {
            assert_eq!(words_back(line), [want.as_str()], "{line}");
        }
        assert!(wanted.contains(&"--account='; rm -rf / #".to_string()));
    }
}

#[test]
fn refuses_values_a_sbatch_line_cannot_carry() {
    let (mut cfg, spec) = example(Runtime::Apptainer);
    cfg.accounts
        .insert("P-0001".into(), "acct\n#SBATCH --time=9-00:00:00".into());
    fails_with(render_default(&cfg, &spec), "control character");
    let (mut cfg, spec) = example(Runtime::Apptainer);
    cfg.output_dir = Some("C:\\logs".into());
    fails_with(render_default(&cfg, &spec), "backslash");
}

#[test]
fn site_directives_are_single_long_options_that_do_not_override_the_agent() {
    for (d, needle) in [
        ("--qos=normal\n#SBATCH --time=99", "control character"),
        ("--qos=normal\0", "control character"),
        ("-J evil", "long option"),
        ("qos=normal", "long option"),
        ("--", "long option"),
        ("--time=9-00:00:00", "--time"),
        ("--comm=x", "--comment"),
        ("--job-name=other", "--job-name"),
        ("--job=other", "--job-name"),
    ] {
        let (mut cfg, spec) = example(Runtime::Docker);
        cfg.directives = vec![d.into()];
        fails_with(render_default(&cfg, &spec), needle);
    }
    // Not a prefix of a protected option: allowed.
    let (mut cfg, spec) = example(Runtime::Docker);
    cfg.directives = vec!["--time-min=10".into(), "--constraint=a b".into()];
    let script = render_default(&cfg, &spec).unwrap();
    assert!(script.contains("#SBATCH --time-min=10\n#SBATCH '--constraint=a b'\n"));
}

#[test]
fn refuses_templates_that_would_lose_or_misplace_directives() {
    let head = "#!/bin/bash\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}";
    for (template, needle) in [
        (
            "#!/bin/bash\necho {{ run }}\n",
            "no line `#SBATCH --job-name=basho-ws-1`",
        ),
        (
            "#!/bin/bash\n{% for d in directives %}{% if not loop.last %}#SBATCH {{ d }}\n{% endif %}{% endfor %}",
            "--qos=normal",
        ),
        (
            "echo hi\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}",
            "#!",
        ),
        (
            "#!/bin/bash\necho start\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}",
            "after the first command",
        ),
        (
            &format!("{head}echo\n#SBATCH --mail-type=END\n"),
            "after the first command",
        ),
        (&format!("{head} #SBATCH --qos=high\n"), "indented"),
        (&format!("{head}#SBATCH --job-name=other\n"), "--job-name"),
        (&format!("{head}#SBATCH -t 99\n"), "--time"),
        (&format!("{head}#SBATCH '--comm=x'\n"), "--comment"),
        (
            &format!("{head}{{% for d in directives %}}#SBATCH {{{{ d }}}}\n{{% endfor %}}"),
            "repeated",
        ),
        (&format!("{head}echo hi\r\n"), "CR"),
        (&format!("{head}{{{{ run | safe }}}}\n"), "safe"),
        (&format!("{head}{{{{ cleanup }}}}\n"), "none"),
        (&format!("{head}{{{{ nothing }}}}\n"), "undefined"),
        (&format!("{head}{{% if %}}\n"), "syntax"),
    ] {
        let (cfg, spec) = example(Runtime::Apptainer);
        fails_with(render(template, &cfg, &spec, example_time()), needle);
    }
    let (cfg, spec) = example(Runtime::Apptainer);
    let ok = format!("{head}echo {{{{ workspace }}}} {{{{ run | shquote }}}}\n");
    let script = render(&ok, &cfg, &spec, example_time()).unwrap();
    assert!(
        script.contains("\necho ws-1 apptainer exec --containall "),
        "{script}"
    );
}

#[test]
fn validate_reports_the_runtime_a_template_fails_for() {
    let apptainer_only = "#!/bin/bash\n{% for d in directives %}#SBATCH {{ d }}\n{% endfor %}\
                          exec {{ run }} {{ image_path }}\n";
    validate_for(apptainer_only, Runtime::Apptainer).unwrap();
    fails_with(validate(apptainer_only), "with runtime docker");
    fails_with(validate("#!/bin/bash\necho\n"), "with runtime apptainer");
}

/// A stand-in for the runtime on the compute node: records each call's argv (its own path
/// first), NUL-separated, each call ended by a \x01 word.
fn fake_runtime(dir: &Path) -> PathBuf {
    let prog = dir.join("fake-runtime");
    std::fs::write(
        &prog,
        "#!/bin/bash\nprintf '%s\\0' \"$0\" \"$@\" $'\\x01' >> \"$FAKE_LOG\"\n",
    )
    .unwrap();
    let mut perm = std::fs::metadata(&prog).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&prog, perm).unwrap();
    prog
}

/// A PATH whose `id` says the job runs as uid `uid` (these tests may well run as root, which the
/// apptainer script refuses).
fn path_with_id(dir: &Path, uid: u32) -> PathBuf {
    let bin = dir.join(format!("bin-{uid}"));
    std::fs::create_dir_all(&bin).unwrap();
    let id = bin.join("id");
    std::fs::write(&id, format!("#!/bin/sh\necho {uid}\n")).unwrap();
    let mut perm = std::fs::metadata(&id).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&id, perm).unwrap();
    PathBuf::from(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    ))
}

fn calls(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read(log).unwrap_or_default();
    let mut out = vec![Vec::new()];
    for w in text.split(|b| *b == 0) {
        if w == b"\x01" {
            out.push(Vec::new());
        } else if !w.is_empty() || !out.last().unwrap().is_empty() {
            out.last_mut()
                .unwrap()
                .push(String::from_utf8(w.to_vec()).unwrap());
        }
    }
    out.pop();
    out
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn the_default_script_runs_exactly_the_argv_and_injects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prog = fake_runtime(dir.path());
    let canary = dir.path().join("pwned");
    for runtime in RUNTIMES {
        let log = dir.path().join(format!("{}.log", runtime.name()));
        let (mut cfg, mut spec) = hostile(runtime);
        cfg.runtime_path = Some(prog.to_str().unwrap().into());
        let touch = format!("$(touch {0}) `touch {0}`", canary.display());
        spec.datasets[0].host_path = dir.path().join(format!("it's {touch}"));
        if runtime == Runtime::Apptainer {
            let sif = dir.path().join("shell $(x).sif");
            std::fs::write(&sif, b"not really a SIF").unwrap();
            spec.image = format!("{}@sha256:{}", sif.display(), sha256_of(&sif));
        }
        let script = render_default(&cfg, &spec).unwrap();
        let path = path_with_id(dir.path(), 1000);
        let (code, _, err) = bash(&script, &[("FAKE_LOG", &log), ("PATH", &path)]);
        assert_eq!(code, 0, "{runtime:?}: {err}\n{script}");
        assert!(!canary.exists(), "a value was run as a command");
        let argv = container_argv(runtime, prog.to_str().unwrap(), &spec).unwrap();
        let got = calls(&log);
        match runtime {
            Runtime::Apptainer => assert_eq!(got, [argv]),
            _ => {
                let rm = cleanup_argv(runtime, prog.to_str().unwrap(), &spec.workspace).unwrap();
                // Leftover removal, the run, the removal on exit.
                assert_eq!(got, [rm.clone(), argv, rm]);
            }
        }
    }
}

#[test]
fn a_sif_that_does_not_match_its_digest_or_a_root_job_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let prog = fake_runtime(dir.path());
    let log = dir.path().join("log");
    let (mut cfg, mut spec) = example(Runtime::Apptainer);
    cfg.runtime_path = Some(prog.to_str().unwrap().into());
    let sif = dir.path().join("shell.sif");
    std::fs::write(&sif, b"swapped").unwrap();
    spec.image = format!("{}@sha256:{}", sif.display(), "0".repeat(64));
    let script = render_default(&cfg, &spec).unwrap();
    let path = path_with_id(dir.path(), 1000);
    let (code, _, err) = bash(&script, &[("FAKE_LOG", &log), ("PATH", &path)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("does not match its pinned sha256"), "{err}");
    assert!(calls(&log).is_empty());

    // With the right digest, but as root: refused too.
    spec.image = format!("{}@sha256:{}", sif.display(), sha256_of(&sif));
    let script = render_default(&cfg, &spec).unwrap();
    let path = path_with_id(dir.path(), 0);
    let (code, _, err) = bash(&script, &[("FAKE_LOG", &log), ("PATH", &path)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("as root"), "{err}");
    assert!(calls(&log).is_empty());
}

#[test]
fn scancel_removes_the_engine_container_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // `run` blocks like a container would; `rm -f` kills it as the engine would, noting whether
    // it was still running: the container must be removed while it runs, not after it exited.
    let prog = dir.path().join("slow-runtime");
    std::fs::write(
        &prog,
        r#"#!/bin/bash
printf '%s\0' "$0" "$@" $'\x01' >> "$FAKE_LOG"
if [ "$1" = run ]; then echo $$ > "$FAKE_LOG.pid"; exec sleep 30; fi
if [ "$1" = rm ] && [ -f "$FAKE_LOG.pid" ] && kill -0 "$(cat "$FAKE_LOG.pid")" 2>/dev/null; then
  echo running > "$FAKE_LOG.rm"
  kill "$(cat "$FAKE_LOG.pid")"
fi
"#,
    )
    .unwrap();
    let mut perm = std::fs::metadata(&prog).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&prog, perm).unwrap();
    let (mut cfg, spec) = example(Runtime::Docker);
    cfg.runtime_path = Some(prog.to_str().unwrap().into());
    let script_path = dir.path().join("job.sh");
    std::fs::write(&script_path, render_default(&cfg, &spec).unwrap()).unwrap();
    let mut job = Command::new("bash")
        .arg(&script_path)
        .env("FAKE_LOG", &log)
        .spawn()
        .unwrap();
    // Wait until the container "runs", then do what scancel does to the batch shell.
    for _ in 0..100 {
        if calls(&log).len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        calls(&log).len(),
        2,
        "the script never started the container"
    );
    let pid = job.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = job.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let got = calls(&log);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2][1..], ["rm", "-f", "basho-ws-1"]);
    assert_eq!(got[1][1], "run");
    let seen = std::fs::read_to_string(dir.path().join("log.rm")).unwrap_or_default();
    assert_eq!(
        seen.trim(),
        "running",
        "the container was not removed while it ran"
    );
}

/// What `sbatch -v --test-only` says it read from the script's #SBATCH lines. It prints the
/// options before it asks the controller anything, so the allocation may well fail.
fn sbatch_reads(script: &str) -> Option<Vec<(String, String)>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.sh");
    std::fs::write(&path, script).unwrap();
    let out = match Command::new("sbatch")
        .args(["-v", "--test-only"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            basho_test_util::unavailable(&format!("sbatch cannot run here ({e})"));
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let options: Vec<_> = text
        .lines()
        .skip_while(|l| !l.contains("defined options"))
        .skip(2)
        .take_while(|l| !l.contains("-----"))
        .filter_map(|l| l.strip_prefix("sbatch: "))
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect();
    assert!(!options.is_empty(), "sbatch printed no options:\n{text}");
    Some(options)
}

#[test]
fn real_sbatch_reads_hostile_directives_back_intact() {
    let (mut cfg, spec) = hostile(Runtime::Apptainer);
    cfg.directives = vec![
        "--constraint=a b # c \"q\"".into(),
        "--mail-user=o'hara@example.org".into(),
    ];
    let script = render_default(&cfg, &spec).unwrap();
    let Some(read) = sbatch_reads(&script) else {
        return;
    };
    let get = |k: &str| {
        read.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("account"), Some("'; rm -rf / #"));
    assert_eq!(get("partition"), Some("debug # --account=evil"));
    assert_eq!(get("comment"), Some(comment(&spec).as_str()));
    assert_eq!(get("job-name"), Some("basho-ws-1"));
    assert_eq!(get("constraint"), Some("a b # c \"q\""));
    assert_eq!(get("mail-user"), Some("o'hara@example.org"));
    assert_eq!(get("output"), Some("/shared/basho/logs/basho-%j.out"));
}
