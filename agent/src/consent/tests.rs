//! Releases made on real files: rows and samples removed (VCF with the real `bcftools`),
//! every other byte kept, a withdrawn ID left anywhere stops the release, and the current
//! release only ever changes to a complete one.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;

struct Site {
    _dir: tempfile::TempDir,
    data: PathBuf,
    releases: PathBuf,
    id: Ident,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("tables")).unwrap();
    std::fs::write(
        data.join("tables/records.csv"),
        "participant_id,age,note\r\nP1,40,\"a, b\"\r\nP2,57,x\r\nP20,33,\"multi\nline\"\r\n",
    )
    .unwrap();
    std::fs::write(
        data.join("visits.tsv"),
        "visit\tparticipant_id\nV1\tP2\nV2\tP1\n",
    )
    .unwrap();
    std::fs::write(data.join("README.txt"), "synthetic cohort\n").unwrap();
    Site {
        releases: dir.path().join("releases"),
        data,
        id: Ident::parse("JGAD000101").unwrap(),
        _dir: dir,
    }
}

impl Site {
    fn source(&self) -> Source<'_> {
        Source {
            original: &self.data,
            participant_column: Some("participant_id"),
            filter_command: &[],
        }
    }

    fn releases(&self) -> Releases {
        Releases::new(&self.releases, &self.id)
    }
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_withdrawal_makes_the_next_release_without_the_participants_rows() {
    let s = site();
    let r = s.releases();
    assert_eq!(
        r.current(&s.data),
        (1, s.data.clone()),
        "release 1 is the catalog's path"
    );
    let out = r
        .withdraw(
            &s.source(),
            &ids(&["P2", "P9"]),
            "consent withdrawn",
            Utc::now(),
        )
        .unwrap();
    assert_eq!(out.previous, 1);
    assert_eq!(out.unknown, ["P9"], "reported, the others applied");
    let m = out.made.unwrap();
    assert_eq!(
        (
            m.release,
            m.parent,
            m.files,
            m.rows,
            m.removed,
            m.participants,
            m.withdrawn
        ),
        (2, 1, 3, 3, 2, 2, 1)
    );
    assert_eq!(m.withdrawal_digest, ids_digest(&ids(&["P2", "P9"])));
    let (n, dir) = r.current(&s.data);
    assert_eq!(n, 2);
    // Every byte of the rows kept, as it was: quoting, CRLF, a quoted newline.
    assert_eq!(
        std::fs::read_to_string(dir.join("tables/records.csv")).unwrap(),
        "participant_id,age,note\r\nP1,40,\"a, b\"\r\nP20,33,\"multi\nline\"\r\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("visits.tsv")).unwrap(),
        "visit\tparticipant_id\nV2\tP1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("README.txt")).unwrap(),
        "synthetic cohort\n"
    );
    // Release 1 is untouched; release 2 is read-only and listed.
    assert!(
        std::fs::read_to_string(s.data.join("tables/records.csv"))
            .unwrap()
            .contains("P2,57")
    );
    let mode = std::fs::metadata(dir.join("visits.tsv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "a release is read-only");
    assert_eq!(r.manifests(), std::slice::from_ref(&m));
    assert_eq!(r.withdrawn(), ids(&["P2", "P9"]));
    // The next withdrawal starts from release 2, and the check covers everyone withdrawn.
    let out = r
        .withdraw(&s.source(), &ids(&["P1"]), "second", Utc::now())
        .unwrap();
    let m3 = out.made.unwrap();
    assert_eq!((m3.release, m3.parent, m3.participants), (3, 2, 1));
    // Nothing of the IDs is in what the manifests say.
    let manifests = std::fs::read_to_string(r.root.join("3.json")).unwrap();
    assert!(!manifests.contains("\"P1\""), "{manifests}");
}

#[test]
fn ids_none_of_which_are_held_make_no_release() {
    let s = site();
    let out = s
        .releases()
        .withdraw(&s.source(), &ids(&["P404"]), "x", Utc::now())
        .unwrap();
    assert_eq!((out.made, out.unknown.len()), (None, 1));
    assert_eq!(s.releases().current(&s.data).0, 1);
}

#[test]
fn an_id_left_anywhere_stops_the_release_and_the_current_one_stays() {
    let s = site();
    // A note naming P2 outside the participant column: the check finds it.
    std::fs::write(s.data.join("notes.txt"), "follow up with P2 next week\n").unwrap();
    let e = s
        .releases()
        .withdraw(&s.source(), &ids(&["P2"]), "x", Utc::now())
        .unwrap_err();
    assert!(
        matches!(e, ConsentError::Remains(ref at) if at.contains("notes.txt")),
        "{e}"
    );
    assert!(
        !e.to_string().contains("P2"),
        "the message names where, not who: {e}"
    );
    assert_eq!(s.releases().current(&s.data).0, 1);
    let left: Vec<_> = std::fs::read_dir(&s.releases().root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["withdrawn"], "nothing half-made is left");
    // A file named by the participant is found by its name.
    std::fs::remove_file(s.data.join("notes.txt")).unwrap();
    std::fs::write(s.data.join("P2.bam"), "reads").unwrap();
    let e = s
        .releases()
        .withdraw(&s.source(), &ids(&["P2"]), "x", Utc::now())
        .unwrap_err();
    assert!(e.to_string().contains("name of P2.bam"), "{e}");
}

#[test]
fn a_filter_command_handles_other_formats_and_its_failure_keeps_the_release() {
    let s = site();
    std::fs::write(s.data.join("notes.txt"), "P2 called\nP1 called\n").unwrap();
    // grep -v -w -F -f WITHDRAWN INPUT > OUTPUT, through sh for the redirection.
    let cmd: Vec<String> = [
        "sh",
        "-c",
        "grep -v -w -F -f \"$1\" \"$2\" > \"$3\"; test -f \"$3\"",
        "filter",
    ]
    .map(String::from)
    .to_vec();
    let source = Source {
        filter_command: &cmd,
        ..s.source()
    };
    let m = s
        .releases()
        .withdraw(&source, &ids(&["P2"]), "x", Utc::now())
        .unwrap()
        .made
        .unwrap();
    let (_, dir) = s.releases().current(&s.data);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "P1 called\n"
    );
    assert_eq!(m.release, 2);
    let failing: Vec<String> = ["false"].map(String::from).to_vec();
    let source = Source {
        filter_command: &failing,
        ..s.source()
    };
    let e = s
        .releases()
        .withdraw(&source, &ids(&["P1"]), "x", Utc::now())
        .unwrap_err();
    assert!(matches!(e, ConsentError::Filter(_)), "{e}");
    assert_eq!(s.releases().current(&s.data).0, 2);
}

#[test]
fn a_release_made_again_after_a_crash_replaces_the_half_made_one() {
    let s = site();
    let r = s.releases();
    std::fs::create_dir_all(r.root.join(".building-2/tables")).unwrap();
    std::fs::write(r.root.join(".building-2/tables/records.csv"), "half").unwrap();
    let m = r
        .withdraw(&s.source(), &ids(&["P2"]), "x", Utc::now())
        .unwrap()
        .made
        .unwrap();
    assert_eq!(m.release, 2);
    let (_, dir) = r.current(&s.data);
    assert!(
        std::fs::read_to_string(dir.join("tables/records.csv"))
            .unwrap()
            .starts_with("participant_id")
    );
    assert!(!r.root.join(".building-2").exists());
}

#[test]
fn malformed_id_lists_are_refused() {
    for bad in [
        vec![],
        vec!["".to_owned()],
        vec!["P 1".to_owned()],
        vec!["P1,P2".to_owned()],
    ] {
        assert!(check_ids(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(check_ids(&["P1".into(), "P1".into()]).unwrap().len(), 1);
}

/// Writes a small VCF with samples `samples` to `path` with bcftools (bgzipped for `.gz`).
fn vcf(path: &Path, samples: &[&str]) {
    let mut text = String::from("##fileformat=VCFv4.2\n##contig=<ID=1,length=1000>\n");
    text.push_str("##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n");
    text.push_str("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT");
    for s in samples {
        text.push('\t');
        text.push_str(s);
    }
    text.push_str("\n1\t100\t.\tA\tG\t.\tPASS\t.\tGT");
    for _ in samples {
        text.push_str("\t0|1");
    }
    text.push('\n');
    let plain = path.with_extension("src.vcf");
    std::fs::write(&plain, text).unwrap();
    let format = if path.to_string_lossy().ends_with(".gz") {
        "z"
    } else {
        "v"
    };
    let ok = std::process::Command::new("bcftools")
        .args(["view", "-O", format, "-o"])
        .arg(path)
        .arg(&plain)
        .status()
        .expect("bcftools runs (scripts/setup installs it)");
    assert!(ok.success());
    std::fs::remove_file(plain).unwrap();
}

#[test]
fn vcf_samples_are_removed_with_bcftools() {
    let s = site();
    std::fs::create_dir_all(s.data.join("vcf")).unwrap();
    vcf(&s.data.join("vcf/cohort.vcf.gz"), &["P1", "P2", "P3"]);
    vcf(&s.data.join("vcf/other.vcf"), &["P3", "P4"]);
    let m = s
        .releases()
        .withdraw(&s.source(), &ids(&["P2", "P4"]), "x", Utc::now())
        .unwrap()
        .made
        .unwrap();
    let (_, dir) = s.releases().current(&s.data);
    let samples = |f: &str| filter::vcf_samples(&dir.join(f)).ok().unwrap();
    assert_eq!(samples("vcf/cohort.vcf.gz"), ["P1", "P3"]);
    assert_eq!(samples("vcf/other.vcf"), ["P3"]);
    // Rows: P2's two; samples: two.
    assert_eq!(m.removed, 2 + 2);
}

#[test]
fn a_recorded_withdrawal_is_applied_answered_and_audited_without_its_ids() {
    let s = site();
    let catalog = crate::catalog::Catalog::default()
        .with_dataset(s.id.clone(), &s.data, None, &["https://dac.example"])
        .with_releases(&s.releases);
    let mut catalog = catalog;
    catalog.set_participant_column(&s.id, "participant_id");
    let spool = desk::Spool::new(&s.releases);
    // Bad input is refused before anything is recorded.
    let unknown = Ident::parse("JGAD999999").unwrap();
    for (dataset, ids, reason) in [
        (&unknown, vec!["P1".to_owned()], "x"),
        (&s.id, vec![], "x"),
        (&s.id, vec!["P 1".to_owned()], "x"),
        (&s.id, vec!["P1".to_owned()], " "),
    ] {
        assert!(
            spool
                .record(&catalog, dataset, &ids, reason, Utc::now())
                .is_err()
        );
    }
    assert!(spool.pending().is_empty());
    // A workspace launched on release 1 is said to be on an older one, and a copy of a row it
    // kept in /results is found.
    let root = s.releases.parent().unwrap().join("site");
    let dirs = crate::reconcile::hostdirs::HostDirs::new(
        crate::config::Paths::under(&root),
        crate::reconcile::hostdirs::Ownership::WorldWritable,
    );
    let record = crate::reconcile::hostdirs::WorkspaceRecord {
        id: "ws-1".into(),
        project: Ident::parse("P-0001").unwrap(),
        owner: "alice".into(),
        datasets: vec![s.id.clone()],
        expires_at: Utc::now(),
        releases: [(s.id.clone(), 1)].into(),
    };
    let prepared = dirs.prepare(&record).unwrap();
    std::fs::create_dir_all(prepared.results_dir.join("sub")).unwrap();
    std::fs::write(prepared.results_dir.join("sub/copy.csv"), "P2,57,x\n").unwrap();
    std::fs::write(prepared.work_dir.join("other.csv"), "P20,33\n").unwrap();
    std::fs::write(prepared.work_dir.join("P2.txt"), "about P2\n").unwrap();
    let r = spool
        .record(
            &catalog,
            &s.id,
            &["P2".into(), "P9".into()],
            "consent withdrawn",
            Utc::now(),
        )
        .unwrap();
    let mode = std::fs::metadata(s.releases.join(".requests").join(format!("{}.json", r.id)))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the request holds IDs: the site's eyes only"
    );
    assert_eq!(spool.pending(), std::slice::from_ref(&r));
    let a = spool.apply(&r, &catalog, &dirs);
    assert_eq!(spool.answer(&r.id), Some(a.clone()));
    assert!(spool.pending().is_empty());
    assert_eq!((a.previous, a.made.as_ref().unwrap().release), (1, 2));
    assert_eq!(
        (a.unknown.as_slice(), a.on_older.as_slice()),
        (&["P9".to_owned()][..], &["ws-1".to_owned()][..])
    );
    assert_eq!(
        a.hits,
        [(
            "ws-1".to_owned(),
            vec![
                "/work/P2.txt".to_owned(),
                "/results/sub/copy.csv".to_owned()
            ]
        )]
        .into()
    );
    let detail = desk::audit_detail(&r, &a).to_string();
    assert!(
        !detail.contains("\"P2\"") && !detail.contains("P9"),
        "{detail}"
    );
    assert!(
        detail.contains(&ids_digest(&ids(&["P2", "P9"]))),
        "{detail}"
    );
    // New launches mount release 2.
    let d = catalog.dataset(&s.id).unwrap();
    let (n, path) = catalog.current_release(&s.id, d);
    assert_eq!(n, 2);
    assert!(
        !std::fs::read_to_string(path.join("visits.tsv"))
            .unwrap()
            .contains("P2")
    );

    // What the orchestrator is told: releases, the withdrawal and the copies, never an ID (not
    // even in a file's name).
    let site = Ident::parse("tohoku").unwrap();
    let mounted = || [("ws-1".to_owned(), [(s.id.clone(), 1)].into())].into();
    let sent = report::build(&site, &catalog, &spool, mounted());
    let text = serde_json::to_string(&sent).unwrap();
    assert!(!text.contains("P2") && !text.contains("P9"), "{text}");
    let d = &sent.datasets[0];
    assert_eq!(d.current, 2);
    let made: Vec<(u32, Option<&str>)> = d
        .releases
        .iter()
        .map(|r| (r.release, r.withdrawal.as_deref()))
        .collect();
    assert_eq!(made, [(1, None), (2, Some(r.id.as_str()))]);
    assert_eq!(d.releases[0].digest, None, "release 1 is not measured yet");
    let w = &sent.withdrawals[0];
    assert_eq!(
        (w.participants, w.unknown, w.previous, w.release),
        (2, 1, 1, Some(2))
    );
    assert_eq!(w.participants_sha256, ids_digest(&ids(&["P2", "P9"])));
    assert_eq!(
        sent.copies["ws-1"],
        [
            "(a file whose name holds a withdrawn participant's ID)",
            "/results/sub/copy.csv"
        ]
    );
    // Release 1 measured: its figures are those of the catalog's own files.
    report::measure_first_releases(&catalog);
    let first = &report::build(&site, &catalog, &spool, mounted()).datasets[0].releases[0];
    assert_eq!((first.files, first.rows, first.participants), (3, 5, 3));
    assert_eq!(first.digest.as_ref().map(String::len), Some(64));
    assert_eq!((d.releases[1].rows, d.releases[1].participants), (3, 2));
}

#[tokio::test]
async fn the_consent_api_records_withdrawals_for_the_sites_token_only() {
    let s = site();
    let mut catalog = crate::catalog::Catalog::default()
        .with_dataset(s.id.clone(), &s.data, None, &["https://dac.example"])
        .with_releases(&s.releases);
    catalog.set_participant_column(&s.id, "participant_id");
    let spool = desk::Spool::new(&s.releases);
    let token = "consent-service-token-0123456789";
    let router = api::router(spool.clone(), catalog.clone(), token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/withdrawals", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api::serve(listener, router, stop.clone()));
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value, bearer: &str| {
        http.post(format!("{url}?wait_s=0"))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let good = serde_json::json!({"dataset": "JGAD000101", "participants": ["P2", "P9"],
        "reason": "consent withdrawn"});
    assert_eq!(post(good.clone(), "wrong").await.unwrap().status(), 401);
    for bad in [
        serde_json::json!({"dataset": "JGAD000101", "participants": ["P 2"], "reason": "x"}),
        serde_json::json!({"dataset": "JGAD999999", "participants": ["P2"], "reason": "x"}),
        serde_json::json!({"dataset": "JGAD000101", "participants": [], "reason": "x"}),
        serde_json::json!({"dataset": "JGAD000101", "participants": ["P2"]}),
    ] {
        let r = post(bad.clone(), token).await.unwrap();
        assert_eq!(r.status(), 422, "{bad}");
    }
    assert!(spool.pending().is_empty(), "bad input records nothing");
    let r = post(good, token).await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let show = || http.get(format!("{url}/{id}")).bearer_auth(token).send();
    assert_eq!(show().await.unwrap().status(), 202);
    let pending = spool.pending();
    let dirs = crate::reconcile::hostdirs::HostDirs::new(
        crate::config::Paths::under(&s.releases.parent().unwrap().join("site")),
        crate::reconcile::hostdirs::Ownership::WorldWritable,
    );
    spool.apply(&pending[0], &catalog, &dirs);
    let r = show().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["release"], 2, "{answer}");
    assert_eq!(answer["removed"], 2, "{answer}");
    assert_eq!(answer["unknown"], serde_json::json!(["P9"]), "{answer}");
    let missing = http
        .get(format!("{url}/wd-none"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    stop.cancel();
}

#[test]
fn a_releases_participants_follow_from_its_parents_when_known() {
    // Counted afresh (release 1 not measured) and derived from release 1's manifest: the same.
    let (a, b) = (site(), site());
    let counted = a
        .releases()
        .withdraw(&a.source(), &ids(&["P2"]), "x", Utc::now())
        .unwrap()
        .made
        .unwrap();
    let first = b.releases().first(&b.source(), Utc::now()).unwrap();
    assert_eq!(first.participants, 3);
    let derived = b
        .releases()
        .withdraw(&b.source(), &ids(&["P2"]), "x", Utc::now())
        .unwrap()
        .made
        .unwrap();
    assert_eq!((counted.participants, derived.participants), (2, 2));
    assert_eq!(counted.digest, derived.digest);
}
