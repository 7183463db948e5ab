//! End-to-end encryption of a session between the command line and the site's agent, so the
//! orchestrator that relays it sees ciphertext only.
//!
//! Each site holds a long-term X25519 key ([`KeyPair::load_or_create`]) and announces its public
//! half in its registration; the command line pins it on first use, as ssh pins a host key. A
//! session opens with a Noise `IK` handshake (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) whose first
//! message rides in the session's spec: it is readable by the site alone and carries the
//! [`Hello`] (the workspace, the spec and the proof), so the orchestrator can neither read the
//! proof nor change what runs. The command line's own static key is fresh per command, and its
//! [`seed`] is the nonce seed of the identity token ([`crate::proof::session_nonce`]): a token
//! opens only the session whose handshake that key completed, wherever it is copied to. The
//! agent's `Ready` carries the second message; after it, every data frame's payload (`Stdin`,
//! `Stdout`, `Stderr`) is a ChaCha20-Poly1305 message under a key per direction, numbered in
//! order, so a frame that was forged, replayed, reordered or dropped ends the session.
//!
//! Control frames stay readable, because the orchestrator acts on them or audits them: credit,
//! window sizes, signal names, close reasons and the exit. Forging one can end a session or
//! change its window, never read or write its data.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::proof::Proof;
use crate::tunnel::{Kind, SessionSpec};

/// The Noise protocol every session uses.
pub const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// What sealing adds to each data frame's payload.
pub const TAG: usize = 16;
/// The largest Noise message; a [`Hello`] must fit in one with the handshake's keys.
const MAX_MESSAGE: usize = 65_535;
/// The handshake's own bytes in the first message: `e` (32), `s` sealed (48), the payload's tag.
const HELLO_OVERHEAD: usize = 32 + 48 + TAG;

/// Why a handshake or a frame did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct E2eError(pub String);

fn err(what: &str, e: impl std::fmt::Display) -> E2eError {
    E2eError(format!("{what}: {e}"))
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An X25519 key pair: a site's long-term key, or the command line's key for one command.
#[derive(Clone)]
pub struct KeyPair {
    /// The public half, announced or sent.
    pub public: [u8; 32],
    secret: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &fingerprint(&self.public))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(rand::random())
    }

    /// The pair of `secret` (clamped as X25519 does).
    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        KeyPair { public, secret }
    }

    /// The key in `path` (the secret, base64), made there (mode 0600) when the file does not
    /// exist yet.
    pub fn load_or_create(path: &Path) -> std::io::Result<KeyPair> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::read_to_string(path) {
            Ok(text) => KeyPair::parse_secret(&text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // Written aside and renamed: a crash leaves no half key to be read later.
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(f, "{}", B64.encode(pair.secret))?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
                Ok(pair)
            }
            Err(e) => Err(e),
        }
    }

    fn parse_secret(text: &str) -> Result<KeyPair, E2eError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| err("the session key is not base64", e))?;
        let secret: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            E2eError(format!("the session key has {} bytes, not 32", b.len()))
        })?;
        Ok(KeyPair::from_secret(secret))
    }
}

/// A public key as text (base64), as registrations and pin files hold it.
pub fn encode_key(public: &[u8; 32]) -> String {
    B64.encode(public)
}

/// A public key from its text.
pub fn parse_key(text: &str) -> Result<[u8; 32], E2eError> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| err("a session key is base64", e))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| E2eError(format!("a session key has 32 bytes, not {}", b.len())))
}

/// What people compare when they check a key by eye: `SHA256:` and the base64 of its digest,
/// as ssh shows host keys.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let d = Sha256::digest(public);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

/// The seed of the identity token's nonce for sessions opened with `client`'s key.
pub fn seed(client: &[u8; 32]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client)
}

/// Whether frames of `kind` carry sealed payloads in an encrypted session.
pub fn sealed(kind: Kind) -> bool {
    matches!(kind, Kind::Stdin | Kind::Stdout | Kind::Stderr)
}

/// What the first handshake message carries to the site, readable by it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The workspace.
    pub workspace: String,
    /// What to run, as the orchestrator must also have been asked (without `proof` or
    /// `handshake`).
    pub spec: SessionSpec,
    /// What the site checks before it opens the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

fn params() -> snow::params::NoiseParams {
    PATTERN.parse().expect("a valid Noise pattern")
}

/// Binds the handshake to the workspace: a message made for one opens no session in another.
fn prologue(workspace: &str) -> Vec<u8> {
    format!("basho-session-e2e-v1\n{workspace}").into_bytes()
}

