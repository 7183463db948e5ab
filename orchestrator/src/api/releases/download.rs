//! `GET /v1/release-requests/{id}/files/{name}`: an approved file, streamed from the site's
//! airlock store through its tunnel and checked against the reviewed digest on the way.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use basho_core::digest::hex;
use basho_core::release::{Answer, Call, ReleaseRequest, ReleaseState};
use basho_core::tunnel::{Exit, Kind};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::holder::{Original, via_holder};
use super::{SHA256_HEADER, audited, desk_error, may_request, readable};
use crate::Orchestrator;
use crate::api::sessions::Caller;
use crate::api::{ApiError, ApiResult};
use crate::releases;
use crate::tokens::Principal;

/// Downloads an approved file from the site's airlock store, streamed through the site's tunnel
/// and checked against the reviewed digest on the way: a mismatch ends the download with an
/// error, never a file.
#[utoipa::path(
    get, path = "/v1/release-requests/{id}/files/{name}", operation_id = "downloadReleasedFile",
    tag = "airlock",
    params(
        ("id" = String, Path, description = "Release request id (`rr-...`)", max_length = 64),
        ("name" = String, Path, description = "The file's name under /results"),
    ),
    responses(
        (status = 401, description = "No or unknown token", body = basho_core::ErrorBody),
        (status = 403, description = "A token of a role that may not do this", body = basho_core::ErrorBody),
        (status = 200, description = "The file's bytes; `x-basho-sha256` is the reviewed digest", content_type = "application/octet-stream"),
        (status = 404, description = "No such request or file", body = basho_core::ErrorBody),
        (status = 409, description = "Not approved, or the file was rejected or refused", body = basho_core::ErrorBody),
        (status = 503, description = "The site cannot be reached", body = basho_core::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn download(
    Caller(who): Caller,
    State(o): State<Orchestrator>,
    Path((id, name)): Path<(String, String)>,
    original: Original,
) -> ApiResult<Response> {
    let actor = who.actor();
    let r = match &who {
        // A site's agent fetches only a released partial its own aggregation step reads.
        Principal::Agent(site) => match o.inner().store.release(&id).await? {
            Some(r) if crate::federated::feeds(&o, site, &id).await? => r,
            _ => {
                return Err(ApiError::not_found(format!(
                    "no release request {id} feeds an aggregation step at site {site}"
                )));
            }
        },
        _ => readable(&o, &who, &id).await?,
    };
    if !may_request(&who, &r.owner) && !matches!(who, Principal::Agent(_)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the workspace's owner and the platform download released files",
        ));
    }
    // A federated job's partial leaves only into its aggregation: the job's result is what
    // people download, once two checkers approve it.
    if !matches!(who, Principal::Agent(_)) && crate::federated::is_partial(&o, &r).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "partial_for_aggregation",
            format!(
                "release request {id} is a federated job's partial: it goes only to the job's \
                 aggregation step; download the job's result once two checkers approve it"
            ),
        ));
    }
    let Some(file) = r.files.iter().find(|f| f.name == name).cloned() else {
        return Err(ApiError::not_found(format!(
            "release request {id} has no file {name:?}"
        )));
    };
    if !matches!(r.state, ReleaseState::Approved | ReleaseState::Released) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_approved",
            format!(
                "release request {id} is {}; only approved files leave",
                r.state
            ),
        ));
    }
    if !file.releasable() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_approved",
            format!("{name} was rejected by a checker or refused by the site's checks"),
        ));
    }
    if let Some(answer) = via_holder(&o, &r.site, &original, None).await {
        return answer;
    }
    let call = Call::Fetch {
        workspace: r.workspace.clone(),
        request: id.clone(),
        sha256: file.sha256.clone(),
        actor: actor.clone(),
    };
    let (link, answer) =
        releases::call(&o.inner().tunnels, &r.site, &call, releases::FETCH_TIMEOUT)
            .await
            .map_err(|e| desk_error(&r.site, e))?;
    let size = match answer {
        Answer::Fetch { size } if size == file.size => size,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "digest_mismatch",
                format!(
                    "site {} holds a different {name} than the one reviewed",
                    r.site
                ),
            ));
        }
    };
    audited(
        &o,
        &actor,
        "release_download_started",
        &r,
        json!({"file": name, "sha256": file.sha256}),
    )
    .await?;
    let stream = Relay {
        link,
        o: o.clone(),
        actor,
        request: id,
        name: name.clone(),
        expected: file.sha256.clone(),
        hasher: Sha256::new(),
        sent: 0,
        size,
    }
    .into_stream();
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&file.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    let base = name.rsplit('/').next().unwrap_or(&name).replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{base}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.into_response())
}

