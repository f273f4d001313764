//! Step 6 of a task's way: where tasks are while they live, and where their
//! results stay after.
//!
//! Live tasks sit in a sharded map, so looking one up never waits on
//! another. A finished result moves to a moka cache bounded in count and in
//! time (both configured), so `GetTask` can answer for a while and memory
//! stays bounded. A result is stored among the finished before it leaves
//! the live map, so a lookup always finds a task somewhere.
//!
//! Task ids are scoped per tenant: every lookup names the tenant, so the
//! same id in two tenants is two tasks, and no tenant learns or blocks
//! another's ids.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::FailureKind;
use crate::ids::{TaskId, Tenant};
use crate::task::{TaskError, TaskResult, TaskStatus};

/// A task that has not ended.
#[derive(Debug)]
pub(crate) struct LiveTask {
    /// Fires to cancel it.
    pub(crate) cancel: CancellationToken,
    /// Whether it is written to the store.
    pub(crate) durable: bool,
    /// How many times it has been started, on any replica, this start
    /// included once it started.
    runs: AtomicU32,
    /// Set when this replica lets it go unfinished (at shutdown): its end
    /// here is not its final result, another run will give that.
    left: AtomicBool,
    snapshot: Mutex<TaskResult>,
    done: watch::Sender<Option<Arc<TaskResult>>>,
}

impl LiveTask {
    /// A task as it stands when accepted (`runs` 0) or claimed again, and
    /// whether it is written to the store.
    pub(crate) fn new(snapshot: TaskResult, durable: bool, runs: u32) -> Self {
        Self {
            cancel: CancellationToken::new(),
            durable,
            runs: AtomicU32::new(runs),
            left: AtomicBool::new(false),
            snapshot: Mutex::new(snapshot),
            done: watch::Sender::new(None),
        }
    }

