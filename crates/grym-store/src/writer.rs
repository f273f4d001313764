//! Group commit: the one task per store that writes.
//!
//! Every write is queued with a oneshot for its answer. The writer takes
//! everything waiting (up to [`MAX_BATCH`]), applies it in one transaction,
//! commits once, and only then answers each caller: so a caller that hears
//! `Ok` knows its write is durable, and concurrent writes share one fsync.
//! A failed or timed-out batch answers every caller in it with
//! `Unavailable` and the writer goes on with the next.
//!
//! A write whose caller has gone (its future dropped) before its batch
//! starts is skipped, so cancelling a write before it began leaves nothing
//! behind. The writer stops when its store is dropped: the queue closes and
//! it ends after the batch at hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grym_core::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, Write};
use crate::error::Fault;

/// The most writes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// How many writes may wait for the writer before callers wait to queue.
const QUEUE: usize = 8 * MAX_BATCH;
/// The longest one batch may take, from its first statement to its commit.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a caller waits, from queueing its write to its answer:
/// a full queue ahead of it, then its own batch.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A write and where its answer goes.
struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Counts of what the writer did, for tests and benchmarks.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct WriteStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
}

impl WriteStats {
    /// Transactions committed.
    pub fn commits(&self) -> u64 {
        self.0.commits.load(Ordering::Relaxed)
    }

    /// Writes committed.
    pub fn writes(&self) -> u64 {
        self.0.writes.load(Ordering::Relaxed)
    }

    /// Batches that failed or timed out.
    pub fn failed_batches(&self) -> u64 {
        self.0.failed_batches.load(Ordering::Relaxed)
    }
}

/// The queue to a store's writer task.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Pending>,
    stats: WriteStats,
}

impl Writer {
    /// Starts the writer task of `backend`.
    pub(crate) fn spawn<B: Backend>(backend: Arc<B>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stats = WriteStats::default();
        tokio::spawn(run(backend, receiver, stats.clone()));
        Self { queue, stats }
    }

    /// What the writer did so far.
    pub(crate) fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Queues `write` and waits until it is committed: its answer.
    pub(crate) async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.queue
                .send(Pending { write, reply })
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(WRITE_TIMEOUT, wait)
            .await
            .map_err(|_| StoreError::Unavailable("the write timed out".to_owned()))?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".to_owned())
}

async fn run<B: Backend>(backend: Arc<B>, mut queue: mpsc::Receiver<Pending>, stats: WriteStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (writes, replies): (Vec<Write>, Vec<_>) = batch
            .drain(..)
            .filter(|pending| !pending.reply.is_closed())
            .map(|pending| (pending.write, pending.reply))
            .unzip();
        if writes.is_empty() {
            continue;
        }
        let outcome = tokio::time::timeout(BATCH_TIMEOUT, backend.commit(&writes))
            .await
            .unwrap_or(Err(Fault::TimedOut("the batch of writes")));
        match outcome {
            Ok(answers) => {
                stats.0.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .0
                    .writes
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that gave up meanwhile hears nothing.
                    reply.send(Ok(answer)).ok();
                }
            }
            Err(fault) => {
                stats.0.failed_batches.fetch_add(1, Ordering::Relaxed);
                let error = StoreError::from(fault);
                for reply in replies {
                    reply.send(Err(error.clone())).ok();
                }
            }
        }
    }
}
