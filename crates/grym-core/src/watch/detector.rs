//! Step 8 of a task's way: finding bottlenecks in the live statistics.
//!
//! Every analysis period (10 s by default) the orchestrator gathers an
//! [`Observation`] and the [`Detector`] compares it with these thresholds
//! (all configurable):
//!
//! | kind | finding | threshold |
//! | --- | --- | --- |
//! | `slow_model` | a model's recent mean latency on a task type is above its estimate | 1.5 × the estimate |
//! | `error_rate` | a model fails too often on a task type | > 20 % of recent calls |
//! | `queue_wait` | waiting for a model takes longer than its calls | recent mean wait > 1.0 × recent mean call |
//! | `saturated` | a model is at its concurrency limit with calls waiting | at the analysis |
//! | `cache_hit_rate` | the context cache rarely hits | < 50 % of lookups, over at least 20 |
//! | `critical_step` | in a composite's slow runs, one step takes most of the critical path | > 80 % of the run, recent mean |
//!
//! "Recent" is the statistics' decay (a 10 s half-life by default), and
//! every rate or mean is judged only on at least 5 recent (decayed) calls,
//! waits or runs, so one call after a quiet spell decides nothing and a
//! finding lapses when traffic stops. The cache's lookups count from the
//! last judgement until there are enough; a period without any ends its
//! finding. `critical_step` reads the runs slower than their composite's
//! recent mean whose critical path (by the steps' real latencies) has two
//! steps or more. A finding begins when its threshold is first crossed and
//! ends at the first analysis where it is not; the orchestrator logs both,
//! exposes the active findings through `GetBottlenecks`, and as the
//! `grym.bottleneck.active` gauge (1, then 0 once over).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::SettingError;

/// Thresholds of the detectors: the `[bottlenecks]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BottleneckSettings {
    /// Time between two analyses.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Calls (or waits, or runs) needed before a rate or mean is judged.
    pub min_samples: f64,
    /// `slow_model`: mean latency over estimate.
    pub slow_factor: f64,
    /// `error_rate`: the highest acceptable error rate.
    pub max_error_rate: f64,
    /// `queue_wait`: mean wait over mean call time.
    pub queue_wait_ratio: f64,
    /// `cache_hit_rate`: the lowest acceptable hit rate.
    pub min_cache_hit_rate: f64,
    /// `cache_hit_rate`: lookups needed in a period to judge it.
    pub min_cache_lookups: u64,
    /// `critical_step`: the largest acceptable share of one step.
    pub max_step_share: f64,
}

impl Default for BottleneckSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_samples: 5.0,
            slow_factor: 1.5,
            max_error_rate: 0.2,
            queue_wait_ratio: 1.0,
            min_cache_hit_rate: 0.5,
            min_cache_lookups: 20,
            max_step_share: 0.8,
        }
    }
}

impl BottleneckSettings {
    /// Checks the ranges the types do not.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.interval < Duration::from_millis(100) {
            return Err(SettingError::new("interval", "must be at least 100ms"));
        }
        for (key, value) in [
            ("min_samples", self.min_samples),
            ("slow_factor", self.slow_factor),
            ("queue_wait_ratio", self.queue_wait_ratio),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(SettingError::new(key, "must be a number above 0"));
            }
        }
        for (key, value) in [
            ("max_error_rate", self.max_error_rate),
            ("min_cache_hit_rate", self.min_cache_hit_rate),
            ("max_step_share", self.max_step_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SettingError::new(key, "must be within [0, 1]"));
            }
        }
        Ok(())
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A model slower than its estimate.
    SlowModel,
    /// A model that fails too often.
    ErrorRate,
    /// Waiting for a model dominates its service time.
    QueueWait,
    /// A model at its concurrency limit with calls waiting.
    Saturated,
    /// A poor context cache hit rate.
    CacheHitRate,
    /// A step that dominates a composite's latency.
    CriticalStep,
}

