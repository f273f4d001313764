//! One registered model: its description, its statistics per task type,
//! and its replicas.
//!
//! The list of replicas is an `ArcSwap` snapshot: a pool found by
//! discovery changes it while calls run, and a call holds the replica it
//! was given, so one that leaves finishes its calls. A replica that stays
//! is the same `Arc`, with its health, ejection, calls in flight and
//! latency; the model's statistics are the entry's and stay with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use tokio::time::Instant;

use super::balance;
use super::budget::{BudgetUse, RetryBudget};
use super::outlier::{Admission, Cause, EjectionSettings, Verdict};
use super::replica::{Chosen, Replica};
use super::stats::{CallOutcome, PerformanceStats, StatsSnapshot};
use crate::client::ModelClient;
use crate::error::SettingError;
use crate::ids::{ModelId, ModelKind, TaskType};
use crate::model::{Capability, CapabilitySource, Description, Health};

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

/// The replicas of a model at one moment: a snapshot that later changes to
/// the model's list do not touch.
#[derive(Debug, Clone)]
pub struct Replicas(Arc<Vec<Arc<Replica>>>);

impl std::ops::Deref for Replicas {
    type Target = [Arc<Replica>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Replicas {
    type Item = &'a Arc<Replica>;
    type IntoIter = std::slice::Iter<'a, Arc<Replica>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Replicas {
    type Item = Arc<Replica>;
    type IntoIter = std::vec::IntoIter<Arc<Replica>>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

/// What a change to a model's replicas did, by endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaChanges {
    /// The endpoints that joined.
    pub added: Vec<String>,
    /// The endpoints that left.
    pub removed: Vec<String>,
}

impl ReplicaChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One registered model.
pub struct ModelEntry {
    id: ModelId,
    replicas: ArcSwap<Vec<Arc<Replica>>>,
    /// The endpoints as configured: the replicas' own, or names of pools
    /// the server resolves into them. A later registry keeps this entry
    /// when they are unchanged.
    sources: Vec<String>,
    /// Held while the list of replicas is changed, so two changes cannot
    /// lose one another.
    resizing: Mutex<()>,
    /// The seed of the draws that choose replicas, and how many were made.
    seed: u64,
    draws: AtomicU64,
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
            .field("replicas", &self.replicas.load())
            .field("sources", &self.sources)
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
        let sources = replicas.iter().map(|r| r.endpoint().to_owned()).collect();
        Ok(Self::with_replicas(id, sources, replicas))
    }

    /// A model configured by `sources`, some of which the server resolves
    /// into replicas as they come and go (see
    /// [`set_endpoints`](Self::set_endpoints)); `replicas` are those known
    /// now, possibly none: the model is then not serving until some are.
    pub fn discovered(id: ModelId, sources: Vec<String>, replicas: Vec<Replica>) -> Self {
        Self::with_replicas(id, sources, replicas)
    }

    /// A model served by one endpoint.
    pub fn single(id: ModelId, endpoint: impl Into<String>, client: Arc<dyn ModelClient>) -> Self {
        let endpoint = endpoint.into();
        Self::with_replicas(
            id,
            vec![endpoint.clone()],
            vec![Replica::new(endpoint, client)],
        )
    }

    fn with_replicas(id: ModelId, sources: Vec<String>, replicas: Vec<Replica>) -> Self {
        Self {
            id,
            replicas: ArcSwap::from_pointee(replicas.into_iter().map(Arc::new).collect()),
            sources,
            resizing: Mutex::new(()),
            seed: rand::rng().next_u64(),
            draws: AtomicU64::new(0),
            description: ArcSwap::from_pointee(Description::unknown()),
            pinned_kind: false,
            pinned_capabilities: false,
            described: AtomicBool::new(false),
            stats: RwLock::new(Vec::new()),
            budget: RetryBudget::default(),
            ejecting: Mutex::new(()),
        }
    }

    /// Makes the draws that choose replicas repeatable.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
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

    /// The endpoints serving it now; possibly none, while a pool resolves
    /// to nothing.
    pub fn replicas(&self) -> Replicas {
        Replicas(self.replicas.load_full())
    }

    /// The endpoints as configured.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Makes `endpoints` the model's replicas, as a pool's discovery finds
    /// them. A replica already serving one of them stays, with its health,
    /// ejection, calls in flight and latency estimate; for a new one `make`
    /// gives the replica (or none, to leave it out), which starts at the
    /// mean latency estimate of those that stay, so it neither floods nor
    /// starves; one whose endpoint is not listed leaves, and its calls in
    /// flight finish on it. The model's statistics are untouched.
    pub fn set_endpoints(
        &self,
        endpoints: &[String],
        mut make: impl FnMut(&str) -> Option<Replica>,
        now: Instant,
    ) -> ReplicaChanges {
        let _resizing = self.resizing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.replicas.load_full();
        let mut next: Vec<Arc<Replica>> = Vec::with_capacity(endpoints.len());
        let mut changes = ReplicaChanges::default();
        let mut joined = Vec::new();
        for endpoint in endpoints {
            if next.iter().any(|r| r.endpoint() == endpoint) {
                continue;
            }
            if let Some(kept) = current.iter().find(|r| r.endpoint() == endpoint) {
                next.push(Arc::clone(kept));
            } else if let Some(made) = make(endpoint) {
                changes.added.push(endpoint.clone());
                joined.push(next.len());
                next.push(Arc::new(made));
            }
        }
        changes.removed = current
            .iter()
            .filter(|r| !next.iter().any(|n| Arc::ptr_eq(n, r)))
            .map(|r| r.endpoint().to_owned())
            .collect();
        if changes.is_empty() {
            return changes;
        }
        let stayed: Vec<f64> = next
            .iter()
            .enumerate()
            .filter(|(i, _)| !joined.contains(i))
            .map(|(_, r)| r.estimate_ns(now))
            .collect();
        if !stayed.is_empty() {
            // A handful of replicas: the cast loses nothing.
            #[expect(clippy::cast_precision_loss)]
            let mean = stayed.iter().sum::<f64>() / stayed.len() as f64;
            for &i in &joined {
                next[i].start_estimate_at(now, mean);
            }
        }
        self.replicas.store(Arc::new(next));
        changes
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
    /// known not to, or there is none; unknown otherwise.
    pub fn health(&self) -> Health {
        let mut all_down = true;
        for replica in self.replicas.load().iter() {
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
        self.replicas.load().iter().map(|r| r.in_flight()).sum()
    }

    /// The replica for the next call, among those not known to be down,
    /// not ejected and not in `skip`: a half-open replica due its probe
    /// first, so an ejected replica that recovered is found out; otherwise
    /// the cheaper of two drawn at random, by latency estimate and calls in
    /// flight ([`balance`](super::balance)).
    pub fn choose_replica(&self, now: Instant, skip: &[Arc<Replica>]) -> Option<Chosen> {
        let replicas = self.replicas.load();
        let mut open: Vec<&Arc<Replica>> = Vec::with_capacity(replicas.len());
        for replica in replicas.iter() {
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
                Admission::Open => open.push(replica),
                Admission::Closed => {}
            }
        }
        let chosen = if open.len() < 2 {
            open.first().copied()
        } else {
            balance::pick(open.len(), &mut self.rng(), |i| open[i].cost(now)).map(|i| open[i])
        };
        chosen.map(|replica| Chosen {
            replica: Arc::clone(replica),
            probe: false,
        })
    }

    /// The randomness of one choice of replica.
    fn rng(&self) -> SmallRng {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(self.seed ^ draw.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Whether a replica not in `skip` could take a call now.
    pub fn can_serve(&self, now: Instant, skip: &[Arc<Replica>]) -> bool {
        self.replicas.load().iter().any(|replica| {
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
        let replicas = self.replicas.load();
        let mut evidence = replica.evidence();
        let Some(cause) = evidence.record(verdict, now, settings) else {
            if !evidence.is_out() {
                replica.out.store(false, Ordering::Release);
            }
            return None;
        };
        let others_serving = replicas.iter().any(|other| {
            !std::ptr::eq(Arc::as_ptr(other), replica)
                && other.health() != Health::NotServing
                && !other.is_ejected()
        });
        let out = replicas.iter().filter(|r| r.is_ejected()).count();
        // A replica on trial is counted among those out already.
        let room = if replica.is_ejected() {
            true
        } else {
            out < settings.most_ejected(replicas.len())
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

    /// Whether `other` is the same model configured the same way, so a new
    /// registry may keep this entry, with its statistics and its replicas
    /// as they are now.
    pub fn same_as(&self, other: &ModelEntry) -> bool {
        self.id == other.id
            && self.pinned_kind == other.pinned_kind
            && self.pinned_capabilities == other.pinned_capabilities
            && (!self.pinned_kind || self.description().kind == other.description().kind)
            && (!self.pinned_capabilities
                || self.description().capabilities == other.description().capabilities)
            && self.sources == other.sources
    }
}
