//! Faults while running: retries across replicas under a budget, outlier
//! ejection and its probe, hedged calls, and blame for calls the caller's
//! deadline cut.

use std::time::Duration;

use super::{task, unavailable};
use crate::deadline::Deadline;
use crate::exec::{HedgingSettings, Orchestrator, OrchestratorSettings};
use crate::ids::TaskType;
use crate::model::Health;
use crate::registry::probe;
use crate::registry::{EjectionSettings, RetrySettings};
use crate::task::{AttemptOutcome, TaskResult, TaskStatus};
use crate::testing::{self, Behaviour, FakeModel};

fn gama() -> FakeModel {
    FakeModel::serving("gama", "transcription", 0.9)
}

async fn run(orchestrator: &std::sync::Arc<Orchestrator>) -> TaskResult {
    orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap()
}

fn no_ejection() -> EjectionSettings {
    EjectionSettings {
        consecutive_failures: 0,
        min_calls: 0,
        ..EjectionSettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_replica_is_retried_on_another_and_ejected_after_five_failures() {
    let down = gama();
    down.behave(Behaviour::Fail(unavailable()));
    let up = gama();
    // Slower than the failing replica's latency estimate, which failures
    // never lower: the balancer keeps choosing the failing replica first.
    up.behave(Behaviour::Answer(Duration::from_millis(50)));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&down, &up])],
        OrchestratorSettings::default(),
    );
    for _ in 0..20 {
        let result = run(&orchestrator).await;
        assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
        let last = result.metrics.attempts.last().unwrap();
        assert_eq!(last.endpoint, "fake://1");
    }
    assert_eq!(
        down.calls().len(),
        5,
        "ejected after five failures in a row, and not called again while out"
    );
    let model = &orchestrator.registry().models().next().unwrap().clone();
    assert!(model.replicas()[0].is_ejected());
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_an_attempt_on_another_replica_of_the_same_model() {
    let down = gama();
    down.behave(Behaviour::Fail(unavailable()));
    let up = gama();
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&down, &up])],
        OrchestratorSettings::default(),
    );
    // The first call goes to the first replica, in turn.
    let result = run(&orchestrator).await;
    let attempts: Vec<(&str, AttemptOutcome)> = result
        .metrics
        .attempts
        .iter()
        .map(|attempt| (attempt.endpoint.as_str(), attempt.outcome))
        .collect();
    assert_eq!(
        attempts,
        [
            ("fake://0", AttemptOutcome::Failed),
            ("fake://1", AttemptOutcome::Succeeded)
        ]
    );
    assert!(
        result
            .metrics
            .attempts
            .iter()
            .all(|a| a.model_id.as_str() == "gama")
    );
}

#[tokio::test(start_paused = true)]
async fn an_ejected_replica_takes_one_probe_when_its_time_is_up_then_traffic_again() {
    let flaky = gama();
    flaky.behave(Behaviour::Fail(unavailable()));
    let up = gama();
    // Slower than the failing replica's latency estimate, which failures
    // never lower: the balancer keeps choosing the failing replica first.
    up.behave(Behaviour::Answer(Duration::from_millis(50)));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&flaky, &up])],
        OrchestratorSettings::default(),
    );
    for _ in 0..10 {
        run(&orchestrator).await;
    }
    assert_eq!(flaky.calls().len(), 5);
    flaky.behave(Behaviour::Answer(Duration::ZERO));
    tokio::time::advance(EjectionSettings::default().base_time).await;
    let probe = run(&orchestrator).await;
    assert_eq!(
        probe.metrics.attempts[0].endpoint, "fake://0",
        "the probe goes first"
    );
    assert_eq!(flaky.calls().len(), 6);
    for _ in 0..10 {
        run(&orchestrator).await;
    }
    assert!(
        flaky.calls().len() >= 10,
        "back in rotation after its probe answered: {} calls",
        flaky.calls().len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_comes_back_up_is_probed_at_once_without_sitting_out_its_time() {
    let flaky = gama();
    flaky.behave(Behaviour::Fail(unavailable()));
    let up = gama();
    // Slower than the failing replica's latency estimate, which failures
    // never lower: the balancer keeps choosing the failing replica first.
    up.behave(Behaviour::Answer(Duration::from_millis(50)));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&flaky, &up])],
        OrchestratorSettings::default(),
    );
    for _ in 0..10 {
        run(&orchestrator).await;
    }
    let registry = orchestrator.registry();
    assert!(registry.models().next().unwrap().replicas()[0].is_ejected());
    // A restart: the health check sees it down, then serving again.
    flaky.set_health(Health::NotServing);
    probe::probe_all(&registry, Duration::from_secs(1)).await;
    flaky.set_health(Health::Serving);
    flaky.behave(Behaviour::Answer(Duration::ZERO));
    probe::probe_all(&registry, Duration::from_secs(1)).await;
    let result = run(&orchestrator).await;
    assert_eq!(result.metrics.attempts[0].endpoint, "fake://0");
    assert!(!registry.models().next().unwrap().replicas()[0].is_ejected());
}

