use super::*;

const HALF_LIFE: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `stats` after `calls` outcomes from `outcome(i)`, one every `every`
/// from `start`; returns when the last one ended.
fn feed(
    stats: &mut PerformanceStats,
    start: Instant,
    every: Duration,
    calls: u32,
    outcome: impl Fn(u32) -> (CallOutcome, Duration),
) -> Instant {
    let mut now = start;
    for i in 0..calls {
        now = start + every * i;
        let (outcome, latency) = outcome(i);
        stats.record(now, HALF_LIFE, outcome, latency);
    }
    now
}

#[test]
fn counts_and_rates_follow_outcomes() {
    let now = Instant::now();
    let mut stats = PerformanceStats::default();
    stats.record(now, HALF_LIFE, CallOutcome::Success, ms(100));
    stats.record(now, HALF_LIFE, CallOutcome::Success, ms(300));
    stats.record(now, HALF_LIFE, CallOutcome::Failure, ms(1));
    let snapshot = stats.snapshot(now, HALF_LIFE);
    assert_eq!(snapshot.attempts, 3.0);
    assert_eq!(snapshot.samples, 3.0);
    assert!((snapshot.success_rate() - 2.0 / 3.0).abs() < 1e-9);
    // A fast failure carries no latency: it does not make the model look fast.
    assert_eq!(snapshot.mean_latency, ms(200));
    assert_eq!(snapshot.p50, ms(100));
    assert_eq!(snapshot.p99, ms(300));
}

#[test]
fn a_timeout_counts_as_at_least_the_time_it_ran() {
    let now = Instant::now();
    let mut stats = PerformanceStats::default();
    stats.record(now, HALF_LIFE, CallOutcome::Success, ms(100));
    stats.record(now, HALF_LIFE, CallOutcome::Success, ms(300));
    // Cut after 1 s: the model took at least that.
    stats.record(now, HALF_LIFE, CallOutcome::Timeout, ms(1_000));
    let snapshot = stats.snapshot(now, HALF_LIFE);
    let mean = snapshot.mean_latency.as_secs_f64();
    assert!((mean - 1.4 / 3.0).abs() < 1e-6, "{mean}");
    assert!((snapshot.error_rate() - 1.0 / 3.0).abs() < 1e-9);
    // The quantiles are of answers only.
    assert_eq!(snapshot.p99, ms(300));

    // Cut after 10 ms, less than it usually takes: no faster for that.
    let mut stats = PerformanceStats::default();
    stats.record(now, HALF_LIFE, CallOutcome::Success, ms(200));
    stats.record(now, HALF_LIFE, CallOutcome::Timeout, ms(10));
    assert_eq!(stats.rates(now, HALF_LIFE).mean_latency, ms(200));
}

#[test]
fn a_model_that_only_timed_out_has_a_latency_of_at_least_its_timeouts() {
    let now = Instant::now();
    let mut stats = PerformanceStats::default();
    stats.record(now, HALF_LIFE, CallOutcome::Timeout, ms(1_000));
    stats.record(now, HALF_LIFE, CallOutcome::Timeout, ms(500));
    let snapshot = stats.rates(now, HALF_LIFE);
    assert_eq!(snapshot.successes, 0.0);
    assert_eq!(snapshot.mean_latency, ms(1_000));
}

#[test]
fn the_rates_rest_on_the_last_outcomes_at_any_rate() {
    for every in [ms(1), ms(10), ms(1_000)] {
        let mut stats = PerformanceStats::default();
        let last = feed(&mut stats, Instant::now(), every, 5_000, |_| {
            (CallOutcome::Success, ms(20))
        });
        let snapshot = stats.rates(last, HALF_LIFE);
        assert!((snapshot.attempts - MEMORY).abs() < 1e-9, "{snapshot:?}");
        assert!((snapshot.samples - 5_000.0).abs() < 1e-6, "{snapshot:?}");
    }
}

#[test]
fn steady_noise_keeps_the_long_memory() {
    // A model failing one call in ten, regularly: no change to see.
    let mut stats = PerformanceStats::default();
    let last = feed(&mut stats, Instant::now(), ms(10), 1_000, |i| {
        if i.is_multiple_of(10) {
            (CallOutcome::Failure, ms(20))
        } else {
            (CallOutcome::Success, ms(18 + u64::from(i % 5)))
        }
    });
    let snapshot = stats.rates(last, HALF_LIFE);
    assert!(snapshot.attempts > 40.0, "{snapshot:?}");
    assert!((snapshot.error_rate() - 0.1).abs() < 0.03, "{snapshot:?}");
}

