use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

fn task(v: Value) -> TesTask {
    serde_json::from_value(v).expect("a task document")
}

fn echo() -> Value {
    json!({
        "name": "count",
        "inputs": [{"url": "basho://datasets/JGAD000101/table.csv",
                    "path": "/data/JGAD000101/table.csv"}],
        "outputs": [{"url": "s3://mine/out.csv", "path": "/results/out.csv"}],
        "resources": {"cpu_cores": 2, "ram_gb": 1.5, "zones": ["tohoku"]},
        "executors": [{"image": "basho/demo", "command": ["wc", "-l", "/data/JGAD000101/table.csv"],
                       "workdir": "/work", "env": {"LANG": "C"}}],
        "tags": {"basho_project": "P-0001", "basho_visas": "a.b.c, d.e.f", "run": "7"},
    })
}

#[test]
fn a_task_reads_as_its_workspace() {
    let a = accept(task(echo())).unwrap();
    assert_eq!(a.project.unwrap().as_str(), "P-0001");
    assert_eq!(a.visas, ["a.b.c", "d.e.f"]);
    assert_eq!(a.datasets.len(), 1);
    assert_eq!(a.datasets[0].as_str(), "JGAD000101");
    assert_eq!(a.cpus, Some(2));
    assert_eq!(a.memory_mib, Some(1536));
    assert_eq!(a.site.unwrap().as_str(), "tohoku");
    assert_eq!(
        (a.image.as_str(), a.command[0].as_str()),
        ("basho/demo", "wc")
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // The visas never stay in the stored task; the other tags do.
    let tags = a.stored.tags.unwrap();
    assert!(!tags.contains_key(TAG_VISAS));
    assert_eq!(tags["run"], "7");
}

#[test]
fn read_only_fields_of_a_request_are_dropped() {
    let mut v = echo();
    v["id"] = json!("mine");
    v["state"] = json!("COMPLETE");
    v["creation_time"] = json!("2020-01-01T00:00:00Z");
    v["logs"] = json!([{"logs": [], "outputs": []}]);
    let stored = accept(task(v)).unwrap().stored;
    assert_eq!(
        (stored.id, stored.state, stored.logs, stored.creation_time),
        (None, None, None, None)
    );
}

#[test]
fn unsupported_backend_parameters_are_dropped_or_refused_when_strict() {
    let mut v = echo();
    v["resources"]["backend_parameters"] = json!({"VmSize": "big"});
    let a = accept(task(v.clone())).unwrap();
    assert!(a.warnings[0].contains("VmSize"), "{:?}", a.warnings);
    assert!(a.stored.resources.unwrap().backend_parameters.is_empty());
    v["resources"]["backend_parameters_strict"] = json!(true);
    assert!(accept(task(v)).unwrap_err().contains("VmSize"));
}

/// A change to a good task, what it is, and a word its refusal must say.
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

/// Every case a task is refused for, each with a word of the answer that says why.
#[test]
fn bad_tasks_are_refused_saying_why() {
    let cases: Vec<Case> = vec![
        (
            "no executors",
            Box::new(|v| v["executors"] = json!([])),
            "at least one",
        ),
        (
            "too many executors",
            Box::new(|v| {
                let e = v["executors"][0].clone();
                v["executors"] = json!(vec![e; MAX_EXECUTORS + 1]);
            }),
            "at most",
        ),
        (
            "executors of two images",
            Box::new(|v| {
                let mut e = v["executors"][0].clone();
                e["image"] = json!("basho/other");
                v["executors"].as_array_mut().unwrap().push(e);
            }),
            "share one image",
        ),
        (
            "a second executor's bad stdout",
            Box::new(|v| {
                let mut e = v["executors"][0].clone();
                e["stdout"] = json!("/etc/passwd");
                v["executors"].as_array_mut().unwrap().push(e);
            }),
            "executors[1].stdout",
        ),
        (
            "empty image",
            Box::new(|v| v["executors"][0]["image"] = json!(" ")),
            "image",
        ),
        (
            "empty command",
            Box::new(|v| v["executors"][0]["command"] = json!([])),
            "argv",
        ),
        (
            "empty argv[0]",
            Box::new(|v| v["executors"][0]["command"] = json!([""])),
            "argv",
        ),
        (
            "NUL in argv",
            Box::new(|v| v["executors"][0]["command"] = json!(["a\u{0}b"])),
            "NUL",
        ),
        (
            "relative workdir",
            Box::new(|v| v["executors"][0]["workdir"] = json!("work")),
            "absolute",
        ),
        (
            "workdir with ..",
            Box::new(|v| v["executors"][0]["workdir"] = json!("/work/../etc")),
            "..",
        ),
        (
            "relative stdin",
            Box::new(|v| v["executors"][0]["stdin"] = json!("in")),
            "absolute",
        ),
        (
            "stdout on the root",
            Box::new(|v| v["executors"][0]["stdout"] = json!("/etc/o")),
            "read-only",
        ),
        (
            "stderr with ..",
            Box::new(|v| v["executors"][0]["stderr"] = json!("/results/../e")),
            "..",
        ),
        (
            "env value with NUL",
            Box::new(|v| v["executors"][0]["env"] = json!({"A": "x\u{0}y"})),
            "valid variable",
        ),
        (
            "env name",
            Box::new(|v| v["executors"][0]["env"] = json!({"1A": "x"})),
            "valid variable",
        ),
        (
            "env with =",
            Box::new(|v| v["executors"][0]["env"] = json!({"A=B": "x"})),
            "valid variable",
        ),
        (
            "BASHO_ env",
            Box::new(|v| v["executors"][0]["env"] = json!({"BASHO_DATASETS": "x"})),
            "set by the site",
        ),
        (
            "volumes",
            Box::new(|v| v["volumes"] = json!(["/vol/A"])),
            "volumes",
        ),
        (
            "file url",
            Box::new(|v| v["inputs"][0]["url"] = json!("file:///etc/passwd")),
            "fetches nothing",
        ),
        (
            "http url",
            Box::new(|v| v["inputs"][0]["url"] = json!("http://evil.example/x")),
            "fetches nothing",
        ),
        (
            "s3 url",
            Box::new(|v| v["inputs"][0]["url"] = json!("s3://bucket/x")),
            "fetches nothing",
        ),
        (
            "url with ..",
            Box::new(|v| {
                v["inputs"][0]["url"] = json!("basho://datasets/JGAD000101/../JGAD000102/x");
            }),
            "..",
        ),
        (
            "bad dataset id",
            Box::new(|v| v["inputs"][0]["url"] = json!("basho://datasets/../x")),
            "dataset",
        ),
        (
            "input path elsewhere",
            Box::new(|v| v["inputs"][0]["path"] = json!("/work/table.csv")),
            "mounted read-only",
        ),
        (
            "input path relative",
            Box::new(|v| v["inputs"][0]["path"] = json!("table.csv")),
            "absolute",
        ),
        (
            "input without url",
            Box::new(|v| v["inputs"][0] = json!({"path": "/data/x"})),
            "neither",
        ),
        (
            "both url and content",
            Box::new(|v| v["inputs"][0]["content"] = json!("hello")),
            "both url and content",
        ),
        (
            "inline content on the read-only root",
            Box::new(|v| v["inputs"][0] = json!({"path": "/etc/x", "content": "hello"})),
            "read-only",
        ),
        (
            "inline content too large",
            Box::new(|v| {
                v["inputs"][0] = json!({"path": "/work/x", "content": "a".repeat(64 * 1024 + 1)})
            }),
            "at most",
        ),
        (
            "inline contents too large together",
            Box::new(|v| {
                let f = |p: &str| json!({"path": p, "content": "a".repeat(50 * 1024)});
                v["inputs"] = json!([f("/work/a"), f("/work/b"), f("/tmp/c")]);
            }),
            "in one task",
        ),
        (
            "output outside /results",
            Box::new(|v| v["outputs"][0]["path"] = json!("/work/out.csv")),
            "/results",
        ),
        (
            "output /results itself",
            Box::new(|v| v["outputs"][0]["path"] = json!("/results")),
            "/results",
        ),
        (
            "output with ..",
            Box::new(|v| v["outputs"][0]["path"] = json!("/results/../etc/x")),
            "..",
        ),
        (
            "output wildcard",
            Box::new(|v| v["outputs"][0]["path"] = json!("/results/*.csv")),
            "wildcards",
        ),
        (
            "zero cpus",
            Box::new(|v| v["resources"]["cpu_cores"] = json!(0)),
            "cpu_cores",
        ),
        (
            "negative cpus",
            Box::new(|v| v["resources"]["cpu_cores"] = json!(-4)),
            "cpu_cores",
        ),
        (
            "huge cpus",
            Box::new(|v| v["resources"]["cpu_cores"] = json!(1_000_000)),
            "cpu_cores",
        ),
        (
            "zero ram",
            Box::new(|v| v["resources"]["ram_gb"] = json!(0.0)),
            "ram_gb",
        ),
        (
            "huge ram",
            Box::new(|v| v["resources"]["ram_gb"] = json!(1e12)),
            "ram_gb",
        ),
        (
            "negative disk",
            Box::new(|v| v["resources"]["disk_gb"] = json!(-1.0)),
            "disk_gb",
        ),
        (
            "two zones",
            Box::new(|v| v["resources"]["zones"] = json!(["tohoku", "ncbn"])),
            "one",
        ),
        (
            "bad zone",
            Box::new(|v| v["resources"]["zones"] = json!(["no site"])),
            "zones",
        ),
        (
            "bad project tag",
            Box::new(|v| v["tags"]["basho_project"] = json!("P 1")),
            "basho_project",
        ),
        (
            "long name",
            Box::new(|v| v["name"] = json!("n".repeat(300))),
            "name",
        ),
    ];
    assert!(cases.len() >= 30);
    for (what, change, why) in cases {
        let mut v = echo();
        change(&mut v);
        let e = accept(task(v)).expect_err(what);
        assert!(e.contains(why), "{what}: {e:?} does not say {why:?}");
    }
}

#[test]
fn one_plain_executor_runs_its_argv_as_it_is() {
    let e: TesExecutor = serde_json::from_value(json!({
        "image": "basho/demo", "command": ["wc", "-l", "$(rm -rf /)"], "env": {"LANG": "C"},
        "workdir": "/work/w",
    }))
    .unwrap();
    let (argv, launch) = task_argv(std::slice::from_ref(&e), &[]);
    assert_eq!(argv, e.command);
    assert_eq!(launch.workdir.as_deref(), Some("/work/w"));
    assert_eq!(launch.env["LANG"], "C");
}

/// Runs the runner the way a container does, with `/bin/sh`, in `dir`.
fn run(executors: Value, inline: &[Inline], dir: &std::path::Path) -> i32 {
    let executors: Vec<TesExecutor> = serde_json::from_value(executors).unwrap();
    let (argv, launch) = task_argv(&executors, inline);
    assert_eq!(&argv[..4], ["/bin/sh", "-c", RUNNER, RUNNER_NAME]);
    assert_eq!(launch, crate::protocol::Launch::default());
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env_remove("A")
        .status()
        .expect("/bin/sh runs")
        .code()
        .expect("an exit code")
}

#[test]
fn the_runner_runs_executors_in_order_and_parses_nothing_of_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap();
    let hostile = "$(touch pwned) `touch pwned2` 'q' \"d\" ; touch pwned3\nx";
    let inline = [Inline {
        path: format!("{d}/in/deep/input.txt"),
        content: format!("{hostile}\n"),
    }];
    let code = run(
        json!([
            {"image": "i", "command": ["printf", "%s|", hostile, "a b", ""],
             "stdout": format!("{d}/args.txt")},
            {"image": "i", "command": ["cat"], "stdin": format!("{d}/in/deep/input.txt"),
             "stdout": format!("{d}/copy.txt"), "stderr": format!("{d}/err.txt")},
            {"image": "i", "command": ["sh", "-c", "printf '%s|' \"$A\" \"$(pwd)\" >seen.txt"],
             "env": {"A": hostile}, "workdir": format!("{d}/in")},
            {"image": "i", "command": ["false"], "ignore_error": true},
            {"image": "i", "command": ["sh", "-c", "touch after-ignored"]},
        ]),
        &inline,
        tmp.path(),
    );
    assert_eq!(code, 0, "an ignored error does not end the task");
    assert_eq!(read("args.txt"), format!("{hostile}|a b||"));
    assert_eq!(read("copy.txt"), format!("{hostile}\n"));
    assert_eq!(read("in/seen.txt"), format!("{hostile}|{d}/in|"));
    assert!(tmp.path().join("after-ignored").exists());
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !tmp.path().join(f).exists(),
            "{f}: the shell parsed the task"
        );
    }
}

