//! Selection under change, simulated without a network: how much each
//! policy loses against an oracle, and how fast it turns away from a model
//! that changes.
//!
//! `cargo bench -p grym-core --bench selection_regret`
//!
//! Models serve one task type. Their true success rates and latencies are
//! hidden from the policies, which see only outcomes. Tasks arrive at a
//! steady rate of simulated time (100 a second, then 1 a second), each
//! with a deadline of 1 s; at task 3,000 of 6,000 the best model, `alpha`,
//! changes in one of four ways:
//! - **degrades**: success 0.97 to 0.55, latency 80 to 240 ms;
//! - **fails**: half its calls fail, latency unchanged;
//! - **slows**: three times slower (80 to 240 ms), success unchanged;
//! - **hangs**: it never answers, beside one healthy backup.
//!
//! Time runs event by event, as in service: each task tries the plan's
//! models in order until one answers or its deadline passes, and a call's
//! outcome is recorded when the call ends, so at 100 tasks a second an
//! outcome reaches the statistics some tasks after its call was sent. An
//! answer takes the model's latency (±20%), a failure a quarter of that; a
//! call still running at the deadline is cut there and recorded as a
//! timeout lasting the time it ran, as the orchestrator records a call cut
//! by its caller's deadline after it ran longer than expected.
//!
//! A first choice's utility is `0.7·p + 0.3·(1 − L / L_max)` (success
//! probability `p`, latency `L` against the slowest model's; a hung model's
//! `p` is 0 and its `L` the deadline), the objective the scoring formula's
//! weights express; the oracle always picks the model of highest true
//! utility. The figures, each the mean of 50 seeds:
//! - **regret**: the oracle's utility minus the chosen model's, summed over
//!   the tasks before, then after, the change;
//! - **tasks to follow**: the tasks after the change until the end of the
//!   first window of 100 consecutive tasks in which the policy's first
//!   choice agrees with the oracle's at least 90 times;
//! - **tasks until it lost 80%**: with `s` the changed model's share of
//!   first choices over the 500 tasks before the change, the first window
//!   of 20 consecutive tasks after the change in which it is the first
//!   choice at most `0.2·s·20` times; the figure is the number of tasks
//!   between the change and that window whose first choice was the changed
//!   model (the mean, and the worst seed);
//! - **first choices in the 200 after**: how many of the 200 tasks after the
//!   change still went to the changed model first, tries again included
//!   (the mean, and the worst seed);
//! - **first-try success**: the share of tasks whose first call answered;
//! - **answered after the change**: the share of the tasks after the
//!   change that got an answer at all, from any model, within the deadline.

mod common;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
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
const DEADLINE: Duration = Duration::from_secs(1);
const SEEDS: u64 = 50;
const FOLLOW_WINDOW: usize = 100;
const SHARE_BEFORE: usize = 500;
const LOSS_WINDOW: usize = 20;
const EXPOSURE: usize = 200;
/// A failure takes this share of the model's latency.
const FAILURE_SHARE: f64 = 0.25;

/// A model's hidden truth.
#[derive(Clone, Copy, PartialEq)]
struct Truth {
    success: f64,
    latency_ms: f64,
    /// It never answers: every call runs until its deadline.
    hangs: bool,
}

const fn answers(success: f64, latency_ms: f64) -> Truth {
    Truth {
        success,
        latency_ms,
        hangs: false,
    }
}

const HUNG: Truth = Truth {
    success: 0.0,
    latency_ms: DEADLINE.as_millis() as f64,
    hangs: true,
};

struct Model {
    id: &'static str,
    confidence: f64,
    before: Truth,
    after: Truth,
}

const fn alpha(after: Truth) -> Model {
    Model {
        id: "alpha",
        confidence: 0.9,
        before: answers(0.97, 80.0),
        after,
    }
}

const BETA: Model = Model {
    id: "beta",
    confidence: 0.75,
    before: answers(0.90, 120.0),
    after: answers(0.90, 120.0),
};

const GAMMA: Model = Model {
    id: "gamma",
    confidence: 0.6,
    before: answers(0.80, 100.0),
    after: answers(0.80, 100.0),
};

struct Scenario {
    title: &'static str,
    models: &'static [Model],
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        title: "alpha degrades: success 0.97 to 0.55, 80 to 240 ms",
        models: &[alpha(answers(0.55, 240.0)), BETA, GAMMA],
    },
    Scenario {
        title: "alpha fails half its calls (success 0.97 to 0.5, 80 ms)",
        models: &[alpha(answers(0.5, 80.0)), BETA, GAMMA],
    },
    Scenario {
        title: "alpha turns 3x slower (80 to 240 ms, success 0.97)",
        models: &[alpha(answers(0.97, 240.0)), BETA, GAMMA],
    },
    Scenario {
        title: "alpha hangs (never answers; every call costs the 1 s deadline), beside beta",
        models: &[alpha(HUNG), BETA],
    },
];

/// The model that changes.
const CHANGED: usize = 0;

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

