//! Hostile input against a running federation (orchestrator and three Docker sites over real
//! HTTP): forged and bent visas, path-like and look-alike identifiers, absurd resources, malformed
//! and oversized JSON, tokens used where they do not belong, replayed revoked visas, researcher
//! tokens reaching for others' workspaces. Every attack must end in a 4xx with the contract's
//! error body and its expected code, start no container and leave no record, and every
//! authenticated refusal must add an entry to the audit log. Nothing is skipped: a missing
//! binary or an endpoint that answers 404 fails the test. `docs/security.md` keeps the figures
//! this test prints.

use std::collections::BTreeMap;
use std::time::Duration;

use basho_core::visa::mint::Visa;
use basho_tests::federation::Federation;
use jsonwebtoken::EncodingKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "hostile/cases.rs"]
mod cases;
#[path = "hostile/kit.rs"]
mod kit;

use cases::attacks;
use kit::{Attack, Client, Kit};

/// Attacks that are not refused today, with the answer they get and where the fix belongs.
/// Each is still sent and counted as not refused; once it is refused the test fails until its
/// line here is removed, so a fix cannot go unnoticed.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// Refusals that leave no audit entry today, and where the entry belongs. Like [`KNOWN_BUGS`],
/// an entry here that starts being audited fails the test until it is removed.
const AUDIT_GAPS: &[(&str, &str)] = &[];

