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
    assert_eq!(a.executor.command[0], "wc");
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
            "two executors",
            Box::new(|v| {
                let e = v["executors"][0].clone();
                v["executors"] = json!([e.clone(), e]);
            }),
            "per task today",
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
            "TES_ env",
            Box::new(|v| v["executors"][0]["env"] = json!({"TES_STDOUT": "x"})),
            "redirections",
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
            "inline content",
            Box::new(|v| v["inputs"][0]["content"] = json!("hello")),
            "content",
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
fn redirections_run_through_a_wrapper_that_parses_nothing_of_the_task() {
    let mut e: TesExecutor = serde_json::from_value(json!({
        "image": "basho/demo", "command": ["wc", "-l", "$(rm -rf /)"], "env": {"LANG": "C"},
    }))
    .unwrap();
    let (argv, env) = executor_argv(&e);
    assert_eq!(
        (argv, env.len()),
        (e.command.clone(), 1),
        "no redirection: the argv as it is"
    );
    e.stdin = Some("/data/JGAD000101/a b.csv".into());
    e.stderr = Some("/results/err.txt".into());
    let (argv, env) = executor_argv(&e);
    assert_eq!(
        argv,
        [
            "/bin/sh",
            "-c",
            r#"exec "$@" <"$TES_STDIN" 2>"$TES_STDERR""#,
            "tes-executor",
            "wc",
            "-l",
            "$(rm -rf /)"
        ]
    );
    assert_eq!(env["TES_STDIN"], "/data/JGAD000101/a b.csv");
    assert_eq!(env["TES_STDERR"], "/results/err.txt");
    assert!(!env.contains_key("TES_STDOUT"));
    assert_eq!(env["LANG"], "C");
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