#[tokio::test(start_paused = true)]
async fn the_last_replica_that_can_serve_is_never_ejected() {
    let only = gama();
    only.behave(Behaviour::Fail(unavailable()));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&only])],
        OrchestratorSettings::default(),
    );
    for _ in 0..10 {
        let result = run(&orchestrator).await;
        assert_eq!(result.status, TaskStatus::Failed);
    }
    assert_eq!(only.calls().len(), 10, "every task still reaches it");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_budget_so_an_outage_is_not_multiplied() {
    let a = gama();
    let b = gama();
    a.behave(Behaviour::Fail(unavailable()));
    b.behave(Behaviour::Fail(unavailable()));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&a, &b])],
        OrchestratorSettings {
            ejection: no_ejection(),
            retries: RetrySettings {
                budget_ratio: 0.25,
                min_per_second: 0.5,
                ..RetrySettings::default()
            },
            ..OrchestratorSettings::default()
        },
    );
    let mut refused = 0;
    for _ in 0..10 {
        let result = run(&orchestrator).await;
        assert_eq!(result.status, TaskStatus::Failed);
        if result.error.unwrap().message.contains("retry budget") {
            refused += 1;
        }
    }
    // A floor of 5 in the window, then a quarter of the 10 calls: the
    // tasks 1 to 6 and 8 were retried.
    assert_eq!(a.calls().len() + b.calls().len(), 17);
    assert_eq!(refused, 3);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_to_the_next_model_is_a_retry_too() {
    let first = FakeModel::serving("first", "transcription", 0.9);
    let second = FakeModel::serving("second", "transcription", 0.8);
    first.behave(Behaviour::Fail(unavailable()));
    let orchestrator = testing::orchestrator_of(
        vec![first.described_entry(), second.described_entry()],
        OrchestratorSettings {
            retries: RetrySettings {
                budget_ratio: 0.0,
                min_per_second: 0.1,
                ..RetrySettings::default()
            },
            ..OrchestratorSettings::default()
        },
    );
    let result = run(&orchestrator).await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(result.model_id.unwrap().as_str(), "second");
    // The budget held one retry; the next failure of `first` ends its task.
    let result = run(&orchestrator).await;
    if result.metrics.attempts[0].model_id.as_str() == "first" {
        assert_eq!(result.status, TaskStatus::Failed);
        assert!(result.error.unwrap().message.contains("retry budget"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_hedged_on_another_replica_and_the_first_answer_wins() {
    let slow = gama().estimate(Duration::from_millis(50));
    slow.behave(Behaviour::Answer(Duration::from_secs(2)));
    let fast = gama();
    fast.behave(Behaviour::Answer(Duration::from_millis(10)));
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&slow, &fast])],
        OrchestratorSettings {
            hedging: HedgingSettings {
                task_types: vec![TaskType::new("transcription").unwrap()],
                min_delay: Duration::from_millis(5),
            },
            ..OrchestratorSettings::default()
        },
    );
    let started = tokio::time::Instant::now();
    let result = run(&orchestrator).await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let attempts: Vec<(&str, AttemptOutcome, bool)> = result
        .metrics
        .attempts
        .iter()
        .map(|a| (a.endpoint.as_str(), a.outcome, a.hedge))
        .collect();
    assert_eq!(
        attempts,
        [
            ("fake://1", AttemptOutcome::Succeeded, true),
            ("fake://0", AttemptOutcome::Abandoned, false)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn without_hedging_a_slow_call_is_waited_for() {
    let slow = gama().estimate(Duration::from_millis(50));
    slow.behave(Behaviour::Answer(Duration::from_secs(2)));
    let fast = gama();
    let orchestrator = testing::orchestrator_of(
        vec![testing::replicated(&[&slow, &fast])],
        OrchestratorSettings::default(),
    );
    let result = run(&orchestrator).await;
    assert_eq!(result.metrics.attempts.len(), 1);
    assert_eq!(result.metrics.attempts[0].endpoint, "fake://0");
}

#[tokio::test(start_paused = true)]
async fn a_call_the_callers_deadline_cut_after_the_usual_latency_counts_as_a_timeout() {
    let hung = FakeModel::serving("hung", "transcription", 0.9);
    hung.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let orchestrator = testing::orchestrator_of(
        vec![hung.described_entry()],
        OrchestratorSettings::default(),
    );
    let result = orchestrator
        .execute(
            task("transcription"),
            Deadline::after(tokio::time::Instant::now(), Duration::from_secs(1)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    let registry = orchestrator.registry();
    let model = registry.models().next().unwrap();
    let stats = orchestrator.planner.selector.stats(
        model,
        &TaskType::new("transcription").unwrap(),
        tokio::time::Instant::now(),
    );
    assert_eq!(stats.timeouts, 1.0, "the hung model is blamed");
}

#[tokio::test(start_paused = true)]
async fn a_hung_model_loses_its_traffic_to_a_backup() {
    let hung = FakeModel::serving("hung", "transcription", 0.9);
    hung.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let backup = FakeModel::serving("backup", "transcription", 0.8);
    let orchestrator = testing::orchestrator_of(
        vec![hung.described_entry(), backup.described_entry()],
        OrchestratorSettings::default(),
    );
    let mut first_choices = Vec::new();
    for _ in 0..60 {
        let result = orchestrator
            .execute(
                task("transcription"),
                Deadline::after(tokio::time::Instant::now(), Duration::from_secs(1)),
                None,
            )
            .await
            .unwrap();
        first_choices.push(result.metrics.attempts[0].model_id.to_string());
    }
    let to_hung = first_choices[20..].iter().filter(|m| *m == "hung").count();
    assert!(
        to_hung <= 4,
        "{to_hung} of the 40 calls after the first 20 went to the hung model first: {first_choices:?}"
    );
}
