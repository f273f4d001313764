//! Selection under change, simulated without a network: how much each
//! policy loses against an oracle, and how fast it follows a change.
//!
//! `cargo bench -p grym-core --bench selection_regret`
//!
//! Three models serve one task type. Their true success rates and latencies
//! are hidden from the policies, which see only outcomes. Tasks arrive at a
//! steady rate of simulated time (100 a second, then 1 a second); halfway
//! through, the best model degrades. Each
//! task tries the plan's models in order until one succeeds, and every
//! outcome is recorded, as the orchestrator does.
//!
//! A first choice's utility is `0.7·p + 0.3·(1 − L / L_max)` (success
//! probability `p`, latency `L` against the slowest model's), the
//! objective the scoring formula's weights express; the oracle always picks
//! the model of highest true utility. Regret is the oracle's utility minus
//! the chosen model's, summed over tasks. "Tasks to follow" counts the
//! tasks after the change until the end of the first window of 100
//! consecutive tasks in which the policy's first choice agrees with the
//! oracle's at least 90 times.

mod common;

use std::sync::Arc;
use std::time::Duration;

use grym_core::CallOutcome;
use grym_core::Policy;
use grym_core::internals::{ScoringSettings, Selector};
use grym_core::{Health, ModelEntry, ModelId, ModelKind, Registry, SelectionSettings, TaskType};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const TASKS: usize = 6_000;
const CHANGE_AT: usize = 3_000;
const ARRIVALS: [Duration; 2] = [Duration::from_millis(10), Duration::from_secs(1)];
const SEEDS: u64 = 5;
const FOLLOW_WINDOW: usize = 100;

/// A model's hidden truth.
#[derive(Clone, Copy)]
struct Truth {
    success: f64,
    latency_ms: f64,
}

struct Model {
    id: &'static str,
    confidence: f64,
    before: Truth,
    after: Truth,
}

const MODELS: [Model; 3] = [
    Model {
        id: "alpha",
        confidence: 0.9,
        before: Truth {
            success: 0.97,
            latency_ms: 80.0,
        },
        after: Truth {
            success: 0.55,
            latency_ms: 240.0,
        },
    },
    Model {
        id: "beta",
        confidence: 0.75,
        before: Truth {
            success: 0.90,
            latency_ms: 120.0,
        },
        after: Truth {
            success: 0.90,
            latency_ms: 120.0,
        },
    },
    Model {
        id: "gamma",
        confidence: 0.6,
        before: Truth {
            success: 0.80,
            latency_ms: 100.0,
        },
        after: Truth {
            success: 0.80,
            latency_ms: 100.0,
        },
    },
];

fn truth(model: &Model, task: usize) -> Truth {
    if task < CHANGE_AT {
        model.before
    } else {
        model.after
    }
}

fn utility(truth: Truth, slowest_ms: f64) -> f64 {
    0.7 * truth.success + 0.3 * (1.0 - truth.latency_ms / slowest_ms)
}

fn oracle(task: usize) -> (usize, f64) {
    let slowest = MODELS
        .iter()
        .map(|m| truth(m, task).latency_ms)
        .fold(0.0, f64::max);
    MODELS
        .iter()
        .enumerate()
        .map(|(i, m)| (i, utility(truth(m, task), slowest)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0))
}

struct Run {
    regret_before: f64,
    regret_after: f64,
    tasks_to_follow: Option<usize>,
    first_try_success: f64,
}