/// The true utility of each model for `task`.
fn utilities(models: &[Model], task: usize) -> Vec<f64> {
    let slowest = models
        .iter()
        .map(|m| truth(m, task).latency_ms)
        .fold(0.0, f64::max);
    models
        .iter()
        .map(|m| utility(truth(m, task), slowest))
        .collect()
}

/// A call that ends at `end` (from the start of the run).
struct Call {
    end: Duration,
    seq: u64,
    task: usize,
    attempt: usize,
    outcome: CallOutcome,
    latency: Duration,
}

impl PartialEq for Call {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Call {}

impl PartialOrd for Call {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Call {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.end, self.seq).cmp(&(other.end, other.seq))
    }
}

/// One run's moving parts.
struct Sim {
    models: &'static [Model],
    task_type: TaskType,
    selector: Selector,
    rng: SmallRng,
    start: Instant,
    arrival: Duration,
    calls: BinaryHeap<Reverse<Call>>,
    seq: u64,
    /// Each live task's candidates, as indexes into `models`.
    plans: Vec<Vec<usize>>,
    /// The models' entries, in the order of `models`.
    entries: Vec<Arc<ModelEntry>>,
    first_successes: usize,
    answered_after: usize,
}

impl Sim {
    fn arrival_of(&self, task: usize) -> Duration {
        self.arrival * task as u32
    }

    /// Starts `task`'s call to its `attempt`-th candidate at `at`, unless
    /// its deadline has passed.
    fn start_call(&mut self, task: usize, attempt: usize, at: Duration) {
        let deadline = self.arrival_of(task) + DEADLINE;
        if at >= deadline {
            return;
        }
        let truth = truth(&self.models[self.plans[task][attempt]], task);
        let (outcome, mut latency) = if truth.hangs {
            (CallOutcome::Timeout, deadline - at)
        } else {
            let latency = Duration::from_secs_f64(
                truth.latency_ms * self.rng.random_range(0.8..1.2) / 1000.0,
            );
            if self.rng.random_bool(truth.success) {
                (CallOutcome::Success, latency)
            } else {
                (CallOutcome::Failure, latency.mul_f64(FAILURE_SHARE))
            }
        };
        let mut outcome = outcome;
        if at + latency > deadline {
            outcome = CallOutcome::Timeout;
            latency = deadline - at;
        }
        self.seq += 1;
        self.calls.push(Reverse(Call {
            end: at + latency,
            seq: self.seq,
            task,
            attempt,
            outcome,
            latency,
        }));
    }

    /// Records the outcomes of the calls that ended by `until`, and starts
    /// the fallbacks they call for.
    fn settle(&mut self, until: Duration) {
        while let Some(Reverse(call)) = self.calls.peek() {
            if call.end > until {
                break;
            }
            let Some(Reverse(call)) = self.calls.pop() else {
                break;
            };
            let model = &self.entries[self.plans[call.task][call.attempt]];
            self.selector.record(
                model,
                &self.task_type,
                self.start + call.end,
                call.outcome,
                call.latency,
            );
            if call.outcome == CallOutcome::Success {
                self.first_successes += usize::from(call.attempt == 0);
                self.answered_after += usize::from(call.task >= CHANGE_AT);
            } else if call.attempt + 1 < self.plans[call.task].len() {
                self.start_call(call.task, call.attempt + 1, call.end);
            }
        }
    }
}

struct Run {
    regret_before: f64,
    regret_after: f64,
    tasks_to_follow: Option<usize>,
    tasks_until_lost: Option<usize>,
    exposure: usize,
    first_try_success: f64,
    answered_after: f64,
}