    /// Counts one more start; the new count.
    pub(crate) fn start_run(&self) -> u32 {
        self.runs.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// How many times it has been started.
    pub(crate) fn runs(&self) -> u32 {
        self.runs.load(Ordering::Acquire)
    }

    /// Lets it go unfinished and cancels it here.
    pub(crate) fn leave(&self) {
        self.left.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// Whether this replica let it go unfinished.
    pub(crate) fn is_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    /// Where it stands now.
    pub(crate) fn snapshot(&self) -> TaskResult {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes where it stands.
    pub(crate) fn update(&self, change: impl FnOnce(&mut TaskResult)) {
        change(&mut self.snapshot.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Sees its final result once there is one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<TaskResult>>> {
        self.done.subscribe()
    }
}

/// Live tasks and recent results.
pub(crate) struct TaskStore {
    live: DashMap<Key, Arc<LiveTask>>,
    finished: moka::sync::Cache<Key, Arc<TaskResult>>,
}

/// A task's id within its tenant.
type Key = (Tenant, TaskId);

fn key(tenant: &Tenant, id: &TaskId) -> Key {
    (tenant.clone(), id.clone())
}

impl std::fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStore")
            .field("live", &self.live.len())
            .field("finished", &self.finished.entry_count())
            .finish()
    }
}

/// A task with that id exists already, live or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlreadyLive;

impl TaskStore {
    /// Keeps at most `max_results` finished results, each for `retention`.
    pub(crate) fn new(max_results: u64, retention: Duration) -> Self {
        Self {
            live: DashMap::new(),
            // Least recently used goes first: moka's default admission
            // policy would turn new results away once the cache is full.
            finished: moka::sync::Cache::builder()
                .max_capacity(max_results)
                .time_to_live(retention)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// Adds a live task of `tenant`; refused when that tenant has a task
    /// of the same id, live or ended with its result still kept: an id
    /// names one task for as long as its result is kept.
    pub(crate) fn insert(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        task: Arc<LiveTask>,
    ) -> Result<(), AlreadyLive> {
        match self.live.entry(key(tenant, id)) {
            Entry::Occupied(_) => Err(AlreadyLive),
            // `finish` keeps the result before the live task goes, so a
            // task that ended is found on one side or the other.
            Entry::Vacant(vacant) if self.finished.contains_key(vacant.key()) => Err(AlreadyLive),
            Entry::Vacant(vacant) => {
                vacant.insert(task);
                Ok(())
            }
        }
    }

    /// A live task of `tenant`.
    pub(crate) fn live(&self, tenant: &Tenant, id: &TaskId) -> Option<Arc<LiveTask>> {
        self.live
            .get(&key(tenant, id))
            .map(|task| Arc::clone(task.value()))
    }

    /// A kept result of `tenant`.
    pub(crate) fn finished(&self, tenant: &Tenant, id: &TaskId) -> Option<Arc<TaskResult>> {
        self.finished.get(&key(tenant, id))
    }

    /// Where a task of `tenant` stands: live, or finished and kept.
    pub(crate) fn get(&self, tenant: &Tenant, id: &TaskId) -> Option<TaskResult> {
        match self.live(tenant, id) {
            Some(task) => Some(task.snapshot()),
            None => self.finished(tenant, id).map(|result| (*result).clone()),
        }
    }

    /// Whether `tenant` has a task of this id, live or kept.
    pub(crate) fn contains(&self, tenant: &Tenant, id: &TaskId) -> bool {
        let key = key(tenant, id);
        self.live.contains_key(&key) || self.finished.contains_key(&key)
    }

    /// Keeps a task's final result and lets its waiters go.
    pub(crate) fn finish(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        result: TaskResult,
    ) -> Arc<TaskResult> {
        let result = Arc::new(result);
        let key = key(tenant, id);
        self.finished.insert(key.clone(), Arc::clone(&result));
        if let Some((_, task)) = self.live.remove(&key) {
            task.done.send_replace(Some(Arc::clone(&result)));
        }
        result
    }

    /// Forgets a live task that was never accepted after all (the store
    /// refused it, for `why`); whoever waits for it sees it end failed, and
    /// no lookup finds it.
    pub(crate) fn refuse(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        task: &LiveTask,
        why: &dyn std::fmt::Display,
    ) {
        let mut result = task.snapshot();
        result.status = TaskStatus::Failed;
        result.error = Some(TaskError::new(
            FailureKind::Unavailable,
            format!("the task was not accepted: {why}"),
        ));
        result.finished_at = Some(std::time::SystemTime::now());
        self.live.remove(&key(tenant, id));
        task.done.send_replace(Some(Arc::new(result)));
    }

    /// Keeps a result read back from the store, for the tasks that wait
    /// for it.
    pub(crate) fn keep(&self, tenant: &Tenant, id: &TaskId, result: TaskResult) {
        self.finished.insert(key(tenant, id), Arc::new(result));
    }

    pub(crate) fn live_tasks(&self) -> Vec<Arc<LiveTask>> {
        self.live
            .iter()
            .map(|task| Arc::clone(task.value()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskType;
    use crate::task::{Policy, Reason, Routing, TaskStatus};

    fn result(id: &TaskId) -> TaskResult {
        TaskResult {
            task_id: id.clone(),
            status: TaskStatus::Succeeded,
            model_id: None,
            output: None,
            error: None,
            metrics: Default::default(),
            routing: Routing {
                task_type: TaskType::literal("t"),
                policy: Policy::Scored,
                reason: Reason::HighestScore,
                estimated_latency: Duration::ZERO,
                candidates: Vec::new(),
                fallbacks_taken: Vec::new(),
                summary: None,
                excluded: Vec::new(),
            },
            queued_at: std::time::SystemTime::now(),
            started_at: None,
            finished_at: None,
            tenant: Tenant::anonymous(),
            steps: Vec::new(),
            recipe: None,
        }
    }

    #[test]
    fn the_newest_results_are_kept_when_the_store_is_full() {
        let store = TaskStore::new(100, Duration::from_secs(600));
        let ids: Vec<TaskId> = (0..1000)
            .map(|i| TaskId::new(format!("t{i}")).unwrap())
            .collect();
        let tenant = Tenant::anonymous();
        for id in &ids {
            store.finish(&tenant, id, result(id));
        }
        store.finished.run_pending_tasks();
        for id in &ids[990..] {
            assert!(store.get(&tenant, id).is_some(), "{id} was dropped");
        }
        assert!(store.finished.entry_count() <= 100);
    }

    #[test]
    fn the_same_id_in_two_tenants_is_two_tasks() {
        let store = TaskStore::new(100, Duration::from_secs(600));
        let id = TaskId::new("t1").unwrap();
        let (a, b) = (Tenant::new("a").unwrap(), Tenant::new("b").unwrap());
        let live = |tenant: &Tenant| {
            let mut snapshot = result(&id);
            snapshot.tenant = tenant.clone();
            Arc::new(LiveTask::new(snapshot, false, 0))
        };
        store.insert(&a, &id, live(&a)).unwrap();
        assert!(store.contains(&a, &id));
        assert!(!store.contains(&b, &id), "b sees a's task");
        store.insert(&b, &id, live(&b)).unwrap();
        assert_eq!(store.insert(&a, &id, live(&a)), Err(AlreadyLive));
        store.finish(&a, &id, result(&id));
        assert!(store.live(&a, &id).is_none());
        assert!(
            store.live(&b, &id).is_some(),
            "finishing a's task ended b's"
        );
    }
}
