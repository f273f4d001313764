//! What the session and context RPCs reach: a tenant's sessions, and the
//! context cache's counters.
//!
//! With a store, sessions are written through: a put is committed before it
//! is answered, a task's output before the task's result is told, and a session this replica does not hold (after
//! a restart, or put through another replica) is read back from the store
//! when first asked for. A replica that holds a session does not see what
//! another replica adds to it.

use serde_json::{Map, Value};

use super::Orchestrator;
use super::durable::unavailable;
use crate::context::{CacheStats, SessionSnapshot};
use crate::error::Error;
use crate::ids::{ModelKind, SessionId, Tenant};

impl Orchestrator {
    /// A session of `tenant` as it stands.
    pub async fn session(&self, tenant: &Tenant, id: &SessionId) -> Result<SessionSnapshot, Error> {
        self.load_session(tenant, id).await?;
        self.context.session(tenant, id)
    }

    /// Sets (or, without `replace`, extends) a session's context; refused
    /// over the size bounds.
    pub async fn put_session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
        context: Map<String, Value>,
        replace: bool,
    ) -> Result<SessionSnapshot, Error> {
        self.planner
            .limits()
            .check_object_depth("context", &context)?;
        self.load_session(tenant, id).await?;
        let before = self.context.session(tenant, id).ok();
        let snapshot = self.context.put_session(tenant, id, context, replace)?;
        if let Some(store) = &self.store {
            let written = store.put_session(tenant, id, &snapshot.context).await;
            if let Err(error) = self.store_answered(written) {
                // Refused: the session stays as the store has it.
                match before {
                    Some(before) => {
                        let context = (*before.context).clone();
                        let _ = self.context.put_session(tenant, id, context, true);
                    }
                    None => {
                        let _ = self.context.delete_session(tenant, id);
                    }
                }
                return Err(unavailable(error));
            }
        }
        Ok(snapshot)
    }

    /// Deletes a session of `tenant`.
    pub async fn delete_session(&self, tenant: &Tenant, id: &SessionId) -> Result<(), Error> {
        let here = self.context.delete_session(tenant, id);
        let Some(store) = &self.store else {
            return here;
        };
        let deleted = store.delete_session(tenant, id).await;
        match self.store_answered(deleted).map_err(unavailable)? {
            true => Ok(()),
            false => here,
        }
    }

    /// Keeps a task's output in its session, here and in the store, before
    /// the task's result is told.
    pub(super) async fn keep_in_session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
        kind: ModelKind,
        entry: Map<String, Value>,
    ) {
        if let Some(store) = &self.store {
            let keep = self.context.max_session_entries();
            let written = store.append_session(tenant, id, &kind, &entry, keep).await;
            if let Err(error) = self.store_answered(written) {
                tracing::warn!(session = %id, %error, "a session's output was not written");
            }
        }
        self.context.record(tenant, id, kind, entry);
    }

    /// Reads a session back from the store when this replica does not hold
    /// it.
    pub(super) async fn load_session(&self, tenant: &Tenant, id: &SessionId) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self.context.session(tenant, id).is_ok() {
            return Ok(());
        }
        let Some(stored) = store.session(tenant, id).await.map_err(unavailable)? else {
            return Ok(());
        };
        self.context.put_session(tenant, id, stored.context, true)?;
        for (kind, entry) in stored.entries {
            self.context.record(tenant, id, kind, entry);
        }
        Ok(())
    }

    /// The context cache's counters, with pending evictions applied.
    pub async fn context_stats(&self) -> CacheStats {
        self.context.cache_stats().await
    }
}
