//! One call to one replica: its context prepared for the model, sent
//! within the caller's deadline and the worker timeout in its own span, and
//! how it ended, which [`attempt`](super::attempt) judges.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::Orchestrator;
use super::job::Job;
use crate::client::{InferCall, WorkerError};
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::limits::{Limits, object_depth};
use crate::plan::selection::Candidate;
use crate::registry::outlier::Verdict;
use crate::registry::{CallOutcome, Chosen, InFlight, Replica};
use crate::task::Output;

/// How one call ended.
pub(super) enum CallEnd {
    Answered(Output),
    Failed(WorkerError),
    /// The caller's own deadline passed.
    CallerDeadline,
    /// The orchestrator's worker timeout passed.
    WorkerTimeout,
}

impl CallEnd {
    /// What the call says of the model, if anything; `overran` when the
    /// caller's deadline cut it after the model's usual latency.
    pub(super) fn feedback(&self, overran: bool) -> Option<CallOutcome> {
        match self {
            Self::Answered(_) => Some(CallOutcome::Success),
            Self::Failed(error) if error.kind.blames_request() => None,
            Self::Failed(error) if error.kind == FailureKind::DeadlineExceeded => {
                Some(CallOutcome::Timeout)
            }
            Self::Failed(_) => Some(CallOutcome::Failure),
            Self::CallerDeadline => overran.then_some(CallOutcome::Timeout),
            Self::WorkerTimeout => Some(CallOutcome::Timeout),
        }
    }

    /// What the call says of the replica that served it: a busy replica
    /// is not a broken one.
    pub(super) fn verdict(&self, overran: bool) -> Verdict {
        match self {
            Self::Answered(_) => Verdict::Answered,
            Self::Failed(error)
                if error.kind.blames_request()
                    || matches!(error.kind, FailureKind::Exhausted | FailureKind::Cancelled) =>
            {
                Verdict::Neither
            }
            Self::Failed(_) | Self::WorkerTimeout => Verdict::Failed,
            Self::CallerDeadline if overran => Verdict::Failed,
            Self::CallerDeadline => Verdict::Neither,
        }
    }

    /// Whether another replica of the same model may well answer: the
    /// replica was unreachable, full or gave up midway.
    pub(super) fn worth_another_replica(&self) -> bool {
        matches!(
            self,
            Self::Failed(error) if matches!(
                error.kind,
                FailureKind::Unavailable | FailureKind::Exhausted | FailureKind::Aborted
            )
        )
    }

    /// The call's outcome as metrics name it.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "success",
            Self::Failed(error) if error.kind.blames_request() => "rejected",
            Self::Failed(_) => "failure",
            Self::CallerDeadline | Self::WorkerTimeout => "timeout",
        }
    }
}

/// One call made.
pub(super) struct Call {
    pub(super) end: CallEnd,
    /// The call's own time, without the context's preparation.
    pub(super) latency: Duration,
    /// Cut by the caller's deadline after the model's usual latency.
    pub(super) overran: bool,
    pub(super) replica: Arc<Replica>,
    pub(super) hedge: bool,
    /// The replica's count of calls in flight, held until the call's
    /// verdict is recorded: a probe dropped before then frees its trial.
    pub(super) _in_flight: Option<InFlight>,
}

impl Orchestrator {
    /// The call for a candidate, its context prepared for the model; the
    /// end to record instead when what grymd composed cannot be sent.
    pub(super) async fn prepare(
        &self,
        job: Job<'_>,
        candidate: &Candidate,
        span: &tracing::Span,
    ) -> Result<InferCall, CallEnd> {
        let task = job.task;
        let target_kind = candidate.model.description().kind.clone();
        let prepare_span = tracing::debug_span!(
            parent: span,
            "prepare context",
            grym.target.kind = %target_kind,
            grym.cache.hits = tracing::field::Empty,
            grym.cache.misses = tracing::field::Empty,
        );
        let prepared = self
            .context
            .prepare(
                &task.tenant,
                job.context_hash.map(|hash| (&task.context, hash)),
                task.session_id.as_ref(),
                job.upstream,
                &target_kind,
            )
            .instrument(prepare_span.clone())
            .await;
        // Signed, so traces get integers (the bridge writes u64 as text).
        prepare_span.record("grym.cache.hits", i64::from(prepared.cache_hits));
        prepare_span.record("grym.cache.misses", i64::from(prepared.cache_misses));
        if prepared.cache_hits + prepared.cache_misses > 0 {
            job.live.update(|snapshot| {
                snapshot.metrics.context_cache_hits += prepared.cache_hits;
                snapshot.metrics.context_cache_misses += prepared.cache_misses;
            });
        }
        // What grymd composed around the task's context (a session's
        // history, earlier steps' outputs) must still decode at the worker;
        // when it would not, the request is at fault and the model is not
        // called, so nothing is held against it. A context passed as the
        // task carried it was checked at analysis and needs no second walk.
        let composed = !job.upstream.is_empty()
            || task.session_id.is_some()
            || prepared.cache_hits + prepared.cache_misses > 0;
        let depth = if composed {
            object_depth(&prepared.context)
        } else {
            0
        };
        if depth > Limits::DECODABLE_JSON_DEPTH {
            return Err(CallEnd::Failed(WorkerError {
                kind: FailureKind::InvalidInput,
                message: format!(
                    "the context composed for the call nests {depth} levels deep, over the \
                     {} that workers decode; earlier steps' outputs or the session's history \
                     nest too deeply",
                    Limits::DECODABLE_JSON_DEPTH
                ),
            }));
        }
        Ok(InferCall {
            task_id: task.id.clone(),
            task_type: task.task_type.clone(),
            input: task.input.clone(),
            parameters: task.parameters.clone(),
            context: prepared.context,
            // Set as the call is made.
            deadline: Instant::now(),
            attempt: job.live.runs().max(1),
            tenant: task.tenant.clone(),
        })
    }

