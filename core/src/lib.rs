//! basho-core: the types the orchestrator, the agents and the CLI share, and the pure logic on
//! them (identifier rules, the workspace state machine, GA4GH visa verification). No I/O.

pub mod airlock;
pub mod audit;
pub mod consent;
pub mod crash;
pub mod digest;
pub mod duration;
pub mod e2e;
pub mod error;
pub mod federated;
pub mod id;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod proof;
pub mod protocol;
pub mod queue;
pub mod release;
pub mod revocation;
pub mod role;
pub mod template;
pub mod tes;
pub mod tunnel;
pub mod usage;
pub mod visa;
pub mod workspace;

pub use error::ErrorBody;
pub use id::{Ident, IdentError, WorkspaceId};
pub use role::Role;
pub use workspace::{CreateWorkspace, Resources, State, Workspace};

/// Label on every container (and pod) basho manages: the workspace id.
pub const LABEL_WORKSPACE: &str = "io.basho.workspace";
/// Label: the project the workspace belongs to.
pub const LABEL_PROJECT: &str = "io.basho.project";
/// Label: the site whose agent owns the container (several agents may share one engine).
pub const LABEL_SITE: &str = "io.basho.site";
/// Label: the agent instance's namespace, set only when several agents with the same site name
/// share one engine (`basho dev` next to tests, two dev data dirs); each sees only its own.
pub const LABEL_NAMESPACE: &str = "io.basho.namespace";
/// Label: the workspace's expiry, RFC 3339, so an agent can enforce it without the orchestrator.
pub const LABEL_EXPIRES: &str = "io.basho.expires-at";
