//! The registry of models.
//!
//! A model is one [`ModelEntry`]: its description, its performance
//! statistics per task type, and one or more [`Replica`]s (endpoints serving
//! the same model), each with its own health and in-flight count. What a
//! model is and whether it is up change as the [`probe`] learns
//! them; the statistics change with every call. Readers on the request path
//! take no global lock: descriptions are `ArcSwap` snapshots, health and
//! in-flight counts are atomics, and each (model, task type) statistics cell
//! has its own short lock.
//!
//! A registry is immutable once built; the orchestrator swaps in a new one
//! when the worker list changes, reusing the entries of unchanged models so
//! their statistics and health carry over, and calls in flight keep the
//! entry they started with.
//!
//! - [`probe`] keeps every model described and health-checked;
//! - [`stats`] holds the decayed statistics of each (model, task type); the
//!   selector, which owns their half-life, records into and reads them;
//! - [`outlier`] ejects a replica whose calls fail, on the evidence of the
//!   calls themselves, and lets it back in through one probe call;
//! - [`budget`] bounds the retries a model's failures may cause.

pub(crate) mod budget;
pub(crate) mod outlier;
pub mod probe;
pub(crate) mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use self::budget::RetryBudget;
pub use self::budget::{BudgetUse, RetrySettings};
pub use self::outlier::EjectionSettings;
use self::outlier::{Admission, Cause, Evidence, Verdict};
use self::stats::PerformanceStats;
pub use self::stats::{CallOutcome, StatsSnapshot};
use crate::client::ModelClient;
use crate::error::SettingError;
use crate::ids::{ModelId, ModelKind, TaskType};
use crate::model::{Capability, CapabilitySource, Description, Health};

/// One endpoint serving a model.
pub struct Replica {
    endpoint: String,
    client: Arc<dyn ModelClient>,
    health: AtomicU8,
    in_flight: AtomicU32,
    /// Whether it is ejected or half-open: the one read calls pay for.
    out: AtomicBool,
    evidence: Mutex<Evidence>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("endpoint", &self.endpoint)
            .field("health", &self.health())
            .field("in_flight", &self.in_flight())
            .field("ejected", &self.is_ejected())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// An endpoint reached through `client`.
    pub fn new(endpoint: impl Into<String>, client: Arc<dyn ModelClient>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client,
            health: AtomicU8::new(Health::Unknown as u8),
            in_flight: AtomicU32::new(0),
            out: AtomicBool::new(false),
            evidence: Mutex::new(Evidence::default()),
        }
    }

    /// The endpoint's address, for display.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client that reaches it.
    pub fn client(&self) -> &Arc<dyn ModelClient> {
        &self.client
    }

    /// The last known health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records a health check's answer. A replica that was down and
    /// answers again (restarted, say) is half-open at once if it was
    /// ejected: its next call is the probe that takes it back.
    pub fn set_health(&self, health: Health) {
        let was = Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed));
        if was == Health::NotServing && health == Health::Serving && self.is_ejected() {
            self.evidence().readmit();
        }
    }

    /// Whether outlier ejection keeps it out (ejected, or half-open and
    /// waiting for its probe to answer).
    pub fn is_ejected(&self) -> bool {
        self.out.load(Ordering::Acquire)
    }

    fn evidence(&self) -> std::sync::MutexGuard<'_, Evidence> {
        self.evidence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to it now, and as what; a probe that is due is
    /// claimed by the caller that is told so.
    fn admit(&self, now: Instant) -> Admission {
        if self.health() == Health::NotServing {
            return Admission::Closed;
        }
        if !self.is_ejected() {
            return Admission::Open;
        }
        let mut evidence = self.evidence();
        let admission = evidence.admission(now);
        if admission == Admission::Probe {
            evidence.start_probe();
        }
        admission
    }

    /// Whether it could take a call now, leaving any probe unclaimed.
    fn may_serve(&self, now: Instant) -> bool {
        self.health() != Health::NotServing
            && (!self.is_ejected() || self.evidence().clone().admission(now) != Admission::Closed)
    }

    /// Calls running on it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a call as in flight until the guard is dropped, also when the
    /// call is cancelled.
    pub fn start_call(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            replica: Arc::clone(self),
            probe: false,
        }
    }
}

/// A call in flight on a replica; dropping it ends the count, and frees
/// the replica's probe if the call was one that ended without a verdict.
#[derive(Debug)]
pub struct InFlight {
    replica: Arc<Replica>,
    probe: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            self.replica.evidence().abandon_probe();
        }
    }
}

