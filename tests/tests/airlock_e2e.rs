//! The results airlock end to end on real Docker, through `basho` as researchers and checkers
//! run it: a table with a small cell and a copied dataset row is flagged at the site, returned,
//! fixed and resubmitted, approved by two different checkers and downloaded with the reviewed
//! digest; a rejected request never leaves; bad requests are refused with nothing stored at the
//! site.

use std::process::Output;

use basho_orchestrator::store::Role;
use basho_tests::federation::Federation;
use basho_tests::sessions::{self, text, token};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// `basho results ARGS --output json` with `token`.
async fn results(fed: &Federation, token: &str, args: &[&str]) -> Output {
    let mut c = sessions::basho(fed, token);
    c.arg("results").args(args).args(["--output", "json"]);
    sessions::run(c).await
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

fn failed_with(out: &Output, code: &str) {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(code),
        "expected {code}: {}",
        text(&out.stderr)
    );
}

/// Files in the site's airlock store.
fn stored(fed: &Federation) -> usize {
    let c = fed.site_config("tohoku");
    let root = c.airlock.store_path(&c.paths.state_dir).join("sha256");
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    dirs.flatten()
        .map(|d| std::fs::read_dir(d.path()).map(|f| f.count()).unwrap_or(0))
        .sum()
}

async fn write(fed: &Federation, container: &str, name: &str, content: &str) {
    let script = format!("printf '%s' \"$1\" > /results/{name}");
    let (code, out) = basho_tests::exec(
        &fed.docker,
        container,
        &["sh", "-c", &script, "sh", content],
    )
    .await;
    assert_eq!(code, 0, "{out}");
}