fn simulate(settings: &SelectionSettings, arrival: Duration, seed: u64) -> Run {
    let task_type = TaskType::new("transcription").unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::new(MODELS.iter().map(|m| {
        let entry = ModelEntry::single(
            ModelId::new(m.id).unwrap_or_else(|e| panic!("{e}")),
            "simulated",
            Arc::new(common::Silent),
        )
        .with_kind(ModelKind::new("simulated"))
        .with_capabilities(vec![grym_core::Capability {
            task_type: task_type.clone(),
            confidence: m.confidence,
            estimated_latency: Duration::from_millis(m.before.latency_ms as u64),
            max_concurrency: None,
        }]);
        entry.replicas()[0].set_health(Health::Serving);
        entry
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let selector = Selector::new(SelectionSettings {
        seed: Some(seed),
        ..settings.clone()
    });
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Instant::now();
    let (mut regret_before, mut regret_after) = (0.0, 0.0);
    let mut agreed = Vec::with_capacity(TASKS - CHANGE_AT);
    let mut first_successes = 0;

    for task in 0..TASKS {
        let now = start + arrival * task as u32;
        let plan = selector
            .plan(&task_type, &registry, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let index_of = |id: &ModelId| MODELS.iter().position(|m| m.id == id.as_str()).unwrap_or(0);
        let chosen = index_of(plan.candidates[0].model.id());
        let (best, best_utility) = oracle(task);
        let slowest = MODELS
            .iter()
            .map(|m| truth(m, task).latency_ms)
            .fold(0.0, f64::max);
        let regret = best_utility - utility(truth(&MODELS[chosen], task), slowest);
        if task < CHANGE_AT {
            regret_before += regret;
        } else {
            regret_after += regret;
            agreed.push(chosen == best);
        }
        for (attempt, candidate) in plan.candidates.iter().enumerate() {
            let model = &MODELS[index_of(candidate.model.id())];
            let truth = truth(model, task);
            let succeeded = rng.random_bool(truth.success);
            let latency =
                Duration::from_secs_f64(truth.latency_ms * rng.random_range(0.8..1.2) / 1000.0);
            let outcome = if succeeded {
                CallOutcome::Success
            } else {
                CallOutcome::Failure
            };
            selector.record(&candidate.model, &task_type, now, outcome, latency);
            if succeeded {
                first_successes += usize::from(attempt == 0);
                break;
            }
        }
    }
    let tasks_to_follow = (0..agreed.len().saturating_sub(FOLLOW_WINDOW))
        .find(|&i| agreed[i..i + FOLLOW_WINDOW].iter().filter(|&&a| a).count() >= 90)
        .map(|i| i + FOLLOW_WINDOW);
    Run {
        regret_before,
        regret_after,
        tasks_to_follow,
        first_try_success: first_successes as f64 / TASKS as f64,
    }
}

fn main() {
    let scored = SelectionSettings {
        routes: Vec::new(),
        ..SelectionSettings::default()
    };
    let policies = [
        (
            "static (declared confidence only)",
            SelectionSettings {
                scoring: ScoringSettings {
                    max_performance_weight: 0.0,
                    ..ScoringSettings::default()
                },
                ..scored.clone()
            },
        ),
        ("scored (the default)", scored.clone()),
        (
            "thompson",
            SelectionSettings {
                policy: Policy::Thompson,
                ..scored.clone()
            },
        ),
    ];
    for arrival in ARRIVALS {
        println!(
            "\n{TASKS} tasks, one every {} ms of simulated time; the best model degrades at task {CHANGE_AT}; \
             half-life {:?}; mean of {SEEDS} seeds\n",
            arrival.as_millis(),
            scored.half_life
        );
        println!(
            "| policy | regret before | regret after | tasks to follow the change | first-try success |"
        );
        println!("| --- | ---: | ---: | ---: | ---: |");
        for (name, settings) in &policies {
            let runs: Vec<Run> = (0..SEEDS)
                .map(|seed| simulate(settings, arrival, seed))
                .collect();
            let mean =
                |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
            let followed: Vec<usize> = runs.iter().filter_map(|r| r.tasks_to_follow).collect();
            let follow = if followed.len() == runs.len() {
                format!(
                    "{:.0}",
                    followed.iter().sum::<usize>() as f64 / followed.len() as f64
                )
            } else {
                format!(
                    "never ({} of {} runs)",
                    runs.len() - followed.len(),
                    runs.len()
                )
            };
            println!(
                "| {name} | {:.1} | {:.1} | {follow} | {:.1}% |",
                mean(&|r| r.regret_before),
                mean(&|r| r.regret_after),
                100.0 * mean(&|r| r.first_try_success),
            );
        }
    }
}
