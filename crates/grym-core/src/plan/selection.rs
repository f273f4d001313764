//! Step 2 of a task's way: choose the model, rank the fallbacks, and say
//! why.
//!
//! Candidates are the models that declare the task type, accept the task's
//! kind of input (when it is known: a model that declares the inputs it
//! takes is left out of others, and the plan names it), and are not known
//! to be down (a model whose every replica fails its health check is left
//! out until it recovers). They are scored by [`scoring`](super::scoring)
//! and ranked by the configured [`Policy`]:
//! - [`Policy::Scored`] (the default): by score, highest first, ties by id.
//! - [`Policy::Thompson`]: Thompson sampling. Each candidate's success
//!   probability is drawn from `Beta(c·k + successes, (1 − c)·k + failures)`,
//!   a prior worth `k` calls centred on its declared confidence `c`, updated
//!   by the outcomes its rates rest on; its draw is then
//!   `0.7 · p + 0.3 · (1 − normalized_latency)`, and candidates rank by
//!   draw. Models it is unsure of get tried in proportion to the chance
//!   they are best, so it keeps learning without a fixed exploration rate.
//!
//! A [`Route`] overrides the ranking for one task type while its model is
//! healthy and serves that type: the default sends `audio_analysis` to
//! `gama` (confidence 0.95, estimated 800 ms), with `wav2vec2` as its first
//! fallback. The first candidate of a [`Plan`] is the choice; the rest, in
//! order, are the fallbacks.
//!
//! Randomness is injected: a selector built with a seed draws the same
//! sequence every run, and takes no lock to draw.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rand_distr::{Beta, Distribution};
use tokio::time::Instant;

use crate::error::{Error, SettingError};
use crate::ids::Modality;
use crate::ids::{ModelId, TaskType};
use crate::model::Health;
use crate::plan::scoring::{ScoreInput, ScoringSettings, finish, measure};
use crate::registry::{CallOutcome, ModelEntry, Registry, StatsSnapshot};
use crate::task::{CandidateScore, Exclusion, Policy, Reason, Routing, ScoreBreakdown};

/// A task type pinned to a model while that model is healthy.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The task type routed.
    pub task_type: TaskType,
    /// The model it goes to.
    pub model: ModelId,
    /// The confidence reported for the choice.
    pub confidence: f64,
    /// The latency estimate reported for the choice.
    #[serde(default, with = "humantime_serde")]
    pub estimated_latency: Duration,
    /// Models tried first when it fails, in order, before the others.
    #[serde(default)]
    pub fallbacks: Vec<ModelId>,
}

impl Route {
    /// The original design's rule: audio analysis goes to GAMA.
    pub fn gama() -> Self {
        Self {
            task_type: TaskType::literal("audio_analysis"),
            model: ModelId::literal("gama"),
            confidence: 0.95,
            estimated_latency: Duration::from_millis(800),
            fallbacks: vec![ModelId::literal("wav2vec2")],
        }
    }
}

/// Settings of selection: the `[selection]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionSettings {
    /// How candidates are ranked: `scored` (the default) or `thompson`.
    pub policy: Policy,
    /// The formula's weights.
    #[serde(skip)]
    pub scoring: ScoringSettings,
    /// How fast an idle model's statistics fade: after six half-lives
    /// without an outcome, its history halves every half-life. (The rates
    /// follow a model in use by its last outcomes, counted.)
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// `k`: how many calls the declared confidence is worth to Thompson
    /// sampling.
    pub prior_strength: f64,
    /// Seeds selection's randomness, for repeatable runs.
    pub seed: Option<u64>,
    /// Pinned routes; left out, the GAMA route; `[]`, none.
    pub routes: Vec<Route>,
}

impl Default for SelectionSettings {
    fn default() -> Self {
        Self {
            policy: Policy::Scored,
            scoring: ScoringSettings::default(),
            half_life: Duration::from_secs(10),
            prior_strength: 10.0,
            seed: None,
            routes: vec![Route::gama()],
        }
    }
}

impl SelectionSettings {
    /// Checks the ranges the types do not.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.half_life.is_zero() {
            return Err(SettingError::new("half_life", "must be longer than zero"));
        }
        if !(self.prior_strength >= 0.0 && self.prior_strength.is_finite()) {
            return Err(SettingError::new(
                "prior_strength",
                "must be a number of 0 or more",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !(0.0..=1.0).contains(&route.confidence) {
                return Err(SettingError::new(
                    format!("routes[{i}].confidence"),
                    format!("{} is outside [0, 1]", route.confidence),
                ));
            }
        }
        Ok(())
    }
}

/// A model considered for a task.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The model.
    pub model: Arc<ModelEntry>,
    /// Its health when planned.
    pub health: Health,
    /// Its calls in flight when planned.
    pub in_flight: u32,
    /// Its score and the parts of it.
    pub breakdown: ScoreBreakdown,
    /// Its Thompson draw, under that policy.
    pub sample: Option<f64>,
}