/// A file on its way from the site: bytes are passed on as they come, credit is returned for
/// each chunk, and the digest is checked at the end.
struct Relay {
    link: crate::tunnel::SessionLink,
    o: Orchestrator,
    actor: String,
    request: String,
    name: String,
    expected: String,
    hasher: Sha256,
    sent: u64,
    size: u64,
}

impl Relay {
    /// The file's bytes; an error ends the stream (and so the download).
    fn into_stream(self) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
        futures::stream::unfold(Some(self), |s| async move {
            let mut s = s?;
            match s.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, std::io::Error> {
        if self.sent == self.size && self.size > 0 {
            return Ok(None);
        }
        loop {
            match self.link.rx.recv().await {
                Some(f) if f.kind == Kind::Stdout => {
                    if f.payload.is_empty() {
                        continue;
                    }
                    self.sent += f.payload.len() as u64;
                    if self.sent > self.size {
                        return Err(broken("the site sent more bytes than the file holds"));
                    }
                    self.hasher.update(&f.payload);
                    let credit = (f.payload.len() as u32).to_be_bytes().to_vec();
                    let _ = self.link.send(Kind::Credit, credit).await;
                    if self.sent == self.size {
                        // The last bytes go out only once the whole file matched its digest,
                        // so a file that does not match never arrives whole.
                        self.finish().await?;
                    }
                    return Ok(Some(f.payload));
                }
                Some(f) if f.kind == Kind::Exit && self.size == 0 => {
                    self.link.ended();
                    self.finish().await?;
                    return Ok(None);
                }
                Some(f) if f.kind == Kind::Exit => {
                    self.link.ended();
                    let exit: Exit = f.parse().unwrap_or_default();
                    return Err(broken(&format!(
                        "the site stopped after {} of {} bytes: {}",
                        self.sent,
                        self.size,
                        exit.reason.unwrap_or_default()
                    )));
                }
                Some(f) if f.kind == Kind::Refused => {
                    return Err(broken(&format!(
                        "the site refused: {}",
                        String::from_utf8_lossy(&f.payload)
                    )));
                }
                Some(_) => continue,
                None => return Err(broken("the site's tunnel closed mid-file")),
            }
        }
    }

    /// Checks the whole file's digest, then records the download.
    async fn finish(&mut self) -> Result<(), std::io::Error> {
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        if got != self.expected {
            self.o
                .audit(
                    &self.actor,
                    "release_digest_mismatch",
                    &self.request,
                    json!({"file": self.name, "expected": self.expected, "got": got}),
                )
                .await;
            return Err(broken(&format!(
                "{} does not match the reviewed digest (got {got}); nothing was released",
                self.name
            )));
        }
        let now = Utc::now();
        let changed = self
            .o
            .inner()
            .store
            .change_release(&self.request, &|r: &mut ReleaseRequest| {
                releases::downloaded(r, now)
            })
            .await;
        if let Ok(Some(Ok(r))) = changed {
            let detail = json!({"file": self.name, "sha256": got, "bytes": self.sent});
            let _ = audited(&self.o, &self.actor, "release_downloaded", &r, detail).await;
        }
        Ok(())
    }
}

fn broken(m: &str) -> std::io::Error {
    std::io::Error::other(m.to_owned())
}
