//! Bad input of every class is refused with the right status and code, and leaves nothing
//! behind in the store.

mod common;

use axum::http::{Method, StatusCode};
use basho_core::visa::mint::{Issuer, Visa};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

#[tokio::test]
async fn malformed_bodies() {
    let h = Harness::new().await;
    h.register_demo().await;
    for bad in [
        &b"{"[..],
        b"not json",
        b"{\"project\": }",
        b"[1,2",
        b"{} {}",
    ] {
        let got = h
            .raw(
                Method::POST,
                "/v1/workspaces",
                Some(PLATFORM),
                &[],
                bad.to_vec(),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_json");
    }
    let good = h.body(&["JGAD000101"]);
    let mut unknown = good.clone();
    unknown["extra"] = json!(1);
    let msg = refused(
        &h,
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("unknown field `extra`"), "{msg}");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("project");
    let msg = refused(
        &h,
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("project"), "{msg}");
    let mut wrong_type = good.clone();
    wrong_type["visas"] = json!("one");
    refused(
        &h,
        wrong_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let mut nested = good.clone();
    nested["resources"] = json!({"cpus": 1, "memory_mib": 512, "tpus": 1});
    let msg = refused(
        &h,
        nested,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("resources") && msg.contains("tpus"), "{msg}");
}

#[tokio::test]
async fn bad_identifiers() {
    let h = Harness::new().await;
    h.register_demo().await;
    let long = "x".repeat(65);
    for bad in ["../x", "/etc", "", long.as_str(), "a b", ".hidden"] {
        for field in ["template", "project", "site"] {
            let mut b = h.body(&["JGAD000101"]);
            b[field] = json!(bad);
            let msg = refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
            assert!(msg.contains(field), "{field}={bad:?}: {msg}");
        }
        let mut b = h.body(&["JGAD000101"]);
        b["datasets"] = json!([bad]);
        let msg = refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
        assert!(msg.contains("datasets[0]"), "{bad:?}: {msg}");
    }
}

#[tokio::test]
async fn template_resources_and_duration() {
    let h = Harness::new().await;
    h.register_demo().await;
    let mut b = h.body(&["JGAD000101"]);
    b["template"] = json!("jupyter");
    let msg = refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "unknown_template").await;
    assert!(msg.contains("shell"), "lists known templates: {msg}");

    for (res, field) in [
        (json!({"cpus": 0, "memory_mib": 512}), "cpus"),
        (json!({"cpus": 100000, "memory_mib": 512}), "cpus"),
        (json!({"cpus": 1, "memory_mib": 0}), "memory_mib"),
        (
            json!({"cpus": 1, "memory_mib": 18446744073709551615u64}),
            "memory_mib",
        ),
        (json!({"cpus": 1, "memory_mib": 512, "gpus": 1000}), "gpus"),
    ] {
        let mut b = h.body(&["JGAD000101"]);
        b["resources"] = res;
        let msg = refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_resources").await;
        assert!(msg.contains(field), "{msg}");
    }
    let mut b = h.body(&["JGAD000101"]);
    b["resources"] = json!({"cpus": -1, "memory_mib": 512});
    refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;

    for d in [0u64, 86401, 10_000_000] {
        let mut b = h.body(&["JGAD000101"]);
        b["duration_s"] = json!(d);
        let msg = refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_duration").await;
        assert!(msg.contains("86400"), "{msg}");
    }
    // A workspace bigger than any site.
    let mut b = h.body(&["JGAD000101"]);
    b["resources"] = json!({"cpus": 64, "memory_mib": 512});
    let msg = refused(&h, b, StatusCode::CONFLICT, "insufficient_capacity").await;
    assert!(msg.contains("tohoku 16 cpus"), "{msg}");
}

#[tokio::test]
async fn visa_refusals() {
    let h = Harness::new().await;
    h.register_demo().await;
    let good = h.visa("r-1", "JGAD000101");
    let with_visas = |visas: Vec<String>| json!({"project": "P-1", "template": "shell", "visas": visas, "datasets": ["JGAD000101"]});
    refused(
        &h,
        with_visas(vec![]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let many = vec![good.clone(); 65];
    refused(
        &h,
        with_visas(many),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;

    // Unsigned: the signature stripped, and an `alg: none` header.
    let parts: Vec<&str> = good.split('.').collect();
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    let none_header = base64_url(r#"{"alg":"none","typ":"vnd.ga4gh.visa+jwt","kid":"ec-1"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    // Forged: signed by a stranger's key under the trusted issuer's name.
    let stranger = Issuer::generate(ISSUER);
    let forged = stranger.mint("r-1", "JGAD000101");
    let hmac = h
        .issuer
        .sign(&Visa::new("r-1", "JGAD000101").alg(Algorithm::HS256));
    let expired = h
        .issuer
        .sign(&Visa::new("r-1", "JGAD000101").expires_in(-30));
    let untrusted = Issuer::generate("https://evil.example").mint("r-1", "JGAD000101");
    let mut conditional = Visa::new("r-1", "JGAD000101");
    conditional.conditions = true;
    let conditional = h.issuer.sign(&conditional);
    let cases = [
        (stripped, "visa_"),
        (alg_none, "visa_"),
        ("garbage".to_owned(), "visa_malformed"),
        (forged, "visa_bad_signature"),
        (hmac, "visa_algorithm"),
        (expired, "visa_expired"),
        (untrusted, "visa_untrusted_issuer"),
        (conditional, "visa_conditions"),
    ];
    for (bad, code) in cases {
        // The bad visa second, so the message must name index 1.
        let got = h.create(with_visas(vec![good.clone(), bad])).await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
        let c = got.1["error"]["code"].as_str().unwrap();
        assert!(c.starts_with(code), "{c} for {code}");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("visas[1]: "),
            "{}",
            got.1
        );
        assert!(h.workspaces().await.is_empty());
    }
    // Visas of different researchers in one request.
    let other = h.visa("r-2", "JGAD000102");
    let msg = refused(
        &h,
        with_visas(vec![good.clone(), other]),
        StatusCode::FORBIDDEN,
        "visa_subject_mismatch",
    )
    .await;
    assert!(msg.contains("r-1") && msg.contains("r-2"), "{msg}");
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn datasets_must_be_granted_and_held() {
    let h = Harness::new().await;
    h.register_demo().await;
    // A visa for 101 does not open 102.
    let b = json!({"project": "P-1", "template": "shell",
        "visas": [h.visa("r-1", "JGAD000101")], "datasets": ["JGAD000101", "JGAD000102"]});
    let msg = refused(&h, b, StatusCode::FORBIDDEN, "dataset_not_granted").await;
    assert!(msg.contains("JGAD000102"), "{msg}");
    // A dataset no site holds, even with a visa for it.
    let msg = refused(
        &h,
        h.body(&["JGAD999999"]),
        StatusCode::CONFLICT,
        "no_site_holds_datasets",
    )
    .await;
    assert!(msg.contains("no site holds JGAD999999"), "{msg}");
    // Datasets held only at different sites.
    let msg = refused(
        &h,
        h.body(&["JGAD000101", "JGAD000201"]),
        StatusCode::CONFLICT,
        "no_site_holds_datasets",
    )
    .await;
    assert!(msg.contains("JGAD000101 is held by tohoku"), "{msg}");
    assert!(msg.contains("JGAD000201 is held by ncbn"), "{msg}");
    // Pinned to a site without the data, or an unknown site.
    let mut b = h.body(&["JGAD000101"]);
    b["site"] = json!("ncbn");
    refused(&h, b, StatusCode::CONFLICT, "site_lacks_datasets").await;
    let mut b = h.body(&["JGAD000101"]);
    b["site"] = json!("riken");
    refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "unknown_site").await;
    // Empty or repeated dataset lists.
    let mut b = h.body(&["JGAD000101"]);
    b["datasets"] = json!([]);
    refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let mut b = h.body(&["JGAD000101"]);
    b["datasets"] = json!(["JGAD000101", "JGAD000101"]);
    refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    // Visas whose values name nothing known, with datasets left to default.
    let mut v = Visa::new("r-1", "x");
    v.value = "https://elsewhere.example/grant/9".into();
    let b = json!({"project": "P-1", "template": "shell", "visas": [h.issuer.sign(&v)]});
    refused(&h, b, StatusCode::FORBIDDEN, "dataset_not_granted").await;
}

#[tokio::test]
async fn body_size_cap() {
    let h = Harness::with(|c| c.limits.max_body_bytes = 2048).await;
    h.register_demo().await;
    let mut b = h.body(&["JGAD000101"]);
    b["visas"] = json!(vec!["x".repeat(1000); 4]);
    let got = h.create(b).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert!(h.workspaces().await.is_empty());
}
