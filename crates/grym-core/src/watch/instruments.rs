//! The metrics the core records, through the OpenTelemetry metrics API: a
//! no-op until the binary installs a meter provider (`grym-telemetry` does
//! when an OTLP endpoint is set), so the core depends on no exporter.
//!
//! | metric | kind | unit | attributes |
//! | --- | --- | --- | --- |
//! | `grym.task.duration` | histogram | s | `task_type`, `status`, `priority` |
//! | `grym.task.queue_wait` | histogram | s | `task_type`, `priority`, `model` |
//! | `grym.worker.call.duration` | histogram | s | `model`, `outcome` |
//! | `grym.model.in_flight`, `grym.model.queued` | gauge | `{call}` | `model` |
//! | `grym.selection.count` | counter | `{selection}` | `model`, `task_type` |
//! | `grym.fallback.count` | counter | `{fallback}` | `from_model`, `to_model`, `reason` |
//! | `grym.retry.count` | counter | `{retry}` | `model`, `kind` |
//! | `grym.retry.refused` | counter | `{retry}` | `model` |
//! | `grym.replica.ejections` | counter | `{ejection}` | `model`, `endpoint` |
//! | `grym.context.cache.hits`, `.misses`, `.evictions` | counter | `{lookup}`, `{entry}` | |
//! | `grym.context.cache.bytes` | gauge | By | |
//! | `grym.task.rejected` | counter | `{task}` | `reason` |
//! | `grym.auth.failed` | counter | `{request}` | `reason` |
//! | `grym.bottleneck.active` | gauge | `{finding}` | `kind`, `subject` |
//!
//! Statuses and priorities are lowercase (`succeeded`, `deadline_exceeded`;
//! `normal`); an outcome is `success`, `failure`, `timeout` or `rejected`;
//! a fallback's `reason` is its failure as the orchestrator names failures
//! (`UNAVAILABLE` in grymd). A retry's `kind` is `replica` (another
//! replica of the model that failed), `model` (the next model) or `hedge`;
//! its `model` is the one whose failure (or slowness) it answers, whose
//! budget it takes from. A refused retry is one the budget had no room for.
//! A composite's `task_type` is `composite` (its type is the caller's free
//! text), or the task type a recipe stood in for.

use std::any::Any;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use super::Gauges;
use crate::error::Error;
use crate::ids::{ModelId, Priority, TaskType};
use crate::task::TaskStatus;

/// The instrumentation scope of every metric.
const SCOPE: &str = "grym";

/// The synchronous instruments. When metrics go nowhere they record
/// nothing, not even the attributes they would have built.
#[derive(Debug)]
pub(crate) struct Instruments {
    enabled: bool,
    meter: Meter,
    task_duration: Histogram<f64>,
    queue_wait: Histogram<f64>,
    worker_call: Histogram<f64>,
    selections: Counter<u64>,
    fallbacks: Counter<u64>,
    retries: Counter<u64>,
    retries_refused: Counter<u64>,
    ejections: Counter<u64>,
    rejected: Counter<u64>,
    auth_failed: Counter<u64>,
}

