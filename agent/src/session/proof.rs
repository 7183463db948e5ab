//! The site's own check of every session the orchestrator asks it to open
//! ([`basho_core::proof`]): an identity token from a provider the site trusts, naming the
//! workspace's owner as the agent recorded it at launch and bound to this session, or a
//! break-glass approval signed by one of the site's approvers. Each proof opens one session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use basho_core::proof::{self, IdentityIssuer, Proof, Proven};
use basho_core::tunnel::{Open, Refusal, SessionKind};
use basho_core::visa::{IssuerRef, TrustedIssuers};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::{ConfigError, load_issuers};
use crate::reconcile::hostdirs::HostDirs;
use crate::revocations::recorded_grants;

/// Whose word opens a session at this site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofPolicy {
    /// Every session needs a proof the agent verifies itself.
    #[default]
    Required,
    /// The site trusts the orchestrator's word: for `basho dev` and tests on one machine.
    None,
}

/// Keys are read again at most this often when a token names one the site lacks.
const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// Most proofs remembered as used; when it fills, the expired ones are dropped.
const MAX_USED: usize = 100_000;

struct Keys {
    identity: TrustedIssuers,
    approvers: TrustedIssuers,
    loaded: Instant,
}

/// Checks proofs for the sessions of one agent.
pub struct Gate {
    policy: ProofPolicy,
    identity: Vec<IdentityIssuer>,
    approvers: Vec<IssuerRef>,
    max_age_s: i64,
    keys: Mutex<Keys>,
    /// Each used proof's expiry and, for a port-forward's, the port it may open again.
    used: Mutex<HashMap<String, (i64, Option<String>)>>,
    dirs: HostDirs,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn refusal(code: &str, message: String) -> Refusal {
    Refusal {
        code: code.to_owned(),
        message,
    }
}

impl Gate {
    /// The gate of `sessions`, its keys read from their JWKS files.
    pub fn load(
        sessions: &super::SessionsConfig,
        dirs: HostDirs,
    ) -> Result<Self, Vec<ConfigError>> {
        let gate = Self {
            policy: sessions.proof,
            identity: sessions.identity_issuers.clone(),
            approvers: sessions.approvers.clone(),
            max_age_s: sessions.max_proof_age_s as i64,
            keys: Mutex::new(Keys {
                identity: TrustedIssuers::new(),
                approvers: TrustedIssuers::new(),
                loaded: Instant::now(),
            }),
            used: Mutex::default(),
            dirs,
        };
        *gate.keys.lock().unwrap_or_else(|e| e.into_inner()) = gate.read_keys()?;
        if gate.policy == ProofPolicy::Required
            && gate.identity.is_empty()
            && gate.approvers.is_empty()
        {
            info!(
                "sessions need proof and no identity provider or approver is configured: \
                 every session will be refused ([sessions] identity_issuers, approvers)"
            );
        }
        Ok(gate)
    }

    fn read_keys(&self) -> Result<Keys, Vec<ConfigError>> {
        let identity = load_issuers(
            self.identity
                .iter()
                .map(|i| (i.issuer.as_str(), i.jwks_file.as_path())),
        );
        let approvers = load_issuers(
            self.approvers
                .iter()
                .map(|i| (i.issuer.as_str(), i.jwks_file.as_path())),
        );
        match (identity, approvers) {
            (Ok(identity), Ok(approvers)) => Ok(Keys {
                identity,
                approvers,
                loaded: Instant::now(),
            }),
            (a, b) => Err([a.err(), b.err()].into_iter().flatten().flatten().collect()),
        }
    }

