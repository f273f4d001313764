//! Step 3 of a task's way: which task runs when.
//!
//! - [`queue`]: the priority queue with aging, a plain data structure;
//! - [`slots`]: each model's concurrency limit and its own queue of waiting
//!   calls;
//! - [`deps`]: the checks of a task's dependencies at submission;
//! - [`estimate`]: when a newcomer could start, and whether it may wait.
//!
//! The [`Scheduler`] owns them. It admits a task or a composite's step
//! (bounded by `max_queue` for both, refused at once when full) and counts
//! it as queued until its [`Queued`] guard is dropped; it hands out each
//! model's slots, in the order of a [`QueueKey`], within a deadline. A
//! deadline that passes while a task waits ends the wait, so no worker ever
//! sees the task.
//!
//! **Shedding**: a task bound for a known model ([`Scheduler::admit_for`])
//! is also refused at once, before anything of it is kept, when the work
//! queued ahead of it on that model (at its priority or higher) would keep
//! it from finishing before its deadline, or from starting within
//! `max_queue_wait`. The refusal carries the expected wait as a retry
//! hint. Refusing early keeps the queue short enough that what is admitted
//! finishes in time, so a model at overload still spends its slots on
//! calls that succeed.

pub(crate) mod deps;
pub(crate) mod estimate;
pub(crate) mod queue;
pub(crate) mod slots;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use self::estimate::TooLong;
use self::queue::QueueKey;
use self::slots::{ModelSlots, Reservation, Slot};
use crate::deadline::Deadline;
use crate::error::{Error, SettingError, Shed};
use crate::ids::{ModelId, Priority};
use crate::registry::ModelEntry;

/// Settings of scheduling: the `[scheduler]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// The most tasks waiting (for dependencies or a model) at once.
    pub max_queue: usize,
    /// The longest a task may expect to wait for its model's slot: a task
    /// arriving when the work queued ahead of it (at its priority or
    /// higher, over the model's measured throughput) would take longer to
    /// clear is refused at once with `RESOURCE_EXHAUSTED` and a retry
    /// hint, with or without a deadline. A task with a deadline is also
    /// refused when it could not finish before it. Tasks that wait for
    /// dependencies, and composites, are bounded by `max_queue` only.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// How long a waiting task takes to rise one priority level.
    #[serde(with = "humantime_serde")]
    pub aging_interval: Duration,
    /// Calls a model takes at once when it declares no limit.
    pub default_model_concurrency: u32,
    /// How many finished results are kept for `GetTask`.
    pub max_results: u64,
    /// How long a finished result is kept.
    #[serde(with = "humantime_serde")]
    pub result_retention: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_queue: 10_000,
            max_queue_wait: Duration::from_secs(2),
            aging_interval: Duration::from_secs(5),
            default_model_concurrency: 64,
            max_results: 10_000,
            result_retention: Duration::from_secs(600),
        }
    }
}

