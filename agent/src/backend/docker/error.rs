//! Sorting engine errors into "the engine said no" and "the engine could not be asked": only the
//! second is `Unavailable`, and it never means the workspace is gone.

use bollard::errors::Error;

use crate::backend::BackendError;

fn status(e: &Error) -> Option<u16> {
    match e {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// 404: no such container or image.
pub(super) fn is_not_found(e: &Error) -> bool {
    status(e) == Some(404)
}

/// 409: name taken, or removal already in progress.
pub(super) fn is_conflict(e: &Error) -> bool {
    status(e) == Some(409)
}

/// 304: already started, already stopped.
pub(super) fn is_not_modified(e: &Error) -> bool {
    status(e) == Some(304)
}

/// 400-499 other than the ones handled above: the request itself was refused.
pub(super) fn is_client_error(e: &Error) -> bool {
    matches!(status(e), Some(400..=499))
}

/// Any answer from the engine refusing the request (as opposed to no answer at all).
pub(super) fn is_server_refusal(e: &Error) -> bool {
    matches!(status(e), Some(400..=599))
}

/// The engine could not do `what`; the workspace's state is unknown, not gone.
pub(super) fn unavailable(what: &str, e: Error) -> BackendError {
    BackendError::unavailable(format!(
        "docker engine failed to {what}: {e}; check that dockerd is running and reachable"
    ))
    .caused_by(e)
}