impl Kind {
    /// The kind as metrics and the API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowModel => "slow_model",
            Self::ErrorRate => "error_rate",
            Self::QueueWait => "queue_wait",
            Self::Saturated => "saturated",
            Self::CacheHitRate => "cache_hit_rate",
            Self::CriticalStep => "critical_step",
        }
    }
}

/// One bottleneck.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What it is about.
    pub kind: Kind,
    /// Where: `model/task_type`, a model id, `context_cache`, or
    /// `composite_type/step`.
    pub subject: String,
    /// The measured value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// A sentence for operators.
    pub message: String,
    /// When it began.
    pub since: SystemTime,
}

/// One model's (and task type's) numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelObservation {
    /// The model.
    pub model: String,
    /// The task type of the numbers below.
    pub task_type: String,
    /// Its declared estimate.
    pub estimate: Duration,
    /// Recent mean latency of its successful calls.
    pub mean_latency: Duration,
    /// Its recent (decayed) number of calls.
    pub samples: f64,
    /// Recent error rate.
    pub error_rate: f64,
}

/// One model's load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadObservation {
    /// The model.
    pub model: String,
    /// Calls running.
    pub running: u32,
    /// Its concurrency limit.
    pub limit: u32,
    /// Calls waiting.
    pub waiting: usize,
    /// Recent mean time waiting for a slot.
    pub mean_wait: Duration,
    /// Recent (decayed) number of waits.
    pub waits: f64,
    /// Recent mean time of its calls.
    pub mean_call: Duration,
}

/// One composite task type's numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompositeObservation {
    /// The composite's task type.
    pub task_type: String,
    /// Recent (decayed) number of slow runs read.
    pub runs: f64,
    /// Each step's recent mean share of those runs, for the steps that were
    /// on their critical path.
    pub steps: Vec<(String, f64)>,
}

/// What the detectors read at one analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Observation {
    /// Per model and task type.
    pub models: Vec<ModelObservation>,
    /// Per model.
    pub loads: Vec<LoadObservation>,
    /// The context cache's hits since start.
    pub cache_hits: u64,
    /// The context cache's misses since start.
    pub cache_misses: u64,
    /// Per composite task type.
    pub composites: Vec<CompositeObservation>,
}

/// A finding that began or ended at an analysis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// Its threshold was crossed.
    Began(Finding),
    /// It is over.
    Ended(Finding),
}

