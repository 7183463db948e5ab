//! The deny-all NetworkPolicy: every workspace pod is selected by one policy with both policy
//! types and no rule, so it may neither receive nor send a packet. The agent makes sure it exists
//! before any launch and refuses to launch when it cannot.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tracing::info;

use super::error::{brief, classify, code, forbidden};
use super::spec::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::backend::BackendError;

/// The policy's name in the namespace.
pub const POLICY_NAME: &str = "basho-deny-all";

/// The policy the agent creates.
pub fn deny_all(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_string(),
            MANAGED_BY.to_string(),
        )])),
        match_expressions: None,
    }
}

/// Why a policy of that name is not the deny-all one, `None` when it is.
pub fn not_deny_all(np: &NetworkPolicy) -> Option<String> {
    let Some(spec) = &np.spec else {
        return Some("it has no spec".into());
    };
    let types = spec.policy_types.clone().unwrap_or_default();
    if !(types.iter().any(|t| t == "Ingress") && types.iter().any(|t| t == "Egress")) {
        return Some(format!(
            "its policyTypes are {types:?}, not Ingress and Egress"
        ));
    }
    if spec.ingress.as_ref().is_some_and(|r| !r.is_empty())
        || spec.egress.as_ref().is_some_and(|r| !r.is_empty())
    {
        return Some("it allows some traffic".into());
    }
    // An empty selector (every pod) also covers workspaces; any other must be ours exactly.
    let selects_workspaces = match &spec.pod_selector {
        None => true,
        Some(s) => {
            let empty = s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty);
            empty || *s == selector()
        }
    };
    if !selects_workspaces {
        return Some(format!(
            "its podSelector does not select {LABEL_MANAGED_BY}={MANAGED_BY}"
        ));
    }
    None
}

/// Makes sure the deny-all policy is in `namespace` (reading it, creating it when absent), or
/// says why workspaces must not be launched.
pub async fn ensure(api: &Api<NetworkPolicy>, namespace: &str) -> Result<(), BackendError> {
    let resource = "networkpolicies.networking.k8s.io";
    let existing = match api.get_opt(POLICY_NAME).await {
        Ok(found) => found,
        Err(e) if code(&e) == 403 => return Err(forbidden("get", resource, namespace, e)),
        Err(e) => return Err(unavailable_policy(&e)),
    };
    let policy = match existing {
        Some(p) => p,
        None => match api
            .create(&PostParams::default(), &deny_all(namespace))
            .await
        {
            Ok(p) => {
                info!(
                    namespace,
                    policy = POLICY_NAME,
                    "created the deny-all NetworkPolicy"
                );
                p
            }
            // Created meanwhile by another caller; read what is there now.
            Err(e) if code(&e) == 409 => api
                .get(POLICY_NAME)
                .await
                .map_err(|e| classify("get", resource, namespace, e))?,
            Err(e) if code(&e) == 403 => {
                return Err(forbidden("create", resource, namespace, e));
            }
            Err(e) => return Err(classify("create", resource, namespace, e)),
        },
    };
    match not_deny_all(&policy) {
        None => Ok(()),
        Some(why) => Err(BackendError::refused(format!(
            "NetworkPolicy {POLICY_NAME} in namespace {namespace} is not deny-all: {why}; \
             delete it (`kubectl -n {namespace} delete networkpolicy {POLICY_NAME}`) and the \
             agent creates the right one"
        ))),
    }
}

fn unavailable_policy(e: &kube::Error) -> BackendError {
    BackendError::unavailable(format!(
        "cannot read NetworkPolicy {POLICY_NAME}: {}; no workspace is launched until it is \
         confirmed",
        brief(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicyEgressRule;

    #[test]
    fn ours_is_deny_all_and_loosened_ones_are_not() {
        let ours = deny_all("ns");
        assert_eq!(not_deny_all(&ours), None);

        let mut open = ours.clone();
        open.spec.as_mut().unwrap().egress = Some(vec![NetworkPolicyEgressRule::default()]);
        assert!(not_deny_all(&open).unwrap().contains("allows"));

        let mut ingress_only = ours.clone();
        ingress_only.spec.as_mut().unwrap().policy_types = Some(vec!["Ingress".into()]);
        assert!(not_deny_all(&ingress_only).unwrap().contains("policyTypes"));

        let mut elsewhere = ours.clone();
        elsewhere.spec.as_mut().unwrap().pod_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "other".into())])),
            match_expressions: None,
        });
        assert!(not_deny_all(&elsewhere).unwrap().contains("podSelector"));

        let mut every_pod = ours;
        every_pod.spec.as_mut().unwrap().pod_selector = Some(LabelSelector::default());
        assert_eq!(not_deny_all(&every_pod), None);
    }
}