impl SchedulerSettings {
    /// Checks the ranges the types do not.
    pub fn validate(&self) -> Result<(), SettingError> {
        let at_least_one = |key: &str, value: u64| {
            if value == 0 {
                Err(SettingError::new(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        let longer_than_zero = |key: &str, value: Duration| {
            if value.is_zero() {
                Err(SettingError::new(key, "must be longer than zero"))
            } else {
                Ok(())
            }
        };
        at_least_one("max_queue", self.max_queue as u64)?;
        at_least_one(
            "default_model_concurrency",
            u64::from(self.default_model_concurrency),
        )?;
        longer_than_zero("aging_interval", self.aging_interval)?;
        longer_than_zero("max_queue_wait", self.max_queue_wait)?;
        at_least_one("max_results", self.max_results)?;
        longer_than_zero("result_retention", self.result_retention)
    }
}

/// Counts a task or step as queued until it is dropped, and as pending on
/// the model it was admitted for, if any.
#[derive(Debug)]
pub(crate) struct Queued {
    count: Arc<AtomicUsize>,
    _pending: Option<Reservation>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What admission knows of a task bound for one model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    /// The task's priority.
    pub(crate) priority: Priority,
    /// When it must have ended.
    pub(crate) deadline: Deadline,
    /// How long one call of the model is expected to take; `None` before
    /// anything is known of it, when only `max_queue` bounds the task.
    pub(crate) service: Option<Duration>,
}

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// The deadline passed while waiting.
    Deadline,
    /// The model's queue is full.
    Full,
}

/// Admission, arrival order and every model's slots.
#[derive(Debug)]
pub(crate) struct Scheduler {
    settings: SchedulerSettings,
    /// Tasks and steps admitted and not yet running.
    queued: Arc<AtomicUsize>,
    /// The next arrival number.
    seq: AtomicU64,
    slots: DashMap<ModelId, Arc<ModelSlots>>,
    /// The grymd replicas sharing the models: each takes its share of a
    /// model's concurrency limit.
    replicas: AtomicU32,
}

impl Scheduler {
    pub(crate) fn new(settings: SchedulerSettings) -> Self {
        Self {
            settings,
            queued: Arc::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
            slots: DashMap::new(),
            replicas: AtomicU32::new(1),
        }
    }

    /// Sets how many replicas share the models (at least one).
    pub(crate) fn set_replicas(&self, replicas: u32) {
        self.replicas.store(replicas.max(1), Ordering::Release);
    }

    /// Counts a task or a step as queued, or refuses it when `max_queue`
    /// are waiting already.
    pub(crate) fn admit(&self) -> Result<Queued, Error> {
        let max_queue = self.settings.max_queue;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max_queue).then_some(queued + 1)
            })
            .map(|_| Queued {
                count: Arc::clone(&self.queued),
                _pending: None,
            })
            .map_err(|_| Error::QueueFull { max_queue })
    }

    /// Admits a task accepted before (claimed again after a restart or from
    /// another replica): it was promised a result, so no bound refuses it.
    pub(crate) fn readmit(&self) -> Queued {
        self.queued.fetch_add(1, Ordering::AcqRel);
        Queued {
            count: Arc::clone(&self.queued),
            _pending: None,
        }
    }

    /// [`admit`](Self::admit) for a task that will wait for `model`'s slot,
    /// refused at once with [`Error::Overloaded`] when the work ahead of it
    /// there is too long (see the module's note on shedding). Nothing is
    /// kept of a refused task.
    pub(crate) fn admit_for(
        &self,
        model: &ModelEntry,
        ask: Ask,
        now: tokio::time::Instant,
    ) -> Result<Queued, Error> {
        let slots = self.slots_of(model.id());
        let has_deadline = ask.deadline.instant().is_some();
        if let Some(service) = ask.service {
            let ahead = slots.ahead_of(ask.priority, has_deadline);
            let wait = estimate::queue_wait(
                ahead,
                slots.running(),
                self.concurrency_limit(model),
                service,
            );
            let left = ask.deadline.remaining(now);
            if let Err(too_long) =
                estimate::verdict(wait, service, left, self.settings.max_queue_wait)
            {
                return Err(Error::Overloaded(Box::new(Shed {
                    model: model.id().clone(),
                    queued_ahead: wait,
                    service,
                    left: match too_long {
                        TooLong::Deadline => left,
                        TooLong::QueueWait => None,
                    },
                    max_queue_wait: self.settings.max_queue_wait,
                })));
            }
        }
        let mut queued = self.admit()?;
        queued._pending = Some(slots.reserve(ask.priority, has_deadline));
        Ok(queued)
    }

    /// How many more tasks the queue takes before it is full.
    pub(crate) fn room(&self) -> usize {
        self.settings.max_queue.saturating_sub(self.queued())
    }

