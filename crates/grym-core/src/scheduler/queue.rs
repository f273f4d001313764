//! A bounded priority queue with aging: a plain data structure, no locks, no
//! time source of its own.
//!
//! Items pop in the order of their [`QueueKey`]: effective priority level
//! (highest first), then earliest deadline (none last), then arrival. Push
//! and pop are O(log n). A push onto a full queue hands the item back.
//!
//! **Aging**: an item's effective level rises by one for every
//! `aging_interval` it has waited, up to [`Priority::High`]; so a low
//! priority item waits at most three intervals behind a stream of high
//! priority ones and never starves, while `Critical` always stays first.
//! Levels are raised in a pass over the queue at most every half interval,
//! when popping: O(n) then, amortised over the pops in between.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

/// How urgent a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Runs when nothing more urgent waits (but ages).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything; aging never reaches it.
    Critical,
}

impl Priority {
    fn level(self) -> u8 {
        self as u8
    }
}

/// The order of a queued item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKey {
    /// The priority it was submitted with.
    pub priority: Priority,
    /// When it must have started, if ever.
    pub deadline: Option<Instant>,
    /// Arrival order: lower arrived earlier.
    pub seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    key: QueueKey,
    /// The level after aging.
    level: u8,
    /// When the level last rose (or the item arrived).
    leveled_at: Instant,
    item: T,
}

impl<T> Entry<T> {
    /// Greater pops first.
    fn rank(&self, other: &Self) -> Ordering {
        self.level
            .cmp(&other.level)
            .then_with(|| match (self.key.deadline, other.key.deadline) {
                (Some(a), Some(b)) => b.cmp(&a),
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| other.key.seq.cmp(&self.key.seq))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

/// A bounded priority queue with aging.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    capacity: usize,
    aging_interval: Duration,
    next_aging: Option<Instant>,
}

impl<T> PriorityQueue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize, aging_interval: Duration) -> Self {
        Self {
            heap: BinaryHeap::new(),
            capacity,
            aging_interval,
            next_aging: None,
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Queues `item` at `now`; a full queue hands it back.
    pub fn push(&mut self, key: QueueKey, item: T, now: Instant) -> Result<(), T> {
        if self.heap.len() >= self.capacity {
            return Err(item);
        }
        self.heap.push(Entry {
            key,
            level: key.priority.level(),
            leveled_at: now,
            item,
        });
        Ok(())
    }

    /// Takes the first item at `now`, after aging the queue if it is due.
    pub fn pop(&mut self, now: Instant) -> Option<(QueueKey, T)> {
        self.age(now);
        self.heap.pop().map(|entry| (entry.key, entry.item))
    }

    /// Keeps only the items for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|entry| keep(&entry.item));
    }

    fn age(&mut self, now: Instant) {
        if self.aging_interval.is_zero() || self.next_aging.is_some_and(|at| now < at) {
            return;
        }
        self.next_aging = Some(now + self.aging_interval / 2);
        let interval = self.aging_interval;
        let mut promoted = false;
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        for entry in &mut entries {
            while entry.level < Priority::High.level()
                && now.saturating_duration_since(entry.leveled_at) >= interval
            {
                entry.level += 1;
                entry.leveled_at += interval;
                promoted = true;
            }
        }
        if promoted {
            tracing::debug!(queued = entries.len(), "aged the queue");
        }
        self.heap = BinaryHeap::from(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGING: Duration = Duration::from_secs(10);

    fn key(priority: Priority, deadline_ms: Option<u64>, seq: u64, base: Instant) -> QueueKey {
        QueueKey {
            priority,
            deadline: deadline_ms.map(|ms| base + Duration::from_millis(ms)),
            seq,
        }
    }

    fn drain(queue: &mut PriorityQueue<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop(now).map(|(_, item)| item)).collect()
    }

    #[test]
    fn priority_then_deadline_then_arrival() {
        let now = Instant::now();
        let mut queue = PriorityQueue::new(16, AGING);
        queue
            .push(key(Priority::Normal, None, 1, now), "normal-1", now)
            .unwrap();
        queue
            .push(key(Priority::Low, Some(10), 2, now), "low-urgent", now)
            .unwrap();
        queue
            .push(
                key(Priority::Normal, Some(500), 3, now),
                "normal-deadline-late",
                now,
            )
            .unwrap();
        queue
            .push(
                key(Priority::Normal, Some(100), 4, now),
                "normal-deadline-soon",
                now,
            )
            .unwrap();
        queue
            .push(key(Priority::Critical, None, 5, now), "critical", now)
            .unwrap();
        queue
            .push(key(Priority::Normal, None, 6, now), "normal-2", now)
            .unwrap();
        queue
            .push(key(Priority::High, None, 7, now), "high", now)
            .unwrap();
        assert_eq!(
            drain(&mut queue, now),
            [
                "critical",
                "high",
                "normal-deadline-soon",
                "normal-deadline-late",
                "normal-1",
                "normal-2",
                "low-urgent"
            ]
        );
    }

    #[test]
    fn a_full_queue_hands_the_item_back() {
        let now = Instant::now();
        let mut queue = PriorityQueue::new(1, AGING);
        queue
            .push(key(Priority::Low, None, 1, now), "first", now)
            .unwrap();
        assert_eq!(
            queue.push(key(Priority::Critical, None, 2, now), "second", now),
            Err("second")
        );
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn low_priority_ages_past_fresh_normal_work_but_never_past_critical() {
        let start = Instant::now();
        let mut queue = PriorityQueue::new(16, AGING);
        queue
            .push(key(Priority::Low, None, 1, start), "old-low", start)
            .unwrap();
        // Two intervals later, the low item has aged to high.
        let later = start + AGING * 2;
        queue
            .push(key(Priority::Normal, None, 2, later), "fresh-normal", later)
            .unwrap();
        queue
            .push(key(Priority::High, None, 3, later), "fresh-high", later)
            .unwrap();
        queue
            .push(
                key(Priority::Critical, None, 4, later),
                "fresh-critical",
                later,
            )
            .unwrap();
        assert_eq!(
            drain(&mut queue, later),
            ["fresh-critical", "old-low", "fresh-high", "fresh-normal"]
        );
    }

    #[test]
    fn without_waiting_there_is_no_aging() {
        let now = Instant::now();
        let mut queue = PriorityQueue::new(16, AGING);
        for seq in 0..5 {
            queue
                .push(key(Priority::Low, None, seq, now), "low", now)
                .unwrap();
        }
        queue
            .push(key(Priority::High, None, 9, now), "high", now)
            .unwrap();
        assert_eq!(
            queue.pop(now + AGING / 4).map(|(_, item)| item),
            Some("high")
        );
    }

    #[test]
    fn retain_drops_what_is_no_longer_wanted() {
        let now = Instant::now();
        let mut queue = PriorityQueue::new(16, AGING);
        queue
            .push(key(Priority::Low, None, 1, now), "keep", now)
            .unwrap();
        queue
            .push(key(Priority::Low, None, 2, now), "drop", now)
            .unwrap();
        queue.retain(|item| *item == "keep");
        assert_eq!(drain(&mut queue, now), ["keep"]);
    }
}