fn known(list: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    list.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// A token of `role` made with `basho-orchestrator token create` on the federation's store.
fn stored_token(fed: &Federation, role: &str, subject: Option<&str>) -> String {
    let bin = basho_tests::binary("basho-orchestrator");
    assert!(
        bin.exists(),
        "{} is not built; scripts/test builds every binary first",
        bin.display()
    );
    let config = fed.dir.path().join("orchestrator-hostile.toml");
    std::fs::write(&config, toml::to_string(fed.config()).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["token", "create", "--config"])
        .arg(&config)
        .args(["--role", role]);
    if let Some(s) = subject {
        cmd.args(["--subject", s]);
    }
    let out = cmd.output().expect("basho-orchestrator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`basho-orchestrator token create --role {role}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // The token is the one long hex word of the output, whatever surrounds it.
    let token = stdout
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() >= 32)
        .unwrap_or_else(|| panic!("no token in the output of `token create`: {stdout}"));
    token.to_owned()
}

/// Reads the audit log after `after`, or `None` when it cannot be read.
async fn audit_after(client: &Client, token: &str, after: i64) -> Option<Vec<Value>> {
    let a = client
        .json(
            Method::GET,
            &format!("/v1/audit?after={after}"),
            token,
            None,
        )
        .await;
    if a.status != StatusCode::OK {
        return None;
    }
    let entries = a.body.get("entries").or(Some(&a.body))?.as_array()?.clone();
    Some(entries)
}

fn last_seq(entries: &[Value], after: i64) -> i64 {
    entries
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .unwrap_or(after)
}

/// Whether audit entry `e` records a refusal answered with `status` and `code`: an action such
/// as `workspace_refused` or `auth_failed` whose detail carries that code or status.
fn records_refusal(e: &Value, status: u16, code: &str) -> bool {
    let action = e["action"].as_str().unwrap_or_default();
    let refusal = action.ends_with("_refused") || action.ends_with("_failed");
    let detail = &e["detail"];
    refusal && (detail["code"] == code || detail["status"] == status)
}

/// Whether an attack of this kind must leave an audit entry: refused creates
/// (`workspace_refused`) and refused tokens (`auth_failed`).
fn must_audit(a: &Attack) -> bool {
    a.project.is_some() || a.category == "auth"
}

#[derive(Default)]
struct Tally {
    tried: usize,
    refused: usize,
    audited: usize,
    by_category: BTreeMap<&'static str, (usize, usize)>,
    failures: Vec<String>,
    known: Vec<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_and_leaves_nothing_behind() {
    let Some(fed) = Federation::start().await else {
        return;
    };
    let client = Client {
        base: fed.api.base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let platform = fed.config().platform_tokens[0].clone();
    let agents: BTreeMap<String, String> = fed
        .config()
        .agents
        .iter()
        .map(|a| (a.site.to_string(), a.token.clone()))
        .collect();
    let kit = Kit {
        fed: &fed,
        prefix: basho_tests::unique("H"),
        ec: EncodingKey::from_ec_pem(fed.issuer.ec_pem().as_bytes()).unwrap(),
    };

    // The control: the body every attack bends is valid, and its workspace belongs to alice.
    let control_project = format!("{}-control", kit.prefix);
    let mut control = kit.body(0);
    control["project"] = json!(control_project);
    let created = client
        .json(Method::POST, "/v1/workspaces", &platform, Some(control))
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "control: {}",
        created.body
    );
    let control_id = created.body["id"].as_str().unwrap().to_owned();
    fed.api
        .wait_state(&control_id, "running", Duration::from_secs(60))
        .await;

    let mut table = attacks(&kit, &platform, &agents);

    // Revoked jti replay: revoke a visa by its jti, then present it.
    let jti = format!("revoked-{}", kit.prefix);
    let revoked_visa = kit.visa(&{
        let mut v = Visa::new("alice", "JGAD000101");
        v.jti = Some(jti.clone());
        v
    });
    let revoke = async |body: Value| {
        let r = client
            .json(Method::POST, "/v1/revocations", &platform, Some(body))
            .await;
        assert!(r.status.is_success(), "revocation: {} {}", r.status, r.body);
    };
    revoke(json!({"visa_jti": jti, "reason": "dac-revoked"})).await;
    table.create_visas(
        "replayed revoked jti",
        403,
        "visa_revoked",
        vec![revoked_visa],
    );
    // A create for a project whose approval ended.
    let project = kit.project(table.next());
    revoke(json!({"project": project, "reason": "project-ended"})).await;
    table.create(
        "create for a revoked project",
        "visa",
        403,
        "project_revoked",
        |_| {},
    );
    assert_eq!(
        table.attacks.last().unwrap().project.as_ref(),
        Some(&project)
    );

    // A researcher token reading another researcher's workspace.
    let mallory = stored_token(&fed, "researcher", Some("mallory"));
    table.request(
        "researcher token reading someone else's workspace",
        "auth",
        Method::GET,
        format!("/v1/workspaces/{control_id}"),
        Some(mallory.clone()),
        vec![],
        404,
        "not_found",
    );
    table.attacks.last_mut().unwrap().or = Some((403, "forbidden"));
    table.request(
        "researcher token deleting someone else's workspace",
        "auth",
        Method::DELETE,
        format!("/v1/workspaces/{control_id}"),
        Some(mallory.clone()),
        vec![],
        403,
        "forbidden",
    );
    table.attacks.last_mut().unwrap().or = Some((404, "not_found"));
    let n = table.next();
    let body = kit.body(n).to_string().into_bytes();
    table.request(
        "researcher token creating a workspace",
        "auth",
        Method::POST,
        "/v1/workspaces".into(),
        Some(mallory),
        body,
        403,
        "forbidden",
    );
    table.attacks.last_mut().unwrap().project = Some(kit.project(n));

    // The audit log: the platform token reads it, or an auditor's token does.
    let auditor = match client.json(Method::GET, "/v1/audit", &platform, None).await {
        a if a.status == StatusCode::OK => platform.clone(),
        a if a.status == StatusCode::NOT_FOUND => panic!("GET /v1/audit answers 404: {}", a.body),
        _ => stored_token(&fed, "auditor", None),
    };
    let Some(entries) = audit_after(&client, &auditor, 0).await else {
        panic!("an auditor token cannot read GET /v1/audit")
    };
    let mut seq = last_seq(&entries, 0);

    let mut tally = Tally::default();
    for a in &table.attacks {
        let got = client
            .send(
                a.method.clone(),
                &a.path,
                a.token.as_deref(),
                &a.headers,
                a.body.clone(),
            )
            .await;
        tally.tried += 1;
        let cat = tally.by_category.entry(a.category).or_default();
        cat.0 += 1;
        let code = got.body["error"]["code"].as_str().unwrap_or_default();
        let message = got.body["error"]["message"].as_str().unwrap_or_default();
        let expected = |(status, c): (u16, &str)| got.status.as_u16() == status && code == c;
        let refused = got.status.is_client_error() && !message.is_empty();
        let ok = refused && (expected((a.status, a.code)) || a.or.is_some_and(expected));
        if ok {
            tally.refused += 1;
            cat.1 += 1;
        }
        match (ok, known(KNOWN_BUGS, a.name)) {
            (true, None) => {}
            (true, Some(_)) => tally.failures.push(format!(
                "{}: refused now; remove it from KNOWN_BUGS",
                a.name
            )),
            (false, Some(why)) => {
                println!("KNOWN BUG: {}: {why}", a.name);
                tally.known.push(a.name);
                // Whatever it created is removed, so the checks below judge the other attacks.
                if let Some(id) = got.body["id"].as_str() {
                    fed.api.delete(id).await;
                    basho_tests::wait_for(
                        "the known bug's workspace stopped",
                        Duration::from_secs(60),
                        || async {
                            (fed.api.workspace(id).await["state"] == "stopped").then_some(())
                        },
                    )
                    .await;
                }
            }
            (false, None) => tally.failures.push(format!(
                "{}: expected {} {}, got {} {}",
                a.name, a.status, a.code, got.status, got.body
            )),
        }
        let entries = audit_after(&client, &auditor, seq)
            .await
            .unwrap_or_default();
        seq = last_seq(&entries, seq);
        let noted = entries
            .iter()
            .any(|e| records_refusal(e, got.status.as_u16(), code));
        let gap = known(AUDIT_GAPS, a.name);
        if noted {
            tally.audited += 1;
        }
        match (noted, gap) {
            (true, Some(_)) => tally.failures.push(format!(
                "{}: audited now; remove it from AUDIT_GAPS",
                a.name
            )),
            (false, Some(why)) => println!("AUDIT GAP: {}: {why}", a.name),
            (false, None) if ok && must_audit(a) => tally
                .failures
                .push(format!("{}: refused without an audit entry", a.name)),
            (false, None) if ok => println!("not audited: {}", a.name),
            _ => {}
        }
    }

    for (cat, (tried, refused)) in &tally.by_category {
        println!("hostile: {cat}: {tried} tried, {refused} refused");
    }
    println!("hostile: {} refusals audited", tally.audited);
    println!(
        "hostile: {} attacks tried, {} refused",
        tally.tried, tally.refused
    );

    // An agent reporting on another site's workspace under its own site's name is answered (the
    // batch is well-formed) but changes nothing: the control runs at tohoku, not at ncbn.
    let ncbn = fed.site("ncbn");
    let spoof = client
        .json(
            Method::POST,
            "/v1/agent/observations",
            &agents[&ncbn],
            Some(
                json!({"site": ncbn, "observations": [{"workspace": control_id,
                "state": "failed", "message": "spoofed", "at": chrono::Utc::now()}]}),
            ),
        )
        .await;
    assert_eq!(spoof.status, StatusCode::OK, "{}", spoof.body);
    assert_eq!(spoof.body["applied"], 0, "{}", spoof.body);
    assert_eq!(
        fed.api.workspace(&control_id).await["state"],
        "running",
        "another site's report moved the control"
    );

    // Nothing started, nothing stored: give the agents time to act on anything that got through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for a in &table.attacks {
        let Some(project) = &a.project else { continue };
        if tally.known.contains(&a.name) {
            continue;
        }
        let listed = client
            .json(
                Method::GET,
                &format!("/v1/workspaces?project={project}"),
                &platform,
                None,
            )
            .await;
        if listed.body != json!([]) {
            tally
                .failures
                .push(format!("{}: left a workspace: {}", a.name, listed.body));
        }
        let containers =
            basho_tests::containers_labelled(&fed.docker, basho_core::LABEL_PROJECT, project).await;
        if !containers.is_empty() {
            tally
                .failures
                .push(format!("{}: started containers {containers:?}", a.name));
        }
    }
    let all = client
        .json(Method::GET, "/v1/workspaces", &platform, None)
        .await;
    let ids: Vec<&str> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            // A known bug's workspace was deleted above; it must have stopped.
            let known_project = table.attacks.iter().any(|a| {
                tally.known.contains(&a.name) && a.project.as_deref() == w["project"].as_str()
            });
            !(known_project && w["state"] == "stopped")
        })
        .filter_map(|w| w["id"].as_str())
        .collect();
    if ids != vec![control_id.as_str()] {
        tally.failures.push(format!(
            "workspaces other than the control exist: {}",
            all.body
        ));
    }
    let mut containers = Vec::new();
    for name in ["tohoku", "ncbn", "bbj"] {
        containers.extend(
            basho_tests::containers_labelled(&fed.docker, basho_core::LABEL_SITE, &fed.site(name))
                .await,
        );
    }
    let control_containers = fed.containers(&control_id).await;
    if containers != control_containers {
        tally.failures.push(format!(
            "containers other than the control's exist: {containers:?} (control: {control_containers:?})"
        ));
    }

    let (status, _) = fed.api.delete(&control_id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fed.shutdown().await;
    assert!(
        tally.failures.is_empty(),
        "{} of {} attacks were not handled as expected:\n  {}",
        tally.failures.len(),
        tally.tried,
        tally.failures.join("\n  ")
    );
    assert!(tally.tried >= 45, "the suite tries at least 45 attacks");
}