    /// Verifies `jwt` against the current keys, reading the JWKS files again (at most every
    /// ten seconds) when it names a key they lack: the provider rotated its keys.
    fn signed(
        &self,
        jwt: &str,
        approvals: bool,
        what: &str,
    ) -> Result<(String, serde_json::Value), String> {
        let pick = |k: &Keys| {
            let set = if approvals { &k.approvers } else { &k.identity };
            proof::signed(jwt, set, what)
        };
        let first = pick(&self.keys.lock().unwrap_or_else(|e| e.into_inner()));
        match first {
            Err((true, _)) => {
                let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                if keys.loaded.elapsed() >= RELOAD_EVERY {
                    match self.read_keys() {
                        Ok(k) => *keys = k,
                        Err(e) => info!(problems = ?e, "cannot reread the session keys"),
                    }
                }
                pick(&keys).map_err(|(_, e)| e.0)
            }
            other => other.map_err(|(_, e)| e.0),
        }
    }

    /// What the site verified for `open` at `now`: `Ok(None)` when it trusts the orchestrator,
    /// a refusal (`proof_required`, `proof_refused`) when the proof does not hold.
    pub fn check(&self, open: &Open, now: i64) -> Result<Option<Proven>, Refusal> {
        if self.policy == ProofPolicy::None {
            return Ok(None);
        }
        let Some(p) = &open.spec.proof else {
            return Err(refusal(
                "proof_required",
                "this site opens a session only with proof it checks itself: the workspace \
                 owner's identity token from the site's identity provider (basho reads \
                 BASHO_OIDC_ISSUER and BASHO_OIDC_CLIENT_ID), or a break-glass approval signed \
                 by a site approver (--approval)"
                    .into(),
            ));
        };
        let denied = |m: String| refusal("proof_refused", m);
        // A port-forward opens one session per connection: its proof may open more to the
        // same port until it expires, however old it grows meanwhile.
        let scope = (open.spec.kind == SessionKind::Forward)
            .then(|| format!("{} {}", open.workspace, open.spec.port));
        let proven = match p {
            Proof::IdToken { token, seed } => {
                let claims = self
                    .signed(token, false, "identity token")
                    .map_err(denied)?;
                let again = scope.is_some()
                    && self
                        .used
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&proof::once_key(&claims.0, &claims.1))
                        .is_some_and(|(_, s)| *s == scope);
                let issuer = self
                    .identity
                    .iter()
                    .find(|i| i.issuer == claims.0)
                    .ok_or_else(|| denied("the identity token's issuer is not trusted".into()))?;
                let owner = recorded_grants(&self.dirs.state_dir(&open.workspace))
                    .map(|g| g.owner)
                    .ok_or_else(|| {
                        denied(format!(
                            "the site has no record of who owns {}; it opens sessions only in \
                             workspaces it launched",
                            open.workspace
                        ))
                    })?;
                proof::check_id_token(
                    claims,
                    issuer,
                    &open.workspace,
                    &owner,
                    seed,
                    now,
                    if again { i64::MAX } else { self.max_age_s },
                )
                .map_err(|e| denied(e.0))?
            }
            Proof::Approval { token } => {
                let claims = self
                    .signed(token, true, "break-glass approval")
                    .map_err(denied)?;
                proof::check_approval(
                    token,
                    claims,
                    &open.workspace,
                    open.spec.break_glass.as_deref(),
                    now,
                )
                .map_err(|e| denied(e.0))?
            }
        };
        self.use_once(&proven, scope, now).map_err(denied)?;
        Ok(Some(proven))
    }

    /// Records `p` as used; refuses a proof used before, unless by a port-forward to the same
    /// port (`scope`).
    fn use_once(&self, p: &Proven, scope: Option<String>, now: i64) -> Result<(), String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, before)) = used.get(&p.once) {
            if scope.is_some() && *before == scope {
                return Ok(());
            }
            return Err(format!(
                "this {} opened a session already; each proof opens one session",
                if p.break_glass {
                    "break-glass approval"
                } else {
                    "identity token"
                }
            ));
        }
        if used.len() >= MAX_USED {
            used.retain(|_, (exp, _)| *exp > now);
        }
        if used.len() >= MAX_USED {
            return Err("the site holds too many unexpired proofs; retry in a minute".into());
        }
        used.insert(p.once.clone(), (p.expires, scope));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
