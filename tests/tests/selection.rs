//! Model selection end to end: GAMA routing with fallback, learning from
//! outcomes, load and failures, explainable plans, live statistics,
//! replicas, and reloading the worker list.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::{
    Grymd, OrchestratorClient, audio, output_json, sine_wav, task_request, text, worker,
};
use grym_proto::orchestrator::v1 as api;
use tonic::transport::Channel;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(20);

fn config(extra: &str, workers: &[(&str, String)]) -> String {
    let mut config = format!("builtin_workers = false\nhealth_interval = \"200ms\"\n{extra}\n");
    for (id, endpoint) in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{endpoint}\"\n"
        ));
    }
    config
}

async fn run(
    client: &mut OrchestratorClient<Channel>,
    request: api::ExecuteTaskRequest,
) -> api::TaskResult {
    tokio::time::timeout(NO_HANG, client.execute_task(request))
        .await
        .expect("ExecuteTask must not hang")
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

fn clip() -> api::task_input::Kind {
    audio(sine_wav(440.0, 8_000, 0.1), "audio/wav")
}

#[tokio::test]
async fn gama_failing_every_call_falls_back_to_wav2vec2_for_every_audio_task() {
    let gama = worker(&[
        "sim",
        "--model-id",
        "gama",
        "--capability",
        "audio_analysis:0.95",
        "--fail-rate",
        "1",
    ])
    .await;
    let wav2vec2 = worker(&[
        "sim",
        "--model-id",
        "wav2vec2",
        "--capability",
        "audio_analysis:0.5",
    ])
    .await;
    let other = worker(&[
        "sim",
        "--model-id",
        "other",
        "--capability",
        "audio_analysis:0.9",
    ])
    .await;
    let grymd = Grymd::start(&config(
        "",
        &[
            ("gama", gama.endpoint()),
            ("wav2vec2", wav2vec2.endpoint()),
            ("other", other.endpoint()),
        ],
    ))
    .await;
    let mut client = grymd.client().await;
    for _ in 0..20 {
        let result = run(&mut client, task_request("audio_analysis", clip())).await;
        assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
        assert_eq!(result.model_id, "wav2vec2");
        let attempts = &result.metrics.as_ref().unwrap().attempts;
        assert_eq!(attempts[0].model_id, "gama");
        assert_eq!(attempts[0].outcome(), api::AttemptOutcome::Failed);
        assert_eq!(attempts[0].error.as_ref().unwrap().code, "UNAVAILABLE");
        let routing = result.routing.unwrap();
        assert_eq!(routing.reason(), api::RoutingReason::Route);
        assert_eq!(routing.chosen_model_id, "gama");
        assert_eq!(routing.fallbacks_taken, ["wav2vec2"]);
        assert_eq!(
            routing.estimated_latency,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 800_000_000
            })
        );
    }
}

