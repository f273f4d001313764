//! grym's MCP tools driven by a client nobody here wrote: the `mcp` SDK
//! from PyPI (`tests/mcp_client.py`, in the Python venv), over stdio against
//! `grym mcp` and over Streamable HTTP against grymd's `[mcp] listen`,
//! listing the tools and running the tone through `execute_task`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::python::python;
use grym_e2e::{Grymd, free_port, grym_binary, workspace_root};
use serde_json::Value;

/// The longest the client script may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `tests/mcp_client.py ARGS...` and returns its report.
async fn client(args: &[&str]) -> Value {
    let script = workspace_root().join("tests/mcp_client.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLIENT_TIMEOUT, output)
        .await
        .expect("the MCP client ended in time")
        .expect("the MCP client ran");
    assert!(
        output.status.success(),
        "the MCP client failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the MCP client printed no report ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn tone() -> String {
    workspace_root()
        .join("examples/tone-440hz.wav")
        .display()
        .to_string()
}

/// The report shows the tools, their contract-derived schemas, and the
/// tone's features from `execute_task` and `get_task`.
fn assert_report(report: &Value) {
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "cancel_task",
            "execute_task",
            "get_task",
            "list_models",
            "plan_task",
            "submit_task"
        ]
    );
    let schema = &report["schemas"]["execute_task"];
    assert_eq!(schema["required"], serde_json::json!(["task"]));
    let task = &schema["$defs"]["grym.orchestrator.v1.Task"];
    assert!(
        task["properties"]["type"]["description"]
            .as_str()
            .unwrap()
            .contains("audio_analysis"),
        "{task}"
    );
    let execute = &report["execute"];
    assert_eq!(execute["is_error"], false, "{execute}");
    let result = &execute["structured"]["result"];
    assert_eq!(result["status"], "TASK_STATUS_SUCCEEDED", "{result}");
    assert_eq!(result["model_id"], "audio-features");
    assert!(result["output"]["json"].is_object(), "{result}");
    let got = &report["get"]["structured"]["result"];
    assert_eq!(got["task_id"], result["task_id"]);
    assert_eq!(got["output"], result["output"]);
    assert_eq!(
        report["models"]["structured"]["models"][0]["id"],
        "audio-features"
    );
}

#[tokio::test]
async fn an_mcp_client_runs_the_tone_through_grym_mcp_over_stdio() {
    let grymd = Grymd::start_default().await;
    let grym = grym_binary().display().to_string();
    let report = client(&["stdio", &grym, &grymd.address(), &tone()]).await;
    assert_report(&report);
}

#[tokio::test]
async fn an_mcp_client_runs_the_tone_over_grymds_streamable_http() {
    let port = free_port();
    let grymd = Grymd::start(&format!("[mcp]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let report = client(&["http", &url, &tone()]).await;
    assert_report(&report);
    drop(grymd);
}

#[tokio::test]
async fn over_streamable_http_the_callers_bearer_token_is_grymds_auth() {
    let port = free_port();
    let grymd = Grymd::start(&format!(
        "[mcp]\nlisten = \"127.0.0.1:{port}\"\n[[auth.tokens]]\ntoken = \"a-token-of-tenant-a\"\ntenant = \"a\"\n"
    ))
    .await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let report = client(&["http", &url, &tone(), "a-token-of-tenant-a"]).await;
    assert_report(&report);

    let refused = client(&["http", &url, &tone()]).await;
    let execute = &refused["execute"];
    assert_eq!(execute["is_error"], true, "{execute}");
    assert!(
        execute["text"][0]
            .as_str()
            .unwrap()
            .starts_with("UNAUTHENTICATED"),
        "{execute}"
    );
    drop(grymd);
}