/// A replica chosen for a call.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The replica.
    pub replica: Arc<Replica>,
    /// Whether the call is the probe of a half-open replica.
    pub probe: bool,
}

impl Chosen {
    /// Counts the call as in flight until the guard is dropped; a probe
    /// dropped before its verdict lets the next call probe instead.
    pub fn start_call(&self) -> InFlight {
        let mut call = self.replica.start_call();
        call.probe = self.probe;
        call
    }
}

/// An ejection, as it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    /// Why.
    pub(crate) cause: Cause,
    /// For how long.
    pub(crate) time: Duration,
}

type StatsCell = Arc<Mutex<PerformanceStats>>;

fn find_cell<'a>(
    cells: &'a [(TaskType, StatsCell)],
    task_type: &TaskType,
) -> Option<&'a StatsCell> {
    cells
        .iter()
        .find(|(cell_type, _)| cell_type == task_type)
        .map(|(_, cell)| cell)
}

/// One registered model.
pub struct ModelEntry {
    id: ModelId,
    replicas: Vec<Arc<Replica>>,
    cursor: AtomicUsize,
    description: ArcSwap<Description>,
    /// The kind was fixed by configuration; the worker's is ignored.
    pinned_kind: bool,
    /// The capabilities were fixed by configuration; the worker's are ignored.
    pinned_capabilities: bool,
    /// Whether the worker's own description was learnt, or is not needed.
    described: AtomicBool,
    /// One cell per task type the model was called for: a handful, so a
    /// scan comparing names beats hashing the name on every read.
    stats: RwLock<Vec<(TaskType, StatsCell)>>,
    /// Retries its failures may cause.
    budget: RetryBudget,
    /// Held while an ejection is decided, so two replicas failing at once
    /// cannot both leave when only one may.
    ejecting: Mutex<()>,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("id", &self.id)
            .field("replicas", &self.replicas)
            .field("description", &self.description.load())
            .finish_non_exhaustive()
    }
}

impl ModelEntry {
    /// A model served by `replicas` (at least one), whose workers will
    /// describe it.
    pub fn new(id: ModelId, replicas: Vec<Replica>) -> Result<Self, SettingError> {
        if replicas.is_empty() {
            return Err(SettingError::new(
                "endpoints",
                format!("model `{id}` has no endpoint"),
            ));
        }
        Ok(Self::with_replicas(id, replicas))
    }

    /// A model served by one endpoint.
    pub fn single(id: ModelId, endpoint: impl Into<String>, client: Arc<dyn ModelClient>) -> Self {
        Self::with_replicas(id, vec![Replica::new(endpoint, client)])
    }

    fn with_replicas(id: ModelId, replicas: Vec<Replica>) -> Self {
        Self {
            id,
            replicas: replicas.into_iter().map(Arc::new).collect(),
            cursor: AtomicUsize::new(0),
            description: ArcSwap::from_pointee(Description::unknown()),
            pinned_kind: false,
            pinned_capabilities: false,
            described: AtomicBool::new(false),
            stats: RwLock::new(Vec::new()),
            budget: RetryBudget::default(),
            ejecting: Mutex::new(()),
        }
    }

    /// Fixes the model's kind; the worker's own is then ignored.
    pub fn with_kind(mut self, kind: ModelKind) -> Self {
        self.pinned_kind = true;
        self.description.store(Arc::new(Description {
            kind,
            ..(*self.description.load_full()).clone()
        }));
        self.settle();
        self
    }

    /// Fixes the model's capabilities; the worker's own are then ignored.
    pub fn with_capabilities(mut self, capabilities: Vec<Capability>) -> Self {
        self.pinned_capabilities = true;
        self.description.store(Arc::new(Description {
            capabilities,
            source: CapabilitySource::Config,
            ..(*self.description.load_full()).clone()
        }));
        self.settle();
        self
    }

    /// Nothing is left to learn from the worker once both are pinned.
    fn settle(&mut self) {
        if self.pinned_kind && self.pinned_capabilities {
            *self.described.get_mut() = true;
        }
    }

    /// The model's id.
    pub fn id(&self) -> &ModelId {
        &self.id
    }

    /// The endpoints serving it.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// A snapshot of what the model is and serves.
    pub fn description(&self) -> Arc<Description> {
        self.description.load_full()
    }

    /// The description for a short read, without counting a reference.
    pub(crate) fn description_guard(&self) -> arc_swap::Guard<Arc<Description>> {
        self.description.load()
    }