#[tokio::test]
async fn traffic_moves_to_the_healthy_model_within_a_hundred_tasks() {
    let flaky = worker(&[
        "sim",
        "--model-id",
        "flaky",
        "--capability",
        "transcription:0.9",
        "--fail-rate",
        "0.5",
        "--seed",
        "11",
    ])
    .await;
    let steady = worker(&[
        "sim",
        "--model-id",
        "steady",
        "--capability",
        "transcription:0.7",
    ])
    .await;
    let grymd = Grymd::start(&config(
        "",
        &[("flaky", flaky.endpoint()), ("steady", steady.endpoint())],
    ))
    .await;
    let mut client = grymd.client().await;
    let mut first_choice = Vec::new();
    for _ in 0..100 {
        let result = run(&mut client, task_request("transcription", text("hello"))).await;
        assert_eq!(
            result.status(),
            api::TaskStatus::Succeeded,
            "fallbacks cover failures"
        );
        first_choice.push(result.metrics.unwrap().attempts[0].model_id.clone());
    }
    let steady_share = first_choice[70..].iter().filter(|m| *m == "steady").count();
    assert!(
        steady_share >= 24,
        "steady chosen first {steady_share} of the last 30: {first_choice:?}"
    );
    assert_eq!(
        first_choice[0], "flaky",
        "at first the declared confidence decides"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_run_moves_its_tasks_to_the_others_and_nothing_hangs() {
    let mut doomed = worker(&[
        "sim",
        "--model-id",
        "doomed",
        "--capability",
        "transcription:0.9",
        "--latency-ms",
        "30",
    ])
    .await;
    let survivor = worker(&[
        "sim",
        "--model-id",
        "survivor",
        "--capability",
        "transcription:0.6",
        "--latency-ms",
        "30",
    ])
    .await;
    let grymd = Grymd::start(&config(
        "",
        &[
            ("doomed", doomed.endpoint()),
            ("survivor", survivor.endpoint()),
        ],
    ))
    .await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut client = grymd.client().await;
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            run(&mut client, task_request("transcription", text("hello"))).await
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    doomed.kill().await;

    let mut survivors = 0;
    while let Some(result) = tasks.join_next().await {
        let result = result.unwrap();
        assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
        survivors += usize::from(result.model_id == "survivor");
    }
    assert!(survivors > 0, "tasks after the kill went to the survivor");

    // Once the probe notices, the dead model is no longer a candidate.
    let mut client = grymd.client().await;
    let noticed = async {
        loop {
            let plan = client
                .plan_task(api::PlanTaskRequest {
                    task: task_request("transcription", text("x")).task,
                })
                .await
                .unwrap()
                .into_inner();
            let routing = plan.routing.unwrap();
            if routing.candidates.len() == 1 {
                return routing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let routing = tokio::time::timeout(NO_HANG, noticed)
        .await
        .expect("the probe notices");
    assert_eq!(routing.chosen_model_id, "survivor");
}

#[tokio::test]
async fn plan_task_explains_each_candidates_score_and_runs_nothing() {
    let whisper = worker(&[
        "sim",
        "--model-id",
        "whisper",
        "--capability",
        "transcription:0.9",
        "--latency-ms",
        "5",
    ])
    .await;
    let wav2vec2 = worker(&[
        "sim",
        "--model-id",
        "wav2vec2",
        "--capability",
        "transcription:0.6",
    ])
    .await;
    let grymd = Grymd::start(&config(
        "",
        &[
            ("whisper", whisper.endpoint()),
            ("wav2vec2", wav2vec2.endpoint()),
        ],
    ))
    .await;
    let mut client = grymd.client().await;
    for _ in 0..10 {
        run(&mut client, task_request("transcription", clip())).await;
    }
    let plan = client
        .plan_task(api::PlanTaskRequest {
            task: task_request("transcription", clip()).task,
        })
        .await
        .unwrap()
        .into_inner();
    let analysis = plan.analysis.unwrap();
    assert_eq!(analysis.modality(), api::Modality::Audio);
    assert_eq!(analysis.mime_type, "audio/wav");
    let routing = plan.routing.unwrap();
    assert_eq!(routing.policy(), api::SelectionPolicy::Scored);
    assert_eq!(routing.reason(), api::RoutingReason::HighestScore);
    assert_eq!(routing.chosen_model_id, "whisper");
    assert!(
        routing.explanation.contains("whisper"),
        "{}",
        routing.explanation
    );
    let whisper = &routing.candidates[0];
    assert!(
        whisper.samples > 9.0 && whisper.samples <= 10.0,
        "{whisper:?}"
    );
    assert_eq!(whisper.success_rate, 1.0);
    assert!((whisper.performance_weight - whisper.samples / 100.0).abs() < 1e-9);
    let expected = whisper.confidence * (1.0 - whisper.performance_weight)
        + whisper.performance * whisper.performance_weight;
    assert!((whisper.score - expected).abs() < 1e-9, "{whisper:?}");
    assert_eq!(routing.candidates[1].model_id, "wav2vec2");
    assert_eq!(routing.candidates[1].samples, 0.0);

    // Planning ran nothing: the statistics still count ten calls.
    let models = client
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let stats = models
        .iter()
        .find(|m| m.id == "whisper")
        .unwrap()
        .capabilities[0]
        .stats
        .unwrap();
    assert!(stats.attempts > 9.0 && stats.attempts <= 10.0, "{stats:?}");
    assert_eq!(stats.success_rate, 1.0);
    assert!(stats.p50_latency.is_some() && stats.mean_latency.is_some());
}

#[tokio::test]
async fn thompson_sampling_is_chosen_in_the_configuration_and_reported() {
    let a = worker(&[
        "sim",
        "--model-id",
        "a",
        "--capability",
        "text_generation:0.8",
    ])
    .await;
    let b = worker(&[
        "sim",
        "--model-id",
        "b",
        "--capability",
        "text_generation:0.8",
    ])
    .await;
    let grymd = Grymd::start(&config(
        "[selection]\npolicy = \"thompson\"\nseed = 5",
        &[("a", a.endpoint()), ("b", b.endpoint())],
    ))
    .await;
    let mut client = grymd.client().await;
    let mut chosen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let result = run(&mut client, task_request("text_generation", text("hi"))).await;
        let routing = result.routing.unwrap();
        assert_eq!(routing.policy(), api::SelectionPolicy::Thompson);
        assert_eq!(routing.reason(), api::RoutingReason::HighestSample);
        assert!(routing.candidates.iter().all(|c| c.sample.is_some()));
        chosen.insert(result.model_id);
    }
    assert_eq!(chosen.len(), 2, "two equally good models both get traffic");
}

#[tokio::test]
async fn a_model_with_two_replicas_spreads_its_calls_over_both() {
    let one = worker(&[
        "sim",
        "--model-id",
        "whisper",
        "--capability",
        "transcription",
        "--latency-ms",
        "50",
        "--output",
        r#"{"replica": "one"}"#,
    ])
    .await;
    let two = worker(&[
        "sim",
        "--model-id",
        "whisper",
        "--capability",
        "transcription",
        "--latency-ms",
        "50",
        "--output",
        r#"{"replica": "two"}"#,
    ])
    .await;
    let config = format!(
        "builtin_workers = false\n[[workers]]\nid = \"whisper\"\nendpoints = [\"{}\", \"{}\"]\n",
        one.endpoint(),
        two.endpoint()
    );
    let grymd = Grymd::start(&config).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = grymd.client().await;
        tasks.spawn(
            async move { run(&mut client, task_request("transcription", text("hi"))).await },
        );
    }
    let mut replicas = std::collections::BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let result = result.unwrap();
        let replica = output_json(&result)["replica"].as_str().unwrap().to_owned();
        *replicas.entry(replica).or_insert(0) += 1;
    }
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    let mut client = grymd.client().await;
    let models = client
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].replicas.len(), 2);
}