    /// The scheduler's settings.
    pub(crate) fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    /// Tasks and steps admitted and not yet running.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The place in line of something arriving now.
    pub(crate) fn key(&self, priority: Priority, deadline: Deadline) -> QueueKey {
        QueueKey {
            priority,
            deadline: deadline.instant(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A slot on `model`, in the order of `key`, within `deadline`.
    pub(crate) async fn acquire(
        &self,
        model: &ModelEntry,
        key: QueueKey,
        deadline: Deadline,
    ) -> Result<Slot, NoSlot> {
        let slots = self.slots_of(model.id());
        let limit = self.concurrency_limit(model);
        deadline
            .bound(slots.acquire(key, limit))
            .await
            .map_err(|_| NoSlot::Deadline)?
            .map_err(|_| NoSlot::Full)
    }

    /// `model`'s slots, made at its first call. A read first: it neither
    /// clones the id nor locks the map's shard for writing.
    fn slots_of(&self, model: &ModelId) -> Arc<ModelSlots> {
        if let Some(slots) = self.slots.get(model) {
            return Arc::clone(slots.value());
        }
        Arc::clone(
            self.slots
                .entry(model.clone())
                .or_insert_with(|| {
                    // Room for twice the queue: waiters that gave up linger
                    // until a sweep, which then runs once per many pushes.
                    Arc::new(ModelSlots::new(
                        self.settings.max_queue.max(1) * 2,
                        self.settings.aging_interval,
                    ))
                })
                .value(),
        )
    }

    /// Calls a model takes at once from this grymd: what it declares per
    /// worker replica (the most of its capabilities) times its worker
    /// replicas, or the configured default; split evenly among the grymd
    /// replicas that share it (rounded down, at least one each), so the
    /// limit holds for all of them together.
    pub(crate) fn concurrency_limit(&self, model: &ModelEntry) -> u32 {
        let declared = model
            .description()
            .capabilities
            .iter()
            .filter_map(|c| c.max_concurrency)
            .max();
        let limit = match declared {
            Some(per_replica) => per_replica
                .saturating_mul(u32::try_from(model.replicas().len()).unwrap_or(u32::MAX)),
            None => self.settings.default_model_concurrency,
        };
        (limit / self.replicas.load(Ordering::Acquire)).max(1)
    }

    /// Calls running on `model` and calls waiting for it.
    pub(crate) fn load_of(&self, model: &ModelId) -> (u32, usize) {
        self.slots
            .get(model)
            .map_or((0, 0), |slots| (slots.running(), slots.waiting()))
    }

    /// Calls waiting for each model's slot.
    pub(crate) fn waiting_per_model(&self) -> Vec<(ModelId, u64)> {
        self.slots
            .iter()
            .map(|entry| {
                (
                    entry.key().clone(),
                    u64::try_from(entry.value().waiting()).unwrap_or(u64::MAX),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_max_queue_and_a_dropped_guard_makes_room() {
        let scheduler = Scheduler::new(SchedulerSettings {
            max_queue: 2,
            ..SchedulerSettings::default()
        });
        let first = scheduler.admit().unwrap();
        let _second = scheduler.admit().unwrap();
        assert!(matches!(
            scheduler.admit(),
            Err(Error::QueueFull { max_queue: 2 })
        ));
        assert_eq!(scheduler.queued(), 2);
        drop(first);
        assert_eq!(scheduler.queued(), 1);
        assert!(scheduler.admit().is_ok());
    }

    #[test]
    fn settings_out_of_range_name_their_key() {
        let zero_queue = SchedulerSettings {
            max_queue: 0,
            ..SchedulerSettings::default()
        };
        assert_eq!(zero_queue.validate().unwrap_err().key, "max_queue");
        let no_retention = SchedulerSettings {
            result_retention: Duration::ZERO,
            ..SchedulerSettings::default()
        };
        assert_eq!(no_retention.validate().unwrap_err().key, "result_retention");
    }
}