    /// Whether the description is still to be learnt from a worker.
    pub fn needs_description(&self) -> bool {
        !self.described.load(Ordering::Acquire)
    }

    /// Whether anything of the description comes from the workers.
    pub fn describes_itself(&self) -> bool {
        !(self.pinned_kind && self.pinned_capabilities)
    }

    /// Asks for the description to be learnt again; until then the last one
    /// stays in use.
    pub fn forget_description(&self) {
        if self.describes_itself() {
            self.described.store(false, Ordering::Release);
        }
    }

    /// Records what a worker said of the model, keeping what configuration
    /// pinned.
    pub fn learn_description(&self, described: Description) {
        let current = self.description.load_full();
        let learnt = Description {
            kind: if self.pinned_kind {
                current.kind.clone()
            } else {
                described.kind
            },
            capabilities: if self.pinned_capabilities {
                current.capabilities.clone()
            } else {
                described.capabilities
            },
            source: if self.pinned_capabilities {
                CapabilitySource::Config
            } else {
                CapabilitySource::Worker
            },
        };
        self.description.store(Arc::new(learnt));
        self.described.store(true, Ordering::Release);
    }

    /// Serving when any replica serves; not serving when every replica is
    /// known not to; unknown otherwise.
    pub fn health(&self) -> Health {
        let mut all_down = true;
        for replica in &self.replicas {
            match replica.health() {
                Health::Serving => return Health::Serving,
                Health::Unknown => all_down = false,
                Health::NotServing => {}
            }
        }
        if all_down {
            Health::NotServing
        } else {
            Health::Unknown
        }
    }

    /// Calls in flight on all replicas.
    pub fn in_flight(&self) -> u32 {
        self.replicas.iter().map(|r| r.in_flight()).sum()
    }