/// Runs the detectors and remembers which findings are active.
#[derive(Debug, Default)]
pub(crate) struct Detector {
    settings: BottleneckSettings,
    active: HashMap<(Kind, String), Finding>,
    /// The cache counters when the hit rate was last judged.
    cache_seen: (u64, u64),
    /// The cache's lookups at the last analysis.
    cache_last: u64,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Detector {
    /// A detector with these thresholds.
    pub(crate) fn new(settings: BottleneckSettings) -> Self {
        Self {
            settings,
            active: HashMap::new(),
            cache_seen: (0, 0),
            cache_last: 0,
        }
    }

    /// The active findings, by kind then subject.
    pub(crate) fn active(&self) -> Vec<Finding> {
        let mut active: Vec<Finding> = self.active.values().cloned().collect();
        active.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
        active
    }

    /// Analyses `observation` made at `now`; what began and what ended.
    pub(crate) fn analyse(&mut self, observation: &Observation, now: SystemTime) -> Vec<Change> {
        let found = self.detect(observation);
        let mut changes = Vec::new();
        let mut still = HashMap::with_capacity(found.len());
        for mut finding in found {
            let key = (finding.kind, finding.subject.clone());
            match self.active.remove(&key) {
                Some(previous) => finding.since = previous.since,
                None => {
                    finding.since = now;
                    changes.push(Change::Began(finding.clone()));
                }
            }
            still.insert(key, finding);
        }
        for (_, ended) in self.active.drain() {
            changes.push(Change::Ended(ended));
        }
        self.active = still;
        changes
    }

    fn detect(&mut self, observation: &Observation) -> Vec<Finding> {
        let s = &self.settings;
        let mut found = Vec::new();
        let finding = |kind, subject: String, value, threshold, message| Finding {
            kind,
            subject,
            value,
            threshold,
            message,
            since: SystemTime::UNIX_EPOCH,
        };
        for model in &observation.models {
            if model.samples < s.min_samples {
                continue;
            }
            let estimate = seconds(model.estimate);
            let mean = seconds(model.mean_latency);
            let subject = format!("{}/{}", model.model, model.task_type);
            if estimate > 0.0 && mean > s.slow_factor * estimate {
                found.push(finding(
                    Kind::SlowModel,
                    subject.clone(),
                    mean,
                    s.slow_factor * estimate,
                    format!(
                        "model `{}` takes {:.0} ms on `{}`, over {}× its estimate of {:.0} ms",
                        model.model,
                        mean * 1e3,
                        model.task_type,
                        s.slow_factor,
                        estimate * 1e3
                    ),
                ));
            }
            if model.error_rate > s.max_error_rate {
                found.push(finding(
                    Kind::ErrorRate,
                    subject,
                    model.error_rate,
                    s.max_error_rate,
                    format!(
                        "model `{}` fails {:.0}% of `{}` calls, over {:.0}%",
                        model.model,
                        model.error_rate * 100.0,
                        model.task_type,
                        s.max_error_rate * 100.0
                    ),
                ));
            }
        }
        for load in &observation.loads {
            let wait = seconds(load.mean_wait);
            let call = seconds(load.mean_call);
            if load.waits >= s.min_samples && call > 0.0 && wait > s.queue_wait_ratio * call {
                found.push(finding(
                    Kind::QueueWait,
                    load.model.clone(),
                    wait / call,
                    s.queue_wait_ratio,
                    format!(
                        "calls wait {:.0} ms for model `{}`, longer than its calls take ({:.0} ms)",
                        wait * 1e3,
                        load.model,
                        call * 1e3
                    ),
                ));
            }
            if load.running >= load.limit && load.waiting > 0 {
                found.push(finding(
                    Kind::Saturated,
                    load.model.clone(),
                    f64::from(load.running),
                    f64::from(load.limit),
                    format!(
                        "model `{}` runs {} calls, its limit, with {} waiting",
                        load.model, load.running, load.waiting
                    ),
                ));
            }
        }
        let (hits, misses) = (observation.cache_hits, observation.cache_misses);
        let new_hits = hits.saturating_sub(self.cache_seen.0);
        let new_misses = misses.saturating_sub(self.cache_seen.1);
        let lookups = new_hits + new_misses;
        let quiet = hits + misses == self.cache_last;
        self.cache_last = hits + misses;
        if lookups >= s.min_cache_lookups {
            self.cache_seen = (hits, misses);
            let rate = new_hits as f64 / lookups as f64;
            if rate < s.min_cache_hit_rate {
                found.push(finding(
                    Kind::CacheHitRate,
                    "context_cache".to_owned(),
                    rate,
                    s.min_cache_hit_rate,
                    format!(
                        "the context cache answered {:.0}% of {lookups} lookups, under {:.0}%",
                        rate * 100.0,
                        s.min_cache_hit_rate * 100.0
                    ),
                ));
            }
        } else if let Some(previous) = self
            .active
            .get(&(Kind::CacheHitRate, "context_cache".to_owned()))
            .filter(|_| !quiet)
        {
            // Too few lookups yet to judge again: the finding stands, unless
            // no lookup came at all.
            found.push(previous.clone());
        }
        for composite in &observation.composites {
            if composite.runs < s.min_samples {
                continue;
            }
            let dominant = composite.steps.iter().max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((step, share)) = dominant
                && *share > s.max_step_share
            {
                found.push(finding(
                    Kind::CriticalStep,
                    format!("{}/{step}", composite.task_type),
                    *share,
                    s.max_step_share,
                    format!(
                        "step `{step}` takes {:.0}% of `{}`'s slow runs",
                        share * 100.0,
                        composite.task_type
                    ),
                ));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn model(mean_ms: u64, error_rate: f64) -> ModelObservation {
        ModelObservation {
            model: "gama".into(),
            task_type: "audio_analysis".into(),
            estimate: 100 * MS,
            mean_latency: Duration::from_millis(mean_ms),
            samples: 20.0,
            error_rate,
        }
    }

    fn kinds(changes: &[Change]) -> Vec<(&'static str, bool)> {
        changes
            .iter()
            .map(|c| match c {
                Change::Began(f) => (f.kind.as_str(), true),
                Change::Ended(f) => (f.kind.as_str(), false),
            })
            .collect()
    }

    #[test]
    fn a_slow_model_is_found_once_and_ends_when_it_recovers() {
        let mut detector = Detector::default();
        let slow = Observation {
            models: vec![model(400, 0.0)],
            ..Observation::default()
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(kinds(&detector.analyse(&slow, t0)), [("slow_model", true)]);
        assert!(
            detector
                .analyse(&slow, t0 + Duration::from_secs(10))
                .is_empty()
        );
        assert_eq!(detector.active()[0].since, t0, "a finding keeps its start");
        let recovered = Observation {
            models: vec![model(90, 0.0)],
            ..Observation::default()
        };
        assert_eq!(
            kinds(&detector.analyse(&recovered, t0)),
            [("slow_model", false)]
        );
        assert!(detector.active().is_empty());
    }

    #[test]
    fn one_model_slow_on_two_task_types_is_two_steady_findings() {
        let mut detector = Detector::default();
        let mut other = model(400, 0.0);
        other.task_type = "transcription".into();
        let slow = Observation {
            models: vec![model(400, 0.0), other],
            ..Observation::default()
        };
        let now = SystemTime::now();
        assert_eq!(detector.analyse(&slow, now).len(), 2);
        assert!(
            detector.analyse(&slow, now).is_empty(),
            "no finding begins twice"
        );
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let mut detector = Detector::default();
        let mut few = model(400, 0.9);
        few.samples = 2.0;
        let observation = Observation {
            models: vec![few],
            ..Observation::default()
        };
        assert!(detector.analyse(&observation, SystemTime::now()).is_empty());
    }

    #[test]
    fn errors_waits_saturation_cache_and_critical_steps_are_found() {
        let mut detector = Detector::default();
        let observation = Observation {
            models: vec![model(100, 0.5)],
            loads: vec![LoadObservation {
                model: "gama".into(),
                running: 4,
                limit: 4,
                waiting: 3,
                mean_wait: 300 * MS,
                waits: 10.0,
                mean_call: 100 * MS,
            }],
            cache_hits: 5,
            cache_misses: 45,
            composites: vec![CompositeObservation {
                task_type: "pipeline".into(),
                runs: 10.0,
                steps: vec![("listen".into(), 0.9), ("answer".into(), 0.1)],
            }],
        };
        let mut found = kinds(&detector.analyse(&observation, SystemTime::now()));
        found.sort_unstable();
        assert_eq!(
            found,
            [
                ("cache_hit_rate", true),
                ("critical_step", true),
                ("error_rate", true),
                ("queue_wait", true),
                ("saturated", true)
            ]
        );
        let subjects: Vec<String> = detector.active().into_iter().map(|f| f.subject).collect();
        assert!(subjects.contains(&"pipeline/listen".to_owned()));
    }

    #[test]
    fn the_cache_rate_is_judged_per_period() {
        let mut detector = Detector::default();
        let at = |hits, misses| Observation {
            cache_hits: hits,
            cache_misses: misses,
            ..Observation::default()
        };
        let now = SystemTime::now();
        assert_eq!(
            kinds(&detector.analyse(&at(0, 30), now)),
            [("cache_hit_rate", true)]
        );
        // A quiet period keeps the finding; a good one ends it.
        assert!(detector.analyse(&at(1, 31), now).is_empty());
        assert_eq!(
            kinds(&detector.analyse(&at(41, 31), now)),
            [("cache_hit_rate", false)]
        );
    }
}
