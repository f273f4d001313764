//! Context end to end: what a worker receives is the context reshaped for
//! its kind, reshaped once and then served from the cache, kept per session
//! and per tenant; sessions can be seeded, read and deleted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use grym_e2e::{
    Grymd, OrchestratorClient, Process, grymd_refusing, output_json, task_request, text, worker,
};
use grym_proto::json::json_to_struct;
use grym_proto::orchestrator::v1 as api;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

/// GAMA as an audio-language model, and a text model: the sims echo the
/// context they receive.
async fn two_kinds() -> (Process, Process, Grymd) {
    let gama = worker(&[
        "sim",
        "--model-id",
        "gama",
        "--kind",
        "audio-language",
        "--capability",
        "audio_analysis:0.95",
        "--output",
        r#"{"species": "blackbird"}"#,
    ])
    .await;
    let llama = worker(&[
        "sim",
        "--model-id",
        "llama",
        "--kind",
        "text-generation",
        "--capability",
        "text_generation:0.9",
    ])
    .await;
    let grymd = Grymd::start(&format!(
        "builtin_workers = false\n[[workers]]\nid = \"gama\"\nendpoint = \"{}\"\n[[workers]]\nid = \"llama\"\nendpoint = \"{}\"\n",
        gama.endpoint(),
        llama.endpoint()
    ))
    .await;
    (gama, llama, grymd)
}

/// A text model whose sim worker echoes the context it receives.
async fn text_model() -> Process {
    worker(&[
        "sim",
        "--model-id",
        "llama",
        "--kind",
        "text-generation",
        "--capability",
        "text_generation",
    ])
    .await
}

/// grymd serving only `llama`, with `extra` configuration.
async fn serving(llama: &Process, extra: &str) -> Grymd {
    Grymd::start(&format!(
        "builtin_workers = false\n{extra}[[workers]]\nid = \"llama\"\nendpoint = \"{}\"\n",
        llama.endpoint()
    ))
    .await
}

/// A protobuf Struct of a JSON object.
fn structure(value: serde_json::Value) -> prost_types::Struct {
    json_to_struct(value.as_object().cloned().unwrap_or_default())
}

fn in_session(task_type: &str, input: &str, session: &str) -> api::ExecuteTaskRequest {
    let mut request = task_request(task_type, text(input));
    request.task.as_mut().unwrap().session_id = session.to_owned();
    request
}