    /// The replica for the next call: among those not known to be down, not
    /// ejected and not in `skip`, the one with the fewest calls in flight,
    /// ties taken in turn. A half-open replica due its probe comes first,
    /// so an ejected replica that recovered is found out.
    pub fn choose_replica(&self, now: Instant, skip: &[Arc<Replica>]) -> Option<Chosen> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let count = self.replicas.len();
        let mut best: Option<&Arc<Replica>> = None;
        for replica in (0..count).map(|i| &self.replicas[(start + i) % count]) {
            if skip.iter().any(|skipped| Arc::ptr_eq(skipped, replica)) {
                continue;
            }
            match replica.admit(now) {
                Admission::Probe => {
                    return Some(Chosen {
                        replica: Arc::clone(replica),
                        probe: true,
                    });
                }
                Admission::Open
                    if best.is_none_or(|best| replica.in_flight() < best.in_flight()) =>
                {
                    best = Some(replica);
                }
                Admission::Open | Admission::Closed => {}
            }
        }
        best.map(|replica| Chosen {
            replica: Arc::clone(replica),
            probe: false,
        })
    }

    /// Whether a replica not in `skip` could take a call now.
    pub fn can_serve(&self, now: Instant, skip: &[Arc<Replica>]) -> bool {
        self.replicas.iter().any(|replica| {
            !skip.iter().any(|skipped| Arc::ptr_eq(skipped, replica)) && replica.may_serve(now)
        })
    }

    /// [`choose_replica`](Self::choose_replica) now, with nothing skipped.
    pub fn pick_replica(&self) -> Option<Arc<Replica>> {
        self.choose_replica(Instant::now(), &[])
            .map(|chosen| chosen.replica)
    }

    /// Records what a call said of `replica`, and ejects it when that
    /// evidence says to and the model can spare it: no more than
    /// `max_share` of its replicas out, and never the last one that can
    /// serve. Returns the ejection, if there was one.
    pub(crate) fn judge(
        &self,
        replica: &Replica,
        verdict: Verdict,
        now: Instant,
        settings: &EjectionSettings,
    ) -> Option<Ejection> {
        // An answer from a replica that is in needs no decision.
        if verdict == Verdict::Answered && !replica.is_ejected() {
            replica.evidence().record(verdict, now, settings);
            return None;
        }
        let _deciding = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evidence = replica.evidence();
        let Some(cause) = evidence.record(verdict, now, settings) else {
            if !evidence.is_out() {
                replica.out.store(false, Ordering::Release);
            }
            return None;
        };
        let others_serving = self.replicas.iter().any(|other| {
            !std::ptr::eq(Arc::as_ptr(other), replica)
                && other.health() != Health::NotServing
                && !other.is_ejected()
        });
        let out = self.replicas.iter().filter(|r| r.is_ejected()).count();
        // A replica on trial is counted among those out already.
        let room = if replica.is_ejected() {
            true
        } else {
            out < settings.most_ejected(self.replicas.len())
        };
        if !others_serving && replica.is_ejected() {
            // Its probe failed, but it is all the model has: it is let
            // back in rather than leave the model with no replica.
            evidence.come_back(now);
            replica.out.store(false, Ordering::Release);
            return None;
        }
        if !(others_serving && room) {
            // It stays in, its evidence starting over.
            evidence.start_over();
            return None;
        }
        let time = evidence.eject(now, settings);
        replica.out.store(true, Ordering::Release);
        Some(Ejection { cause, time })
    }

    /// The model's retry budget.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// How much of its retry budget the model used in the last window.
    pub fn budget_used(&self, now: Instant) -> BudgetUse {
        self.budget.used(now)
    }

    fn stats_cell(&self, task_type: &TaskType) -> StatsCell {
        if let Some(cell) = find_cell(
            &self.stats.read().unwrap_or_else(PoisonError::into_inner),
            task_type,
        ) {
            return Arc::clone(cell);
        }
        let mut cells = self.stats.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = find_cell(&cells, task_type) {
            return Arc::clone(cell);
        }
        let cell = StatsCell::default();
        cells.push((task_type.clone(), Arc::clone(&cell)));
        cell
    }

    /// Records the outcome of one call for a task type.
    pub(crate) fn record(
        &self,
        task_type: &TaskType,
        now: Instant,
        half_life: Duration,
        outcome: CallOutcome,
        latency: Duration,
    ) {
        self.stats_cell(task_type)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now, half_life, outcome, latency);
    }

    /// The model's recent performance for a task type.
    pub(crate) fn stats(
        &self,
        task_type: &TaskType,
        now: Instant,
        half_life: Duration,
    ) -> StatsSnapshot {
        self.read_stats(task_type, |stats| stats.snapshot(now, half_life))
    }

    /// [`stats`](Self::stats) without the tail quantiles, for selection.
    pub(crate) fn rates(
        &self,
        task_type: &TaskType,
        now: Instant,
        half_life: Duration,
    ) -> StatsSnapshot {
        self.read_stats(task_type, |stats| stats.rates(now, half_life))
    }

    fn read_stats(
        &self,
        task_type: &TaskType,
        read: impl FnOnce(&PerformanceStats) -> StatsSnapshot,
    ) -> StatsSnapshot {
        // The cell's lock is taken under the list's read lock, which only
        // a model's first call for a task type waits on.
        let cells = self.stats.read().unwrap_or_else(PoisonError::into_inner);
        match find_cell(&cells, task_type) {
            Some(cell) => read(&cell.lock().unwrap_or_else(PoisonError::into_inner)),
            None => read(&PerformanceStats::default()),
        }
    }

    /// Whether `other` is the same model reached the same way, so a new
    /// registry may keep this entry and its statistics.
    pub fn same_as(&self, other: &ModelEntry) -> bool {
        self.id == other.id
            && self.pinned_kind == other.pinned_kind
            && self.pinned_capabilities == other.pinned_capabilities
            && (!self.pinned_kind || self.description().kind == other.description().kind)
            && (!self.pinned_capabilities
                || self.description().capabilities == other.description().capabilities)
            && self.replicas.len() == other.replicas.len()
            && self
                .replicas
                .iter()
                .zip(&other.replicas)
                .all(|(a, b)| a.endpoint == b.endpoint)
    }
}

/// Every registered model, by id.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<ModelId, Arc<ModelEntry>>,
}

impl Registry {
    /// Builds a registry; two models with one id are an error naming it.
    pub fn new(entries: impl IntoIterator<Item = ModelEntry>) -> Result<Self, SettingError> {
        Self::from_arcs(entries.into_iter().map(Arc::new))
    }

    fn from_arcs(entries: impl IntoIterator<Item = Arc<ModelEntry>>) -> Result<Self, SettingError> {
        let mut models = BTreeMap::new();
        for entry in entries {
            let id = entry.id.clone();
            if models.insert(id.clone(), entry).is_some() {
                return Err(SettingError::new(
                    "id",
                    format!("model `{id}` is registered twice"),
                ));
            }
        }
        Ok(Self { models })
    }

