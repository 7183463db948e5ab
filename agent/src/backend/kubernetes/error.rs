//! Telling the API server's answers apart: what is worth retrying (`Unavailable`), what only an
//! admin can fix (`Refused`, naming the permission or object), and what the backend handles
//! itself (404 on delete, 409 on create).

use kube::core::Status;

use crate::backend::BackendError;

/// The API server's status, when the error is an answer of it.
pub(super) fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// The HTTP code of an API answer, 0 for transport errors.
pub(super) fn code(e: &kube::Error) -> u16 {
    status(e).map_or(0, |s| s.code)
}

/// The API server could not be reached or failed: state is unknown, try again.
pub(super) fn unavailable(what: &str, e: kube::Error) -> BackendError {
    BackendError::unavailable(format!(
        "kubernetes API: {what}: {}; is the API server reachable from the agent?",
        brief(&e)
    ))
    .caused_by(e)
}

/// The RBAC Role lacks `verb` on `resource`.
pub(super) fn forbidden(
    verb: &str,
    resource: &str,
    namespace: &str,
    e: kube::Error,
) -> BackendError {
    BackendError::refused(format!(
        "the agent may not {verb} {resource} in namespace {namespace} ({}); grant the agent's \
         service account the verb {verb:?} on {resource:?} in its Role (see \
         REQUIRED_PERMISSIONS and docs/site-kubernetes.md)",
        brief(&e)
    ))
    .caused_by(e)
}

/// Maps an error of `verb` on `resource`: 403 is a missing permission, other 4xx a refusal of the
/// object, everything else unavailability.
pub(super) fn classify(
    verb: &str,
    resource: &str,
    namespace: &str,
    e: kube::Error,
) -> BackendError {
    match code(&e) {
        403 => forbidden(verb, resource, namespace, e),
        400 | 404 | 422 => BackendError::refused(format!(
            "the API server refused to {verb} {resource} in namespace {namespace}: {}",
            brief(&e)
        ))
        .caused_by(e),
        _ => unavailable(&format!("{verb} {resource}"), e),
    }
}

/// One line for logs and messages: the status message for API answers.
pub(super) fn brief(e: &kube::Error) -> String {
    match status(e) {
        Some(s) if !s.message.is_empty() => format!("{} {}", s.code, s.message),
        Some(s) => format!("{} {}", s.code, s.reason),
        None => e.to_string(),
    }
}
