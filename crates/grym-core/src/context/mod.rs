//! Step 4 of a task's way: the context each model needs.
//!
//! Context reaches a model from three places: what the agent put in its
//! session, what the task carries inline, and what earlier tasks of the
//! session produced, and, for a step of a composite, what the steps it
//! waits for produced. Each part is reshaped for the kind of model about to
//! run by the [`transform`] registered for its (source kind, target kind),
//! and what was reshaped once is kept in the shared [`cache`] for every
//! later request. The model receives one object: the agent's context (the
//! session's, then the task's over it) at the top, the session's earlier
//! outputs, oldest first, under `history`, and the outputs of the steps it
//! waits for under `steps.<id>`.
//!
//! - [`canonical`] computes the content hash and the cache keys;
//! - [`transform`] holds the transformers;
//! - [`cache`] is the transform cache;
//! - [`session`] keeps sessions.

pub(crate) mod cache;
pub(crate) mod canonical;
pub(crate) mod session;
pub(crate) mod transform;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use self::cache::CacheStats;
use self::cache::TransformCache;
pub(crate) use self::canonical::{ContentHash, weight};
pub use self::session::{SessionEntry, SessionSnapshot};
use self::session::{SessionLimits, Sessions};
pub use self::transform::TemplateSpec;
use self::transform::{AGENT, Transformers};

use crate::error::{Error, SettingError};
use crate::ids::{ModelKind, SessionId, Tenant};

/// The key under which a session's earlier outputs reach a model.
const HISTORY: &str = "history";
/// The key under which the outputs of the steps a step waits for reach it.
const STEPS: &str = "steps";

/// The output of an earlier step, for the steps that wait for it.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// The step's id.
    pub(crate) step: String,
    /// The kind of model that produced it.
    kind: ModelKind,
    /// The output, as context.
    context: Map<String, Value>,
    /// Its content hash.
    hash: ContentHash,
}

impl Upstream {
    /// The output of `step`, produced by a model of `kind`.
    pub(crate) fn new(step: String, kind: ModelKind, context: Map<String, Value>) -> Self {
        let hash = ContentHash::of(&context);
        Self {
            step,
            kind,
            context,
            hash,
        }
    }
}

/// Settings of the context manager: the `[context]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextSettings {
    /// The transform cache's bound, in bytes.
    pub cache_max_bytes: u64,
    /// How long a transformed context is kept.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How often expired and evicted entries are cleared out.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// The largest context a task or a session put may carry, in bytes.
    pub max_context_bytes: usize,
    /// Sessions kept at once.
    pub max_sessions: u64,
    /// Time without use after which a session expires.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Bytes one session holds at most.
    pub session_max_bytes: usize,
    /// Task outputs one session keeps at most.
    pub session_max_entries: usize,
    /// Bytes all sessions hold at most.
    pub sessions_max_total_bytes: usize,
    /// Template transformers, over the built-in ones.
    #[serde(rename = "transformers")]
    pub templates: Vec<TemplateSpec>,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            cache_max_bytes: 100 * 1024 * 1024,
            cache_ttl: Duration::from_secs(30 * 60),
            maintenance_interval: Duration::from_secs(5 * 60),
            max_context_bytes: 1024 * 1024,
            max_sessions: 10_000,
            session_ttl: Duration::from_secs(30 * 60),
            session_max_bytes: 1024 * 1024,
            session_max_entries: 32,
            sessions_max_total_bytes: 256 * 1024 * 1024,
            templates: Vec::new(),
        }
    }
}

impl ContextSettings {
    /// Checks the ranges and the templates; errors name the template and
    /// its line (`transformers[0] (agent -> text-generation)`).
    pub fn validate(&self) -> Result<(), SettingError> {
        for (key, value) in [
            ("cache_ttl", self.cache_ttl),
            ("maintenance_interval", self.maintenance_interval),
            ("session_ttl", self.session_ttl),
        ] {
            if value.is_zero() {
                return Err(SettingError::new(key, "must be longer than zero"));
            }
        }
        self.transformers().map(drop)
    }

    /// The built-in transformers with the templates over them.
    fn transformers(&self) -> Result<Transformers, SettingError> {
        Transformers::with_defaults().with_templates(&self.templates)
    }

    /// The bounds of sessions.
    fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_sessions: self.max_sessions,
            ttl: self.session_ttl,
            max_bytes: self.session_max_bytes,
            max_entries: self.session_max_entries,
            max_total_bytes: self.sessions_max_total_bytes,
        }
    }
}