async fn run(
    client: &mut OrchestratorClient<Channel>,
    request: api::ExecuteTaskRequest,
    tenant: &str,
) -> api::TaskResult {
    let mut request = tonic::Request::new(request);
    if !tenant.is_empty() {
        request
            .metadata_mut()
            .insert("grym-tenant", tenant.parse().unwrap());
    }
    let result = client
        .execute_task(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    result
}

#[tokio::test]
async fn the_next_model_sees_the_earlier_output_reshaped_for_its_kind_and_cached() {
    let (_gama, _llama, grymd) = two_kinds().await;
    let mut client = grymd.client().await;
    run(
        &mut client,
        in_session("audio_analysis", "what is singing?", "walk-1"),
        "",
    )
    .await;

    let first = run(
        &mut client,
        in_session("text_generation", "describe the bird", "walk-1"),
        "",
    )
    .await;
    let seen = &output_json(&first)["context"];
    assert_eq!(
        seen["history"][0]["prompt_context"], "Audio analysis by gama: what is singing?",
        "{seen}"
    );
    assert_eq!(seen["history"][0]["audio_analysis"]["species"], "blackbird");
    let metrics = first.metrics.unwrap();
    assert_eq!(
        (metrics.context_cache_hits, metrics.context_cache_misses),
        (0, 1)
    );

    let second = run(
        &mut client,
        in_session("text_generation", "describe the bird", "walk-1"),
        "",
    )
    .await;
    let metrics = second.metrics.unwrap();
    assert_eq!(
        (metrics.context_cache_hits, metrics.context_cache_misses),
        (1, 0),
        "the second identical request is a hit"
    );

    let stats = client
        .get_context_stats(api::GetContextStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        stats.cache_hits >= 1 && stats.cache_misses >= 1 && stats.cache_bytes > 0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_sessions_context_is_visible_to_its_next_task_and_to_no_other_session_or_tenant() {
    let (_gama, _llama, grymd) = two_kinds().await;
    let mut client = grymd.client().await;
    run(
        &mut client,
        in_session("audio_analysis", "clip one", "s1"),
        "",
    )
    .await;

    let other_session = run(&mut client, in_session("text_generation", "hi", "s2"), "").await;
    assert_eq!(output_json(&other_session)["context"], json!({}));

    let other_tenant = run(
        &mut client,
        in_session("text_generation", "hi", "s1"),
        "globex",
    )
    .await;
    assert_eq!(
        output_json(&other_tenant)["context"],
        json!({}),
        "same session id, other tenant"
    );

    let same = run(&mut client, in_session("text_generation", "hi", "s1"), "").await;
    assert!(output_json(&same)["context"]["history"][0]["prompt_context"].is_string());
}

#[tokio::test]
async fn an_agent_seeds_inspects_and_deletes_a_session_and_inline_context_goes_on_top() {
    let (_gama, _llama, grymd) = two_kinds().await;
    let mut client = grymd.client().await;
    let seeded = client
        .put_session_context(api::PutSessionContextRequest {
            session_id: "walk-2".into(),
            context: Some(structure(json!({"place": "Kew", "language": "fr"}))),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(seeded.session_id, "walk-2");

    let mut request = in_session("text_generation", "summarise", "walk-2");
    request.task.as_mut().unwrap().context = Some(structure(json!({"language": "en"})));
    let result = run(&mut client, request, "").await;
    assert_eq!(
        output_json(&result)["context"],
        json!({"place": "Kew", "language": "en"})
    );

    let session = client
        .get_session_context(api::GetSessionContextRequest {
            session_id: "walk-2".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        session.entries.len(),
        1,
        "the task's output extends the session"
    );
    assert_eq!(session.entries[0].model_kind, "text-generation");

    client
        .delete_session_context(api::DeleteSessionContextRequest {
            session_id: "walk-2".into(),
        })
        .await
        .unwrap();
    let status = client
        .get_session_context(api::GetSessionContextRequest {
            session_id: "walk-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_context_over_the_limit_is_refused_naming_the_field() {
    let (_gama, _llama, grymd) = two_kinds().await;
    let mut client = grymd.client().await;
    let mut request = task_request("text_generation", text("hi"));
    request.task.as_mut().unwrap().context =
        Some(structure(json!({"blob": "x".repeat(2 * 1024 * 1024)})));
    let status = client.execute_task(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("task.context"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_configured_template_reshapes_context_and_an_invalid_one_stops_start_up() {
    let (status, stderr) = grymd_refusing(
        "[[context.transformers]]\nsource = \"agent\"\ntarget = \"text-generation\"\ntemplate = \"line one\\n{{ broken \"\n",
    )
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("context.transformers[0] (agent -> text-generation)"),
        "{stderr}"
    );
    assert!(stderr.contains("line 2"), "{stderr}");

    let llama = text_model().await;
    let grymd = serving(&llama, "[[context.transformers]]\nsource = \"agent\"\ntarget = \"text-generation\"\ntemplate = \"Answer in {{ language }} about {{ topic }}.\"\nkey = \"system\"\n").await;
    let mut client = grymd.client().await;
    let mut request = task_request("text_generation", text("hi"));
    request.task.as_mut().unwrap().context =
        Some(structure(json!({"language": "Welsh", "topic": "otters"})));
    let result = run(&mut client, request, "").await;
    assert_eq!(
        output_json(&result)["context"],
        json!({"system": "Answer in Welsh about otters."})
    );
}

/// A request carrying a bearer token.
fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn with_tokens_configured_the_token_names_the_tenant_and_tasks_stay_with_it() {
    let llama = text_model().await;
    let grymd = serving(&llama, "[auth]\ntokens = [{ token = \"acme-token-0123456789\", tenant = \"acme\" }, { token = \"globex-token-0123456789\", tenant = \"globex\" }]\n").await;
    let mut client = grymd.client().await;

    let mut anonymous = task_request("text_generation", text("hi"));
    anonymous.task.as_mut().unwrap().id = "nobody".into();
    assert_eq!(
        client.execute_task(anonymous).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut declared = tonic::Request::new(task_request("text_generation", text("hi")));
    declared
        .metadata_mut()
        .insert("grym-tenant", "acme".parse().unwrap());
    assert_eq!(
        client.execute_task(declared).await.unwrap_err().code(),
        Code::Unauthenticated,
        "the header alone proves nothing"
    );

    let mut mine = in_session("text_generation", "private", "notes");
    mine.task.as_mut().unwrap().id = "acme-task".into();
    let result = client
        .execute_task(with_token("acme-token-0123456789", mine))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded);

    let get = |token| {
        with_token(
            token,
            api::GetTaskRequest {
                task_id: "acme-task".into(),
            },
        )
    };
    assert!(client.get_task(get("acme-token-0123456789")).await.is_ok());
    assert_eq!(
        client
            .get_task(get("globex-token-0123456789"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let session = |token| {
        with_token(
            token,
            api::GetSessionContextRequest {
                session_id: "notes".into(),
            },
        )
    };
    assert!(
        client
            .get_session_context(session("acme-token-0123456789"))
            .await
            .is_ok()
    );
    assert_eq!(
        client
            .get_session_context(session("globex-token-0123456789"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn a_template_sees_the_sessions_context_and_the_tasks_merged() {
    let llama = text_model().await;
    let grymd = serving(&llama, "[[context.transformers]]\nsource = \"agent\"\ntarget = \"text-generation\"\ntemplate = \"Answer in {{ language }} about {{ topic }}.\"\nkey = \"system\"\n").await;
    let mut client = grymd.client().await;
    client
        .put_session_context(api::PutSessionContextRequest {
            session_id: "chat".into(),
            context: Some(structure(json!({"language": "French", "topic": "otters"}))),
            replace: false,
        })
        .await
        .unwrap();
    let mut request = in_session("text_generation", "hi", "chat");
    request.task.as_mut().unwrap().context = Some(structure(json!({"language": "Welsh"})));
    let result = run(&mut client, request, "").await;
    assert_eq!(
        output_json(&result)["context"]["system"],
        "Answer in Welsh about otters."
    );
}
