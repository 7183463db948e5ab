//! The site's end of a session's encryption ([`basho_core::e2e`]): the request it runs is the
//! one sealed in the handshake, which only the command line could write and only this site can
//! read; the orchestrator's copy must say the same, or nothing runs.

use basho_core::e2e::{self, Accepted, KeyPair};
use basho_core::proof::Proof;
use basho_core::tunnel::{Open, Refusal};
use serde::{Deserialize, Serialize};

/// Whether a site opens sessions that are not encrypted end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// Every session is sealed between the command line and the agent.
    #[default]
    Required,
    /// Sessions from clients that predate encryption open in clear through the orchestrator.
    Optional,
}

fn refused(code: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        code: code.into(),
        message: message.into(),
    }
}

/// What the site runs for `open`: the sealed request and its handshake, or, where the site
/// allows it, the request in clear.
pub(super) fn unseal(
    open: Open,
    key: &KeyPair,
    policy: Encryption,
) -> Result<(Open, Option<Accepted>), Refusal> {
    let Some(first) = open.spec.handshake.as_deref() else {
        return match policy {
            Encryption::Optional => Ok((open, None)),
            Encryption::Required => Err(refused(
                "encryption_required",
                "this site opens only sessions encrypted end to end between basho's command \
                 line and the site; update basho",
            )),
        };
    };
    let accepted = e2e::accept(key, &open.workspace, first).map_err(|e| {
        refused(
            "handshake_refused",
            format!(
                "{e}; the site's key may have changed since the command line pinned it (ask \
                 the site's admin)"
            ),
        )
    })?;
    let hello = &accepted.hello;
    let mut relayed = open.spec.clone();
    relayed.handshake = None;
    relayed.proof = None;
    if hello.workspace != open.workspace || hello.spec != relayed {
        return Err(refused(
            "handshake_refused",
            "the request the orchestrator relayed differs from the one the command line sealed; \
             nothing runs",
        ));
    }
    if let Some(Proof::IdToken { seed, .. }) = &hello.proof
        && *seed != accepted.seed
    {
        return Err(refused(
            "proof_refused",
            "the identity token was asked for another session's key; each token opens only the \
             session it was asked for",
        ));
    }
    let mut spec = hello.spec.clone();
    spec.proof = hello.proof.clone();
    let inner = Open {
        workspace: open.workspace,
        spec,
        actor: open.actor,
    };
    Ok((inner, Some(accepted)))
}

#[cfg(test)]
mod tests {
    use basho_core::e2e::{Hello, Initiator, seed};
    use basho_core::tunnel::SessionSpec;

    use super::*;

    fn spec(argv: &str) -> SessionSpec {
        SessionSpec::exec([argv])
    }

    /// The `Open` a client's handshake makes, as the orchestrator relays it.
    fn sealed(site: &KeyPair, client: &KeyPair, argv: &str, proof: Option<Proof>) -> Open {
        let hello = Hello {
            workspace: "ws-1".into(),
            spec: spec(argv),
            proof,
        };
        let (_, first) = Initiator::start(client, &site.public, &hello).unwrap();
        let mut outer = spec(argv);
        outer.handshake = Some(first);
        Open {
            workspace: "ws-1".into(),
            spec: outer,
            actor: "researcher:alice".into(),
        }
    }

    #[test]
    fn the_sealed_request_runs_with_its_proof() {
        let (site, client) = (KeyPair::generate(), KeyPair::generate());
        let proof = Proof::IdToken {
            token: "t".into(),
            seed: seed(&client.public),
        };
        let open = sealed(&site, &client, "id", Some(proof.clone()));
        let (inner, accepted) = unseal(open, &site, Encryption::Required).unwrap();
        assert_eq!(inner.spec.argv, ["id"]);
        assert_eq!(inner.spec.proof, Some(proof));
        assert_eq!(inner.spec.handshake, None);
        assert!(accepted.is_some());
    }

    #[test]
    fn a_changed_request_a_foreign_key_or_clear_text_runs_nothing() {
        let (site, client) = (KeyPair::generate(), KeyPair::generate());
        // The orchestrator swaps the command it relays.
        let mut open = sealed(&site, &client, "id", None);
        open.spec.argv = vec!["rm".into()];
        let r = unseal(open, &site, Encryption::Required).unwrap_err();
        assert_eq!(r.code, "handshake_refused");
        // A handshake made for another key.
        let open = sealed(&KeyPair::generate(), &client, "id", None);
        let r = unseal(open, &site, Encryption::Required).unwrap_err();
        assert_eq!(r.code, "handshake_refused");
        // An identity token bound to another session's key.
        let proof = Proof::IdToken {
            token: "t".into(),
            seed: seed(&KeyPair::generate().public),
        };
        let open = sealed(&site, &client, "id", Some(proof));
        let r = unseal(open, &site, Encryption::Required).unwrap_err();
        assert_eq!(r.code, "proof_refused");
        // No handshake at all: refused unless the site allows clear sessions.
        let clear = Open {
            workspace: "ws-1".into(),
            spec: spec("id"),
            actor: "researcher:alice".into(),
        };
        let r = unseal(clear.clone(), &site, Encryption::Required).unwrap_err();
        assert_eq!(r.code, "encryption_required");
        let (inner, accepted) = unseal(clear.clone(), &site, Encryption::Optional).unwrap();
        assert_eq!(inner, clear);
        assert!(accepted.is_none());
    }
}