    /// A registry of `entries` that keeps this registry's entry wherever a
    /// model is unchanged, with its health and statistics.
    pub fn succeed_with(
        &self,
        entries: impl IntoIterator<Item = ModelEntry>,
    ) -> Result<Self, SettingError> {
        Self::from_arcs(
            entries
                .into_iter()
                .map(|entry| match self.models.get(&entry.id) {
                    Some(old) if old.same_as(&entry) => Arc::clone(old),
                    _ => Arc::new(entry),
                }),
        )
    }

    /// The models, ordered by id.
    pub fn models(&self) -> impl ExactSizeIterator<Item = &Arc<ModelEntry>> {
        self.models.values()
    }

    /// One model by id.
    pub fn get(&self, id: &ModelId) -> Option<&Arc<ModelEntry>> {
        self.models.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeModel;

    fn worker_description() -> Description {
        let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
        let entry = fake.described_entry();
        (*entry.description()).clone()
    }

    #[test]
    fn a_pinned_kind_keeps_the_workers_capabilities() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_kind(ModelKind::new("audio-language"));
        assert!(entry.needs_description());
        entry.learn_description(worker_description());
        let description = entry.description();
        assert_eq!(description.kind.as_str(), "audio-language");
        assert_eq!(description.capabilities.len(), 1);
        assert_eq!(description.source, CapabilitySource::Worker);
    }

    #[test]
    fn pinned_capabilities_keep_the_workers_kind() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_capabilities(Vec::new());
        assert!(entry.needs_description());
        entry.learn_description(worker_description());
        let description = entry.description();
        assert_eq!(description.kind.as_str(), "fake");
        assert!(description.capabilities.is_empty());
        assert_eq!(description.source, CapabilitySource::Config);
    }

    #[test]
    fn a_fully_pinned_model_needs_no_description() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_kind(ModelKind::new("audio-language"))
            .with_capabilities(Vec::new());
        assert!(!entry.needs_description());
    }

    #[test]
    fn a_model_registered_twice_is_refused() {
        let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
        assert!(Registry::new([fake.entry(), fake.entry()]).is_err());
    }

    fn two_replicas() -> ModelEntry {
        let a = FakeModel::serving("gama", "audio_analysis", 0.95);
        let b = FakeModel::serving("gama", "audio_analysis", 0.95);
        ModelEntry::new(
            ModelId::new("gama").unwrap(),
            vec![
                Replica::new("a", Arc::new(a)),
                Replica::new("b", Arc::new(b)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_model_serves_while_any_replica_does() {
        let entry = two_replicas();
        assert_eq!(entry.health(), Health::Unknown);
        entry.replicas()[0].set_health(Health::NotServing);
        assert_eq!(entry.health(), Health::Unknown);
        entry.replicas()[1].set_health(Health::Serving);
        assert_eq!(entry.health(), Health::Serving);
        entry.replicas()[1].set_health(Health::NotServing);
        assert_eq!(entry.health(), Health::NotServing);
    }

    #[test]
    fn calls_go_to_the_least_busy_replica_that_is_not_down() {
        let entry = two_replicas();
        let first = entry.pick_replica().unwrap().start_call();
        let second = entry.pick_replica().unwrap();
        assert_eq!(second.in_flight(), 0, "the idle replica is picked");
        assert_eq!(entry.in_flight(), 1);
        drop(first);
        assert_eq!(entry.in_flight(), 0);

        entry.replicas()[0].set_health(Health::NotServing);
        for _ in 0..4 {
            assert_eq!(entry.pick_replica().unwrap().endpoint(), "b");
        }
        entry.replicas()[1].set_health(Health::NotServing);
        assert!(entry.pick_replica().is_none());
    }

    #[test]
    fn a_new_registry_keeps_unchanged_models_with_their_statistics() {
        let gama = FakeModel::serving("gama", "audio_analysis", 0.95);
        let old = Registry::new([gama.entry()]).unwrap();
        let task_type = TaskType::new("audio_analysis").unwrap();
        let now = Instant::now();
        old.models().next().unwrap().record(
            &task_type,
            now,
            Duration::from_secs(10),
            CallOutcome::Success,
            Duration::from_millis(5),
        );

        let clap = FakeModel::serving("clap", "audio_analysis", 0.8);
        let new = old.succeed_with([gama.entry(), clap.entry()]).unwrap();
        let kept = new.get(&ModelId::new("gama").unwrap()).unwrap();
        assert!(Arc::ptr_eq(kept, old.models().next().unwrap()));
        assert_eq!(
            kept.stats(&task_type, now, Duration::from_secs(10))
                .attempts,
            1.0
        );
        assert_eq!(new.models().len(), 2);
    }
}
