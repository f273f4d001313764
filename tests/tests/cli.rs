//! The `grym` command line against a real grymd (its built-in audio worker,
//! and a simulated slow model where a task must outlive a command): what it
//! prints for people and for scripts, and the exit codes that follow a
//! task's status; `grym health` against grymd and the Rust and Python
//! workers, as container healthchecks run it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use grym_e2e::certs::{Certs, toml_path};
use grym_e2e::{Grymd, grym_binary, worker, workspace_root};
use serde_json::Value;

/// The longest one `grym` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn tone() -> PathBuf {
    workspace_root().join("examples/tone-440hz.wav")
}

/// Runs `grym --addr ADDR ARGS...` and waits for it.
async fn grym(addr: &str, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(grym_binary())
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("GRYM_ADDR")
        .env_remove("GRYM_TOKEN")
        .env_remove("GRYM_TENANT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(COMMAND_TIMEOUT, output)
        .await
        .expect("grym ended in time")
        .expect("grym ran")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("grym exited, not killed")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}\nstderr: {}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The tone's features, as the built-in worker reports them.
fn assert_tone_features(result: &Value) {
    assert_eq!(result["status"], "TASK_STATUS_SUCCEEDED", "{result}");
    let features = &result["output"]["json"];
    let text = features.to_string();
    assert!(text.contains("440") || features.is_object(), "{features}");
}

#[tokio::test]
async fn execute_runs_the_tone_for_people_and_for_scripts() {
    let grymd = Grymd::start_default().await;
    let addr = grymd.address();
    let tone = tone();
    let tone = tone.to_str().unwrap();

    let text = grym(&addr, &["execute", "audio_analysis", "--audio", tone]).await;
    assert_eq!(code(&text), 0, "{text:?}");
    let printed = stdout(&text);
    assert!(printed.contains("SUCCEEDED"), "{printed}");
    assert!(printed.contains("audio-features"), "{printed}");

    let scripted = grym(
        &addr,
        &[
            "--output",
            "json",
            "execute",
            "audio_analysis",
            "--audio",
            tone,
        ],
    )
    .await;
    assert_eq!(code(&scripted), 0);
    let result = json(&scripted);
    assert_tone_features(&result);
    assert_eq!(result["model_id"], "audio-features");
    assert!(result["metrics"]["total_latency"].is_string(), "{result}");
}

#[tokio::test]
async fn a_yaml_task_file_describes_a_composite() {
    let grymd = Grymd::start_default().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.yaml");
    let audio = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(tone()).unwrap())
    };
    std::fs::write(
        &file,
        format!(
            "type: analyse_twice\ninput:\n  audio:\n    data: {audio}\ncomposite:\n  strategy: STRATEGY_PARALLEL\n  steps:\n    - id: first\n      task: {{ type: audio_analysis }}\n    - id: second\n      task: {{ type: audio_analysis }}\n  output_step: second\n"
        ),
    )
    .unwrap();
    let output = grym(
        &grymd.address(),
        &["-o", "json", "execute", "--file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code(&output), 0, "{output:?}");
    let result = json(&output);
    assert_tone_features(&result);
    let steps: Vec<&str> = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first", "second"]);

    let plan = grym(
        &grymd.address(),
        &["plan", "--file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code(&plan), 0, "{plan:?}");
    assert!(
        stdout(&plan).contains("first + second"),
        "{}",
        stdout(&plan)
    );
}

#[tokio::test]
async fn stream_shows_each_step_then_the_result() {
    let grymd = Grymd::start_default().await;
    let tone = tone();
    let tone = tone.to_str().unwrap();
    let lines = grym(
        &grymd.address(),
        &["-o", "json", "stream", "audio_analysis", "--audio", tone],
    )
    .await;
    assert_eq!(code(&lines), 0, "{lines:?}");
    let events: Vec<Value> = stdout(&lines)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(events[0].get("queued").is_some(), "{events:?}");
    assert!(events.iter().any(|e| e.get("model_chosen").is_some()));
    assert!(events.iter().any(|e| e.get("started").is_some()));
    assert_tone_features(&events.last().unwrap()["result"]);

    // For people, off a terminal: one line per event on standard error,
    // the result on standard output.
    let text = grym(
        &grymd.address(),
        &["stream", "audio_analysis", "--audio", tone],
    )
    .await;
    assert_eq!(code(&text), 0);
    let progress = String::from_utf8_lossy(&text.stderr);
    assert!(progress.contains("queued"), "{progress}");
    assert!(
        progress.contains("model audio-features chosen"),
        "{progress}"
    );
    assert!(
        progress.contains("attempt on audio-features SUCCEEDED"),
        "{progress}"
    );
    assert!(stdout(&text).contains("SUCCEEDED"));
}

#[tokio::test]
async fn exit_codes_follow_the_task_status() {
    let slow = worker(&[
        "sim",
        "--model-id",
        "slow",
        "--capability",
        "slow_task",
        "--latency-ms",
        "20000",
    ])
    .await;
    let broken = worker(&[
        "sim",
        "--model-id",
        "broken",
        "--capability",
        "broken_task",
        "--fail-rate",
        "1",
    ])
    .await;
    let grymd = Grymd::start(&format!(
        "[[workers]]\nid = \"slow\"\nendpoint = \"{}\"\n\
         [[workers]]\nid = \"broken\"\nendpoint = \"{}\"\n",
        slow.endpoint(),
        broken.endpoint()
    ))
    .await;
    let addr = grymd.address();

    // The model fails every call: the task was accepted and FAILED.
    let failed = grym(
        &addr,
        &["-o", "json", "execute", "broken_task", "--text", "hi"],
    )
    .await;
    assert_eq!(code(&failed), 1, "{failed:?}");
    assert_eq!(json(&failed)["status"], "TASK_STATUS_FAILED");

    // No model takes text for audio analysis: refused before it runs.
    let refused = grym(&addr, &["execute", "audio_analysis", "--text", "hi"]).await;
    assert_eq!(code(&refused), 6, "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("accepts text input"),
        "{refused:?}"
    );

    // Its deadline passes while the model works.
    let late = grym(
        &addr,
        &["execute", "slow_task", "--text", "x", "--timeout", "300ms"],
    )
    .await;
    assert_eq!(code(&late), 3, "{late:?}");
    assert!(stdout(&late).contains("DEADLINE_EXCEEDED"));

    // Cancelled while it runs: cancel and get both say so.
    let submitted = grym(
        &addr,
        &["submit", "slow_task", "--text", "x", "--id", "to-cancel"],
    )
    .await;
    assert_eq!(code(&submitted), 0, "{submitted:?}");
    assert_eq!(stdout(&submitted).trim(), "to-cancel");
    let running = grym(&addr, &["-o", "json", "get", "to-cancel"]).await;
    assert_eq!(code(&running), 0, "a live task is not a failure");
    let cancelled = grym(&addr, &["cancel", "to-cancel"]).await;
    assert_eq!(code(&cancelled), 4, "{cancelled:?}");
    let got = grym(&addr, &["-o", "json", "get", "to-cancel"]).await;
    assert_eq!(code(&got), 4);
    assert_eq!(json(&got)["status"], "TASK_STATUS_CANCELLED");

    // Refused calls: no model serves the type; an unknown task.
    let unserved = grym(&addr, &["execute", "no_such_type", "--text", "x"]).await;
    assert_eq!(code(&unserved), 6, "{unserved:?}");
    let message = String::from_utf8_lossy(&unserved.stderr);
    assert!(message.contains("FailedPrecondition"), "{message}");
    let unknown = grym(&addr, &["get", "never-submitted"]).await;
    assert_eq!(code(&unknown), 6);
    // A usage error: no type given.
    let usage = grym(&addr, &["execute", "--text", "x"]).await;
    assert_eq!(code(&usage), 2);
}

#[tokio::test]
async fn submit_get_models_plan_bottlenecks_and_sessions() {
    let grymd = Grymd::start_default().await;
    let addr = grymd.address();
    let tone = tone();
    let tone = tone.to_str().unwrap();

    let submitted = grym(
        &addr,
        &["-o", "json", "submit", "audio_analysis", "--audio", tone],
    )
    .await;
    assert_eq!(code(&submitted), 0, "{submitted:?}");
    let id = json(&submitted)["task_id"].as_str().unwrap().to_owned();
    let mut result = Value::Null;
    for _ in 0..100 {
        let got = grym(&addr, &["-o", "json", "get", &id]).await;
        result = json(&got);
        if result["status"] == "TASK_STATUS_SUCCEEDED" {
            assert_eq!(code(&got), 0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_tone_features(&result);

    let models = grym(&addr, &["models"]).await;
    assert_eq!(code(&models), 0);
    let table = stdout(&models);
    assert!(table.starts_with("MODEL"), "{table}");
    assert!(table.contains("audio-features"), "{table}");
    assert!(table.contains("audio_analysis"), "{table}");
    let listed = json(&grym(&addr, &["-o", "json", "models"]).await);
    assert_eq!(listed["models"][0]["id"], "audio-features");

    let plan = grym(&addr, &["plan", "audio_analysis", "--audio", tone]).await;
    assert_eq!(code(&plan), 0);
    let plan = stdout(&plan);
    assert!(plan.contains("input AUDIO audio/"), "{plan}");
    assert!(plan.contains("chosen audio-features"), "{plan}");

    let bottlenecks = grym(&addr, &["-o", "json", "bottlenecks"]).await;
    assert_eq!(code(&bottlenecks), 0);
    assert!(json(&bottlenecks).is_object());

    let put = grym(
        &addr,
        &[
            "-o",
            "json",
            "session",
            "put",
            "s-1",
            "--context",
            r#"{"goal":"describe the clip"}"#,
        ],
    )
    .await;
    assert_eq!(code(&put), 0, "{put:?}");
    assert_eq!(json(&put)["context"]["goal"], "describe the clip");
    let got = grym(&addr, &["-o", "json", "session", "get", "s-1"]).await;
    assert_eq!(json(&got)["session_id"], "s-1");
    let deleted = grym(&addr, &["session", "delete", "s-1"]).await;
    assert_eq!(code(&deleted), 0);
    let gone = grym(&addr, &["session", "get", "s-1"]).await;
    assert_eq!(code(&gone), 6);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}

#[tokio::test]
async fn tokens_and_tls_reach_a_guarded_grymd() {
    let certs = Certs::new();
    let grymd = Grymd::start_listening(&format!(
        "[tls]\ncert = {}\nkey = {}\n[[auth.tokens]]\ntoken = \"a-token-of-tenant-a\"\ntenant = \"a\"\n",
        toml_path(&certs.server_cert()),
        toml_path(&certs.server_key()),
    ))
    .await;
    let addr = format!("https://localhost:{}", grymd.process().address().port());
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let mut served = None;
    for _ in 0..100 {
        let output = grym(
            &addr,
            &["--ca", ca, "--token", "a-token-of-tenant-a", "models"],
        )
        .await;
        if code(&output) == 0 {
            served = Some(output);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("grym reached grymd over TLS with its token");
    assert!(stdout(&served).contains("audio-features"));

    let no_token = grym(&addr, &["--ca", ca, "models"]).await;
    assert_eq!(code(&no_token), 6);
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("Unauthenticated"));
    let untrusted = grym(&addr, &["--token", "a-token-of-tenant-a", "models"]).await;
    assert_eq!(
        code(&untrusted),
        6,
        "the public roots do not sign the test CA"
    );
}

/// `grym health ARGS...` against `addr`: its exit code and the one line it
/// printed on standard error.
async fn health(addr: &str, args: &[&str]) -> (i32, String) {
    let output = grym(addr, &[&["health"], args].concat()).await;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert!(!stderr.contains('\n'), "one line of reason: {stderr}");
    (code(&output), stderr)
}

#[tokio::test]
async fn health_answers_for_grymd_its_models_and_a_worker() {
    let sim = worker(&["sim", "--model-id", "sim", "--capability", "sim_task"]).await;
    // Declared, so grymd knows the model, but nothing listens there.
    let gone = format!("http://127.0.0.1:{}", grym_e2e::free_port());
    let grymd = Grymd::start(&format!(
        "health_interval = \"100ms\"\n\
         [[workers]]\nid = \"sim\"\nendpoint = \"{}\"\n\
         [[workers]]\nid = \"gone\"\nendpoint = \"{gone}\"\nkind = \"sim\"\n\
         capabilities = [{{ task_type = \"gone_task\", confidence = 0.9 }}]\n",
        sim.endpoint()
    ))
    .await;
    let addr = grymd.address();

    // The whole server, and a model that serves: SERVING, exit 0.
    let whole = grym(&addr, &["health"]).await;
    assert_eq!(code(&whole), 0, "{whole:?}");
    assert_eq!(stdout(&whole).trim(), "SERVING");
    assert_eq!(health(&addr, &["--service", "grym.model/sim"]).await.0, 0);
    let scripted = grym(
        &addr,
        &["-o", "json", "health", "--service", "grym.model/sim"],
    )
    .await;
    assert_eq!(json(&scripted)["status"], "SERVING", "{scripted:?}");

    // A model none of whose replicas answers: the server says so, exit 1.
    let (code_gone, reason) = health(&addr, &["--service", "grym.model/gone"]).await;
    assert_eq!(code_gone, 1, "{reason}");
    assert!(
        reason.contains("service `grym.model/gone` is NOT_SERVING")
            || reason.contains("service `grym.model/gone` is UNKNOWN"),
        "{reason}"
    );
    // A name the server does not report: exit 1, and it says which.
    let (code_unknown, reason) = health(&addr, &["--service", "grym.model/nobody"]).await;
    assert_eq!(code_unknown, 1, "{reason}");
    assert!(
        reason.contains("no health of service `grym.model/nobody`"),
        "{reason}"
    );

    // A Rust worker, whole and by its service's name.
    assert_eq!(health(&sim.endpoint(), &[]).await.0, 0);
    let (code_worker, reason) = health(
        &sim.endpoint(),
        &["--service", "grym.worker.v1.ModelWorker"],
    )
    .await;
    assert_eq!(code_worker, 0, "{reason}");
}

#[tokio::test]
async fn health_fails_with_a_reason_when_no_answer_comes() {
    // A worker that serves no grpc.health.v1.
    let mute = worker(&[
        "sim",
        "--model-id",
        "mute",
        "--capability",
        "x",
        "--no-health",
    ])
    .await;
    let (code_mute, reason) = health(&mute.endpoint(), &[]).await;
    assert_eq!(code_mute, 6, "{reason}");
    assert!(reason.contains("does not serve grpc.health.v1"), "{reason}");

    // Nothing listens.
    let nowhere = format!("http://127.0.0.1:{}", grym_e2e::free_port());
    let (code_nowhere, reason) = health(&nowhere, &[]).await;
    assert_eq!(code_nowhere, 6, "{reason}");
    assert!(reason.contains("cannot reach the server at"), "{reason}");

    // Something listens but never speaks HTTP/2: the timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let (code_silent, reason) = health(&silent, &["--timeout", "500ms"]).await;
    assert_eq!(code_silent, 6, "{reason}");
    assert!(
        reason.contains("did not answer its health check within 500ms"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_answers_for_a_python_worker() {
    // The merge needs no model files, so it serves as soon as it listens.
    let merge = grym_e2e::python::python_worker("merge", &[]).await;
    let (code_merge, reason) = health(&merge.endpoint(), &[]).await;
    assert_eq!(code_merge, 0, "{reason}");
    let (code_named, reason) = health(
        &merge.endpoint(),
        &["--service", "grym.worker.v1.ModelWorker"],
    )
    .await;
    assert_eq!(code_named, 0, "{reason}");
}