/// The context for one call, and how it was made.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Prepared {
    /// What the model receives: when it is one reshaped part alone (the
    /// agent's context, the common case), the cache's own copy, handed on
    /// without a copy up to the conversion into the worker's request.
    pub context: Arc<Map<String, Value>>,
    /// Parts found already transformed in the cache.
    pub cache_hits: u32,
    /// Parts transformed for this call.
    pub cache_misses: u32,
}

/// Context: sessions, transformers and the transform cache.
#[derive(Debug)]
pub(crate) struct ContextManager {
    settings: ContextSettings,
    transformers: Transformers,
    cache: TransformCache,
    sessions: Sessions,
}

impl ContextManager {
    /// A manager with these settings, checked by
    /// [`ContextSettings::validate`] (templates that do not compile are
    /// left out, with an error logged).
    pub(crate) fn new(settings: ContextSettings) -> Self {
        let transformers = settings.transformers().unwrap_or_else(|error| {
            tracing::error!(%error, "context templates left out");
            Transformers::with_defaults()
        });
        Self {
            cache: TransformCache::new(settings.cache_max_bytes, settings.cache_ttl),
            sessions: Sessions::new(settings.session_limits()),
            transformers,
            settings,
        }
    }

    /// Refuses a context over the size bound, or one using the reserved
    /// `history` or `steps` keys, naming `field`.
    pub(crate) fn check(
        &self,
        field: &'static str,
        context: &Map<String, Value>,
    ) -> Result<(), Error> {
        if context.contains_key(HISTORY) {
            return Err(Error::invalid(
                field,
                format!("the key `{HISTORY}` is reserved for the session's earlier outputs"),
            ));
        }
        if context.contains_key(STEPS) {
            return Err(Error::invalid(
                field,
                format!("the key `{STEPS}` is reserved for the outputs of earlier steps"),
            ));
        }
        let bytes = canonical::weight(context);
        if bytes > self.settings.max_context_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "is {bytes} bytes, over the limit of {}",
                    self.settings.max_context_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The context for a call to a model of `target` kind: the session's,
    /// the task's own and the earlier steps', reshaped and cached.
    pub(crate) async fn prepare(
        &self,
        tenant: &Tenant,
        inline: Option<(&Map<String, Value>, ContentHash)>,
        session: Option<&SessionId>,
        upstream: &[Arc<Upstream>],
        target: &ModelKind,
    ) -> Prepared {
        let (tenant, target) = (tenant.as_str(), target.as_str());
        let mut prepared = Prepared::default();
        let session = session.and_then(|id| self.sessions.get(tenant, id.as_str()));
        // The agent's context: the session's, the task's over it, merged
        // before it is reshaped, so a template sees all of it.
        let session_context = session
            .as_ref()
            .and_then(|s| s.context_hash.map(|hash| (&*s.context, hash)));
        let agent = match (session_context, inline) {
            (None, None) => None,
            (Some((context, hash)), None) | (None, Some((context, hash))) => {
                Some((Cow::Borrowed(context), hash))
            }
            (Some((base, _)), Some((over, _))) => {
                let mut merged = base.clone();
                merged.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
                let hash = ContentHash::of(&merged);
                Some((Cow::Owned(merged), hash))
            }
        };
        let agent = match agent {
            Some((context, hash)) => Some(
                self.reshape(tenant, AGENT, target, &context, hash, &mut prepared)
                    .await,
            ),
            None => None,
        };
        let history = session.as_ref().filter(|s| !s.entries.is_empty());
        if history.is_none() && upstream.is_empty() {
            // Nothing to compose around it: the reshaped part goes as it is.
            if let Some(agent) = agent {
                prepared.context = agent;
            }
            return prepared;
        }
        let mut context = agent.map(Arc::unwrap_or_clone).unwrap_or_default();
        if let Some(session) = history {
            let mut history = Vec::with_capacity(session.entries.len());
            for entry in &session.entries {
                let part = self
                    .reshape(
                        tenant,
                        entry.kind.as_str(),
                        target,
                        &entry.context,
                        entry.hash,
                        &mut prepared,
                    )
                    .await;
                history.push(Value::Object(Arc::unwrap_or_clone(part)));
            }
            context.insert(HISTORY.to_owned(), Value::Array(history));
        }
        if !upstream.is_empty() {
            let mut steps = Map::with_capacity(upstream.len());
            for part in upstream {
                let reshaped = self
                    .reshape(
                        tenant,
                        part.kind.as_str(),
                        target,
                        &part.context,
                        part.hash,
                        &mut prepared,
                    )
                    .await;
                steps.insert(
                    part.step.clone(),
                    Value::Object(Arc::unwrap_or_clone(reshaped)),
                );
            }
            context.insert(STEPS.to_owned(), Value::Object(steps));
        }
        prepared.context = Arc::new(context);
        prepared
    }

    /// One part reshaped from `source` to `target`, through the cache when
    /// a transformer changes it; unchanged when a template fails on it. A
    /// part found in the cache is the cache's, shared.
    async fn reshape(
        &self,
        tenant: &str,
        source: &str,
        target: &str,
        context: &Map<String, Value>,
        hash: ContentHash,
        prepared: &mut Prepared,
    ) -> Arc<Map<String, Value>> {
        let transformers = &self.transformers;
        if !transformers.changes(source, target) {
            return Arc::new(context.clone());
        }
        let found = self
            .cache
            .get_or_compute(hash.key(tenant, source, target), || {
                transformers.transform(source, target, context)
            })
            .await;
        match found {
            Some((part, true)) => {
                prepared.cache_hits += 1;
                part
            }
            Some((part, false)) => {
                prepared.cache_misses += 1;
                part
            }
            None => {
                prepared.cache_misses += 1;
                Arc::new(context.clone())
            }
        }
    }

    /// Keeps a task's output in its session.
    pub(crate) fn record(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        kind: ModelKind,
        context: Map<String, Value>,
    ) {
        self.sessions
            .append(tenant.as_str(), session.as_str(), kind, context);
    }

    /// How long a session lives unused.
    pub(crate) fn session_ttl(&self) -> Duration {
        self.settings.session_ttl
    }

    /// How many task outputs one session keeps.
    pub(crate) fn max_session_entries(&self) -> usize {
        self.settings.session_max_entries
    }

    /// A session of `tenant` as it stands.
    pub(crate) fn session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
    ) -> Result<SessionSnapshot, Error> {
        self.sessions
            .get(tenant.as_str(), id.as_str())
            .ok_or_else(|| Error::SessionNotFound { id: id.clone() })
    }