fn checks(file: &Value) -> Vec<String> {
    file["checked"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_returned_fixed_approved_twice_and_downloaded_as_reviewed() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let ws = fed.create_running("P-0141", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let container = fed.containers(&id).await.remove(0);
    let alice = token(&fed, Role::Researcher, Some("alice")).await;
    let bob = token(&fed, Role::Researcher, Some("bob")).await;
    let carol = token(&fed, Role::OutputChecker, Some("carol")).await;
    let dave = token(&fed, Role::OutputChecker, Some("dave")).await;
    let alice_checker = token(&fed, Role::OutputChecker, Some("alice")).await;

    // A copied record (the dataset's first row) and a count of 3.
    let flagged = "record,age_band,sex,prefecture,icd10\n\
                   JGAD000101-0,40-49,F,Miyagi,E11\n\
                   total,all,all,all,3\n";
    write(&fed, &container, "table.csv", flagged).await;
    let out = results(
        &fed,
        &alice,
        &[
            "request",
            &id,
            "table.csv",
            "--justification",
            "counts for the paper",
        ],
    )
    .await;
    let r = json_of(&out);
    let rr = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["state"], "submitted");
    assert_eq!(r["compared"]["tables"], 1, "{r}");
    let file = &r["files"][0];
    let found = checks(file);
    assert!(found.contains(&"record_copy".into()), "{found:?}");
    assert!(found.contains(&"small_cell".into()), "{found:?}");
    let small = file["checked"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "small_cell")
        .unwrap();
    assert_eq!(
        (small["row"].as_u64(), small["column"].as_str()),
        (Some(2), Some("icd10"))
    );
    assert_eq!(stored(&fed), 1, "the copy under review is kept at the site");
    // The table as people read it names both findings.
    let mut c = sessions::basho(&fed, &carol);
    c.args(["results", "show", &rr]);
    let shown = text(&sessions::run(c).await.stdout);
    assert!(
        shown.contains("RecordCopy") && shown.contains("SmallCell"),
        "{shown}"
    );

    // The owner never reviews, even with a checker's token; a checker returns it.
    let out = results(&fed, &alice_checker, &["review", &rr, "--approve"]).await;
    failed_with(&out, "own_request");
    let out = results(&fed, &carol, &["review", &rr, "--return"]).await;
    failed_with(&out, "comment_required");
    let r = json_of(
        &results(
            &fed,
            &carol,
            &[
                "review",
                &rr,
                "--return",
                "--comment",
                "suppress the 3; drop the record",
            ],
        )
        .await,
    );
    assert_eq!(r["state"], "returned");

    // A change in /results after the request is not what was reviewed; the fix is resubmitted.
    let fixed = "age_band,count\n40-49,25\n50-59,31\n";
    write(&fed, &container, "table.csv", fixed).await;
    let r = json_of(&results(&fed, &alice, &["submit", &rr, "table.csv"]).await);
    assert_eq!(
        (r["state"].as_str(), r["round"].as_u64()),
        (Some("submitted"), Some(2))
    );
    assert_eq!(checks(&r["files"][0]), Vec::<String>::new(), "{r}");
    let digest = hex(&Sha256::digest(fixed.as_bytes()));
    assert_eq!(r["files"][0]["sha256"], digest);

    // Not downloadable before two approvals; one checker twice is one approval.
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().to_str().unwrap();
    failed_with(
        &results(&fed, &alice, &["download", &rr, "-o", dl]).await,
        "not_approved",
    );
    json_of(&results(&fed, &carol, &["review", &rr, "--approve"]).await);
    failed_with(
        &results(&fed, &carol, &["review", &rr, "--approve"]).await,
        "already_reviewed",
    );
    let r = json_of(
        &results(
            &fed,
            &dave,
            &["review", &rr, "--approve", "--comment", "fine"],
        )
        .await,
    );
    assert_eq!(r["state"], "approved");

    // Another researcher sees nothing; the owner downloads the reviewed bytes.
    failed_with(&results(&fed, &bob, &["show", &rr]).await, "not_found");
    failed_with(
        &results(&fed, &bob, &["download", &rr, "-o", dl]).await,
        "not_found",
    );
    let saved = json_of(&results(&fed, &alice, &["download", &rr, "-o", dl]).await);
    assert_eq!(saved[0]["sha256"], digest);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("table.csv")).unwrap(),
        fixed
    );
    let r = json_of(&results(&fed, &alice, &["show", &rr]).await);
    assert_eq!(r["state"], "released");

    // A second request, rejected: it never leaves.
    write(&fed, &container, "other.csv", "age_band,count\n40-49,12\n").await;
    let r2 = json_of(
        &results(
            &fed,
            &alice,
            &["request", &id, "other.csv", "--justification", "more"],
        )
        .await,
    );
    let rr2 = r2["id"].as_str().unwrap().to_owned();
    let r2 = json_of(
        &results(
            &fed,
            &carol,
            &[
                "review",
                &rr2,
                "--reject",
                "--comment",
                "not in the protocol",
            ],
        )
        .await,
    );
    assert_eq!(r2["state"], "rejected");
    failed_with(
        &results(&fed, &alice, &["download", &rr2, "-o", dl]).await,
        "not_approved",
    );
    failed_with(
        &results(&fed, &dave, &["review", &rr2, "--approve"]).await,
        "not_reviewable",
    );

    // Bad requests: refused with a code, nothing kept at the site.
    let before = stored(&fed);
    let (code, out) = basho_tests::exec(
        &fed.docker,
        &container,
        &[
            "sh",
            "-c",
            "ln -sf /etc/passwd /results/link.csv && mkfifo /results/pipe.csv",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for (name, code) in [
        ("../etc/passwd", "invalid_path"),
        ("/etc/passwd", "invalid_path"),
        ("link.csv", "not_a_file"),
        ("pipe.csv", "not_a_file"),
        ("missing.csv", "no_such_file"),
    ] {
        let out = results(
            &fed,
            &alice,
            &["request", &id, name, "--justification", "x"],
        )
        .await;
        failed_with(&out, code);
    }
    for (who, justification, code) in [
        (&alice, " ", "invalid_request"),
        (&bob, "mine", "not_found"),
    ] {
        let args = [
            "request",
            &id,
            "table.csv",
            "--justification",
            justification,
        ];
        failed_with(&results(&fed, who, &args).await, code);
    }
    assert_eq!(
        stored(&fed),
        before,
        "a refused request keeps nothing at the site"
    );

    // Every step is in the audit chain, and the site recorded what it took.
    let admin = token(&fed, Role::Admin, None).await;
    let api = basho_tests::api::Api::new(fed.api.base.clone(), &admin);
    let (s, page) = api.call(Method::GET, "/v1/audit?limit=1000", None).await;
    assert!(s.is_success());
    let actions: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == rr.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "release_requested",
            "release_reviewed",
            "release_submitted",
            "release_reviewed",
            "release_reviewed",
            "release_download_started",
            "release_downloaded",
        ],
        "{actions:?}"
    );
    let site_log = std::fs::read_to_string(site_audit_path(&fed)).unwrap();
    assert!(site_log.contains("release_intake") && site_log.contains(&digest));
    assert!(site_log.contains("release_fetch"));

    // `basho audit egress` puts what the owner read in sessions beside what the airlock released.
    let mut c = sessions::basho(&fed, &admin);
    c.args(["audit", "egress", "--workspace", &id, "--output", "json"]);
    let egress = json_of(&sessions::run(c).await);
    assert_eq!(egress[0]["workspace"], id.as_str());
    assert_eq!(egress[0]["release_requests"], 2);
    assert_eq!(egress[0]["released_files"], 1);
    assert_eq!(egress[0]["released_bytes"], fixed.len());

    // Once the workspace has ended, nothing more is asked; what was released stays released.
    let (s, _) = api
        .call(Method::DELETE, &format!("/v1/workspaces/{id}"), None)
        .await;
    assert!(s.is_success());
    let out = results(
        &fed,
        &alice,
        &["request", &id, "table.csv", "--justification", "late"],
    )
    .await;
    failed_with(&out, "workspace_not_running");
    let r = json_of(&results(&fed, &alice, &["show", &rr]).await);
    assert_eq!(r["state"], "released");
    fed.shutdown().await;
}

