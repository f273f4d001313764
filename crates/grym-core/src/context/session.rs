//! Sessions: the context that successive tasks of one conversation share
//! and extend, per tenant.
//!
//! A session holds the context its agent put (with `PutSessionContext`) and
//! the outputs of its tasks, oldest first. It is bounded in entries and in
//! bytes (the oldest entries go first) and expires after a time without
//! use; the number of sessions is bounded too. Sessions of different
//! tenants never meet, even under the same id.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};

use super::canonical::{ContentHash, weight};

/// One task's output, kept in its session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEntry {
    /// The kind of the model that produced it.
    pub kind: String,
    /// What the next models see of it: `task_id`, `task_type`, `model_id`,
    /// `text` and `json`.
    pub context: Map<String, Value>,
    /// The hash of `context`, computed once.
    pub hash: ContentHash,
}

impl SessionEntry {
    /// An entry from its parts.
    pub fn new(kind: String, context: Map<String, Value>) -> Self {
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
pub struct SessionLimits {
    /// Sessions kept at once.
    pub max_sessions: u64,
    /// Time without use after which a session expires.
    pub ttl: Duration,
    /// Bytes one session holds at most.
    pub max_bytes: usize,
    /// Task outputs one session keeps at most.
    pub max_entries: usize,
}

/// Every session, by tenant and id.
pub struct Sessions {
    cache: moka::sync::Cache<(String, String), Arc<Mutex<Session>>>,
    limits: SessionLimits,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.cache.entry_count())
            .field("limits", &self.limits)
            .finish()
    }
}

fn key(tenant: &str, id: &str) -> (String, String) {
    (tenant.to_owned(), id.to_owned())
}

impl Sessions {
    /// No sessions yet.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(limits.max_sessions)
                .time_to_idle(limits.ttl)
                .build(),
            limits,
        }
    }

    /// The session, if it exists.
    pub fn get(&self, tenant: &str, id: &str) -> Option<SessionSnapshot> {
        self.cache.get(&key(tenant, id)).map(|session| {
            session
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot
                .clone()
        })
    }

    /// Sets the agent's context of a session (merged into what is there,
    /// or replacing it), creating the session if needed. `None` when the
    /// result would exceed the session's bound.
    pub fn put(
        &self,
        tenant: &str,
        id: &str,
        context: Map<String, Value>,
        replace: bool,
    ) -> Option<SessionSnapshot> {
        let session = self.cache.get_with(key(tenant, id), Arc::default);
        let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = if replace {
            Map::new()
        } else {
            (*session.snapshot.context).clone()
        };
        merged.extend(context);
        let context_bytes = weight(&merged);
        let entries_bytes: usize = session
            .snapshot
            .entries
            .iter()
            .map(|e| weight(&e.context))
            .sum();
        if context_bytes > self.limits.max_bytes {
            return None;
        }
        session.snapshot.context_hash = (!merged.is_empty()).then(|| ContentHash::of(&merged));
        session.snapshot.context = Arc::new(merged);
        session.bytes = context_bytes + entries_bytes;
        Self::trim(&mut session, self.limits);
        Some(session.snapshot.clone())
    }

    /// Adds a task's output, creating the session if needed and dropping
    /// the oldest outputs beyond the bounds.
    pub fn append(&self, tenant: &str, id: &str, entry: SessionEntry) {
        let session = self.cache.get_with(key(tenant, id), Arc::default);
        let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
        session.bytes += weight(&entry.context);
        session.snapshot.entries.push(Arc::new(entry));
        Self::trim(&mut session, self.limits);
    }

    fn trim(session: &mut Session, limits: SessionLimits) {
        let mut entries: VecDeque<Arc<SessionEntry>> =
            std::mem::take(&mut session.snapshot.entries).into();
        while !entries.is_empty()
            && (entries.len() > limits.max_entries || session.bytes > limits.max_bytes)
        {
            if let Some(oldest) = entries.pop_front() {
                session.bytes = session.bytes.saturating_sub(weight(&oldest.context));
            }
        }
        session.snapshot.entries = entries.into();
    }

    /// Deletes a session; whether it existed.
    pub fn delete(&self, tenant: &str, id: &str) -> bool {
        self.cache.remove(&key(tenant, id)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_sessions: 100,
            ttl: Duration::from_secs(60),
            max_bytes: 4096,
            max_entries: 3,
        }
    }

    fn entry(n: usize) -> SessionEntry {
        SessionEntry::new(
            "audio-language".into(),
            Map::from_iter([("text".to_owned(), json!(format!("output {n}")))]),
        )
    }

    #[test]
    fn tenants_never_see_each_others_sessions() {
        let sessions = Sessions::new(limits());
        sessions.append("acme", "s1", entry(1));
        assert_eq!(sessions.get("acme", "s1").unwrap().entries.len(), 1);
        assert!(sessions.get("globex", "s1").is_none());
    }

    #[test]
    fn the_oldest_outputs_go_beyond_the_bounds() {
        let sessions = Sessions::new(limits());
        for n in 0..5 {
            sessions.append("t", "s", entry(n));
        }
        let texts: Vec<String> = sessions
            .get("t", "s")
            .unwrap()
            .entries
            .iter()
            .map(|e| e.context["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts, ["output 2", "output 3", "output 4"]);
    }

    #[test]
    fn put_merges_or_replaces_and_refuses_what_is_too_large() {
        let sessions = Sessions::new(limits());
        sessions
            .put(
                "t",
                "s",
                Map::from_iter([("a".to_owned(), json!(1))]),
                false,
            )
            .unwrap();
        let merged = sessions
            .put(
                "t",
                "s",
                Map::from_iter([("b".to_owned(), json!(2))]),
                false,
            )
            .unwrap();
        assert_eq!(merged.context.len(), 2);
        let replaced = sessions
            .put("t", "s", Map::from_iter([("c".to_owned(), json!(3))]), true)
            .unwrap();
        assert_eq!(replaced.context.len(), 1);
        let huge = Map::from_iter([("x".to_owned(), json!("y".repeat(10_000)))]);
        assert!(sessions.put("t", "s", huge, false).is_none());
        assert!(sessions.delete("t", "s"));
        assert!(sessions.get("t", "s").is_none());
    }
}
