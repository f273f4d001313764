//! A bounded priority queue with aging: a plain data structure, no locks, no
//! time source of its own.
//!
//! Items pop in the order of their [`QueueKey`]: effective priority level
//! (highest first), then how many times the item has aged (more first),
//! then earliest deadline (none last), then arrival. A push onto a full
//! queue hands the item back.
//!
//! **Aging**: an item's effective level rises by one for every
//! `aging_interval` it has waited, up to [`Priority::High`], and within a
//! level an aged item goes ahead of those that never aged, whatever their
//! deadlines. So a low priority item reaches the head of the queue at most
//! two intervals after it arrived, behind only `Critical` work and items
//! that aged before it: nothing starves, while `Critical` always stays
//! first.
//!
//! **Cost**: push and pop are O(log n) amortised. An item ages at most
//! twice; each time a fresh heap entry with its new level is pushed, and the
//! old one is skipped when it surfaces. Skipped entries are compacted away
//! once they outnumber the live items.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::Priority;

/// A priority's rank: higher runs first.
fn rank(priority: Priority) -> u8 {
    priority as u8
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

/// A live item.
#[derive(Debug)]
struct Queued<T> {
    /// Unique for the queue's life: slab slots are reused, ids are not.
    id: u64,
    key: QueueKey,
    level: u8,
    aged: u8,
    leveled_at: Instant,
    item: T,
}

/// A heap entry: a snapshot of an item's rank; stale once the item aged or
/// left.
#[derive(Debug, Clone, Copy)]
struct Rank {
    level: u8,
    aged: u8,
    deadline: Option<Instant>,
    seq: u64,
    id: u64,
    slot: usize,
}

impl Rank {
    fn of<T>(slot: usize, queued: &Queued<T>) -> Self {
        Self {
            level: queued.level,
            aged: queued.aged,
            deadline: queued.key.deadline,
            seq: queued.key.seq,
            id: queued.id,
            slot,
        }
    }
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Rank {}
impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Rank {
    /// Greater pops first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.level
            .cmp(&other.level)
            .then(self.aged.cmp(&other.aged))
            .then_with(|| match (self.deadline, other.deadline) {
                (Some(a), Some(b)) => b.cmp(&a),
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| other.seq.cmp(&self.seq))
            .then_with(|| other.id.cmp(&self.id))
    }
}

/// A bounded priority queue with aging.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    items: slab::Slab<Queued<T>>,
    ranks: BinaryHeap<Rank>,
    /// When each item below `High` next ages: (due, id, slab slot).
    aging: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    next_id: u64,
    capacity: usize,
    aging_interval: Duration,
}

impl<T> PriorityQueue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize, aging_interval: Duration) -> Self {
        Self {
            items: slab::Slab::new(),
            ranks: BinaryHeap::new(),
            aging: BinaryHeap::new(),
            next_id: 0,
            capacity,
            aging_interval,
        }
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn can_age(&self, level: u8) -> bool {
        !self.aging_interval.is_zero() && level < rank(Priority::High)
    }

    /// Queues `item` at `now`; a full queue hands it back.
    pub fn push(&mut self, key: QueueKey, item: T, now: Instant) -> Result<(), T> {
        if self.items.len() >= self.capacity {
            return Err(item);
        }
        let id = self.next_id;
        self.next_id += 1;
        let level = rank(key.priority);
        let slot = self.items.insert(Queued {
            id,
            key,
            level,
            aged: 0,
            leveled_at: now,
            item,
        });
        self.ranks.push(Rank::of(slot, &self.items[slot]));
        if self.can_age(level) {
            self.aging
                .push(Reverse((now + self.aging_interval, id, slot)));
        }
        Ok(())
    }

    /// Takes the first item at `now`, after aging what is due.
    pub fn pop(&mut self, now: Instant) -> Option<(QueueKey, T)> {
        self.age(now);
        while let Some(rank) = self.ranks.pop() {
            let current = self.items.get(rank.slot).is_some_and(|queued| {
                queued.id == rank.id && queued.level == rank.level && queued.aged == rank.aged
            });
            if current {
                let queued = self.items.remove(rank.slot);
                return Some((queued.key, queued.item));
            }
        }
        None
    }

    /// Keeps only the items for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.items.retain(|_, queued| keep(&queued.item));
        self.compact();
    }

    fn age(&mut self, now: Instant) {
        while let Some(&Reverse((due, id, slot))) = self.aging.peek() {
            if due > now {
                break;
            }
            self.aging.pop();
            let interval = self.aging_interval;
            let Some(queued) = self.items.get_mut(slot).filter(|queued| queued.id == id) else {
                continue;
            };
            queued.level += 1;
            queued.aged += 1;
            queued.leveled_at = due;
            let rank = Rank::of(slot, queued);
            let level = queued.level;
            self.ranks.push(rank);
            if self.can_age(level) {
                self.aging.push(Reverse((due + interval, id, slot)));
            }
        }
        self.compact();
    }

    /// Drops stale heap entries once they outnumber the live items.
    fn compact(&mut self) {
        let live = self.items.len();
        if self.ranks.len() > 2 * live + 64 {
            self.ranks = self
                .items
                .iter()
                .map(|(slot, queued)| Rank::of(slot, queued))
                .collect();
        }
        if self.aging.len() > 2 * live + 64 {
            let interval = self.aging_interval;
            self.aging = self
                .items
                .iter()
                .filter(|(_, queued)| self.can_age(queued.level))
                .map(|(slot, queued)| Reverse((queued.leveled_at + interval, queued.id, slot)))
                .collect();
        }
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
    fn an_aged_item_goes_ahead_of_fresh_high_work_with_deadlines() {
        let start = Instant::now();
        let mut queue = PriorityQueue::new(1_000, AGING);
        queue
            .push(key(Priority::Low, None, 0, start), "patient-low", start)
            .unwrap();
        // A steady stream of high priority work with deadlines: one pushed
        // and one popped every tenth of an interval.
        let mut popped_at = None;
        for step in 1..=40_u32 {
            let now = start + AGING / 10 * step;
            queue
                .push(
                    key(Priority::High, Some(u64::from(step)), u64::from(step), now),
                    "high",
                    now,
                )
                .unwrap();
            if let Some((_, "patient-low")) = queue.pop(now) {
                popped_at = Some(step);
                break;
            }
        }
        let step = popped_at.expect("the low item is served");
        assert!(step <= 21, "served at step {step}, more than two intervals");
    }

    #[test]
    fn stale_entries_do_not_accumulate() {
        let now = Instant::now();
        let mut queue = PriorityQueue::new(100_000, AGING);
        for round in 0..100_u64 {
            for i in 0..100 {
                queue
                    .push(key(Priority::Low, None, round * 100 + i, now), round, now)
                    .unwrap();
            }
            queue.retain(|_| false);
        }
        assert!(
            queue.ranks.len() <= 2 * queue.len() + 164,
            "{}",
            queue.ranks.len()
        );
        assert_eq!(queue.len(), 0);
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