fn site_audit_path(fed: &Federation) -> std::path::PathBuf {
    let c = fed.site_config("tohoku");
    c.paths.state_dir.join(basho_agent::site_audit::FILE)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_can_close_port_forwards_and_cap_what_an_exec_prints() {
    let Some(fed) = Federation::start_with(|_, c| {
        c.sessions.allow_port_forward = false;
        c.sessions.exec_output_limit_bytes = Some(1000);
    })
    .await
    else {
        return;
    };
    let ws = fed.create_running("P-0142", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let alice = token(&fed, Role::Researcher, Some("alice")).await;

    // 5000 bytes asked for, 1000 printed, and the session says why it ended.
    let mut c = sessions::basho(&fed, &alice);
    c.args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "head -c 5000 /dev/zero | tr '\\0' x",
    ]);
    let out = sessions::run(c).await;
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 1000);
    assert!(
        text(&out.stderr).contains("exec output limit"),
        "{}",
        text(&out.stderr)
    );
    // Under the limit, nothing changes.
    let mut c = sessions::basho(&fed, &alice);
    c.args(["exec", &id, "--", "echo", "fine"]);
    let out = sessions::run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "fine");

    // A port-forward is refused before anything runs.
    let spec = basho_core::tunnel::SessionSpec {
        kind: basho_core::tunnel::SessionKind::Forward,
        port: 8000,
        ..basho_core::tunnel::SessionSpec::exec(Vec::<String>::new())
    };
    let err = fed
        .session(&alice, "alice", &id, &spec)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("forward_disabled"), "{err}");

    // The audit log counts what the sessions sent out.
    let admin = token(&fed, Role::Admin, None).await;
    let mut c = sessions::basho(&fed, &admin);
    c.args(["audit", "egress", "--workspace", &id, "--output", "json"]);
    let egress = json_of(&sessions::run(c).await);
    assert_eq!(egress[0]["sessions"], 2);
    assert_eq!(egress[0]["forwards"], 0, "a refused forward sent nothing");
    let out = egress[0]["session_bytes_out"].as_u64().unwrap();
    assert!((1000..1100).contains(&out), "{out}");
    fed.shutdown().await;
}
