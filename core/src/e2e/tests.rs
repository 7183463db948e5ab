use super::*;

fn hello(workspace: &str) -> Hello {
    Hello {
        workspace: workspace.into(),
        spec: SessionSpec::exec(["cat"]),
        proof: Some(Proof::Approval {
            token: "a.b.c".into(),
        }),
    }
}

/// Both ends of a finished handshake: (client's, site's).
fn pair() -> ((Sealer, Opener), (Sealer, Opener)) {
    let site = KeyPair::generate();
    let client = KeyPair::generate();
    let (init, first) = Initiator::start(&client, &site.public, &hello("ws-1")).unwrap();
    let accepted = accept(&site, "ws-1", &first).unwrap();
    assert_eq!(accepted.hello, hello("ws-1"));
    assert_eq!(accepted.seed, seed(&client.public));
    let (answer, at_site) = accepted.answer().unwrap();
    let at_client = init.finish(&answer).unwrap();
    (at_client.split(), at_site.split())
}

#[test]
fn a_handshake_carries_the_hello_and_both_directions_open_in_order() {
    let ((mut c_seal, mut c_open), (mut s_seal, mut s_open)) = pair();
    for i in 0..3u8 {
        let up = c_seal.seal(&[i; 100]);
        assert_eq!(up.len(), 100 + TAG);
        assert_ne!(&up[..100], &[i; 100][..], "the payload is not in clear");
        assert_eq!(s_open.open(&up).unwrap(), vec![i; 100]);
        let down = s_seal.seal(b"out");
        assert_eq!(c_open.open(&down).unwrap(), b"out");
    }
    // An empty chunk (a zero-length write) seals too.
    assert!(s_open.open(&c_seal.seal(b"")).unwrap().is_empty());
}

#[test]
fn forged_replayed_reordered_or_dropped_frames_fail() {
    let ((mut c_seal, _), (_, mut s_open)) = pair();
    let a = c_seal.seal(b"first");
    let b = c_seal.seal(b"second");
    // Reordered: the second before the first.
    assert!(s_open.open(&b).is_err());
    assert_eq!(s_open.open(&a).unwrap(), b"first");
    // Replayed.
    assert!(s_open.open(&a).is_err());
    let mut forged = b.clone();
    forged[0] ^= 1;
    assert!(s_open.open(&forged).is_err());
    assert!(s_open.open(&b[..TAG - 1]).is_err());
    assert_eq!(s_open.open(&b).unwrap(), b"second");
    // Dropped: the third is lost, the fourth does not open.
    let _lost = c_seal.seal(b"third");
    assert!(s_open.open(&c_seal.seal(b"fourth")).is_err());
}

#[test]
fn only_the_pinned_site_reads_the_hello_or_answers_it() {
    let site = KeyPair::generate();
    let impostor = KeyPair::generate();
    let client = KeyPair::generate();
    let (init, first) = Initiator::start(&client, &site.public, &hello("ws-1")).unwrap();
    // An orchestrator with a key of its own reads nothing...
    let e = accept(&impostor, "ws-1", &first).unwrap_err();
    assert!(e.0.contains("not made for this site's key"), "{e}");
    // ...nor does the site take it for another workspace...
    assert!(accept(&site, "ws-2", &first).is_err());
    // ...and an answer made by the impostor to a handshake of its own does not finish ours.
    let (_, theirs) = Initiator::start(&client, &impostor.public, &hello("ws-1")).unwrap();
    let (forged, _) = accept(&impostor, "ws-1", &theirs)
        .unwrap()
        .answer()
        .unwrap();
    let e = init.finish(&forged).err().expect("refused");
    assert!(e.0.contains("not the site's"), "{e}");
    assert!(accept(&site, "ws-1", "not base64!").is_err());
}

#[test]
fn a_request_too_large_for_one_handshake_is_refused_clearly() {
    let site = KeyPair::generate();
    let mut h = hello("ws-1");
    h.spec.argv = vec!["x".repeat(70_000)];
    let e = Initiator::start(&KeyPair::generate(), &site.public, &h)
        .err()
        .expect("too large");
    assert!(e.0.contains("shorten the command"), "{e}");
}

#[test]
fn a_site_key_is_made_once_private_and_read_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/session.key");
    let made = KeyPair::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = KeyPair::load_or_create(&path).unwrap();
    assert_eq!(made.public, again.public);
    assert_eq!(parse_key(&encode_key(&made.public)).unwrap(), made.public);
    assert!(fingerprint(&made.public).starts_with("SHA256:"));
    std::fs::write(&path, "c2hvcnQ=\n").unwrap();
    let e = KeyPair::load_or_create(&path).unwrap_err();
    assert!(e.to_string().contains("not 32"), "{e}");
    assert!(parse_key("AAAA").is_err());
}

#[test]
fn the_public_half_is_x25519s_and_matches_snows() {
    // The derivation agrees with the Noise library's own key generation.
    let theirs = snow::Builder::new(params()).generate_keypair().unwrap();
    let secret: [u8; 32] = theirs.private.as_slice().try_into().unwrap();
    assert_eq!(
        KeyPair::from_secret(secret).public.as_slice(),
        theirs.public.as_slice()
    );
}