    /// Sets a session's context; refused over the size bounds.
    pub(crate) fn put_session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
        context: Map<String, Value>,
        replace: bool,
    ) -> Result<SessionSnapshot, Error> {
        self.check("context", &context)?;
        self.sessions
            .put(tenant.as_str(), id.as_str(), context, replace)
    }

    /// Deletes a session of `tenant`.
    pub(crate) fn delete_session(&self, tenant: &Tenant, id: &SessionId) -> Result<(), Error> {
        if self.sessions.delete(tenant.as_str(), id.as_str()) {
            Ok(())
        } else {
            Err(Error::SessionNotFound { id: id.clone() })
        }
    }

    /// The transform cache's counters as they stand, without waiting for
    /// pending evictions.
    pub(crate) fn cache_stats_now(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The transform cache's counters, with pending evictions applied.
    pub(crate) async fn cache_stats(&self) -> CacheStats {
        self.cache.maintain().await;
        self.cache.stats()
    }

    /// Clears expired and evicted entries on the configured period until
    /// `cancel` fires.
    pub(crate) async fn maintain(&self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.maintenance_interval);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => self.cache.maintain().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::object;
    use serde_json::json;

    fn tenant(name: &str) -> Tenant {
        Tenant::new(name).unwrap()
    }

    fn session(id: &str) -> SessionId {
        SessionId::new(id).unwrap()
    }

    fn kind(kind: &str) -> ModelKind {
        ModelKind::new(kind)
    }

    fn analysis() -> Map<String, Value> {
        object(
            json!({"model_id": "gama", "task_type": "audio_analysis", "text": "rain on a tin roof"}),
        )
    }

    #[tokio::test]
    async fn a_session_output_reaches_the_next_model_reshaped_and_cached() {
        let manager = ContextManager::new(ContextSettings::default());
        manager.record(
            &tenant("t"),
            &session("s"),
            kind("audio-language"),
            analysis(),
        );
        let first = manager
            .prepare(
                &tenant("t"),
                None,
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert_eq!(
            first.context["history"][0]["prompt_context"],
            "Audio analysis by gama: rain on a tin roof"
        );
        assert_eq!((first.cache_hits, first.cache_misses), (0, 1));
        let second = manager
            .prepare(
                &tenant("t"),
                None,
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert_eq!((second.cache_hits, second.cache_misses), (1, 0));
        assert_eq!(second.context, first.context);
    }

    #[tokio::test]
    async fn one_tenant_never_reads_another_tenants_context() {
        let manager = ContextManager::new(ContextSettings::default());
        manager.record(
            &tenant("acme"),
            &session("s"),
            kind("audio-language"),
            analysis(),
        );
        let other = manager
            .prepare(
                &tenant("globex"),
                None,
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert!(other.context.is_empty());
        // The same content under another tenant is a separate cache entry.
        manager.record(
            &tenant("globex"),
            &session("s"),
            kind("audio-language"),
            analysis(),
        );
        manager
            .prepare(
                &tenant("acme"),
                None,
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        let globex = manager
            .prepare(
                &tenant("globex"),
                None,
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert_eq!(globex.cache_misses, 1);
    }

    #[tokio::test]
    async fn inline_context_goes_over_the_sessions_and_history_stays_apart() {
        let manager = ContextManager::new(ContextSettings::default());
        manager
            .put_session(
                &tenant("t"),
                &session("s"),
                object(json!({"language": "fr", "topic": "birds"})),
                false,
            )
            .unwrap();
        manager.record(
            &tenant("t"),
            &session("s"),
            kind("speech-recognition"),
            object(json!({"text": "bonjour"})),
        );
        let inline = object(json!({"language": "en"}));
        let prepared = manager
            .prepare(
                &tenant("t"),
                Some((&inline, ContentHash::of(&inline))),
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert_eq!(
            Value::Object((*prepared.context).clone()),
            json!({"language": "en", "topic": "birds", "history": [{"transcript": "bonjour"}]})
        );
    }

    #[tokio::test]
    async fn a_template_sees_the_sessions_and_the_tasks_context_merged() {
        let settings = ContextSettings {
            templates: vec![TemplateSpec {
                source: AGENT.into(),
                target: "text-generation".into(),
                template: "Answer in {{ language }} about {{ topic }}.".into(),
                key: "system".into(),
            }],
            ..ContextSettings::default()
        };
        settings.validate().unwrap();
        let manager = ContextManager::new(settings);
        manager
            .put_session(
                &tenant("t"),
                &session("s"),
                object(json!({"language": "fr", "topic": "birds"})),
                false,
            )
            .unwrap();
        let inline = object(json!({"language": "Welsh"}));
        let prepared = manager
            .prepare(
                &tenant("t"),
                Some((&inline, ContentHash::of(&inline))),
                Some(&session("s")),
                &[],
                &kind("text-generation"),
            )
            .await;
        assert_eq!(prepared.context["system"], "Answer in Welsh about birds.");
    }

    #[tokio::test]
    async fn a_hit_on_the_agents_context_alone_hands_on_the_cached_copy() {
        let settings = ContextSettings {
            templates: vec![TemplateSpec {
                source: AGENT.into(),
                target: "text-generation".into(),
                template: "Answer in {{ language }}.".into(),
                key: "system".into(),
            }],
            ..ContextSettings::default()
        };
        let manager = ContextManager::new(settings);
        let inline = object(json!({"language": "Welsh"}));
        let (tenant, target) = (tenant("t"), kind("text-generation"));
        let prepare = || {
            manager.prepare(
                &tenant,
                Some((&inline, ContentHash::of(&inline))),
                None,
                &[],
                &target,
            )
        };
        let first = prepare().await;
        let second = prepare().await;
        assert_eq!((second.cache_hits, second.cache_misses), (1, 0));
        assert_eq!(second.context["system"], "Answer in Welsh.");
        assert!(Arc::ptr_eq(&first.context, &second.context));
    }

    #[tokio::test]
    async fn earlier_steps_reach_a_step_reshaped_under_their_ids() {
        let manager = ContextManager::new(ContextSettings::default());
        let transcript = Upstream::new(
            "transcribe".into(),
            kind("speech-recognition"),
            object(json!({"text": "is it raining"})),
        );
        let prepared = manager
            .prepare(
                &tenant("t"),
                None,
                None,
                &[Arc::new(transcript)],
                &kind("text-generation"),
            )
            .await;
        assert_eq!(
            Value::Object((*prepared.context).clone()),
            json!({"steps": {"transcribe": {"transcript": "is it raining"}}})
        );
        assert_eq!((prepared.cache_hits, prepared.cache_misses), (0, 1));
    }

    #[test]
    fn a_context_over_the_limit_names_the_field() {
        let manager = ContextManager::new(ContextSettings {
            max_context_bytes: 1000,
            ..ContextSettings::default()
        });
        let big = object(json!({"x": "y".repeat(2000)}));
        let reserved = object(json!({"history": []}));
        assert!(manager.check("task.context", &reserved).is_err());
        let steps = object(json!({"steps": {}}));
        assert!(manager.check("task.context", &steps).is_err());
        match manager.check("task.context", &big).unwrap_err() {
            Error::InvalidRequest { field, .. } => assert_eq!(field, "task.context"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
