//! Composite tasks end to end, on real `grym-worker sim` processes: a
//! sequence passing reshaped context on, parallel steps, conditions, the
//! failure policies, the deadline budget, recipe chains, and what
//! `StreamTask` and `PlanTask` show of them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use grym_e2e::{Grymd, Process, free_port, text, worker};
use grym_proto::json::value_to_json;
use grym_proto::orchestrator::v1 as api;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Code;

fn step(id: &str, task_type: &str, after: &[&str], when: &str) -> api::Step {
    api::Step {
        id: id.to_owned(),
        task: Some(api::StepTask {
            r#type: task_type.to_owned(),
            ..api::StepTask::default()
        }),
        after: after.iter().map(|a| (*a).to_owned()).collect(),
        when: when.to_owned(),
    }
}

fn composite(
    strategy: api::Strategy,
    policy: api::FailurePolicy,
    steps: Vec<api::Step>,
    input: &str,
) -> api::Task {
    api::Task {
        r#type: "pipeline".to_owned(),
        input: Some(api::TaskInput {
            kind: Some(text(input)),
        }),
        composite: Some(api::Composite {
            strategy: strategy as i32,
            steps,
            failure_policy: policy as i32,
            output_step: String::new(),
        }),
        ..api::Task::default()
    }
}

async fn execute(grymd: &Grymd, task: api::Task) -> Result<api::TaskResult, tonic::Status> {
    grymd
        .client()
        .await
        .execute_task(api::ExecuteTaskRequest { task: Some(task) })
        .await
        .map(|response| response.into_inner().result.unwrap())
}

fn statuses(result: &api::TaskResult) -> Vec<(String, api::TaskStatus)> {
    result
        .steps
        .iter()
        .map(|s| (s.step_id.clone(), s.status()))
        .collect()
}

fn step_output(result: &api::TaskResult, id: &str) -> serde_json::Value {
    let step = result.steps.iter().find(|s| s.step_id == id).unwrap();
    value_to_json(step.output.clone().unwrap().json.unwrap())
}

async fn sim(model: &str, kind: &str, capabilities: &[&str], extra: &[&str]) -> Process {
    let mut args = vec!["sim", "--model-id", model, "--kind", kind];
    for capability in capabilities {
        args.extend(["--capability", capability]);
    }
    args.extend(extra);
    worker(&args).await
}

fn workers_config(workers: &[(&str, &Process)]) -> String {
    let mut config = String::from("builtin_workers = false\nhealth_interval = \"200ms\"\n");
    for (id, process) in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{}\"\n",
            process.endpoint()
        ));
    }
    config
}

#[tokio::test]
async fn a_sequence_passes_each_output_on_reshaped_for_the_next_model() {
    let asr = sim("asr", "speech-recognition", &["transcription"], &[]).await;
    let llm = sim("llm", "text-generation", &["text_generation"], &[]).await;
    let grymd = Grymd::start(&workers_config(&[("asr", &asr), ("llm", &llm)])).await;
    let task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![
            step("listen", "transcription", &[], ""),
            step("answer", "text_generation", &[], ""),
        ],
        "is it going to rain",
    );
    let mut task = task;
    task.composite.as_mut().unwrap().steps[1]
        .task
        .as_mut()
        .unwrap()
        .input_from = "listen".to_owned();
    let result = execute(&grymd, task).await.unwrap();
    assert_eq!(
        result.status(),
        api::TaskStatus::Succeeded,
        "{:?}",
        result.error
    );
    assert_eq!(result.model_id, "llm");
    assert_eq!(
        result.routing.as_ref().unwrap().reason(),
        api::RoutingReason::Composite
    );
    // The text model got the transcript as its input, and as context
    // reshaped by the speech-recognition -> text-generation transformer.
    let answer = step_output(&result, "answer");
    assert_eq!(answer["input"], json!({"text": "is it going to rain"}));
    assert_eq!(
        answer["context"]["steps"]["listen"],
        json!({"transcript": "is it going to rain"})
    );
    assert!(answer["task_id"].as_str().unwrap().ends_with("/answer"));
    let listen = &result.steps[0];
    assert_eq!((listen.model_id.as_str(), listen.attempts), ("asr", 1));
    let attempts = &result.metrics.as_ref().unwrap().attempts;
    let by_step: Vec<&str> = attempts.iter().map(|a| a.step_id.as_str()).collect();
    assert_eq!(by_step, ["listen", "answer"]);
}