/// The models for one task, best first, and why.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The task type planned for.
    pub task_type: TaskType,
    /// The policy that ranked them.
    pub policy: Policy,
    /// Why the first is the choice.
    pub reason: Reason,
    /// The expected time of the chosen model's call.
    pub estimated_latency: Duration,
    /// The choice, then the fallbacks in order.
    pub candidates: Vec<Candidate>,
    /// Models that serve the type but do not take the task's input.
    pub excluded: Vec<Exclusion>,
}

impl Plan {
    /// The plan as the caller sees it, before any fallback was taken.
    pub(crate) fn routing(&self) -> Routing {
        Routing {
            task_type: self.task_type.clone(),
            policy: self.policy,
            reason: self.reason.clone(),
            estimated_latency: self.estimated_latency,
            candidates: self
                .candidates
                .iter()
                .map(|c| CandidateScore {
                    model_id: c.model.id().clone(),
                    health: c.health,
                    in_flight: c.in_flight,
                    breakdown: c.breakdown,
                    sample: c.sample,
                })
                .collect(),
            fallbacks_taken: Vec::new(),
            summary: None,
            excluded: self.excluded.clone(),
        }
    }
}

/// Plans tasks: scores candidates and ranks them by policy. It owns the
/// half-life of the statistics it reads, so every outcome is recorded
/// through it.
#[derive(Debug)]
pub struct Selector {
    settings: SelectionSettings,
    seed: u64,
    draws: AtomicU64,
}

impl Selector {
    /// A selector; a seed in the settings makes its draws repeatable.
    pub fn new(settings: SelectionSettings) -> Self {
        Self {
            seed: settings.seed.unwrap_or_else(|| rand::rng().next_u64()),
            settings,
            draws: AtomicU64::new(0),
        }
    }

    /// The half-life of the statistics.
    pub(crate) fn half_life(&self) -> Duration {
        self.settings.half_life
    }

    /// Records how one call of `model` for `task_type` ended.
    pub fn record(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        now: Instant,
        outcome: CallOutcome,
        latency: Duration,
    ) {
        model.record(task_type, now, self.half_life(), outcome, latency);
    }

    /// `model`'s recent performance for `task_type`, tail quantiles
    /// included.
    pub(crate) fn stats(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        now: Instant,
    ) -> StatsSnapshot {
        model.stats(task_type, now, self.half_life())
    }

    /// [`stats`](Self::stats) without the quantiles.
    pub(crate) fn rates(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        now: Instant,
    ) -> StatsSnapshot {
        model.rates(task_type, now, self.half_life())
    }

    /// Plans a task of `task_type` over `registry` as it stands at `now`,
    /// whatever its input.
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn plan(
        &self,
        task_type: &TaskType,
        registry: &Registry,
        now: Instant,
    ) -> Result<Plan, Error> {
        self.plan_for(task_type, None, registry, now)
    }

    /// Plans a task of `task_type` whose input is `input`, when known, over
    /// `registry` as it stands at `now`: a model that does not accept the
    /// input is left out, and the plan says so.
    ///
    /// One pass reads each candidate's statistics and scores what needs no
    /// other candidate (and, under Thompson sampling, draws its success
    /// probability, in registry order); a second completes the scores
    /// against the slowest candidate; the candidates are then ranked in
    /// place by an index sort, so no candidate is moved more than once.
    pub fn plan_for(
        &self,
        task_type: &TaskType,
        input: Option<Modality>,
        registry: &Registry,
        now: Instant,
    ) -> Result<Plan, Error> {
        let scoring = &self.settings.scoring;
        // Room for the usual handful of candidates, not for every model.
        let mut candidates: Vec<Candidate> = Vec::with_capacity(registry.models().len().min(16));
        let mut down = Vec::new();
        let mut excluded = Vec::new();
        let mut rng = None;
        let mut slowest = Duration::ZERO;
        for model in registry.models() {
            let description = model.description_guard();
            let Some(capability) = description.capability(task_type) else {
                continue;
            };
            if let Some(input) = input
                && !capability.accepts(input)
            {
                excluded.push(Exclusion {
                    model_id: model.id().clone(),
                    reason: format!("accepts {}", capability.accepted()),
                });
                continue;
            }
            let health = model.health();
            if health == Health::NotServing {
                down.push(model.id().clone());
                continue;
            }
            let in_flight = model.in_flight();
            let input = ScoreInput {
                confidence: capability.confidence,
                estimated_latency: capability.estimated_latency,
                capacity: capability.max_concurrency.map(|per_replica| {
                    let live = model
                        .replicas()
                        .iter()
                        .filter(|replica| replica.health() != Health::NotServing)
                        .count();
                    per_replica.saturating_mul(u32::try_from(live.max(1)).unwrap_or(u32::MAX))
                }),
                stats: model.rates(task_type, now, self.settings.half_life),
                in_flight,
            };
            drop(description);
            let breakdown = measure(scoring, &input);
            slowest = slowest.max(breakdown.expected_latency);
            let sample = match self.settings.policy {
                Policy::Scored => None,
                Policy::Thompson => {
                    Some(self.success_draw(rng.get_or_insert_with(|| self.rng()), &input))
                }
            };
            candidates.push(Candidate {
                model: Arc::clone(model),
                health,
                in_flight,
                breakdown,
                sample,
            });
        }
        if candidates.is_empty() {
            let undescribed: Vec<ModelId> = registry
                .models()
                .filter(|model| model.needs_description())
                .map(|model| model.id().clone())
                .collect();
            return Err(if !down.is_empty() {
                Error::NoHealthyModel {
                    task_type: task_type.clone(),
                    down,
                }
            } else if !undescribed.is_empty() {
                Error::Undescribed {
                    task_type: task_type.clone(),
                    undescribed,
                }
            } else if let (Some(modality), false) = (input, excluded.is_empty()) {
                Error::InputNotAccepted {
                    task_type: task_type.clone(),
                    modality,
                    refused: excluded.iter().map(ToString::to_string).collect(),
                }
            } else {
                Error::NoModelForTaskType {
                    task_type: task_type.clone(),
                }
            });
        }

        for candidate in &mut candidates {
            finish(scoring, &mut candidate.breakdown, slowest);
            if let Some(p) = &mut candidate.sample {
                *p = (scoring.success_weight + scoring.error_weight) * *p
                    + scoring.latency_weight * (1.0 - candidate.breakdown.normalized_latency);
            }
        }
        rank(&mut candidates);

        let (reason, estimated_latency) = match self.apply_route(task_type, &mut candidates) {
            Some(route) => (Reason::Route, route.estimated_latency),
            None => (
                match self.settings.policy {
                    Policy::Scored => Reason::HighestScore,
                    Policy::Thompson => Reason::HighestSample,
                },
                candidates[0].breakdown.expected_latency,
            ),
        };
        Ok(Plan {
            task_type: task_type.clone(),
            policy: self.settings.policy,
            reason,
            estimated_latency,
            candidates,
            excluded,
        })
    }

