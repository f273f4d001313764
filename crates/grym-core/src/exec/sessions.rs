//! What the session and context RPCs reach: a tenant's sessions, and the
//! context cache's counters.

use serde_json::{Map, Value};

use super::Orchestrator;
use crate::context::{CacheStats, SessionSnapshot};
use crate::error::Error;
use crate::ids::{SessionId, Tenant};

impl Orchestrator {
    /// A session of `tenant` as it stands.
    pub fn session(&self, tenant: &Tenant, id: &SessionId) -> Result<SessionSnapshot, Error> {
        self.context.session(tenant, id)
    }

    /// Sets (or, without `replace`, extends) a session's context; refused
    /// over the size bounds.
    pub fn put_session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
        context: Map<String, Value>,
        replace: bool,
    ) -> Result<SessionSnapshot, Error> {
        self.planner
            .limits()
            .check_object_depth("context", &context)?;
        self.context.put_session(tenant, id, context, replace)
    }

    /// Deletes a session of `tenant`.
    pub fn delete_session(&self, tenant: &Tenant, id: &SessionId) -> Result<(), Error> {
        self.context.delete_session(tenant, id)
    }

    /// The context cache's counters, with pending evictions applied.
    pub async fn context_stats(&self) -> CacheStats {
        self.context.cache_stats().await
    }
}
