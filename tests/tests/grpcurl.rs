//! What an operator sees with the real grpcurl: reflection, health, and the
//! README's session, run as printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::process::Output;

use grym_e2e::{Grymd, grpcurl, sine_wav, workspace_root};

/// Runs a shell command line with the real grpcurl first on the PATH.
async fn shell(line: &str) -> Output {
    let grpcurl_dir = grpcurl().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        grpcurl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    tokio::process::Command::new("bash")
        .args(["-c", line])
        .current_dir(workspace_root())
        .env("PATH", path)
        .output()
        .await
        .unwrap()
}

fn stdout_of(line: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "`{line}` failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_the_orchestrator_and_health_through_reflection() {
    let grymd = Grymd::start_default().await;
    let line = format!("grpcurl -plaintext {} list", grymd.address());
    let listing = stdout_of(&line, &shell(&line).await);
    let services: Vec<&str> = listing.lines().collect();
    assert!(
        services.contains(&"grym.orchestrator.v1.Orchestrator"),
        "{listing}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{listing}");
    assert!(
        !services.contains(&"grym.worker.v1.ModelWorker"),
        "grymd does not serve the worker API: {listing}"
    );

    let line = format!(
        "grpcurl -plaintext {} describe grym.orchestrator.v1.Task",
        grymd.address()
    );
    let description = stdout_of(&line, &shell(&line).await);
    assert!(
        description.contains("The payload the model works on"),
        "comments reach grpcurl: {description}"
    );

    let line = format!(
        "grpcurl -plaintext {} grpc.health.v1.Health/Check",
        grymd.address()
    );
    assert!(stdout_of(&line, &shell(&line).await).contains("SERVING"));
}

#[tokio::test]
async fn grpcurl_executes_an_audio_task_on_a_generated_wav() {
    let grymd = Grymd::start_default().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a440.wav");
    std::fs::write(&wav, sine_wav(440.0, 22_050, 2.0)).unwrap();
    let line = format!(
        r#"printf '{{"task":{{"type":"audio_analysis","input":{{"audio":{{"data":"%s","mime_type":"audio/wav"}}}}}}}}' "$(base64 < {} | tr -d '\n')" | grpcurl -plaintext -d @ {} grym.orchestrator.v1.Orchestrator/ExecuteTask"#,
        wav.display(),
        grymd.address()
    );
    let output = stdout_of(&line, &shell(&line).await);
    let response: serde_json::Value = serde_json::from_str(&output).unwrap();
    let result = &response["result"];
    assert_eq!(result["status"], "TASK_STATUS_SUCCEEDED", "{output}");
    let features = &result["output"]["json"];
    let dominant = features["dominant_frequency_hz"].as_f64().unwrap();
    assert!(
        (dominant - 440.0).abs() < 5.0,
        "dominant frequency {dominant}"
    );
    assert_eq!(features["duration_seconds"].as_f64(), Some(2.0));
}

#[tokio::test]
async fn grpcurl_sees_invalid_argument_naming_the_field() {
    let grymd = Grymd::start_default().await;
    let line = format!(
        r#"grpcurl -plaintext -d '{{"task":{{"input":{{"text":"hi"}}}}}}' {} grym.orchestrator.v1.Orchestrator/ExecuteTask"#,
        grymd.address()
    );
    let output = shell(&line).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("task.type"),
        "{stderr}"
    );
}

/// The README's account of a text question about audio: the built-in
/// worker takes audio only, and planning says so, by PlanTask and
/// ExecuteTask alike.
#[tokio::test]
async fn grpcurl_sees_a_text_input_refused_by_the_audio_only_worker() {
    let grymd = Grymd::start_default().await;
    for method in ["PlanTask", "ExecuteTask"] {
        let line = format!(
            r#"grpcurl -plaintext -d '{{"task":{{"type":"audio_analysis","input":{{"text":"what is in this clip?"}}}}}}' {} grym.orchestrator.v1.Orchestrator/{method}"#,
            grymd.address()
        );
        let output = shell(&line).await;
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("FailedPrecondition")
                && stderr.contains(
                    "no model that serves task type `audio_analysis` accepts text input \
                     (`audio-features` accepts audio input only)"
                ),
            "{method}: {stderr}"
        );
    }
}

/// The README's grpcurl session, run line by line as printed (against a
/// free port instead of 50051), must keep working.
#[tokio::test]
async fn the_readme_grpcurl_session_works_as_printed() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let session = readme
        .split("<!-- grpcurl-session:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- grpcurl-session:end -->").next())
        .expect("the README marks its grpcurl session");
    let commands: Vec<&str> = session
        .lines()
        .filter(|line| line.starts_with("grpcurl "))
        .collect();
    assert!(
        commands.len() >= 4,
        "the session has list, describe, ListModels and ExecuteTask"
    );

    let grymd = Grymd::start_default().await;
    let mut transcript = String::new();
    for command in commands {
        let line = command.replace("127.0.0.1:50051", &grymd.address());
        transcript.push_str(&stdout_of(command, &shell(&line).await));
    }
    assert!(
        transcript.contains("grym.orchestrator.v1.Orchestrator"),
        "{transcript}"
    );
    assert!(transcript.contains("grpc.health.v1.Health"), "{transcript}");
    assert!(transcript.contains("TASK_STATUS_SUCCEEDED"), "{transcript}");
    assert!(transcript.contains("dominant_frequency_hz"), "{transcript}");
    assert!(transcript.contains("MODALITY_AUDIO"), "{transcript}");
}
