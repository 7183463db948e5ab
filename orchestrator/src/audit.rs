//! Writing the audit log: [`Orchestrator::audit`] appends one entry and never fails the request
//! it belongs to, and [`Orchestrator::transition_as`] records who moved a workspace.

use basho_core::State;
use chrono::Utc;
use serde_json::{Value, json};

use crate::Orchestrator;
use crate::store::{StoreError, Transition, VisaRef};

/// The actor of background work (the expiry loop, the silent-agent sweep).
pub const SYSTEM: &str = "orchestrator";

/// Issuer and id of each visa: all an audit entry says about a visa.
pub fn visa_detail(refs: &[VisaRef]) -> Value {
    Value::Array(
        refs.iter()
            .map(|v| json!({"iss": v.iss, "jti": v.jti}))
            .collect(),
    )
}

impl Orchestrator {
    /// Appends an audit entry. A failed append is logged and counted
    /// (`basho_audit_append_failures`) but does not fail the caller: the action already happened.
    pub(crate) async fn audit(&self, actor: &str, action: &str, target: &str, detail: Value) {
        let r = self
            .inner()
            .store
            .append_audit(Utc::now(), actor, action, target, detail)
            .await;
        if let Err(e) = r {
            self.inner().metrics.audit_append_failures.inc();
            tracing::error!(error = %e, actor, action, target, "audit entry not written");
        }
    }

    /// [`Orchestrator::transition`], writing a `workspace_state` entry naming `actor` when the
    /// state changed.
    pub(crate) async fn transition_as(
        &self,
        actor: &str,
        id: &str,
        to: State,
        message: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let t = self.transition(id, to, message).await?;
        if let Transition::Changed { from, record } = &t {
            let w = &record.workspace;
            self.audit(
                actor,
                "workspace_state",
                &w.id,
                json!({"from": from.as_str(), "to": w.state.as_str(), "site": w.site.as_str(),
                       "message": message}),
            )
            .await;
        }
        Ok(t)
    }
}