#[test]
fn a_model_that_starts_failing_shows_it_within_ten_calls_at_any_rate() {
    for every in [ms(10), ms(1_000)] {
        let mut stats = PerformanceStats::default();
        let start = Instant::now();
        let healthy = feed(&mut stats, start, every, 3_000, |i| {
            if i.is_multiple_of(33) {
                (CallOutcome::Failure, ms(20))
            } else {
                (CallOutcome::Success, ms(80))
            }
        });
        // Half its calls fail from now on.
        let broke = feed(&mut stats, healthy + every, every, 10, |i| {
            if i.is_multiple_of(2) {
                (CallOutcome::Failure, ms(20))
            } else {
                (CallOutcome::Success, ms(80))
            }
        });
        let rate = stats.rates(broke, HALF_LIFE).error_rate();
        assert!(
            rate > 0.3,
            "error rate {rate} after 10 calls, one every {every:?}"
        );
    }
}

#[test]
fn a_model_that_turns_slower_shows_it_within_five_calls() {
    let mut stats = PerformanceStats::default();
    let start = Instant::now();
    let healthy = feed(&mut stats, start, ms(10), 3_000, |i| {
        (CallOutcome::Success, ms(72 + u64::from(i % 17)))
    });
    let slowed = feed(&mut stats, healthy + ms(10), ms(10), 5, |i| {
        (CallOutcome::Success, ms(216 + u64::from(i * 11)))
    });
    let mean = stats.rates(slowed, HALF_LIFE).mean_latency;
    assert!(mean > ms(160), "mean latency {mean:?} after 5 slow answers");
}

#[test]
fn the_history_holds_while_called_and_fades_once_idle() {
    let mut stats = PerformanceStats::default();
    // One call every 50 s: never idle, so nothing fades.
    let last = feed(
        &mut stats,
        Instant::now(),
        Duration::from_secs(50),
        100,
        |_| (CallOutcome::Success, ms(20)),
    );
    let called = stats.rates(last, HALF_LIFE);
    assert!((called.samples - 100.0).abs() < 1e-9);
    assert!((called.attempts - MEMORY).abs() < 1e-9);
    // Idle for IDLE_FADE half-lives: still all there; one more: half.
    let idle = last + HALF_LIFE.mul_f64(IDLE_FADE);
    assert!((stats.rates(idle, HALF_LIFE).samples - 100.0).abs() < 1e-9);
    let faded = stats.rates(idle + HALF_LIFE, HALF_LIFE);
    assert!((faded.samples - 50.0).abs() < 1e-9);
    assert!((faded.attempts - MEMORY / 2.0).abs() < 1e-9);
    assert_eq!(faded.success_rate(), 1.0, "fading keeps the rates");
}

#[test]
fn after_a_long_idle_the_next_outcomes_decide() {
    let mut stats = PerformanceStats::default();
    let last = feed(&mut stats, Instant::now(), ms(100), 1_000, |_| {
        (CallOutcome::Failure, ms(5))
    });
    let back = last + Duration::from_secs(300);
    stats.record(back, HALF_LIFE, CallOutcome::Success, ms(20));
    stats.record(back, HALF_LIFE, CallOutcome::Success, ms(20));
    let snapshot = stats.rates(back, HALF_LIFE);
    assert!(snapshot.success_rate() > 0.99, "{snapshot:?}");
    assert!(snapshot.samples < 3.0, "{snapshot:?}");
}

#[test]
fn the_latency_window_is_bounded() {
    let now = Instant::now();
    let mut stats = PerformanceStats::default();
    for i in 0..(LATENCY_WINDOW as u64 + 100) {
        stats.record(now, HALF_LIFE, CallOutcome::Success, ms(i));
    }
    assert_eq!(stats.recent.len(), LATENCY_WINDOW);
    assert_eq!(stats.snapshot(now, HALF_LIFE).p50, ms(100 + 127));
}

#[test]
fn no_samples_reads_as_zero() {
    let snapshot = PerformanceStats::default().snapshot(Instant::now(), HALF_LIFE);
    assert_eq!(snapshot.attempts, 0.0);
    assert_eq!(snapshot.samples, 0.0);
    assert_eq!(snapshot.success_rate(), 0.0);
    assert_eq!(snapshot.mean_latency, Duration::ZERO);
    assert_eq!(snapshot.p95, Duration::ZERO);
}