fn registry(models: &[Model], task_type: &TaskType) -> Registry {
    Registry::new(models.iter().map(|m| {
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
            inputs: Vec::new(),
        }]);
        entry.replicas()[0].set_health(Health::Serving);
        entry
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn simulate(
    scenario: &Scenario,
    settings: &SelectionSettings,
    arrival: Duration,
    seed: u64,
) -> Run {
    let models = scenario.models;
    let task_type = TaskType::new("transcription").unwrap_or_else(|e| panic!("{e}"));
    let registry = registry(models, &task_type);
    let index_of = |id: &ModelId| models.iter().position(|m| m.id == id.as_str());
    let entries = models
        .iter()
        .filter_map(|m| registry.models().find(|e| e.id().as_str() == m.id))
        .cloned()
        .collect();
    let mut sim = Sim {
        models,
        task_type: task_type.clone(),
        selector: Selector::new(SelectionSettings {
            seed: Some(seed),
            ..settings.clone()
        }),
        rng: SmallRng::seed_from_u64(seed),
        start: Instant::now(),
        arrival,
        calls: BinaryHeap::new(),
        seq: 0,
        plans: Vec::with_capacity(TASKS),
        entries,
        first_successes: 0,
        answered_after: 0,
    };
    let (mut regret_before, mut regret_after) = (0.0, 0.0);
    let mut agreed = Vec::with_capacity(TASKS - CHANGE_AT);
    let mut changed_first = Vec::with_capacity(TASKS);

    for task in 0..TASKS {
        let at = sim.arrival_of(task);
        sim.settle(at);
        let plan = sim
            .selector
            .plan(&task_type, &registry, sim.start + at)
            .unwrap_or_else(|e| panic!("{e}"));
        let order: Vec<usize> = plan
            .candidates
            .iter()
            .map(|c| index_of(c.model.id()).unwrap_or(0))
            .collect();
        let chosen = order[0];
        let utilities = utilities(models, task);
        let best = (0..models.len())
            .max_by(|&a, &b| utilities[a].total_cmp(&utilities[b]))
            .unwrap_or(0);
        let regret = utilities[best] - utilities[chosen];
        if task < CHANGE_AT {
            regret_before += regret;
        } else {
            regret_after += regret;
            agreed.push(chosen == best);
        }
        changed_first.push(chosen == CHANGED);
        sim.plans.push(order);
        sim.start_call(task, 0, at);
    }
    sim.settle(Duration::MAX);

    let tasks_to_follow = (0..agreed.len().saturating_sub(FOLLOW_WINDOW))
        .find(|&i| agreed[i..i + FOLLOW_WINDOW].iter().filter(|&&a| a).count() >= 90)
        .map(|i| i + FOLLOW_WINDOW);
    let count = |range: std::ops::Range<usize>| changed_first[range].iter().filter(|&&c| c).count();
    let share_before = count(CHANGE_AT - SHARE_BEFORE..CHANGE_AT) as f64 / SHARE_BEFORE as f64;
    let most = 0.2 * share_before * LOSS_WINDOW as f64;
    let tasks_until_lost = (CHANGE_AT..TASKS - LOSS_WINDOW)
        .find(|&t| count(t..t + LOSS_WINDOW) as f64 <= most)
        .map(|t| count(CHANGE_AT..t));
    Run {
        regret_before,
        regret_after,
        tasks_to_follow,
        tasks_until_lost,
        exposure: count(CHANGE_AT..CHANGE_AT + EXPOSURE),
        first_try_success: sim.first_successes as f64 / TASKS as f64,
        answered_after: sim.answered_after as f64 / (TASKS - CHANGE_AT) as f64,
    }
}

/// The mean of the runs' figures, or how many runs never got there.
fn mean_of(runs: &[Run], figure: impl Fn(&Run) -> Option<usize>, worst: bool) -> String {
    let reached: Vec<usize> = runs.iter().filter_map(figure).collect();
    if reached.len() < runs.len() {
        return format!(
            "never ({} of {} runs)",
            runs.len() - reached.len(),
            runs.len()
        );
    }
    let mean = reached.iter().sum::<usize>() as f64 / reached.len() as f64;
    if worst {
        format!(
            "{mean:.1} (worst {})",
            reached.iter().max().copied().unwrap_or(0)
        )
    } else {
        format!("{mean:.0}")
    }
}

fn main() {
    let scored = SelectionSettings {
        routes: Vec::new(),
        ..SelectionSettings::default()
    };
    let policies = [
        (
            "static",
            SelectionSettings {
                scoring: ScoringSettings {
                    max_performance_weight: 0.0,
                    ..ScoringSettings::default()
                },
                ..scored.clone()
            },
        ),
        ("scored", scored.clone()),
        (
            "thompson",
            SelectionSettings {
                policy: Policy::Thompson,
                ..scored.clone()
            },
        ),
    ];
    println!(
        "{TASKS} tasks, the change at task {CHANGE_AT}, deadline {DEADLINE:?}, half-life {:?}, \
         mean of {SEEDS} seeds; static = declared confidence only, scored = the default",
        scored.half_life
    );
    for scenario in &SCENARIOS {
        println!("\n{}\n", scenario.title);
        println!(
            "| tasks/s | policy | regret before | regret after | tasks to follow | \
             alpha's tasks until it lost 80% | alpha first in the {EXPOSURE} after | \
             first-try success | answered after the change |"
        );
        println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for arrival in ARRIVALS {
            for (name, settings) in &policies {
                let runs: Vec<Run> = (0..SEEDS)
                    .map(|seed| simulate(scenario, settings, arrival, seed))
                    .collect();
                let mean =
                    |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
                println!(
                    "| {:.0} | {name} | {:.1} | {:.1} | {} | {} | {} | {:.1}% | {:.1}% |",
                    1.0 / arrival.as_secs_f64(),
                    mean(&|r| r.regret_before),
                    mean(&|r| r.regret_after),
                    mean_of(&runs, |r| r.tasks_to_follow, false),
                    mean_of(&runs, |r| r.tasks_until_lost, true),
                    mean_of(&runs, |r| Some(r.exposure), true),
                    100.0 * mean(&|r| r.first_try_success),
                    100.0 * mean(&|r| r.answered_after),
                );
            }
        }
    }
}
