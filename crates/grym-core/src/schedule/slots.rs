//! Per-model concurrency: a model runs at most its limit of calls at once;
//! the others wait in the model's own [`PriorityQueue`], so a busy model
//! never holds up calls bound for another.
//!
//! The queue sits behind the model's own lock, held for a push or a pop and
//! never across an await. Every grant goes through the queue, so the order
//! is the queue's even when a slot is free. A waiter that is dropped (its
//! task cancelled, or its deadline passed) leaves a closed entry behind that
//! the next grant skips; should a slot reach it just as it is dropped, it
//! hands the slot straight back.
//!
//! Beside the queue, each model counts the tasks admitted for it that hold
//! no slot yet ([`Reservation`]s, by priority and by whether they have a
//! deadline), from their admission on: what admission reads as the work
//! ahead of a newcomer, including tasks accepted a moment ago whose wait
//! has not begun.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::queue::{PriorityQueue, QueueKey};
use crate::ids::Priority;

/// Priority levels, lowest first.
const LEVELS: usize = 4;

/// The queue of a model is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// The calls one model runs and the calls waiting for it.
#[derive(Debug)]
pub struct ModelSlots {
    inner: Mutex<Inner>,
    /// Tasks admitted without a slot yet: `[level][has a deadline]`.
    pending: [[AtomicUsize; 2]; LEVELS],
}

/// A task admitted for a model and not yet holding its slot; dropping it
/// (at the grant, or when the task ends without one) takes it out of the
/// count.
#[derive(Debug)]
pub(crate) struct Reservation {
    slots: Arc<ModelSlots>,
    level: usize,
    deadline: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.slots.pending[self.level][self.deadline].fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Inner {
    running: u32,
    limit: u32,
    queue: PriorityQueue<oneshot::Sender<()>>,
}

/// A granted slot; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ModelSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A call waiting for a slot; see the module's note on dropping.
struct Waiter {
    receiver: Option<oneshot::Receiver<()>>,
    slots: Arc<ModelSlots>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

impl ModelSlots {
    /// No calls yet; at most `capacity` may wait.
    pub fn new(capacity: usize, aging_interval: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                running: 0,
                limit: 1,
                queue: PriorityQueue::new(capacity, aging_interval),
            }),
            pending: Default::default(),
        }
    }

    /// Counts a task of `priority`, with or without a deadline, as pending
    /// until the reservation is dropped.
    pub(crate) fn reserve(self: &Arc<Self>, priority: Priority, has_deadline: bool) -> Reservation {
        let (level, deadline) = (level(priority), usize::from(has_deadline));
        self.pending[level][deadline].fetch_add(1, Ordering::AcqRel);
        Reservation {
            slots: Arc::clone(self),
            level,
            deadline,
        }
    }

    /// Pending tasks that go before a newcomer of `priority`: every one at
    /// a higher level, and at its own level those with a deadline (a
    /// newcomer with a deadline counts them all, an upper bound since the
    /// later deadlines go after it) and, for a newcomer without one, those
    /// without one too. Aging, which lifts old low work, is not counted.
    pub(crate) fn ahead_of(&self, priority: Priority, has_deadline: bool) -> usize {
        let own = level(priority);
        let count =
            |level: usize, deadline: usize| self.pending[level][deadline].load(Ordering::Acquire);
        let above: usize = (own + 1..LEVELS).map(|l| count(l, 0) + count(l, 1)).sum();
        let level_ahead = count(own, 1) + if has_deadline { 0 } else { count(own, 0) };
        above + level_ahead
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls running now.
    pub(crate) fn running(&self) -> u32 {
        self.lock().running
    }

    /// Calls waiting now (closed entries not yet skipped included).
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Waits for a slot in the order of `key`, with `limit` calls at once.
    /// Refused at once when the queue is full. Cancel-safe.
    pub async fn acquire(self: &Arc<Self>, key: QueueKey, limit: u32) -> Result<Slot, QueueFull> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.limit = limit.max(1);
            let now = Instant::now();
            if let Err(sender) = inner.queue.push(key, sender, now) {
                // Full: make room by dropping waiters that are gone.
                inner.queue.retain(|sender| !sender.is_closed());
                inner.queue.push(key, sender, now).map_err(|_| QueueFull)?;
            }
            inner.grant(now);
        }
        let mut waiter = Waiter {
            receiver: Some(receiver),
            slots: Arc::clone(self),
        };
        if let Some(receiver) = waiter.receiver.as_mut() {
            // The sender lives in the queue until it is granted or this
            // waiter is dropped, so the only answer is a grant.
            let _ = receiver.await;
        }
        waiter.receiver = None;
        Ok(Slot {
            slots: Arc::clone(self),
        })
    }

    fn release(&self) {
        let mut inner = self.lock();
        inner.running = inner.running.saturating_sub(1);
        inner.grant(Instant::now());
    }
}