#[tokio::test]
async fn three_parallel_steps_take_about_as_long_as_one() {
    let slow = sim(
        "slow",
        "simulated",
        &["type_a", "type_b", "type_c"],
        &["--latency-ms", "200"],
    )
    .await;
    let grymd = Grymd::start(&workers_config(&[("slow", &slow)])).await;
    let task = || {
        composite(
            api::Strategy::Parallel,
            api::FailurePolicy::FailFast,
            vec![
                step("a", "type_a", &[], ""),
                step("b", "type_b", &[], ""),
                step("c", "type_c", &[], ""),
            ],
            "x",
        )
    };
    // Warm the channel first: the first call also connects.
    execute(&grymd, task()).await.unwrap();
    let started = Instant::now();
    let result = execute(&grymd, task()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(result.status(), api::TaskStatus::Succeeded);
    assert!(
        took < Duration::from_millis(400),
        "three 200 ms steps took {took:?}"
    );

    let plan = grymd
        .client()
        .await
        .plan_task(api::PlanTaskRequest { task: Some(task()) })
        .await
        .unwrap()
        .into_inner()
        .composite
        .unwrap();
    assert_eq!(plan.stages.len(), 1);
    assert_eq!(plan.stages[0].step_ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_conditional_step_runs_only_when_the_first_is_unsure() {
    let unsure = sim(
        "unsure",
        "simulated",
        &["score_low"],
        &["--output", r#"{"confidence": 0.55}"#],
    )
    .await;
    let sure = sim(
        "sure",
        "simulated",
        &["score_high"],
        &["--output", r#"{"confidence": 0.9}"#],
    )
    .await;
    let refine = sim("refiner", "simulated", &["refine"], &[]).await;
    let grymd = Grymd::start(&workers_config(&[
        ("unsure", &unsure),
        ("sure", &sure),
        ("refiner", &refine),
    ]))
    .await;
    let task = |strategy, first_type: &str| {
        composite(
            strategy,
            api::FailurePolicy::FailFast,
            vec![
                step("first", first_type, &[], ""),
                step(
                    "refine",
                    "refine",
                    &[],
                    "steps.first.output.confidence < 0.7",
                ),
            ],
            "clip",
        )
    };

    let low = execute(&grymd, task(api::Strategy::Conditional, "score_low"))
        .await
        .unwrap();
    assert_eq!(low.status(), api::TaskStatus::Succeeded);
    assert_eq!(low.model_id, "refiner");
    assert_eq!(
        statuses(&low),
        [
            ("first".to_owned(), api::TaskStatus::Succeeded),
            ("refine".to_owned(), api::TaskStatus::Succeeded)
        ]
    );

    // Sure of itself: the branch is skipped. In a conditional composite
    // that is "no branch matched", a failure, never the first output passed
    // off as the branch's.
    let high = execute(&grymd, task(api::Strategy::Conditional, "score_high"))
        .await
        .unwrap();
    assert_eq!(high.status(), api::TaskStatus::Failed);
    let error = high.error.clone().unwrap();
    assert_eq!(error.code, "FAILED_PRECONDITION");
    assert!(
        error.message.contains("no branch matched"),
        "{}",
        error.message
    );
    assert_eq!(high.steps[1].status(), api::TaskStatus::Skipped);

    // As an optional step of a sequence, skipping it is fine: the output is
    // the first step's.
    let optional = execute(&grymd, task(api::Strategy::Sequential, "score_high"))
        .await
        .unwrap();
    assert_eq!(optional.status(), api::TaskStatus::Succeeded);
    assert_eq!(optional.model_id, "sure");

    // An invalid expression is refused at submission, naming the step.
    let mut invalid = task(api::Strategy::Conditional, "score_low");
    invalid.composite.as_mut().unwrap().steps[1].when =
        "steps.first.output.confidence <".to_owned();
    let status = execute(&grymd, invalid).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("step `refine`"),
        "{}",
        status.message()
    );
    let mut unknown = task(api::Strategy::Conditional, "score_low");
    unknown.composite.as_mut().unwrap().steps[1].when =
        "steps.ghost.output.confidence < 0.7".to_owned();
    let status = execute(&grymd, unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("unknown step `ghost`"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn fail_fast_stops_the_rest_and_continue_does_not() {
    let broken = sim("broken", "simulated", &["broken"], &["--fail-rate", "1"]).await;
    let slow = sim("slow", "simulated", &["slow"], &["--latency-ms", "300"]).await;
    let grymd = Grymd::start(&workers_config(&[("broken", &broken), ("slow", &slow)])).await;
    let task = |policy| {
        composite(
            api::Strategy::Parallel,
            policy,
            vec![
                step("bad", "broken", &[], ""),
                step("good", "slow", &[], ""),
                step("after_bad", "slow", &["bad"], ""),
            ],
            "x",
        )
    };
    let fast = execute(&grymd, task(api::FailurePolicy::FailFast))
        .await
        .unwrap();
    assert_eq!(fast.status(), api::TaskStatus::Failed);
    assert_eq!(
        statuses(&fast),
        [
            ("bad".to_owned(), api::TaskStatus::Failed),
            ("good".to_owned(), api::TaskStatus::Cancelled),
            ("after_bad".to_owned(), api::TaskStatus::Cancelled)
        ]
    );
    assert!(fast.error.unwrap().message.starts_with("step `bad` failed"));

    let mut continued = task(api::FailurePolicy::Continue);
    continued.composite.as_mut().unwrap().output_step = "good".to_owned();
    let carried_on = execute(&grymd, continued).await.unwrap();
    assert_eq!(carried_on.status(), api::TaskStatus::Succeeded);
    assert_eq!(carried_on.model_id, "slow");
    assert_eq!(
        statuses(&carried_on),
        [
            ("bad".to_owned(), api::TaskStatus::Failed),
            ("good".to_owned(), api::TaskStatus::Succeeded),
            ("after_bad".to_owned(), api::TaskStatus::DependencyFailed)
        ]
    );
}

#[tokio::test]
async fn a_step_that_could_not_finish_in_the_time_left_is_never_sent() {
    let first = sim("first", "simulated", &["one"], &["--latency-ms", "500"]).await;
    let last = sim("last", "simulated", &["two"], &[]).await;
    // Both models are expected to take a second: the first gets half of
    // the composite's 1.2 s, finishes in 0.5 s, and leaves 0.7 s, too little
    // for the last.
    let config = format!(
        "builtin_workers = false\n\
         [[workers]]\nid = \"first\"\nendpoint = \"{}\"\ncapabilities = [{{ task_type = \"one\", confidence = 0.9, estimated_latency = \"1s\" }}]\n\
         [[workers]]\nid = \"last\"\nendpoint = \"{}\"\ncapabilities = [{{ task_type = \"two\", confidence = 0.9, estimated_latency = \"1s\" }}]\n",
        first.endpoint(),
        last.endpoint()
    );
    let grymd = Grymd::start(&config).await;
    let mut task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![step("first", "one", &[], ""), step("last", "two", &[], "")],
        "x",
    );
    task.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 200_000_000,
    });
    let result = execute(&grymd, task).await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::DeadlineExceeded);
    assert_eq!(
        statuses(&result),
        [
            ("first".to_owned(), api::TaskStatus::Succeeded),
            ("last".to_owned(), api::TaskStatus::DeadlineExceeded)
        ]
    );
    let last_step = &result.steps[1];
    assert_eq!(last_step.attempts, 0, "the last step was sent");
    assert!(
        last_step
            .error
            .as_ref()
            .unwrap()
            .message
            .starts_with("not sent")
    );
    let models = grymd
        .client()
        .await
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let last_model = models.iter().find(|m| m.id == "last").unwrap();
    let stats = last_model.capabilities[0].stats.as_ref().unwrap();
    assert_eq!(stats.attempts, 0.0, "the last model was called");
}

#[tokio::test]
async fn with_gama_down_audio_question_answering_runs_as_the_recipe_chain() {
    let mut gama = sim(
        "gama",
        "audio-language",
        &["audio_question_answering:0.95"],
        &[],
    )
    .await;
    let asr = sim("wav2vec2", "speech-recognition", &["transcription"], &[]).await;
    let llm = sim("llm", "text-generation", &["text_generation"], &[]).await;
    let grymd = Grymd::start(&workers_config(&[
        ("gama", &gama),
        ("wav2vec2", &asr),
        ("llm", &llm),
    ]))
    .await;
    let mut task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![],
        "what bird is singing",
    );
    task.r#type = "audio_question_answering".to_owned();
    task.composite = None;

    let direct = execute(&grymd, task.clone()).await.unwrap();
    assert_eq!(direct.model_id, "gama");
    assert!(direct.recipe.is_none());

    gama.kill().await;
    let mut client = grymd.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let models = client
            .list_models(api::ListModelsRequest {})
            .await
            .unwrap()
            .into_inner()
            .models;
        let gama = models.iter().find(|m| m.id == "gama").unwrap();
        if gama.health() == api::ModelHealth::NotServing {
            break;
        }
        assert!(Instant::now() < deadline, "gama never went down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let plan = client
        .plan_task(api::PlanTaskRequest {
            task: Some(task.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.routing.unwrap().reason(), api::RoutingReason::Recipe);
    let recipe = plan.composite.unwrap().recipe.unwrap();
    assert_eq!(recipe.chain, ["transcription", "text_generation"]);
    assert!(recipe.reason.contains("gama"), "{}", recipe.reason);

    let chained = execute(&grymd, task).await.unwrap();
    assert_eq!(
        chained.status(),
        api::TaskStatus::Succeeded,
        "{:?}",
        chained.error
    );
    assert_eq!(chained.model_id, "llm");
    assert!(chained.recipe.is_some());
    let answer = step_output(&chained, "text_generation");
    assert_eq!(
        answer["context"]["steps"]["transcription"],
        json!({"transcript": "what bird is singing"})
    );
}

/// A worker that declares it takes audio only is left out of a text task,
/// alone or as a composite's step given text, and the routing says why;
/// with no other model, the refusal names the input.
#[tokio::test]
async fn a_text_input_is_not_planned_onto_a_model_that_takes_audio_only() {
    let ears = sim(
        "ears",
        "speech-recognition",
        &["transcription:0.9"],
        &["--input", "audio"],
    )
    .await;
    let echo = sim("echo", "text-generation", &["transcription:0.5"], &[]).await;
    let only_ears = sim(
        "only-ears",
        "audio",
        &["audio_captioning"],
        &["--input", "audio"],
    )
    .await;
    let grymd = Grymd::start(&workers_config(&[
        ("ears", &ears),
        ("echo", &echo),
        ("only-ears", &only_ears),
    ]))
    .await;

    let mut single = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![],
        "hello",
    );
    single.r#type = "transcription".to_owned();
    single.composite = None;
    let result = execute(&grymd, single.clone()).await.unwrap();
    assert_eq!(result.model_id, "echo", "{:?}", result.error);
    let routing = result.routing.unwrap();
    assert_eq!(routing.excluded.len(), 1);
    assert_eq!(routing.excluded[0].model_id, "ears");
    assert_eq!(routing.excluded[0].reason, "accepts audio input only");
    assert!(
        routing
            .explanation
            .contains("left out: `ears` accepts audio input only"),
        "{}",
        routing.explanation
    );

    let steps = vec![step("words", "transcription", &[], "")];
    let task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        steps,
        "hi",
    );
    let result = execute(&grymd, task).await.unwrap();
    assert_eq!(
        result.status(),
        api::TaskStatus::Succeeded,
        "{:?}",
        result.error
    );
    assert_eq!(result.steps[0].model_id, "echo");

    let mut nobody = single;
    nobody.r#type = "audio_captioning".to_owned();
    let refused = execute(&grymd, nobody).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "no model that serves task type `audio_captioning` accepts text input \
         (`only-ears` accepts audio input only)"
    );
    let steps = vec![step("caption", "audio_captioning", &[], "")];
    let task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        steps,
        "hi",
    );
    let refused = execute(&grymd, task).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .starts_with("step `caption`: no model that serves"),
        "{}",
        refused.message()
    );
}

