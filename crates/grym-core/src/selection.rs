//! Step 2 of a task's way: rank the models that could run it.
//!
//! Ranking is pure: it reads a snapshot of each model and changes nothing.
//! Order: models not known to be down first, then by declared confidence
//! (highest first), then by id so that equal candidates rank the same way
//! every time. A model without a capability for the task type is never a
//! candidate. The first candidate is the choice; the rest are the fallbacks.

use std::sync::Arc;
use std::time::Duration;

use crate::model::Health;
use crate::registry::{ModelEntry, Registry};
use crate::task::TaskType;

/// A model that could run a task, with what ranked it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The model.
    pub model: Arc<ModelEntry>,
    /// Its declared confidence for the task type.
    pub confidence: f64,
    /// Its expected duration for one call.
    pub estimated_latency: Duration,
    /// Its health when ranked.
    pub health: Health,
}

/// The models that serve `task_type`, best first.
pub fn rank(task_type: &TaskType, registry: &Registry) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = registry
        .models()
        .filter_map(|model| {
            let description = model.description();
            let capability = description.capability(task_type)?;
            Some(Candidate {
                confidence: capability.confidence,
                estimated_latency: capability.estimated_latency,
                health: model.health(),
                model: Arc::clone(model),
            })
        })
        .collect();
    candidates.sort_by(|a, b| {
        let down = |c: &Candidate| c.health == Health::NotServing;
        down(a)
            .cmp(&down(b))
            .then(b.confidence.total_cmp(&a.confidence))
            .then_with(|| a.model.id().cmp(b.model.id()))
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeModel;

    fn ranked_ids(task_type: &str, registry: &Registry) -> Vec<String> {
        rank(&TaskType::new(task_type).unwrap(), registry)
            .into_iter()
            .map(|c| c.model.id().to_string())
            .collect()
    }

    #[test]
    fn the_highest_declared_confidence_ranks_first() {
        let registry = Registry::new([
            FakeModel::serving("wav2vec2", "audio_analysis", 0.7).described_entry(),
            FakeModel::serving("gama", "audio_analysis", 0.95).described_entry(),
            FakeModel::serving("clap", "audio_analysis", 0.8).described_entry(),
        ])
        .unwrap();
        assert_eq!(
            ranked_ids("audio_analysis", &registry),
            ["gama", "clap", "wav2vec2"]
        );
    }

    #[test]
    fn models_without_the_capability_are_never_candidates() {
        let registry = Registry::new([
            FakeModel::serving("gama", "audio_analysis", 0.95).described_entry(),
            FakeModel::serving("llama", "text_generation", 0.9).described_entry(),
        ])
        .unwrap();
        assert_eq!(ranked_ids("text_generation", &registry), ["llama"]);
        assert!(ranked_ids("transcription", &registry).is_empty());
    }

    #[test]
    fn a_model_known_to_be_down_ranks_after_the_others() {
        let down = FakeModel::serving("gama", "audio_analysis", 0.95);
        let down_entry = down.described_entry();
        down_entry.set_health(Health::NotServing);
        let registry = Registry::new([
            down_entry,
            FakeModel::serving("wav2vec2", "audio_analysis", 0.7).described_entry(),
        ])
        .unwrap();
        assert_eq!(
            ranked_ids("audio_analysis", &registry),
            ["wav2vec2", "gama"]
        );
    }

    #[test]
    fn equal_confidence_ranks_by_id() {
        let registry = Registry::new([
            FakeModel::serving("b", "t", 0.5).described_entry(),
            FakeModel::serving("a", "t", 0.5).described_entry(),
        ])
        .unwrap();
        assert_eq!(ranked_ids("t", &registry), ["a", "b"]);
    }
}