/// The command line's half of a handshake in flight.
pub struct Initiator {
    hs: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake with the site whose public key is `site`; the first message, as
    /// text for the spec's `handshake`.
    pub fn start(
        client: &KeyPair,
        site: &[u8; 32],
        hello: &Hello,
    ) -> Result<(Initiator, String), E2eError> {
        let payload = serde_json::to_vec(hello).expect("a hello serializes");
        if payload.len() > MAX_MESSAGE - HELLO_OVERHEAD {
            return Err(E2eError(format!(
                "the session's request is {} bytes, more than the {} one handshake carries \
                 (shorten the command)",
                payload.len(),
                MAX_MESSAGE - HELLO_OVERHEAD
            )));
        }
        let prologue = prologue(&hello.workspace);
        let mut hs = snow::Builder::new(params())
            .local_private_key(&client.secret)
            .remote_public_key(site)
            .prologue(&prologue)
            .build_initiator()
            .map_err(|e| err("cannot start the handshake", e))?;
        let mut msg = vec![0u8; MAX_MESSAGE];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|e| err("cannot write the handshake", e))?;
        Ok((Initiator { hs }, B64.encode(&msg[..n])))
    }

    /// Completes the handshake with the site's answer (the `Ready`'s `handshake`).
    pub fn finish(mut self, answer: &str) -> Result<Channel, E2eError> {
        let msg = B64
            .decode(answer)
            .map_err(|e| err("the site's handshake is not base64", e))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        self.hs.read_message(&msg, &mut buf).map_err(|e| {
            err(
                "the answer to the handshake is not the site's (it does not hold the pinned key)",
                e,
            )
        })?;
        Channel::of(self.hs)
    }
}

/// A handshake the site read: what it asks, and the key that asked.
pub struct Accepted {
    /// What the command line asked for.
    pub hello: Hello,
    /// The seed of the identity token's nonce this handshake's key stands for ([`seed`]).
    pub seed: String,
    hs: snow::HandshakeState,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("hello", &self.hello)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// Reads the first handshake message of a session in `workspace` with the site's key.
pub fn accept(site: &KeyPair, workspace: &str, message: &str) -> Result<Accepted, E2eError> {
    let msg = B64
        .decode(message)
        .map_err(|e| err("the handshake is not base64", e))?;
    let prologue = prologue(workspace);
    let mut hs = snow::Builder::new(params())
        .local_private_key(&site.secret)
        .prologue(&prologue)
        .build_responder()
        .map_err(|e| err("cannot start the handshake", e))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = hs.read_message(&msg, &mut buf).map_err(|e| {
        err(
            "the handshake was not made for this site's key and workspace",
            e,
        )
    })?;
    let hello: Hello = serde_json::from_slice(&buf[..n])
        .map_err(|e| err("the handshake's request does not parse", e))?;
    let client: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| E2eError("the handshake carries no key".into()))?;
    Ok(Accepted {
        hello,
        seed: seed(&client),
        hs,
    })
}

impl Accepted {
    /// The answer for the `Ready`, and the session's channel.
    pub fn answer(mut self) -> Result<(String, Channel), E2eError> {
        let mut msg = vec![0u8; 256];
        let n = self
            .hs
            .write_message(&[], &mut msg)
            .map_err(|e| err("cannot answer the handshake", e))?;
        Ok((B64.encode(&msg[..n]), Channel::of(self.hs)?))
    }
}

/// A finished handshake: one key each way.
pub struct Channel {
    state: Arc<snow::StatelessTransportState>,
}

impl Channel {
    fn of(hs: snow::HandshakeState) -> Result<Channel, E2eError> {
        let state = hs
            .into_stateless_transport_mode()
            .map_err(|e| err("the handshake did not finish", e))?;
        Ok(Channel {
            state: Arc::new(state),
        })
    }

    /// The sending half and the receiving half, each for its own task.
    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer {
                state: self.state.clone(),
                next: 0,
            },
            Opener {
                state: self.state,
                next: 0,
            },
        )
    }
}

/// Seals what one side sends, numbering each message.
pub struct Sealer {
    state: Arc<snow::StatelessTransportState>,
    next: u64,
}

impl Sealer {
    /// `plain` sealed; at most [`crate::tunnel::MAX_CHUNK`] bytes at a time.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + TAG];
        let n = self
            .state
            .write_message(self.next, plain, &mut out)
            .expect("a chunk within a Noise message seals");
        self.next += 1;
        out.truncate(n);
        out
    }
}

/// Opens what the other side sent, in the order it sent it.
pub struct Opener {
    state: Arc<snow::StatelessTransportState>,
    next: u64,
}

impl Opener {
    /// The plaintext of the next sealed payload; an error for anything forged, replayed,
    /// reordered or missing.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, E2eError> {
        if sealed.len() < TAG {
            return Err(E2eError("a sealed frame is shorter than its tag".into()));
        }
        let mut out = vec![0u8; sealed.len()];
        let n = self
            .state
            .read_message(self.next, sealed, &mut out)
            .map_err(|_| {
                E2eError(
                    "a session frame failed its integrity check: it was changed, replayed, \
                     reordered or one before it was lost on the way"
                        .into(),
                )
            })?;
        self.next += 1;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