/// A priority's index in the pending counts.
fn level(priority: Priority) -> usize {
    usize::from(priority as u8).min(LEVELS - 1)
}

impl Inner {
    /// Hands free slots to the first live waiters.
    fn grant(&mut self, now: Instant) {
        while self.running < self.limit {
            let Some((_, sender)) = self.queue.pop(now) else {
                return;
            };
            if sender.send(()).is_ok() {
                self.running += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Priority;
    use futures::FutureExt;

    fn key(priority: Priority, seq: u64) -> QueueKey {
        QueueKey {
            priority,
            deadline: None,
            seq,
        }
    }

    fn slots() -> Arc<ModelSlots> {
        Arc::new(ModelSlots::new(16, Duration::from_secs(10)))
    }

    #[tokio::test]
    async fn at_most_the_limit_runs_and_the_rest_wait_in_priority_order() {
        let slots = slots();
        let first = slots.acquire(key(Priority::Normal, 1), 1).await.unwrap();
        let mut low = Box::pin(slots.acquire(key(Priority::Low, 2), 1));
        let mut high = Box::pin(slots.acquire(key(Priority::High, 3), 1));
        assert!((&mut low).now_or_never().is_none());
        assert!((&mut high).now_or_never().is_none());
        assert_eq!(slots.running(), 1);

        drop(first);
        let high_slot = (&mut high).now_or_never().expect("high goes next").unwrap();
        assert!((&mut low).now_or_never().is_none(), "low still waits");
        drop(high_slot);
        assert!(low.now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_a_slot() {
        let slots = slots();
        let first = slots.acquire(key(Priority::Normal, 1), 1).await.unwrap();
        let mut gone = Box::pin(slots.acquire(key(Priority::High, 2), 1));
        assert!((&mut gone).now_or_never().is_none());
        drop(gone);
        drop(first);
        assert_eq!(slots.running(), 0);
        let again = slots.acquire(key(Priority::Low, 3), 1).await.unwrap();
        assert_eq!(slots.running(), 1);
        drop(again);
    }

    #[tokio::test]
    async fn a_slot_granted_to_a_dropped_waiter_goes_back() {
        let slots = slots();
        let first = slots.acquire(key(Priority::Normal, 1), 1).await.unwrap();
        let mut waiting = Box::pin(slots.acquire(key(Priority::Normal, 2), 1));
        assert!((&mut waiting).now_or_never().is_none());
        // The grant happens, but the waiter is dropped before it wakes.
        drop(first);
        drop(waiting);
        assert_eq!(slots.running(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let slots = Arc::new(ModelSlots::new(1, Duration::from_secs(10)));
        let _running = slots.acquire(key(Priority::Normal, 1), 1).await.unwrap();
        let mut queued = Box::pin(slots.acquire(key(Priority::Normal, 2), 1));
        assert!((&mut queued).now_or_never().is_none());
        let refused = slots.acquire(key(Priority::Normal, 3), 1).now_or_never();
        assert!(matches!(refused, Some(Err(QueueFull))));
    }

    #[test]
    fn pending_work_ahead_counts_higher_levels_and_then_deadlines_first() {
        let slots = slots();
        let _low = slots.reserve(Priority::Low, false);
        let _normal = slots.reserve(Priority::Normal, false);
        let _normal_due = slots.reserve(Priority::Normal, true);
        let high = slots.reserve(Priority::High, true);
        assert_eq!(slots.ahead_of(Priority::Critical, false), 0);
        assert_eq!(slots.ahead_of(Priority::High, true), 1);
        assert_eq!(slots.ahead_of(Priority::Normal, true), 2);
        assert_eq!(slots.ahead_of(Priority::Normal, false), 3);
        assert_eq!(slots.ahead_of(Priority::Low, false), 4);
        drop(high);
        assert_eq!(slots.ahead_of(Priority::Normal, false), 2);
    }

    #[tokio::test]
    async fn separate_models_do_not_wait_for_each_other() {
        let busy = slots();
        let idle = slots();
        let _held = busy.acquire(key(Priority::Normal, 1), 1).await.unwrap();
        assert!(
            idle.acquire(key(Priority::Low, 2), 1)
                .now_or_never()
                .is_some()
        );
    }
}