#[test]
fn the_first_failing_executor_ends_the_task_with_its_code() {
    let tmp = tempfile::tempdir().unwrap();
    let code = run(
        json!([
            {"image": "i", "command": ["sh", "-c", "touch first"]},
            {"image": "i", "command": ["sh", "-c", "exit 7"]},
            {"image": "i", "command": ["sh", "-c", "touch third"]},
        ]),
        &[],
        tmp.path(),
    );
    assert_eq!(code, 7);
    assert!(tmp.path().join("first").exists());
    assert!(!tmp.path().join("third").exists(), "nothing runs after it");
    let code = run(
        json!([{"image": "i", "command": ["true"], "stdin": "/nonexistent/in"}]),
        &[],
        tmp.path(),
    );
    assert_ne!(code, 0, "a missing stdin file fails the executor");
    let code = run(
        json!([{"image": "i", "command": ["/nonexistent/program"], "stdout": "/dev/null"}]),
        &[],
        tmp.path(),
    );
    assert_eq!(code, 127, "a program that is not there");
}

#[test]
fn every_workspace_state_reads_as_a_tes_state() {
    use State::*;
    let cases = [
        (Pending, None, false, TesState::Queued),
        (Placed, None, false, TesState::Queued),
        (Starting, None, false, TesState::Initializing),
        (Running, None, false, TesState::Running),
        (Stopping, None, true, TesState::Canceling),
        (Stopping, None, false, TesState::Running),
        (
            Stopped,
            Some("exited with code 0"),
            false,
            TesState::Complete,
        ),
        (
            Stopped,
            Some("exited with code 0"),
            true,
            TesState::Canceled,
        ),
        (
            Failed,
            Some("exited with code 3"),
            false,
            TesState::ExecutorError,
        ),
        (
            Failed,
            Some("image basho/x is not allowed"),
            false,
            TesState::SystemError,
        ),
        (Failed, None, false, TesState::SystemError),
        (Expired, None, false, TesState::SystemError),
        (Revoked, Some("visa v-1 revoked"), false, TesState::Canceled),
        (Unknown, None, false, TesState::Unknown),
    ];
    for (state, message, canceled, want) in cases {
        assert_eq!(
            task_state(state, message, canceled),
            want,
            "{state} {message:?}"
        );
    }
    assert!(
        state_log(Revoked, Some("visa v-1 revoked"))
            .unwrap()
            .contains("revoked")
    );
    assert!(state_log(Stopped, None).is_none());
    assert!(state_log(Stopped, Some("exited with code 0")).is_none());
    let note = "exited with code 2; outputs not found as files under /results: a.csv";
    assert_eq!(exit_code(Some(note)), Some(2));
    assert_eq!(
        task_state(Failed, Some(note), false),
        TesState::ExecutorError
    );
    assert_eq!(
        state_log(Failed, Some(note)).as_deref(),
        Some("outputs not found as files under /results: a.csv")
    );
    for s in TesState::ALL {
        assert_eq!(TesState::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
}

#[test]
fn views_leave_out_what_the_specification_says() {
    let mut t = task(echo());
    t.id = Some("ws-1".into());
    t.state = Some(TesState::Complete);
    t.logs = Some(vec![TesTaskLog {
        logs: vec![TesExecutorLog {
            start_time: None,
            end_time: None,
            stdout: Some(String::new()),
            stderr: Some(String::new()),
            exit_code: 0,
        }],
        system_logs: Some(vec!["said".into()]),
        ..TesTaskLog::default()
    }]);
    let minimal = serde_json::to_value(t.clone().in_view(View::Minimal)).unwrap();
    // `executors` is required by the schema, so MINIMAL shows it empty.
    assert_eq!(
        minimal,
        json!({"id": "ws-1", "state": "COMPLETE", "executors": []})
    );
    let basic = t.clone().in_view(View::Basic);
    let log = &basic.logs.as_ref().unwrap()[0];
    assert!(log.system_logs.is_none() && log.logs[0].stdout.is_none());
    assert_eq!(basic.executors, t.executors);
    let full = t.clone().in_view(View::Full);
    assert_eq!(full, t);
    assert!(View::parse("EVERYTHING").unwrap_err().contains("MINIMAL"));
}

#[test]
fn page_tokens_round_trip_and_forged_ones_are_refused() {
    for seq in [1, 256, i64::MAX] {
        assert_eq!(parse_page_token(&page_token(seq)).unwrap(), seq);
    }
    for forged in [
        "",
        "42",
        "tes1.",
        "tes1.!!!!",
        "tes1.AAAA",
        "tes1.AAAAAAAAAAA",
        &page_token(0),
    ] {
        assert!(parse_page_token(forged).is_err(), "{forged:?}");
    }
    assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE_SIZE);
    assert_eq!(page_size(Some(2048)).unwrap(), 2048);
    for bad in [0, -1, 2049, i64::MAX] {
        assert!(page_size(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn a_passport_header_yields_its_visas() {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let jwt = |claims: Value| format!("{}.{}.sig", b64(json!({"alg": "RS256"})), b64(claims));
    let visa = jwt(json!({"ga4gh_visa_v1": {"type": "ControlledAccessGrants"}}));
    let passport = jwt(json!({"ga4gh_passport_v1": [visa.clone(), visa.clone()]}));
    assert_eq!(passport_visas(&passport).unwrap().len(), 2);
    assert_eq!(
        passport_visas(&format!("{visa}, {visa}")).unwrap(),
        [visa.clone(), visa]
    );
    assert!(passport_visas(&jwt(json!({"sub": "x"}))).is_err());
    assert!(passport_visas("not-a-jwt").is_err());
    assert!(passport_visas(&jwt(json!({"ga4gh_passport_v1": "x"}))).is_err());
}
