//! Sessions: the context that successive tasks of one conversation share
//! and extend, per tenant.
//!
//! A session holds the context its agent put (with `PutSessionContext`, at
//! most half the session's bytes) and the outputs of its tasks, oldest
//! first. Within its bound of entries and bytes the oldest outputs go first,
//! but never the newest; an output too large to keep is kept as a stub
//! that says so. A session expires after a time without use; the sessions
//! of all tenants share a count bound (least recently used go first) and a
//! byte budget, beyond which new context is refused rather than lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::canonical::{ContentHash, weight};
use crate::error::Error;
use crate::ids::ModelKind;

/// One task's output, kept in its session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEntry {
    /// The kind of the model that produced it.
    pub kind: ModelKind,
    /// What the next models see of it: `task_id`, `task_type`, `model_id`,
    /// `text` and `json`.
    pub context: Map<String, Value>,
    /// The hash of `context`, computed once.
    pub hash: ContentHash,
}

impl SessionEntry {
    fn new(kind: ModelKind, context: Map<String, Value>) -> Self {
        let hash = ContentHash::of(&context);
        Self {
            kind,
            context,
            hash,
        }
    }
}

/// A session as it stands.
#[derive(Debug, Clone, Default)]
pub struct SessionSnapshot {
    /// The context the agent put.
    pub context: Arc<Map<String, Value>>,
    /// Its hash, when not empty.
    pub context_hash: Option<ContentHash>,
    /// Task outputs, oldest first.
    pub entries: Vec<Arc<SessionEntry>>,
}

#[derive(Debug, Default)]
struct Session {
    snapshot: SessionSnapshot,
    bytes: usize,
}

/// The bounds of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionLimits {
    /// Sessions kept at once.
    pub(crate) max_sessions: u64,
    /// Time without use after which a session expires.
    pub(crate) ttl: Duration,
    /// Bytes one session holds at most.
    pub(crate) max_bytes: usize,
    /// Task outputs one session keeps at most.
    pub(crate) max_entries: usize,
    /// Bytes all sessions hold at most.
    pub(crate) max_total_bytes: usize,
}

/// Every session, by tenant and id.
pub(crate) struct Sessions {
    cache: moka::sync::Cache<(String, String), Arc<Mutex<Session>>>,
    limits: SessionLimits,
    total: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.cache.entry_count())
            .field("bytes", &self.total.load(Ordering::Relaxed))
            .field("limits", &self.limits)
            .finish()
    }
}

