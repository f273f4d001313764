//! How a task was routed: every candidate with its score and the parts of
//! it, the choice and why, and the fallbacks taken, so an agent can
//! re-plan. Planning fills these in; results and `PlanTask` show them.

use std::time::Duration;

use crate::ids::{ModelId, TaskType};
use crate::model::Health;

/// How candidates are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// By the score of the original formula.
    #[default]
    Scored,
    /// By Thompson sampling over success and latency.
    Thompson,
}

/// Why the first candidate was chosen.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    /// A pinned route sends the task type to it.
    Route,
    /// It has the highest score.
    HighestScore,
    /// It has the highest Thompson draw.
    HighestSample,
    /// The task is a composite; each step is routed on its own.
    Composite,
    /// No healthy model serves the type; a recipe chain stands in.
    Recipe,
}

impl Reason {
    /// The reason as traces name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Route => "Route",
            Self::HighestScore => "HighestScore",
            Self::HighestSample => "HighestSample",
            Self::Composite => "Composite",
            Self::Recipe => "Recipe",
        }
    }
}

/// A candidate's score and every part of it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreBreakdown {
    /// Declared confidence.
    pub confidence: f64,
    /// Recent success rate.
    pub success_rate: f64,
    /// Recent error rate (failures and timeouts).
    pub error_rate: f64,
    /// The sample size: outcomes, faded while idle.
    pub samples: f64,
    /// Expected latency of one more call, load included.
    pub expected_latency: Duration,
    /// Expected latency relative to the slowest candidate, in [0, 1].
    pub normalized_latency: f64,
    /// `perf` of the formula.
    pub performance: f64,
    /// `w` of the formula.
    pub performance_weight: f64,
    /// The score, in [0, 1].
    pub score: f64,
}

impl ScoreBreakdown {
    /// Sets the confidence and the score that follows from it.
    pub fn set_confidence(&mut self, confidence: f64) {
        self.confidence = confidence.clamp(0.0, 1.0);
        self.score = self.confidence * (1.0 - self.performance_weight)
            + self.performance * self.performance_weight;
    }
}

/// One candidate of a routing decision, as the caller sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CandidateScore {
    /// The model.
    pub model_id: ModelId,
    /// Its health when planned.
    pub health: Health,
    /// Its calls in flight when planned.
    pub in_flight: u32,
    /// Its score and the parts of it.
    pub breakdown: ScoreBreakdown,
    /// Its Thompson draw, under that policy.
    pub sample: Option<f64>,
}

/// The routing decision of a task: every candidate with its score, the
/// choice and why, and the fallbacks taken.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Routing {
    /// The task type routed.
    pub task_type: TaskType,
    /// The policy that ranked the candidates.
    pub policy: Policy,
    /// Why the first candidate was chosen.
    pub reason: Reason,
    /// The expected time of the chosen model's call.
    pub estimated_latency: Duration,
    /// The candidates in the order they would be tried.
    pub candidates: Vec<CandidateScore>,
    /// The models called after the first, in order.
    pub fallbacks_taken: Vec<ModelId>,
    /// For a composite, what it is, in place of a choice among candidates.
    pub summary: Option<String>,
    /// Models that serve the task type but were left out, and why.
    #[serde(default)]
    pub excluded: Vec<Exclusion>,
}

/// A model that serves the task type but was left out of the candidates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Exclusion {
    /// The model.
    pub model_id: ModelId,
    /// Why, as a phrase after its name: `accepts audio input only`.
    pub reason: String,
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.model_id, self.reason)
    }
}

impl Routing {
    /// The chosen model, when there is a candidate.
    pub fn chosen(&self) -> Option<&ModelId> {
        self.candidates.first().map(|c| &c.model_id)
    }

    /// The routing of a composite, whose steps are routed on their own:
    /// no candidates, and `summary` as its explanation.
    pub fn composite(
        task_type: TaskType,
        reason: Reason,
        estimated_latency: Duration,
        summary: String,
    ) -> Self {
        Self {
            task_type,
            policy: Policy::Scored,
            reason,
            estimated_latency,
            candidates: Vec::new(),
            fallbacks_taken: Vec::new(),
            summary: Some(summary),
            excluded: Vec::new(),
        }
    }

    /// Why the first candidate was chosen, as a sentence.
    pub fn explanation(&self) -> String {
        if let Some(summary) = &self.summary {
            return summary.clone();
        }
        let task_type = &self.task_type;
        let Some(first) = self.candidates.first() else {
            return format!("no model serves `{task_type}`");
        };
        let model = &first.model_id;
        let others = self.candidates.len() - 1;
        let chosen = match self.reason {
            Reason::Route => format!(
                "`{task_type}` is routed to `{model}` while it is healthy; {others} fallback(s) follow"
            ),
            Reason::HighestScore => format!(
                "`{model}` has the highest score ({:.3}) of {} candidate(s)",
                first.breakdown.score,
                others + 1
            ),
            Reason::HighestSample => format!(
                "`{model}` drew the highest Thompson sample ({:.3}) of {} candidate(s)",
                first.sample.unwrap_or_default(),
                others + 1
            ),
            Reason::Composite | Reason::Recipe => format!("`{task_type}` runs as steps"),
        };
        if self.excluded.is_empty() {
            return chosen;
        }
        let excluded: Vec<String> = self.excluded.iter().map(ToString::to_string).collect();
        format!("{chosen}; left out: {}", excluded.join(", "))
    }
}
