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
use serde_json::{Value, json};

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
    let digest = basho_core::digest::sha256_hex(fixed.as_bytes());
    assert_eq!(r["files"][0]["sha256"], digest);

    // Not downloadable before two approvals; one checker twice is one approval.
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet is made.
    let out_dir = dir.path().join("out/nested");
    let dl = out_dir.to_str().unwrap();
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

    // Another researcher sees nothing; the owner downloads the reviewed bytes, whatever
    // /results holds by now.
    write(&fed, &container, "table.csv", "age_band,count\n40-49,3\n").await;
    failed_with(&results(&fed, &bob, &["show", &rr]).await, "not_found");
    failed_with(
        &results(&fed, &bob, &["download", &rr, "-o", dl]).await,
        "not_found",
    );
    let saved = json_of(&results(&fed, &alice, &["download", &rr, "-o", dl]).await);
    assert_eq!(saved[0]["sha256"], digest);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("table.csv")).unwrap(),
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

/// Each bad request: the status and code it answers.
async fn expect(
    api: &basho_tests::api::Api,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &str,
) {
    let (s, v) = api.call(method.clone(), path, body.as_ref()).await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (status, Some(code)),
        "{method} {path}: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_reviews_get_a_code_and_the_site_keeps_nothing() {
    let Some(fed) = Federation::start_with(|_, c| {
        c.airlock.max_files = 3;
        c.airlock.max_bytes = 4096;
    })
    .await
    else {
        return;
    };
    let ws = fed.create_running("P-0143", &["JGAD000101"]).await;
    let id = ws["id"].as_str().unwrap().to_owned();
    let container = fed.containers(&id).await.remove(0);
    let tok = async |role, sub: Option<&str>| {
        basho_tests::api::Api::new(fed.api.base.clone(), token(&fed, role, sub).await)
    };
    let alice = tok(Role::Researcher, Some("alice")).await;
    let bob = tok(Role::Researcher, Some("bob")).await;
    let carol = tok(Role::OutputChecker, Some("carol")).await;
    let dave = tok(Role::OutputChecker, Some("dave")).await;
    let auditor = tok(Role::Auditor, None).await;
    let platform = &fed.api;
    let setup = "printf 'age_band,count\\n40-49,25\\n' > /results/good.csv && \
                 printf 'PK\\003\\004\\024\\000\\000\\000' > /results/x.zip && \
                 mkdir -p /results/sub && head -c 5000 /dev/zero | tr '\\0' a > /results/big.txt";
    let (code, out) = basho_tests::exec(&fed.docker, &container, &["sh", "-c", setup]).await;
    assert_eq!(code, 0, "{out}");
    let create = format!("/v1/workspaces/{id}/release-requests");
    let proof = |sub: &str| fed.id_proof(sub, &id, &basho_core::proof::fresh_seed());
    let ask = |files: Value| {
        Some(json!({"files": files, "justification": "why", "proof": proof("alice")}))
    };
    let before = stored(&fed);

    // Asking: who, what and how much.
    for (api, path, body, status, code) in [
        (
            &alice,
            create.clone(),
            Some(json!({"files": ["good.csv"], "justification": "why"})),
            403,
            "proof_required",
        ),
        (
            platform,
            create.clone(),
            Some(json!({"files": ["good.csv"], "justification": "why", "proof": proof("bob")})),
            403,
            "proof_refused",
        ),
        (
            &alice,
            "/v1/workspaces/ws-nope/release-requests".to_owned(),
            ask(json!(["good.csv"])),
            404,
            "not_found",
        ),
        (
            &bob,
            create.clone(),
            ask(json!(["good.csv"])),
            404,
            "not_found",
        ),
        (
            &carol,
            create.clone(),
            ask(json!(["good.csv"])),
            403,
            "forbidden",
        ),
        (
            &auditor,
            create.clone(),
            ask(json!(["good.csv"])),
            403,
            "forbidden",
        ),
        (
            &alice,
            create.clone(),
            Some(json!({"files": ["good.csv"], "justification": "x", "extra": 1})),
            422,
            "invalid_request",
        ),
        (
            &alice,
            create.clone(),
            ask(json!([])),
            422,
            "invalid_request",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["good.csv", "good.csv"])),
            422,
            "invalid_request",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(
                (0..1001).map(|i| format!("f{i}")).collect::<Vec<_>>()
            )),
            422,
            "invalid_request",
        ),
        (
            &alice,
            create.clone(),
            Some(json!({"files": ["good.csv"], "justification": "x".repeat(4001)})),
            422,
            "invalid_request",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["a\u{0}b.csv"])),
            422,
            "invalid_path",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["sub"])),
            422,
            "not_a_file",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["sub/../good.csv"])),
            422,
            "invalid_path",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["big.txt"])),
            422,
            "too_large",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["good.csv", "x.zip", "big.txt", "sub"])),
            422,
            "too_large",
        ),
        (
            &alice,
            create.clone(),
            ask(json!(["good.csv", "missing.csv"])),
            422,
            "no_such_file",
        ),
    ] {
        expect(api, Method::POST, &path, body, status, code).await;
    }
    assert_eq!(
        stored(&fed),
        before,
        "a refused request keeps nothing at the site"
    );

    // A request with a refused archive beside a good table.
    let (s, r) = alice
        .call(
            Method::POST,
            &create,
            ask(json!(["good.csv", "x.zip"])).as_ref(),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{r}");
    assert_eq!(r["files"][1]["checked"]["refused"], true, "{r}");
    let rr = r["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/release-requests/{rr}");
    let reviews = format!("{one}/reviews");
    let approve = Some(json!({"verdict": "approve"}));
    for (api, method, path, body, status, code) in [
        (
            &alice,
            Method::GET,
            "/v1/release-requests?state=bogus".to_owned(),
            None,
            422,
            "invalid_request",
        ),
        (
            &alice,
            Method::GET,
            "/v1/release-requests/rr-nope".to_owned(),
            None,
            404,
            "not_found",
        ),
        (&bob, Method::GET, one.clone(), None, 404, "not_found"),
        (
            &alice,
            Method::POST,
            reviews.clone(),
            approve.clone(),
            403,
            "forbidden",
        ),
        (
            platform,
            Method::POST,
            reviews.clone(),
            approve.clone(),
            403,
            "forbidden",
        ),
        (
            &carol,
            Method::POST,
            reviews.clone(),
            Some(json!({"verdict": "maybe"})),
            422,
            "invalid_request",
        ),
        (
            &carol,
            Method::POST,
            reviews.clone(),
            Some(json!({"verdict": "approve", "file": "nope.csv"})),
            422,
            "no_such_file",
        ),
        (
            &carol,
            Method::POST,
            reviews.clone(),
            Some(json!({"verdict": "approve", "file": "x.zip"})),
            422,
            "invalid_request",
        ),
        (
            &carol,
            Method::POST,
            reviews.clone(),
            Some(json!({"verdict": "reject"})),
            422,
            "comment_required",
        ),
        (
            &alice,
            Method::POST,
            format!("{one}/submit"),
            Some(json!({})),
            409,
            "not_resubmittable",
        ),
        (
            &alice,
            Method::GET,
            format!("{one}/files/good.csv"),
            None,
            409,
            "not_approved",
        ),
    ] {
        expect(api, method, &path, body, status, code).await;
    }
    for api in [&carol, &dave] {
        let (s, v) = api.call(Method::POST, &reviews, approve.as_ref()).await;
        assert!(s.is_success(), "{v}");
    }
    for (api, path, status, code) in [
        (&alice, format!("{one}/files/x.zip"), 409, "not_approved"),
        (&alice, format!("{one}/files/nope.csv"), 404, "not_found"),
        (
            &alice,
            format!("{one}/files/..%2F..%2Fetc%2Fpasswd"),
            404,
            "not_found",
        ),
        (&carol, format!("{one}/files/good.csv"), 403, "forbidden"),
        (&bob, format!("{one}/files/good.csv"), 404, "not_found"),
    ] {
        expect(api, Method::GET, &path, None, status, code).await;
    }
    expect(
        &carol,
        Method::POST,
        &reviews,
        approve.clone(),
        409,
        "not_reviewable",
    )
    .await;
    expect(
        &alice,
        Method::POST,
        &format!("{one}/withdraw"),
        None,
        409,
        "not_withdrawable",
    )
    .await;
    // The platform downloads on the owner's behalf.
    let (s, _) = platform
        .call(Method::GET, &format!("{one}/files/good.csv"), None)
        .await;
    assert!(s.is_success());

    // A withdrawn request is reviewed no more.
    let (_, r2) = alice
        .call(Method::POST, &create, ask(json!(["good.csv"])).as_ref())
        .await;
    let two = format!("/v1/release-requests/{}", r2["id"].as_str().unwrap());
    let (s, _) = alice
        .call(Method::POST, &format!("{two}/withdraw"), None)
        .await;
    assert!(s.is_success());
    expect(
        &alice,
        Method::POST,
        &format!("{two}/withdraw"),
        None,
        409,
        "not_withdrawable",
    )
    .await;
    expect(
        &carol,
        Method::POST,
        &format!("{two}/reviews"),
        approve,
        409,
        "not_reviewable",
    )
    .await;
    fed.shutdown().await;
}