fn key(tenant: &str, id: &str) -> (String, String) {
    (tenant.to_owned(), id.to_owned())
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sessions {
    /// No sessions yet.
    pub(crate) fn new(limits: SessionLimits) -> Self {
        let total = Arc::new(AtomicUsize::new(0));
        let released = Arc::clone(&total);
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(limits.max_sessions)
                .time_to_idle(limits.ttl)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .eviction_listener(move |_key, session: Arc<Mutex<Session>>, _cause| {
                    released.fetch_sub(lock(&session).bytes, Ordering::AcqRel);
                })
                .build(),
            limits,
            total,
        }
    }

    /// The session, if it exists.
    pub(crate) fn get(&self, tenant: &str, id: &str) -> Option<SessionSnapshot> {
        self.cache
            .get(&key(tenant, id))
            .map(|session| lock(&session).snapshot.clone())
    }

    /// Sets the agent's context of a session (merged into what is there,
    /// or replacing it), creating the session if needed.
    pub(crate) fn put(
        &self,
        tenant: &str,
        id: &str,
        context: Map<String, Value>,
        replace: bool,
    ) -> Result<SessionSnapshot, Error> {
        let session = self.cache.get_with(key(tenant, id), Arc::default);
        let mut session = lock(&session);
        let mut merged = if replace {
            Map::new()
        } else {
            (*session.snapshot.context).clone()
        };
        merged.extend(context);
        let context_bytes = weight(&merged);
        if context_bytes > self.limits.max_bytes / 2 {
            return Err(Error::invalid(
                "context",
                format!(
                    "would take {context_bytes} bytes of the session, over half its limit of {}",
                    self.limits.max_bytes
                ),
            ));
        }
        let old_context_bytes = if session.snapshot.context.is_empty() {
            0
        } else {
            weight(&session.snapshot.context)
        };
        let grows = context_bytes.saturating_sub(old_context_bytes);
        if self.total.load(Ordering::Acquire) + grows > self.limits.max_total_bytes {
            return Err(Error::SessionsFull);
        }
        session.snapshot.context_hash = (!merged.is_empty()).then(|| ContentHash::of(&merged));
        session.snapshot.context = Arc::new(merged);
        self.resize(&mut session, context_bytes, old_context_bytes);
        self.trim(&mut session);
        Ok(session.snapshot.clone())
    }

    /// Adds a task's output, creating the session if needed. An output too
    /// large for the session is kept as a stub; beyond the bounds the oldest
    /// outputs go, never this newest one; beyond the byte budget of all
    /// sessions it is not kept.
    pub(crate) fn append(
        &self,
        tenant: &str,
        id: &str,
        kind: ModelKind,
        context: Map<String, Value>,
    ) {
        let mut context = context;
        let bytes = weight(&context);
        if bytes > self.limits.max_bytes / 4 {
            let mut stub: Map<String, Value> = ["task_id", "task_type", "model_id"]
                .iter()
                .filter_map(|k| context.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            stub.insert(
                "omitted".into(),
                json!(format!("the output ({bytes} bytes) is too large to keep")),
            );
            context = stub;
        }
        let entry = SessionEntry::new(kind, context);
        let bytes = weight(&entry.context);
        if self.total.load(Ordering::Acquire) + bytes > self.limits.max_total_bytes {
            tracing::warn!(
                session = id,
                "the sessions' byte budget is spent; an output is not kept"
            );
            return;
        }
        let session = self.cache.get_with(key(tenant, id), Arc::default);
        let mut session = lock(&session);
        self.resize(&mut session, bytes, 0);
        session.snapshot.entries.push(Arc::new(entry));
        self.trim(&mut session);
    }

    /// Accounts a change of `added` bytes in, `removed` out.
    fn resize(&self, session: &mut Session, added: usize, removed: usize) {
        session.bytes = session.bytes + added - removed.min(session.bytes + added);
        self.total.fetch_add(added, Ordering::AcqRel);
        self.total.fetch_sub(
            removed.min(self.total.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
    }

    fn trim(&self, session: &mut Session) {
        let limits = self.limits;
        let mut dropped = 0;
        while session.snapshot.entries.len() - dropped > 1
            && (session.snapshot.entries.len() - dropped > limits.max_entries
                || session.bytes > limits.max_bytes)
        {
            let bytes = weight(&session.snapshot.entries[dropped].context);
            self.resize(session, 0, bytes);
            dropped += 1;
        }
        session.snapshot.entries.drain(..dropped);
    }

    /// Deletes a session; whether it existed.
    pub(crate) fn delete(&self, tenant: &str, id: &str) -> bool {
        // The eviction listener gives its bytes back.
        self.cache.remove(&key(tenant, id)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::object;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_sessions: 100,
            ttl: Duration::from_secs(60),
            max_bytes: 16 * 1024,
            max_entries: 3,
            max_total_bytes: 64 * 1024,
        }
    }

    fn output(n: usize) -> Map<String, Value> {
        object(json!({"task_id": format!("t{n}"), "text": format!("output {n}")}))
    }

    fn texts(sessions: &Sessions, tenant: &str, id: &str) -> Vec<String> {
        sessions
            .get(tenant, id)
            .map(|s| {
                s.entries
                    .iter()
                    .map(|e| e.context["text"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn tenants_never_see_each_others_sessions() {
        let sessions = Sessions::new(limits());
        sessions.append("acme", "s1", ModelKind::new("audio-language"), output(1));
        assert_eq!(texts(&sessions, "acme", "s1"), ["output 1"]);
        assert!(sessions.get("globex", "s1").is_none());
    }

    #[test]
    fn the_oldest_outputs_go_beyond_the_bounds_but_never_the_newest() {
        let sessions = Sessions::new(limits());
        for n in 0..5 {
            sessions.append("t", "s", ModelKind::new("k"), output(n));
        }
        assert_eq!(
            texts(&sessions, "t", "s"),
            ["output 2", "output 3", "output 4"]
        );
        // An output too large is kept as a stub, and the history stays.
        sessions.append(
            "t",
            "s",
            ModelKind::new("k"),
            object(json!({"task_id": "big", "text": "x".repeat(10_000)})),
        );
        let snapshot = sessions.get("t", "s").unwrap();
        let last = snapshot.entries.last().unwrap();
        assert_eq!(last.context["task_id"], "big");
        assert!(last.context["omitted"].is_string());
        assert_eq!(snapshot.entries.len(), 3);
    }

    #[test]
    fn put_merges_or_replaces_and_refuses_what_is_too_large() {
        let sessions = Sessions::new(limits());
        sessions
            .put("t", "s", object(json!({"a": 1})), false)
            .unwrap();
        let merged = sessions
            .put("t", "s", object(json!({"b": 2})), false)
            .unwrap();
        assert_eq!(merged.context.len(), 2);
        let replaced = sessions
            .put("t", "s", object(json!({"c": 3})), true)
            .unwrap();
        assert_eq!(replaced.context.len(), 1);
        let huge = object(json!({"x": "y".repeat(10_000)}));
        assert!(sessions.put("t", "s", huge, false).is_err());
        assert!(sessions.delete("t", "s"));
        assert!(sessions.get("t", "s").is_none());
    }

    #[test]
    fn the_byte_budget_of_all_sessions_refuses_rather_than_loses() {
        let sessions = Sessions::new(limits());
        let mut refused = 0;
        for n in 0..40 {
            let context = object(json!({"x": "y".repeat(6_000)}));
            if matches!(
                sessions.put("t", &format!("s{n}"), context, false),
                Err(Error::SessionsFull)
            ) {
                refused += 1;
            }
        }
        assert!(refused > 0);
        assert!(sessions.total.load(Ordering::Acquire) <= limits().max_total_bytes);
        // Deleting gives the bytes back.
        for n in 0..40 {
            sessions.delete("t", &format!("s{n}"));
        }
        sessions.cache.run_pending_tasks();
        assert_eq!(sessions.total.load(Ordering::Acquire), 0);
    }
}
