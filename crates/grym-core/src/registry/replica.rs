//! One endpoint serving a model: its health, its calls in flight, its
//! latency estimate and its record for outlier ejection, all kept by the
//! replica itself, so they follow it wherever the model's list of replicas
//! goes.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::balance::{self, DEFAULT_LATENCY, PeakEwma};
use super::outlier::{Admission, Evidence};
use crate::client::ModelClient;
use crate::model::Health;

/// One endpoint serving a model.
pub struct Replica {
    endpoint: String,
    client: Arc<dyn ModelClient>,
    health: AtomicU8,
    in_flight: AtomicU32,
    /// Whether it is ejected or half-open: the one read calls pay for.
    pub(super) out: AtomicBool,
    evidence: Mutex<Evidence>,
    latency: PeakEwma,
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
            latency: PeakEwma::new(Instant::now(), DEFAULT_LATENCY),
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

    pub(super) fn evidence(&self) -> std::sync::MutexGuard<'_, Evidence> {
        self.evidence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to it now, and as what; a probe that is due is
    /// claimed by the caller that is told so.
    pub(super) fn admit(&self, now: Instant) -> Admission {
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
    pub(super) fn may_serve(&self, now: Instant) -> bool {
        self.health() != Health::NotServing
            && (!self.is_ejected() || self.evidence().clone().admission(now) != Admission::Closed)
    }

    /// Calls running on it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its peak-EWMA latency estimate at `now` (see
    /// [`balance`](super::balance)).
    pub fn latency_estimate(&self, now: Instant) -> Duration {
        Duration::from_secs_f64(self.latency.estimate(now) / 1e9)
    }

    /// The estimate in nanoseconds, for balancing.
    pub(super) fn estimate_ns(&self, now: Instant) -> f64 {
        self.latency.estimate(now)
    }

    /// Starts its estimate over at `estimate_ns`: a replica joining a pool
    /// starts where its peers are.
    pub(super) fn start_estimate_at(&self, now: Instant, estimate_ns: f64) {
        self.latency.reset(now, estimate_ns);
    }

    /// What a call to it would cost now, for the power of two choices.
    pub(super) fn cost(&self, now: Instant) -> f64 {
        balance::cost(self.latency.estimate(now), self.in_flight())
    }

    /// Counts a call as in flight until the guard is dropped, also when the
    /// call is cancelled.
    pub fn start_call(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            replica: Arc::clone(self),
            probe: false,
            started: Instant::now(),
            ended: false,
        }
    }
}

/// A call in flight on a replica; dropping it ends the count, and frees
/// the replica's probe if the call was one that ended without a verdict.
/// Its latency reaches the replica's estimate when it is told how the call
/// ended ([`ended`](Self::ended)), or, dropped before, as a call that did
/// not answer.
#[derive(Debug)]
pub struct InFlight {
    replica: Arc<Replica>,
    pub(super) probe: bool,
    started: Instant,
    ended: bool,
}

impl InFlight {
    /// Records how the call ended: an answer's `latency` is the replica's;
    /// a failure's only says the replica is at least that slow.
    pub(crate) fn ended(&mut self, answered: bool, latency: Duration) {
        if !self.ended {
            self.ended = true;
            self.replica
                .latency
                .observe(Instant::now(), latency, answered);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ended(false, self.started.elapsed());
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