    /// The span of one call: the context's preparation (for a first call)
    /// and the worker call run inside it. Its `gen_ai.*` attributes follow
    /// the OpenTelemetry GenAI conventions for an inference call; the
    /// provider is grym's worker protocol, whatever serves the model behind
    /// it.
    pub(super) fn attempt_span(
        &self,
        job: Job<'_>,
        candidate: &Candidate,
        chosen: &Chosen,
        hedge: bool,
    ) -> tracing::Span {
        let model = candidate.model.id();
        tracing::debug_span!(
            "attempt",
            gen_ai.operation.name = gen_ai_operation(job.task.task_type.as_str()),
            gen_ai.provider.name = "grym",
            gen_ai.request.model = %model,
            grym.model = %model,
            grym.endpoint = chosen.replica.endpoint(),
            grym.task.r#type = %job.task.task_type,
            grym.hedge = hedge,
            grym.probe = chosen.probe,
            grym.attempt.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    /// One call to one replica, within the caller's deadline and the
    /// worker timeout, in its span; `hedge` when it races an earlier call.
    pub(super) async fn call(
        &self,
        job: Job<'_>,
        candidate: &Candidate,
        chosen: Chosen,
        mut call: InferCall,
        (span, hedge): (tracing::Span, bool),
    ) -> Call {
        let replica = Arc::clone(&chosen.replica);
        let worker_deadline = Instant::now() + self.worker_timeout;
        let (call_deadline, caller_bound) = match job.deadline.instant() {
            Some(d) if d <= worker_deadline => (d, true),
            _ => (worker_deadline, false),
        };
        call.deadline = call_deadline;
        let model = candidate.model.id();
        let mut in_flight = chosen.start_call();
        let started = Instant::now();
        // The client is called inside the span, so the call it makes (and
        // the `traceparent` it sends) is the attempt's child.
        // A follower sees the output as it comes, unless a hedge may race
        // this call: two calls' chunks would interleave.
        let chunks = (!hedge && !self.hedging.hedges(&job.task.task_type))
            .then(|| job.chunk_sink(model))
            .flatten();
        let answer = async {
            let request = match chunks {
                Some(chunks) => replica.client().infer_streaming(call, chunks),
                None => replica.client().infer(call),
            };
            Deadline::at(call_deadline).bound(request).await
        }
        .instrument(span.clone())
        .await;
        let timed_out = if caller_bound {
            CallEnd::CallerDeadline
        } else {
            CallEnd::WorkerTimeout
        };
        let end = match answer {
            Ok(Ok(output)) => CallEnd::Answered(output),
            // A failure that comes as the deadline passes (the worker or the
            // transport giving up on the same deadline) is that deadline; a
            // refusal of the input stays a refusal.
            Ok(Err(error)) if !error.kind.blames_request() && Instant::now() >= call_deadline => {
                timed_out
            }
            Ok(Err(error)) => CallEnd::Failed(error),
            Err(_) => timed_out,
        };
        let latency = started.elapsed();
        // The replica's latency estimate, which balances its model's calls.
        in_flight.ended(matches!(end, CallEnd::Answered(_)), latency);
        let overran = matches!(end, CallEnd::CallerDeadline)
            && self
                .usual_latency(&candidate.model, &job.task.task_type, Instant::now())
                .is_some_and(|usual| latency > usual);
        let outcome = end.label();
        span.record("grym.attempt.outcome", outcome);
        if !matches!(end, CallEnd::Answered(_)) {
            span.record("otel.status_code", "ERROR");
        }
        self.instruments.worker_called(model, outcome, latency);
        if matches!(end, CallEnd::Answered(_)) {
            self.watcher.answered(model, latency);
        }
        Call {
            end,
            latency,
            overran,
            replica,
            hedge,
            _in_flight: Some(in_flight),
        }
    }
}

/// The GenAI operation a task type asks for: the conventions' name where
/// one fits (`embeddings`, `chat`, `text_completion`), else
/// `generate_content`, their name for content made from any input (audio
/// analysis, transcription, synthesis).
fn gen_ai_operation(task_type: &str) -> &'static str {
    if task_type.contains("embedding") {
        "embeddings"
    } else if task_type.contains("chat") {
        "chat"
    } else if task_type.contains("text_generation") || task_type.contains("completion") {
        "text_completion"
    } else {
        "generate_content"
    }
}

#[cfg(test)]
mod gen_ai_tests {
    use super::gen_ai_operation;

    #[test]
    fn task_types_map_to_the_genai_operation_names() {
        assert_eq!(gen_ai_operation("text_embedding"), "embeddings");
        assert_eq!(gen_ai_operation("chat"), "chat");
        assert_eq!(gen_ai_operation("text_generation"), "text_completion");
        assert_eq!(gen_ai_operation("audio_analysis"), "generate_content");
        assert_eq!(gen_ai_operation("transcription"), "generate_content");
    }
}
