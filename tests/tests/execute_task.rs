//! ExecuteTask and ListModels end to end, through a tonic client, against the
//! real grymd and real worker processes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::{
    Grymd, audio, free_port, grymd_first_line_with_env, grymd_refusing, output_json, sine_wav,
    task_request, text, worker,
};
use grym_proto::orchestrator::v1 as api;
use tonic::Code;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(15);

/// A tenth of a second of a 440 Hz tone, for tasks whose audio does not matter.
fn short_clip() -> api::task_input::Kind {
    audio(sine_wav(440.0, 8_000, 0.1), "audio/wav")
}

fn sim_config(workers: &[(&str, String)]) -> String {
    let mut config = String::from("builtin_workers = false\nhealth_interval = \"200ms\"\n");
    for (id, endpoint) in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{endpoint}\"\n"
        ));
    }
    config
}

async fn execute(
    grymd: &Grymd,
    request: api::ExecuteTaskRequest,
) -> Result<api::TaskResult, tonic::Status> {
    let mut client = grymd.client().await;
    let response = tokio::time::timeout(NO_HANG, client.execute_task(request))
        .await
        .expect("ExecuteTask must not hang")?;
    Ok(response.into_inner().result.expect("a result"))
}

#[tokio::test]
async fn a_440_hz_sine_comes_back_with_its_dominant_frequency_and_duration() {
    let grymd = Grymd::start_default().await;
    let result = execute(
        &grymd,
        task_request(
            "audio_analysis",
            audio(sine_wav(440.0, 16_000, 1.5), "audio/wav"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    assert_eq!(result.model_id, "audio-features");
    let features = output_json(&result);
    let dominant = features["dominant_frequency_hz"].as_f64().unwrap();
    assert!(
        (dominant - 440.0).abs() < 5.0,
        "dominant frequency {dominant}"
    );
    let duration = features["duration_seconds"].as_f64().unwrap();
    assert!((duration - 1.5).abs() < 1e-6, "duration {duration}");
    assert_eq!(features["sample_rate_hz"], 16_000);

    let metrics = result.metrics.unwrap();
    assert_eq!(metrics.models_used, ["audio-features"]);
    assert_eq!(metrics.attempts.len(), 1);
    assert_eq!(
        metrics.attempts[0].outcome(),
        api::AttemptOutcome::Succeeded
    );
    assert!(metrics.total_latency.is_some() && metrics.worker_latency.is_some());
}

#[tokio::test]
async fn audio_without_a_mime_type_is_recognised_by_its_bytes() {
    let grymd = Grymd::start_default().await;
    let mut request = task_request("audio_features", audio(sine_wav(1000.0, 8_000, 0.5), ""));
    request.task.as_mut().unwrap().id = "clip-1".to_owned();
    let result = execute(&grymd, request).await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    assert_eq!(result.task_id, "clip-1");
    let dominant = output_json(&result)["dominant_frequency_hz"]
        .as_f64()
        .unwrap();
    assert!(
        (dominant - 1000.0).abs() < 5.0,
        "dominant frequency {dominant}"
    );
}

/// Sends `request` and checks it is refused with `code` and a message naming
/// `named`.
async fn assert_refused(grymd: &Grymd, request: api::ExecuteTaskRequest, code: Code, named: &str) {
    let status = execute(grymd, request).await.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(named),
        "`{named}` is not named in {:?}",
        status.message()
    );
}

#[tokio::test]
async fn bad_requests_get_invalid_argument_naming_the_field() {
    let grymd = Grymd::start_default().await;
    assert_refused(
        &grymd,
        api::ExecuteTaskRequest { task: None },
        Code::InvalidArgument,
        "task",
    )
    .await;
    assert_refused(
        &grymd,
        task_request("", text("hello")),
        Code::InvalidArgument,
        "task.type",
    )
    .await;

    let mut no_input = task_request("audio_analysis", text(""));
    no_input.task.as_mut().unwrap().input = None;
    assert_refused(&grymd, no_input, Code::InvalidArgument, "task.input").await;

    let empty_audio = task_request("audio_analysis", audio(Vec::new(), "audio/wav"));
    assert_refused(
        &grymd,
        empty_audio,
        Code::InvalidArgument,
        "task.input.audio.data",
    )
    .await;
}

#[tokio::test]
async fn a_type_no_model_serves_is_failed_precondition_naming_it() {
    let grymd = Grymd::start_default().await;
    let request = task_request("protein_folding", text("MKV"));
    assert_refused(&grymd, request, Code::FailedPrecondition, "protein_folding").await;
}

#[tokio::test]
async fn undecodable_audio_is_a_failed_result_carrying_the_workers_message() {
    let grymd = Grymd::start_default().await;
    let result = execute(
        &grymd,
        task_request(
            "audio_analysis",
            audio(b"not a wav at all".to_vec(), "audio/wav"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "INVALID_ARGUMENT");
    assert!(
        error.message.contains("not decodable as WAV"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_worker_error_is_a_failed_result_with_its_message() {
    let sim = worker(&[
        "sim",
        "--model-id",
        "flaky",
        "--capability",
        "transcription",
        "--fail-rate",
        "1",
    ])
    .await;
    let grymd = Grymd::start(&sim_config(&[("flaky", sim.endpoint())])).await;
    let result = execute(&grymd, task_request("transcription", short_clip()))
        .await
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Failed);
    assert_eq!(result.model_id, "flaky");
    let error = result.error.unwrap();
    assert_eq!(error.code, "UNAVAILABLE");
    assert!(error.message.contains("simulated"), "{}", error.message);
    let attempt = &result.metrics.unwrap().attempts[0];
    assert_eq!(attempt.outcome(), api::AttemptOutcome::Failed);
}

#[tokio::test]
async fn a_worker_that_is_down_gives_a_failed_result_not_a_hang() {
    let mut sim = worker(&[
        "sim",
        "--model-id",
        "doomed",
        "--capability",
        "text_generation",
    ])
    .await;
    // Health checks are rare here, so the call itself finds the worker gone.
    let config = sim_config(&[("doomed", sim.endpoint())]).replace("200ms", "1h");
    let grymd = Grymd::start(&config).await;
    assert_eq!(
        execute(&grymd, task_request("text_generation", text("hi")))
            .await
            .unwrap()
            .status(),
        api::TaskStatus::Succeeded
    );

    sim.kill().await;
    let result = execute(&grymd, task_request("text_generation", text("hi again")))
        .await
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Failed);
    assert_eq!(result.error.unwrap().code, "UNAVAILABLE");
}

#[tokio::test]
async fn a_type_whose_every_model_is_down_is_unavailable_naming_them() {
    let config = format!(
        "{}capabilities = [{{ task_type = \"transcription\", confidence = 0.9 }}]\n",
        sim_config(&[("wav2vec2", format!("http://127.0.0.1:{}", free_port()))])
    );
    let grymd = Grymd::start(&config).await;
    assert_refused(
        &grymd,
        task_request("transcription", short_clip()),
        Code::Unavailable,
        "wav2vec2",
    )
    .await;
}

#[tokio::test]
async fn the_most_confident_model_serves_and_sees_what_the_agent_sent() {
    let low = worker(&[
        "sim",
        "--model-id",
        "small",
        "--capability",
        "text_generation:0.4",
    ])
    .await;
    let high = worker(&[
        "sim",
        "--model-id",
        "large",
        "--capability",
        "text_generation:0.9",
        "--output",
        r#"{"confidence": 0.75}"#,
    ])
    .await;
    let grymd = Grymd::start(&sim_config(&[
        ("small", low.endpoint()),
        ("large", high.endpoint()),
    ]))
    .await;

    let mut request = task_request("text_generation", text("summarise the clip"));
    request.task.as_mut().unwrap().parameters = Some(grym_proto::json::json_to_struct(
        serde_json::json!({ "temperature": 0.2 })
            .as_object()
            .unwrap()
            .clone(),
    ));
    let result = execute(&grymd, request).await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded);
    assert_eq!(result.model_id, "large");
    let output = result.output.clone().unwrap();
    assert_eq!(output.text.as_deref(), Some("summarise the clip"));
    let echo = output_json(&result);
    assert_eq!(echo["model_id"], "large");
    assert_eq!(echo["task_id"], result.task_id.as_str());
    assert_eq!(echo["parameters"]["temperature"], 0.2);
    assert_eq!(echo["confidence"], 0.75);
}

#[tokio::test]
async fn the_callers_deadline_ends_the_task_as_deadline_exceeded_before_the_caller_gives_up() {
    let slow = worker(&[
        "sim",
        "--model-id",
        "slow",
        "--capability",
        "text_generation",
        "--latency-ms",
        "5000",
    ])
    .await;
    let grymd = Grymd::start(&sim_config(&[("slow", slow.endpoint())])).await;
    let mut request = tonic::Request::new(task_request("text_generation", text("hi")));
    request.set_timeout(Duration::from_millis(300));
    let mut client = grymd.client().await;
    let result = tokio::time::timeout(NO_HANG, client.execute_task(request))
        .await
        .expect("must not hang")
        .expect("the task's end is a result the caller sees")
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        result.status(),
        api::TaskStatus::DeadlineExceeded,
        "{result:?}"
    );
    let error = result.error.unwrap();
    assert_eq!(error.code, "DEADLINE_EXCEEDED");
    // The model is expected to take 5 s, more than the 300 ms left: the
    // call is never sent.
    assert!(
        error.message.contains("not sent to model `slow`"),
        "{error:?}"
    );
    assert!(result.metrics.unwrap().attempts.is_empty());
}

#[tokio::test]
async fn a_worker_started_after_grymd_is_described_and_then_used() {
    let port = free_port();
    let grymd = Grymd::start(&sim_config(&[("late", format!("http://127.0.0.1:{port}"))])).await;
    // Nothing serves the type until `late` describes itself; the caller is
    // told which model is awaited.
    let early = task_request("text_generation", text("early"));
    assert_refused(&grymd, early, Code::Unavailable, "late").await;

    let _late = worker(&[
        "sim",
        "--model-id",
        "late",
        "--capability",
        "text_generation",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .await;
    let mut client = grymd.client().await;
    let described = async {
        loop {
            let models = client
                .list_models(api::ListModelsRequest {})
                .await
                .unwrap()
                .into_inner()
                .models;
            if models[0].health() == api::ModelHealth::Serving && !models[0].capabilities.is_empty()
            {
                return models;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let models = tokio::time::timeout(NO_HANG, described)
        .await
        .expect("the late worker is described");
    assert_eq!(models[0].capability_source(), api::CapabilitySource::Worker);
    let result = execute(&grymd, task_request("text_generation", text("now")))
        .await
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded);
}

#[tokio::test]
async fn list_models_shows_capabilities_health_and_overrides() {
    let sim = worker(&[
        "sim",
        "--model-id",
        "gama",
        "--capability",
        "audio_analysis:0.95",
        "--max-concurrency",
        "2",
        "--latency-ms",
        "800",
    ])
    .await;
    let config = format!(
        "builtin_workers = true\n[[workers]]\nid = \"gama\"\nendpoint = \"{}\"\nkind = \"audio-language\"\n[[workers]]\nid = \"wav2vec2\"\nendpoint = \"{}\"\nkind = \"speech-recognition\"\ncapabilities = [{{ task_type = \"transcription\", confidence = 0.8, estimated_latency = \"300ms\" }}]\n",
        sim.endpoint(),
        format_args!("http://127.0.0.1:{}", free_port()),
    );
    let grymd = Grymd::start(&config).await;
    let mut client = grymd.client().await;
    let models = client
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["audio-features", "gama", "wav2vec2"]);

    // The configured kind wins; the capabilities are still the worker's.
    let gama = &models[1];
    assert_eq!(gama.kind, "audio-language");
    assert_eq!(gama.health(), api::ModelHealth::Serving);
    assert_eq!(gama.capability_source(), api::CapabilitySource::Worker);
    assert_eq!(gama.capabilities[0].task_type, "audio_analysis");
    assert_eq!(gama.capabilities[0].confidence, 0.95);
    assert_eq!(gama.capabilities[0].max_concurrency, 2);
    assert_eq!(
        gama.capabilities[0].estimated_latency,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 800_000_000
        })
    );

    let wav2vec2 = &models[2];
    assert_eq!(wav2vec2.health(), api::ModelHealth::NotServing);
    assert_eq!(wav2vec2.capability_source(), api::CapabilitySource::Config);
    assert_eq!(wav2vec2.kind, "speech-recognition");

    // GAMA's declared 0.95 beats audio-features' 0.6 for audio analysis.
    let result = execute(&grymd, task_request("audio_analysis", short_clip()))
        .await
        .unwrap();
    assert_eq!(result.model_id, "gama");
}

#[tokio::test]
async fn a_bad_configuration_stops_grymd_with_the_key_named() {
    let (status, stderr) =
        grymd_refusing("[[workers]]\nid = \"gama\"\nendpoint = \"localhost:7001\"\n").await;
    assert!(!status.success());
    assert!(stderr.contains("workers[0].endpoint"), "{stderr}");

    let (status, stderr) = grymd_refusing("builtin_worker = false\n").await;
    assert!(!status.success());
    assert!(stderr.contains("builtin_worker"), "{stderr}");
}

#[tokio::test]
async fn grymd_reads_its_config_file_and_address_from_the_environment() {
    let port = free_port();
    let line =
        grymd_first_line_with_env("builtin_workers = false\n", &format!("127.0.0.1:{port}")).await;
    assert_eq!(line, format!("listening on 127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_recording_beyond_grpcs_default_four_mebibytes_is_analysed() {
    let grymd = Grymd::start_default().await;
    // Two minutes at 22.05 kHz, 16-bit mono: 5.3 MB on both hops.
    let wav = sine_wav(220.0, 22_050, 120.0);
    assert!(wav.len() > 4 * 1024 * 1024);
    let result = execute(
        &grymd,
        task_request("audio_analysis", audio(wav, "audio/wav")),
    )
    .await
    .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    let features = output_json(&result);
    assert_eq!(features["duration_seconds"].as_f64(), Some(120.0));
    let dominant = features["dominant_frequency_hz"].as_f64().unwrap();
    assert!(
        (dominant - 220.0).abs() < 5.0,
        "dominant frequency {dominant}"
    );
}

#[tokio::test]
async fn the_worker_timeout_ends_a_stuck_call_and_moves_on_to_the_next_model() {
    let stuck = worker(&[
        "sim",
        "--model-id",
        "stuck",
        "--capability",
        "transcription:0.9",
        "--latency-ms",
        "10000",
    ])
    .await;
    let quick = worker(&[
        "sim",
        "--model-id",
        "quick",
        "--capability",
        "transcription:0.5",
    ])
    .await;
    let config = sim_config(&[("stuck", stuck.endpoint()), ("quick", quick.endpoint())]).replace(
        "builtin_workers = false",
        "builtin_workers = false\nworker_timeout = \"300ms\"",
    );
    let grymd = Grymd::start(&config).await;
    let result = execute(&grymd, task_request("transcription", text("hi")))
        .await
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    assert_eq!(result.model_id, "quick");
    let attempts = result.metrics.unwrap().attempts;
    assert_eq!(attempts[0].model_id, "stuck");
    assert_eq!(attempts[0].outcome(), api::AttemptOutcome::TimedOut);
    assert_eq!(
        attempts[0].error.as_ref().unwrap().code,
        "DEADLINE_EXCEEDED"
    );
}

#[tokio::test]
async fn reflection_v1_lists_what_grymd_serves() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let grymd = Grymd::start_default().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", grymd.address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"grym.orchestrator.v1.Orchestrator"),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}