#[tokio::test]
async fn an_edited_worker_list_applies_on_sighup_without_disturbing_calls_in_flight() {
    let old = worker(&[
        "sim",
        "--model-id",
        "old",
        "--capability",
        "transcription",
        "--latency-ms",
        "1500",
    ])
    .await;
    let new = worker(&["sim", "--model-id", "new", "--capability", "transcription"]).await;
    // The built-in worker is on, and must survive the reload.
    let with_builtin = |workers: &[(&str, String)]| {
        config("", workers).replace("builtin_workers = false", "builtin_workers = true")
    };
    let grymd = Grymd::start(&with_builtin(&[("old", old.endpoint())])).await;

    let mut client = grymd.client().await;
    let in_flight =
        tokio::spawn(
            async move { run(&mut client, task_request("transcription", text("slow"))).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    grymd
        .reconfigure(&with_builtin(&[("new", new.endpoint())]))
        .await;

    let mut client = grymd.client().await;
    let reloaded = async {
        loop {
            let models = client
                .list_models(api::ListModelsRequest {})
                .await
                .unwrap()
                .into_inner()
                .models;
            let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
            if ids != ["audio-features", "old"] {
                assert_eq!(ids, ["audio-features", "new"]);
                // Probed before it appeared: described and serving at once.
                assert!(!models[1].capabilities.is_empty(), "{:?}", models[1]);
                assert_eq!(models[1].health(), api::ModelHealth::Serving);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(NO_HANG, reloaded)
        .await
        .expect("the new worker list applies");

    let slow = in_flight.await.unwrap();
    assert_eq!(
        slow.status(),
        api::TaskStatus::Succeeded,
        "the call in flight finished: {slow:?}"
    );
    assert_eq!(slow.model_id, "old");
    let fresh = run(&mut client, task_request("transcription", text("fast"))).await;
    assert_eq!(fresh.model_id, "new");

    // A file that does not load changes nothing.
    grymd.reconfigure("this is not toml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = run(&mut client, task_request("transcription", text("still"))).await;
    assert_eq!(fresh.model_id, "new");
    assert!(grymd.process().log().contains("does not load"));
}