    /// Moves a routed model, then its fallbacks, to the front.
    fn apply_route(&self, task_type: &TaskType, candidates: &mut Vec<Candidate>) -> Option<&Route> {
        let route = self
            .settings
            .routes
            .iter()
            .find(|route| &route.task_type == task_type)?;
        let position = |candidates: &[Candidate], id: &ModelId| {
            candidates.iter().position(|c| c.model.id() == id)
        };
        let chosen = position(candidates, &route.model)
            .filter(|&i| candidates[i].health == Health::Serving)?;
        let mut front = vec![candidates.remove(chosen)];
        front[0].breakdown.set_confidence(route.confidence);
        for fallback in &route.fallbacks {
            if let Some(i) = position(candidates, fallback) {
                front.push(candidates.remove(i));
            }
        }
        front.append(candidates);
        *candidates = front;
        Some(route)
    }

    /// The randomness of one plan's draws.
    fn rng(&self) -> SmallRng {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(self.seed ^ draw.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A candidate's success probability for Thompson sampling, drawn from
    /// its Beta posterior; its draw weighs it with its normalised latency
    /// once every candidate is scored.
    fn success_draw(&self, rng: &mut SmallRng, input: &ScoreInput) -> f64 {
        let k = self.settings.prior_strength.max(0.0);
        let c = input.confidence.clamp(0.0, 1.0);
        let stats = &input.stats;
        let alpha = c * k + stats.successes + 1e-3;
        let beta = (1.0 - c) * k + stats.failures + stats.timeouts + 1e-3;
        Beta::new(alpha, beta).map_or(c, |beta| beta.sample(rng))
    }
}

/// Orders candidates best first: by draw, or by score without one, ties
/// by id. Sorts their keys and indices, then moves each candidate once into
/// its place.
fn rank(candidates: &mut [Candidate]) {
    // The keys of a usual handful of candidates fit on the stack.
    let mut inline = [(0.0, 0); 16];
    let mut spilled = Vec::new();
    let order: &mut [(f64, usize)] = if candidates.len() <= inline.len() {
        &mut inline[..candidates.len()]
    } else {
        spilled.resize(candidates.len(), (0.0, 0));
        &mut spilled
    };
    for (i, (slot, c)) in order.iter_mut().zip(candidates.iter()).enumerate() {
        *slot = (c.sample.unwrap_or(c.breakdown.score), i);
    }
    // Ids are unique, so no two candidates compare equal and an unstable
    // sort ranks as a stable one would.
    order.sort_unstable_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| candidates[a.1].model.id().cmp(candidates[b.1].model.id()))
    });
    // `order[k].1` is the candidate that goes to place `k`: follow each
    // cycle of the permutation, marking a place done by pointing it at itself.
    for start in 0..order.len() {
        let mut place = start;
        loop {
            let from = order[place].1;
            order[place].1 = place;
            if from == start {
                break;
            }
            candidates.swap(place, from);
            place = from;
        }
    }
}

#[cfg(test)]
mod tests;