/// A configured GAMA that never came up has never said what it serves: it
/// counts as absent, and the recipe stands in. With nothing to stand in, the
/// wait for it to describe itself stays the answer.
#[tokio::test]
async fn a_gama_that_never_came_up_leaves_audio_question_answering_to_the_recipe() {
    let asr = sim("wav2vec2", "speech-recognition", &["transcription"], &[]).await;
    let llm = sim("llm", "text-generation", &["text_generation"], &[]).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut config = workers_config(&[("wav2vec2", &asr), ("llm", &llm)]);
    config.push_str(&format!(
        "[[workers]]\nid = \"gama\"\nendpoint = \"{nowhere}\"\n"
    ));
    let grymd = Grymd::start(&config).await;
    let mut task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![],
        "what bird is singing",
    );
    task.r#type = "audio_question_answering".to_owned();
    task.composite = None;

    // The other workers describe themselves within a few probes.
    let mut client = grymd.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let plan = loop {
        match client
            .plan_task(api::PlanTaskRequest {
                task: Some(task.clone()),
            })
            .await
        {
            Ok(plan) => break plan.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "never planned: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(plan.routing.unwrap().reason(), api::RoutingReason::Recipe);
    let recipe = plan.composite.unwrap().recipe.unwrap();
    assert_eq!(recipe.chain, ["transcription", "text_generation"]);
    assert!(recipe.reason.contains("gama"), "{}", recipe.reason);

    let chained = execute(&grymd, task.clone()).await.unwrap();
    assert_eq!(
        chained.status(),
        api::TaskStatus::Succeeded,
        "{:?}",
        chained.error
    );
    assert_eq!(chained.model_id, "llm");

    // A type no recipe covers still waits for GAMA to describe itself.
    task.r#type = "audio_analysis".to_owned();
    let waiting = execute(&grymd, task).await.unwrap_err();
    assert_eq!(waiting.code(), Code::Unavailable);
    assert!(
        waiting
            .message()
            .contains("waiting for these to describe themselves: gama"),
        "{}",
        waiting.message()
    );
}

/// A GAMA that never came up but whose capabilities the configuration
/// declares is known to serve the type and to be down: the recipe stands in.
#[tokio::test]
async fn a_declared_gama_that_never_came_up_leaves_the_question_to_the_recipe() {
    let asr = sim("wav2vec2", "speech-recognition", &["transcription"], &[]).await;
    let llm = sim("llm", "text-generation", &["text_generation"], &[]).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut config = workers_config(&[("wav2vec2", &asr), ("llm", &llm)]);
    config.push_str(&format!(
        "[[workers]]\nid = \"gama\"\nendpoint = \"{nowhere}\"\n\
         capabilities = [{{ task_type = \"audio_question_answering\", confidence = 0.95 }}]\n"
    ));
    let grymd = Grymd::start(&config).await;
    let mut task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![],
        "what bird is singing",
    );
    task.r#type = "audio_question_answering".to_owned();
    task.composite = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = execute(&grymd, task.clone()).await;
        if let Ok(result) = &result
            && result.status() == api::TaskStatus::Succeeded
            && result.recipe.is_some()
        {
            assert_eq!(result.model_id, "llm");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recipe never stood in: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stream_task_reports_each_step_as_it_starts_and_ends() {
    let asr = sim("asr", "speech-recognition", &["transcription"], &[]).await;
    let llm = sim("llm", "text-generation", &["text_generation"], &[]).await;
    let grymd = Grymd::start(&workers_config(&[("asr", &asr), ("llm", &llm)])).await;
    let task = composite(
        api::Strategy::Sequential,
        api::FailurePolicy::FailFast,
        vec![
            step("listen", "transcription", &[], ""),
            step("answer", "text_generation", &[], ""),
        ],
        "hello",
    );
    let mut stream = grymd
        .client()
        .await
        .stream_task(api::StreamTaskRequest { task: Some(task) })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        use api::stream_task_response::Event;
        seen.push(match event.unwrap().event.unwrap() {
            Event::Queued(_) => "queued".to_owned(),
            Event::Started(_) => "started".to_owned(),
            Event::ModelChosen(_) => "model chosen".to_owned(),
            Event::AttemptFinished(a) => format!("attempt {}", a.step_id),
            Event::StepStarted(s) => format!("start {}", s.step_id),
            Event::StepFinished(s) => format!("end {} {:?}", s.step_id, s.status()),
            Event::OutputChunk(c) => format!("chunk {}", c.step_id),
            Event::Result(r) => format!("result {:?}", r.status()),
        });
    }
    assert_eq!(
        seen,
        [
            "queued",
            "started",
            "start listen",
            "attempt listen",
            "end listen Succeeded",
            "start answer",
            "attempt answer",
            "end answer Succeeded",
            "result Succeeded"
        ]
    );
}