impl Instruments {
    /// The instruments, on the global meter as it is now; inert unless
    /// `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        let meter = opentelemetry::global::meter(SCOPE);
        Self {
            enabled,
            task_duration: meter
                .f64_histogram("grym.task.duration")
                .with_unit("s")
                .with_description("Time from a task's acceptance to its result")
                .build(),
            queue_wait: meter
                .f64_histogram("grym.task.queue_wait")
                .with_unit("s")
                .with_description("Time a task (or step) waited for its model's slot")
                .build(),
            worker_call: meter
                .f64_histogram("grym.worker.call.duration")
                .with_unit("s")
                .with_description("Time of one call to a model worker")
                .build(),
            selections: meter
                .u64_counter("grym.selection.count")
                .with_unit("{selection}")
                .with_description("Models chosen to run a task")
                .build(),
            fallbacks: meter
                .u64_counter("grym.fallback.count")
                .with_unit("{fallback}")
                .with_description("Moves from a failed model to the next")
                .build(),
            retries: meter
                .u64_counter("grym.retry.count")
                .with_unit("{retry}")
                .with_description("Calls made again after a failure, or hedged after a slow answer")
                .build(),
            retries_refused: meter
                .u64_counter("grym.retry.refused")
                .with_unit("{retry}")
                .with_description("Retries not made because the model's retry budget was spent")
                .build(),
            ejections: meter
                .u64_counter("grym.replica.ejections")
                .with_unit("{ejection}")
                .with_description("Replicas taken out of rotation on the evidence of their calls")
                .build(),
            rejected: meter
                .u64_counter("grym.task.rejected")
                .with_unit("{task}")
                .with_description("Tasks refused at submission")
                .build(),
            auth_failed: meter
                .u64_counter("grym.auth.failed")
                .with_unit("{request}")
                .with_description("Calls refused for missing or unknown credentials")
                .build(),
            meter,
        }
    }

    pub(crate) fn task_finished(
        &self,
        task_type: &TaskType,
        status: TaskStatus,
        priority: Priority,
        took: Duration,
    ) {
        if !self.enabled {
            return;
        }
        self.task_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("task_type", task_type.to_string()),
                KeyValue::new("status", status.as_str()),
                KeyValue::new("priority", priority.as_str()),
            ],
        );
    }

    pub(crate) fn queue_waited(
        &self,
        task_type: &TaskType,
        priority: Priority,
        model: &ModelId,
        waited: Duration,
    ) {
        if !self.enabled {
            return;
        }
        self.queue_wait.record(
            waited.as_secs_f64(),
            &[
                KeyValue::new("task_type", task_type.to_string()),
                KeyValue::new("priority", priority.as_str()),
                KeyValue::new("model", model.as_str().to_owned()),
            ],
        );
    }

    pub(crate) fn worker_called(&self, model: &ModelId, outcome: &'static str, took: Duration) {
        if !self.enabled {
            return;
        }
        self.worker_call.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("model", model.as_str().to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub(crate) fn selected(&self, model: &ModelId, task_type: &TaskType) {
        if !self.enabled {
            return;
        }
        self.selections.add(
            1,
            &[
                KeyValue::new("model", model.as_str().to_owned()),
                KeyValue::new("task_type", task_type.to_string()),
            ],
        );
    }

    pub(crate) fn fell_back(&self, from: &ModelId, to: &ModelId, reason: &'static str) {
        if !self.enabled {
            return;
        }
        self.fallbacks.add(
            1,
            &[
                KeyValue::new("from_model", from.as_str().to_owned()),
                KeyValue::new("to_model", to.as_str().to_owned()),
                KeyValue::new("reason", reason),
            ],
        );
    }

    pub(crate) fn retried(&self, model: &ModelId, kind: &'static str) {
        if !self.enabled {
            return;
        }
        self.retries.add(
            1,
            &[
                KeyValue::new("model", model.as_str().to_owned()),
                KeyValue::new("kind", kind),
            ],
        );
    }

    pub(crate) fn retry_refused(&self, model: &ModelId) {
        if !self.enabled {
            return;
        }
        self.retries_refused
            .add(1, &[KeyValue::new("model", model.as_str().to_owned())]);
    }

    pub(crate) fn ejected(&self, model: &ModelId, endpoint: &str) {
        if !self.enabled {
            return;
        }
        self.ejections.add(
            1,
            &[
                KeyValue::new("model", model.as_str().to_owned()),
                KeyValue::new("endpoint", endpoint.to_owned()),
            ],
        );
    }

    pub(crate) fn rejected(&self, error: &Error) {
        self.rejected_for(error.label());
    }

    pub(crate) fn rejected_for(&self, reason: &'static str) {
        if !self.enabled {
            return;
        }
        self.rejected.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn auth_failed(&self, reason: &'static str) {
        if !self.enabled {
            return;
        }
        self.auth_failed.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Registers the gauges read from `gauges` at each export; the handles
    /// keep them registered.
    pub(crate) fn observe(&self, gauges: Weak<dyn Gauges>) -> Vec<Arc<dyn Any + Send + Sync>> {
        if !self.enabled {
            return Vec::new();
        }
        let meter = &self.meter;
        let of = |gauges: &Weak<dyn Gauges>| gauges.upgrade();
        let o = gauges.clone();
        let in_flight = meter
            .u64_observable_gauge("grym.model.in_flight")
            .with_unit("{call}")
            .with_description("Calls running on each model")
            .with_callback(move |observer| {
                if let Some(gauges) = of(&o) {
                    for (model, calls) in gauges.in_flight() {
                        observer.observe(calls, &[KeyValue::new("model", String::from(model))]);
                    }
                }
            })
            .build();
        let o = gauges.clone();
        let queued = meter
            .u64_observable_gauge("grym.model.queued")
            .with_unit("{call}")
            .with_description("Calls waiting for each model's slot")
            .with_callback(move |observer| {
                if let Some(gauges) = of(&o) {
                    for (model, waiting) in gauges.waiting() {
                        observer.observe(waiting, &[KeyValue::new("model", String::from(model))]);
                    }
                }
            })
            .build();
        let counters: Vec<Arc<dyn Any + Send + Sync>> = [
            (
                "grym.context.cache.hits",
                "{lookup}",
                "Context lookups found transformed in the cache",
            ),
            (
                "grym.context.cache.misses",
                "{lookup}",
                "Context lookups transformed anew",
            ),
            (
                "grym.context.cache.evictions",
                "{entry}",
                "Entries removed from the context cache",
            ),
        ]
        .into_iter()
        .map(|(name, unit, description)| {
            let o = gauges.clone();
            let counter = meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(gauges) = of(&o) {
                        let stats = gauges.cache();
                        let value = match name {
                            "grym.context.cache.hits" => stats.hits,
                            "grym.context.cache.misses" => stats.misses,
                            _ => stats.evictions,
                        };
                        observer.observe(value, &[]);
                    }
                })
                .build();
            Arc::new(counter) as Arc<dyn Any + Send + Sync>
        })
        .collect();
        let o = gauges.clone();
        let bytes = meter
            .u64_observable_gauge("grym.context.cache.bytes")
            .with_unit("By")
            .with_description("Bytes held by the context cache")
            .with_callback(move |observer| {
                if let Some(gauges) = of(&o) {
                    observer.observe(gauges.cache().bytes, &[]);
                }
            })
            .build();
        let o = gauges;
        let bottlenecks = meter
            .u64_observable_gauge("grym.bottleneck.active")
            .with_unit("{finding}")
            .with_description("1 for each active bottleneck finding")
            .with_callback(move |observer| {
                if let Some(gauges) = of(&o) {
                    for finding in gauges.findings().iter() {
                        observer.observe(
                            1,
                            &[
                                KeyValue::new("kind", finding.kind.as_str()),
                                KeyValue::new("subject", finding.subject.clone()),
                            ],
                        );
                    }
                    for (kind, subject) in gauges.ended_findings().iter() {
                        observer.observe(
                            0,
                            &[
                                KeyValue::new("kind", kind.as_str()),
                                KeyValue::new("subject", subject.clone()),
                            ],
                        );
                    }
                }
            })
            .build();
        let mut handles = counters;
        handles.push(Arc::new(in_flight));
        handles.push(Arc::new(queued));
        handles.push(Arc::new(bytes));
        handles.push(Arc::new(bottlenecks));
        handles
    }
}
