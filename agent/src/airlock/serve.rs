//! The desk's end of the tunnel: a `Call` frame from the orchestrator is a release request to
//! take (checked like a session's proof first) or a reviewed file to send. Each is answered on
//! its own session id and written to the site's audit log with the digests it moved.

use std::sync::Arc;

use basho_core::release::{Answer, Call};
use basho_core::tunnel::{Exit, Frame, Kind, MAX_CHUNK, Open, Refusal, SessionSpec, WINDOW};
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::desk::Desk;
use crate::session::proof::Gate;
use crate::site_audit::SiteAudit;

/// What a call needs at the site.
pub struct Counter {
    /// The site's desk.
    pub desk: Arc<Desk>,
    /// Checks the proof of an intake, as a session's.
    pub gate: Arc<Gate>,
    /// The site's own audit log.
    pub audit: Arc<SiteAudit>,
}

fn refusal(code: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        code: code.to_owned(),
        message: message.into(),
    }
}

impl Counter {
    /// Serves `call` on session `id`: frames for it (credit, close) arrive on `rx`, answers go
    /// out on `tx`.
    pub async fn serve(
        &self,
        id: u32,
        call: Call,
        tx: mpsc::Sender<Frame>,
        rx: mpsc::UnboundedReceiver<Frame>,
        cancel: CancellationToken,
    ) {
        let workspace = call.workspace().to_owned();
        let desk = &self.desk;
        let result = match call {
            Call::Intake {
                workspace,
                request,
                files,
                actor,
                proof,
            } => {
                self.intake(desk, id, &tx, workspace, request, files, actor, proof)
                    .await
            }
            Call::Fetch {
                workspace,
                request,
                sha256,
                actor,
            } => {
                let detail = json!({"request": request, "sha256": sha256, "actor": actor});
                self.fetch(desk, id, &tx, rx, cancel, &workspace, &sha256, detail)
                    .await
            }
        };
        if let Err(r) = result {
            warn!(session = id, %workspace, code = %r.code, why = %r.message, "airlock call refused");
            let _ = tx.send(Frame::json(id, Kind::Refused, &r)).await;
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the call's fields, taken apart")]
    async fn intake(
        &self,
        desk: &Arc<Desk>,
        id: u32,
        tx: &mpsc::Sender<Frame>,
        workspace: String,
        request: String,
        files: Vec<String>,
        actor: String,
        proof: Option<basho_core::proof::Proof>,
    ) -> Result<(), Refusal> {
        // The owner's proof, checked as for a session that would read the same files.
        let mut spec =
            SessionSpec::exec(std::iter::once("release".to_owned()).chain(files.clone()));
        spec.proof = proof;
        let open = Open {
            workspace: workspace.clone(),
            spec,
            actor: actor.clone(),
        };
        let proven = self
            .gate
            .check(&open, chrono::Utc::now().timestamp())
            .map_err(|mut r| {
                if r.code == "proof_required" {
                    r.message = "this site takes files for release only with proof it checks \
                                 itself: the workspace owner's identity token (basho reads \
                                 BASHO_OIDC_ISSUER, or BASHO_ID_TOKEN_COMMAND), or a break-glass \
                                 approval signed by a site approver"
                        .into();
                }
                r
            })?;
        let taken = {
            let (desk, workspace, files) = (desk.clone(), workspace.clone(), files.clone());
            tokio::task::spawn_blocking(move || desk.request(&workspace, &files))
                .await
                .map_err(|e| refusal("internal", e.to_string()))?
        };
        let intake = taken.map_err(|e| refusal(e.code(), e.to_string()))?;
        let detail = json!({"request": request, "actor": actor, "files": digests(&intake),
            "proven": proven.as_ref().map(ToString::to_string)});
        self.audit
            .record("release_intake", &workspace, detail)
            .await
            .map_err(|e| refusal("audit_unavailable", e))?;
        info!(%workspace, %request, files = intake.files.len(), "release request taken");
        let _ = tx
            .send(Frame::json(id, Kind::Answer, &Answer::Intake(intake)))
            .await;
        Ok(())
    }

    #[expect(clippy::too_many_arguments, reason = "one session's plumbing")]
    async fn fetch(
        &self,
        desk: &Desk,
        id: u32,
        tx: &mpsc::Sender<Frame>,
        mut rx: mpsc::UnboundedReceiver<Frame>,
        cancel: CancellationToken,
        workspace: &str,
        sha256: &str,
        detail: serde_json::Value,
    ) -> Result<(), Refusal> {
        let path = desk
            .store()
            .path(sha256)
            .ok_or_else(|| refusal("invalid", "the digest is not 64 lowercase hex characters"))?;
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
            refusal(
                "no_such_file",
                format!("the site's airlock store holds no file {sha256}: {e}"),
            )
        })?;
        let size = file
            .metadata()
            .await
            .map_err(|e| refusal("internal", e.to_string()))?
            .len();
        self.audit
            .record("release_fetch", workspace, detail)
            .await
            .map_err(|e| refusal("audit_unavailable", e))?;
        if tx
            .send(Frame::json(id, Kind::Answer, &Answer::Fetch { size }))
            .await
            .is_err()
        {
            return Ok(());
        }
        let credit = Arc::new(Semaphore::new(WINDOW as usize));
        let returned = credit.clone();
        let closed = cancel.child_token();
        let watcher = closed.clone();
        let inbound = tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                match f.kind {
                    Kind::Credit => {
                        if let Ok(n) = f.credit_value() {
                            returned.add_permits(n as usize);
                        }
                    }
                    Kind::Close => break,
                    _ => {}
                }
            }
            watcher.cancel();
        });
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut sent = 0u64;
        let reason = loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(format!("reading the stored copy: {e}")),
            };
            let permit = tokio::select! {
                _ = closed.cancelled() => break Some("the receiver went away".into()),
                p = credit.acquire_many(n as u32) => p,
            };
            let Ok(permit) = permit else {
                break Some("credit closed".into());
            };
            permit.forget();
            if tx
                .send(Frame::new(id, Kind::Stdout, buf[..n].to_vec()))
                .await
                .is_err()
            {
                break Some("the tunnel closed".into());
            }
            sent += n as u64;
        };
        inbound.abort();
        let exit = Exit {
            code: reason.is_none().then_some(0),
            reason,
            ..Exit::default()
        };
        info!(%workspace, sha256, sent, "release file sent");
        let _ = tx.send(Frame::json(id, Kind::Exit, &exit)).await;
        Ok(())
    }
}

/// What the site's audit log records of the files a request took.
pub fn digests(intake: &basho_core::release::Intake) -> serde_json::Value {
    intake
        .files
        .iter()
        .map(|f| {
            json!({"name": f.name, "size": f.size, "sha256": f.sha256,
            "passed": f.checked.passed(), "refused": f.checked.refused})
        })
        .collect()
}
