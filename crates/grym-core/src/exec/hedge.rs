//! Hedged calls: when a call runs past the model's usual latency, the same
//! call goes to another replica, and the first answer wins.
//!
//! Off by default; on for the task types `[hedging] task_types` names
//! (Finagle's and gRPC's hedging). The wait before the hedge is the
//! model's measured p95 latency for the task type (at least `min_delay`),
//! or its declared estimate before it has answered often enough to
//! measure one. A hedge takes a retry from the model's budget, so hedges
//! cannot double the load of a model that is slow for everyone; the call
//! that loses is cancelled and recorded as abandoned.

use std::time::Duration;

use crate::ids::TaskType;

/// How many answers a p95 must rest on before it decides when to hedge.
pub(super) const MEASURED_ANSWERS: f64 = 20.0;

/// Settings of hedging: the `[hedging]` table.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgingSettings {
    /// The task types whose calls are hedged; none by default.
    pub task_types: Vec<TaskType>,
    /// The shortest wait before a hedge, whatever the measured latency.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
}

impl HedgingSettings {
    /// Whether calls for `task_type` are hedged.
    pub(super) fn hedges(&self, task_type: &TaskType) -> bool {
        self.task_types.iter().any(|hedged| hedged == task_type)
    }
}
