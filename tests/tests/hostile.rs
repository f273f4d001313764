//! grymd tried as a hostile client would: malformed bytes, bad framing,
//! wrong content types, oversized and overdeep values, CEL bombs, unbounded
//! lists and names. Each request of the table has the status it must get,
//! every status message stays small, and after each one grymd must still be
//! up and report itself serving.
//!
//! Requests go over a raw HTTP/2 connection (the `h2` crate), so that what
//! no gRPC library would send can be sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use grym_e2e::{Grymd, audio, sine_wav, text, worker};
use grym_proto::json::json_to_struct;
use grym_proto::orchestrator::v1 as api;
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(20);

/// The longest status message grymd may send.
const MAX_MESSAGE: usize = 1024;

const SERVICE: &str = "/grym.orchestrator.v1.Orchestrator";

/// One request as bytes on the wire.
struct Raw {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    /// The request body; `None` ends the stream with the headers.
    body: Option<Bytes>,
}

/// What grymd answered.
#[derive(Debug)]
struct Answer {
    http: u16,
    code: Option<i32>,
    message: String,
}

/// What a request must get.
enum Expect {
    /// This gRPC status.
    Code(Code),
    /// This gRPC status, its message naming this text.
    Naming(Code, &'static str),
    /// This HTTP status, before any gRPC.
    Http(u16),
}

/// One row of the table.
struct Case {
    name: String,
    request: Raw,
    expect: Expect,
}

fn case(name: impl Into<String>, request: Raw, expect: Expect) -> Case {
    Case {
        name: name.into(),
        request,
        expect,
    }
}

/// A gRPC request to `method` of the orchestrator with this body.
fn grpc(method: &str, body: Option<Bytes>) -> Raw {
    Raw {
        method: "POST",
        path: format!("{SERVICE}/{method}"),
        headers: vec![
            ("content-type", "application/grpc".to_owned()),
            ("te", "trailers".to_owned()),
        ],
        body,
    }
}

/// `payload` in one gRPC message frame.
fn frame(payload: &[u8]) -> Bytes {
    frame_flagged(0, payload.len(), payload)
}

/// A frame with this compression flag and declared length.
fn frame_flagged(flag: u8, declared: usize, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(flag);
    buf.put_u32(u32::try_from(declared).unwrap());
    buf.put_slice(payload);
    buf.freeze()
}

fn message(method: &str, message: &impl Message) -> Raw {
    grpc(method, Some(frame(&message.encode_to_vec())))
}

fn execute(task: api::Task) -> Raw {
    message("ExecuteTask", &api::ExecuteTaskRequest { task: Some(task) })
}

fn plan(task: api::Task) -> Raw {
    message("PlanTask", &api::PlanTaskRequest { task: Some(task) })
}

fn submit(task: api::Task) -> Raw {
    message("SubmitTask", &api::SubmitTaskRequest { task: Some(task) })
}

fn with_header(mut raw: Raw, name: &'static str, value: impl Into<String>) -> Raw {
    raw.headers.retain(|(n, _)| *n != name);
    raw.headers.push((name, value.into()));
    raw
}

/// A valid text task the simulator serves.
fn valid() -> api::Task {
    api::Task {
        r#type: "transcription".to_owned(),
        input: Some(api::TaskInput {
            kind: Some(text("hello")),
        }),
        ..api::Task::default()
    }
}

fn object(value: Value) -> prost_types::Struct {
    let Value::Object(map) = value else {
        panic!("an object expected")
    };
    json_to_struct(map)
}

/// `{"a": {"a": ... 1}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// A conditional composite whose second step runs `when`.
fn conditional(when: String) -> api::Task {
    let step = |id: &str, when: String| api::Step {
        id: id.to_owned(),
        task: Some(api::StepTask {
            r#type: "transcription".to_owned(),
            ..api::StepTask::default()
        }),
        when,
        ..api::Step::default()
    };
    api::Task {
        r#type: "composite".to_owned(),
        composite: Some(api::Composite {
            strategy: api::Strategy::Conditional as i32,
            steps: vec![step("first", String::new()), step("second", when)],
            ..api::Composite::default()
        }),
        ..valid()
    }
}

fn composite(strategy: api::Strategy, steps: Vec<api::Step>) -> api::Task {
    api::Task {
        r#type: "composite".to_owned(),
        composite: Some(api::Composite {
            strategy: strategy as i32,
            steps,
            ..api::Composite::default()
        }),
        ..valid()
    }
}

fn step(id: &str, after: &[&str]) -> api::Step {
    api::Step {
        id: id.to_owned(),
        task: Some(api::StepTask {
            r#type: "transcription".to_owned(),
            ..api::StepTask::default()
        }),
        after: after.iter().map(|s| (*s).to_owned()).collect(),
        ..api::Step::default()
    }
}

fn the_table() -> Vec<Case> {
    use Expect::{Code as C, Http, Naming};
    let mut cases = Vec::new();

    // ---- bytes that are not a message --------------------------------
    for (name, bytes) in [
        (
            "a bad varint",
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        ("a wrong wire type for task", vec![0x08, 0x01]),
        ("field number 0", vec![0x00, 0x01]),
        ("a length beyond the message", vec![0x0a, 0x7f, 0x01]),
        (
            "invalid UTF-8 in task.id",
            vec![0x0a, 0x03, 0x0a, 0x01, 0xff],
        ),
        ("a group start with no end", vec![0x0b]),
    ] {
        for method in ["ExecuteTask", "PlanTask", "SubmitTask"] {
            cases.push(case(
                format!("{name} ({method})"),
                grpc(method, Some(frame(&bytes))),
                C(Code::InvalidArgument),
            ));
        }
    }
    // A Struct nested deeper than protobuf decoders go.
    let mut too_deep = valid();
    too_deep.context = Some(object(nested(60)));
    cases.push(case(
        "context nested past the decoder",
        execute(too_deep),
        C(Code::InvalidArgument),
    ));

    // ---- framing -----------------------------------------------------
    cases.push(case(
        "an empty body",
        grpc("ExecuteTask", None),
        C(Code::InvalidArgument),
    ));
    cases.push(case(
        "a frame cut short",
        grpc("ExecuteTask", Some(frame_flagged(0, 100, &[0x0a, 0x00]))),
        C(Code::InvalidArgument),
    ));
    cases.push(case(
        "half a frame header",
        grpc("ExecuteTask", Some(Bytes::from_static(&[0, 0]))),
        C(Code::InvalidArgument),
    ));
    // The compression spec prescribes INTERNAL for these two.
    cases.push(case(
        "a compressed flag without grpc-encoding",
        grpc("ExecuteTask", Some(frame_flagged(1, 2, &[0x0a, 0x00]))),
        C(Code::Internal),
    ));
    cases.push(case(
        "an unknown compression flag",
        grpc("ExecuteTask", Some(frame_flagged(7, 2, &[0x0a, 0x00]))),
        C(Code::Internal),
    ));
    cases.push(case(
        "an unsupported grpc-encoding",
        with_header(execute(valid()), "grpc-encoding", "br"),
        C(Code::Unimplemented),
    ));
    cases.push(case(
        "a message over max_message_bytes",
        grpc(
            "ExecuteTask",
            Some(frame_flagged(0, 5 * 1024 * 1024, &[0x0a, 0x00])),
        ),
        C(Code::ResourceExhausted),
    ));
    cases.push(case(
        "an unknown method",
        grpc("Nothing", Some(frame(&[]))),
        C(Code::Unimplemented),
    ));
    cases.push(case(
        "an unknown service",
        Raw {
            path: "/no.such.Service/Call".to_owned(),
            ..grpc("x", Some(frame(&[])))
        },
        C(Code::Unimplemented),
    ));
    cases.push(case(
        "an unreadable grpc-timeout",
        with_header(execute(valid()), "grpc-timeout", "soon"),
        C(Code::InvalidArgument),
    ));

    // ---- not gRPC at all ---------------------------------------------
    for content_type in ["text/plain", "application/json", "application/grpcx"] {
        cases.push(case(
            format!("content-type {content_type}"),
            with_header(execute(valid()), "content-type", content_type),
            Http(415),
        ));
    }
    let mut untyped = execute(valid());
    untyped.headers.retain(|(name, _)| *name != "content-type");
    cases.push(case("no content-type", untyped, Http(415)));
    cases.push(case(
        "GET",
        Raw {
            method: "GET",
            body: None,
            ..execute(valid())
        },
        Http(405),
    ));
    cases.push(case(
        "PUT",
        Raw {
            method: "PUT",
            ..execute(valid())
        },
        Http(405),
    ));

    // ---- fields ------------------------------------------------------
    cases.push(case(
        "no task",
        message("ExecuteTask", &api::ExecuteTaskRequest { task: None }),
        Naming(Code::InvalidArgument, "task"),
    ));
    let long = "x".repeat(300);
    for (field, task) in [
        (
            "task.type",
            api::Task {
                r#type: String::new(),
                ..valid()
            },
        ),
        (
            "task.type",
            api::Task {
                r#type: "two words".to_owned(),
                ..valid()
            },
        ),
        (
            "task.type",
            api::Task {
                r#type: long.clone(),
                ..valid()
            },
        ),
        (
            "task.id",
            api::Task {
                id: "a\u{7}b".to_owned(),
                ..valid()
            },
        ),
        (
            "task.id",
            api::Task {
                id: long.clone(),
                ..valid()
            },
        ),
        (
            "task.session_id",
            api::Task {
                session_id: "s s".to_owned(),
                ..valid()
            },
        ),
        (
            "task.input",
            api::Task {
                input: None,
                ..valid()
            },
        ),
        (
            "task.priority",
            api::Task {
                priority: 99,
                ..valid()
            },
        ),
        (
            "task.timeout",
            api::Task {
                timeout: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..valid()
            },
        ),
        (
            "task.timeout",
            api::Task {
                timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..valid()
            },
        ),
        (
            "task.input.audio.data",
            api::Task {
                input: Some(api::TaskInput {
                    kind: Some(audio(Vec::new(), "audio/wav")),
                }),
                ..valid()
            },
        ),
        (
            "task.input.audio.mime_type",
            api::Task {
                input: Some(api::TaskInput {
                    kind: Some(audio(sine_wav(440.0, 8000, 0.01), &"a".repeat(64 * 1024))),
                }),
                ..valid()
            },
        ),
        (
            "task.context",
            api::Task {
                context: Some(object(nested(20))),
                ..valid()
            },
        ),
        (
            "task.context",
            api::Task {
                context: Some(object(json!({"blob": "x".repeat(1024 * 1024 + 1)}))),
                ..valid()
            },
        ),
        (
            "task.context",
            api::Task {
                context: Some(object(json!({"history": []}))),
                ..valid()
            },
        ),
        (
            "task.context",
            api::Task {
                context: Some(object(json!({"steps": {}}))),
                ..valid()
            },
        ),
        (
            "task.parameters",
            api::Task {
                parameters: Some(object(nested(20))),
                ..valid()
            },
        ),
        (
            "task.parameters",
            api::Task {
                parameters: Some(object(json!({"blob": "x".repeat(300 * 1024)}))),
                ..valid()
            },
        ),
        (
            "task.input.json",
            api::Task {
                input: Some(api::TaskInput {
                    kind: Some(api::task_input::Kind::Json(
                        grym_proto::json::json_to_value(nested(20)),
                    )),
                }),
                ..valid()
            },
        ),
        (
            "task.depends_on",
            api::Task {
                depends_on: (0..10_000).map(|i| format!("missing-{i}")).collect(),
                ..valid()
            },
        ),
    ] {
        cases.push(case(
            format!("{field}: {}", summary(&task)),
            execute(task.clone()),
            Naming(Code::InvalidArgument, field),
        ));
        if field == "task.depends_on" {
            cases.push(case(
                format!("{field} (SubmitTask)"),
                submit(task),
                Naming(Code::InvalidArgument, field),
            ));
        }
    }
    cases.push(case(
        "an unknown dependency",
        execute(api::Task {
            depends_on: vec!["nobody".to_owned()],
            ..valid()
        }),
        Naming(Code::InvalidArgument, "nobody"),
    ));
    cases.push(case(
        "an unknown task type",
        execute(api::Task {
            r#type: "no_such_type".to_owned(),
            ..valid()
        }),
        Naming(Code::FailedPrecondition, "no_such_type"),
    ));
    cases.push(case(
        "grym-tenant with a space",
        with_header(execute(valid()), "grym-tenant", "a b"),
        Naming(Code::InvalidArgument, "grym-tenant"),
    ));
    cases.push(case(
        "grym-tenant too long",
        with_header(execute(valid()), "grym-tenant", "t".repeat(200)),
        Naming(Code::InvalidArgument, "grym-tenant"),
    ));
    cases.push(case(
        "GetTask of nothing",
        message(
            "GetTask",
            &api::GetTaskRequest {
                task_id: String::new(),
            },
        ),
        C(Code::InvalidArgument),
    ));
    cases.push(case(
        "GetTask of an unknown id",
        message(
            "GetTask",
            &api::GetTaskRequest {
                task_id: "nobody".to_owned(),
            },
        ),
        C(Code::NotFound),
    ));
    cases.push(case(
        "CancelTask of an unknown id",
        message(
            "CancelTask",
            &api::CancelTaskRequest {
                task_id: "nobody".to_owned(),
            },
        ),
        C(Code::NotFound),
    ));
    cases.push(case(
        "a session context nested too deep",
        message(
            "PutSessionContext",
            &api::PutSessionContextRequest {
                session_id: "s1".to_owned(),
                context: Some(object(nested(20))),
                replace: true,
            },
        ),
        Naming(Code::InvalidArgument, "context"),
    ));

    // ---- composites --------------------------------------------------
    cases.push(case(
        "a composite with no steps",
        execute(composite(api::Strategy::Sequential, Vec::new())),
        Naming(Code::InvalidArgument, "task.composite.steps"),
    ));
    cases.push(case(
        "a composite of 65 steps",
        execute(composite(
            api::Strategy::Parallel,
            (0..65).map(|i| step(&format!("s{i}"), &[])).collect(),
        )),
        Naming(Code::InvalidArgument, "task.composite.steps"),
    ));
    cases.push(case(
        "a composite with no strategy",
        execute(composite(api::Strategy::Unspecified, vec![step("a", &[])])),
        Naming(Code::InvalidArgument, "task.composite.strategy"),
    ));
    cases.push(case(
        "two steps with one id",
        execute(composite(
            api::Strategy::Parallel,
            vec![step("a", &[]), step("a", &[])],
        )),
        Naming(Code::InvalidArgument, "task.composite.steps.id"),
    ));
    cases.push(case(
        "a step waiting for an unknown step",
        execute(composite(api::Strategy::Parallel, vec![step("a", &["zz"])])),
        Naming(Code::InvalidArgument, "task.composite.steps.after"),
    ));
    cases.push(case(
        "a step waiting for itself",
        execute(composite(api::Strategy::Parallel, vec![step("a", &["a"])])),
        Naming(Code::InvalidArgument, "task.composite.steps.after"),
    ));
    cases.push(case(
        "two steps waiting for each other",
        execute(composite(
            api::Strategy::Parallel,
            vec![step("a", &["b"]), step("b", &["a"])],
        )),
        C(Code::InvalidArgument),
    ));
    let many: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    let mut waits_for_many = step("last", &[]);
    waits_for_many.after = many.clone();
    cases.push(case(
        "a step waiting for 100 steps",
        execute(composite(api::Strategy::Parallel, vec![waits_for_many])),
        Naming(Code::InvalidArgument, "task.composite.steps.after"),
    ));
    let mut unknown_output = composite(api::Strategy::Parallel, vec![step("a", &[])]);
    unknown_output.composite.as_mut().unwrap().output_step = "zz".to_owned();
    cases.push(case(
        "an unknown output step",
        execute(unknown_output),
        Naming(Code::InvalidArgument, "output_step"),
    ));

    // ---- CEL ---------------------------------------------------------
    let when = "task.composite.steps.when";
    let bombs: Vec<(&str, String)> = vec![
        ("a syntax error", "steps.first.status ==".to_owned()),
        ("an unknown name", "confidence < 0.5".to_owned()),
        (
            "a long member chain",
            format!("input{} == 1", ".a".repeat(4850)),
        ),
        (
            "a member chain within the size",
            format!("input{} == 1", ".a".repeat(1500)),
        ),
        ("a long sum", format!("{} == 1", vec!["1"; 5200].join("+"))),
        (
            "a sum within the size",
            format!("{} == 1", vec!["1"; 1500].join("+")),
        ),
        (
            "a long index chain",
            format!("input{} == 1", "[0]".repeat(3000)),
        ),
        (
            "an index chain within the size",
            format!("input{} == 1", "[0]".repeat(1000)),
        ),
        (
            "65,000 parentheses",
            format!("{}true{}", "(".repeat(65_000), ")".repeat(65_000)),
        ),
        (
            "2,000 parentheses",
            format!("{}true{}", "(".repeat(1000), ")".repeat(1000)),
        ),
        ("an 800 KB && chain", vec!["true"; 160_000].join(" && ")),
        ("a 4 KB && chain", vec!["true"; 600].join(" && ")),
        (
            "nested lists",
            format!("{}1{} == 1", "[".repeat(500), "]".repeat(500)),
        ),
        (
            "nested calls",
            format!("{}'a'{} == 'a'", "string(".repeat(400), ")".repeat(400)),
        ),
    ];
    for (name, source) in bombs {
        cases.push(case(
            format!("when: {name} (ExecuteTask)"),
            execute(conditional(source.clone())),
            Naming(Code::InvalidArgument, when),
        ));
        cases.push(case(
            format!("when: {name} (PlanTask)"),
            plan(conditional(source.clone())),
            Naming(Code::InvalidArgument, when),
        ));
        cases.push(case(
            format!("when: {name} (SubmitTask)"),
            submit(conditional(source)),
            Naming(Code::InvalidArgument, when),
        ));
    }
    cases
}

/// A few words on a task, for the case's name.
fn summary(task: &api::Task) -> String {
    let text = format!("{task:?}");
    text.chars().take(60).collect()
}

/// Sends one request on a fresh connection and reads its status.
async fn send(address: &str, raw: Raw) -> anyhow::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await?;
    let mut request = http::Request::builder()
        .method(raw.method)
        .uri(format!("http://{address}{}", raw.path));
    for (name, value) in &raw.headers {
        request = request.header(*name, value);
    }
    let (response, mut stream) = client.send_request(request.body(())?, raw.body.is_none())?;
    if let Some(body) = raw.body {
        stream.send_data(body, true)?;
    }
    let response = response.await?;
    let http = response.status().as_u16();
    let (parts, mut body) = response.into_parts();
    let mut status = parts.headers.clone();
    if status.get("grpc-status").is_none() {
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if let Some(trailers) = body.trailers().await? {
            status = trailers;
        }
    }
    let code = status
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let message = status
        .get("grpc-message")
        .map(|v| {
            let decoded: Vec<u8> = percent_decode(v.as_bytes());
            String::from_utf8_lossy(&decoded).into_owned()
        })
        .unwrap_or_default();
    Ok(Answer {
        http,
        code,
        message,
    })
}

/// The percent-decoding gRPC applies to `grpc-message`.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, tail)) = rest.split_first() {
        let escaped = (first == b'%' && tail.len() >= 2)
            .then(|| std::str::from_utf8(&tail[..2]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &tail[2..];
            }
            None => {
                out.push(first);
                rest = tail;
            }
        }
    }
    out
}

/// Whether grymd answers its health check SERVING.
async fn serving(address: &str) -> bool {
    let check = Raw {
        method: "POST",
        path: "/grpc.health.v1.Health/Check".to_owned(),
        headers: vec![
            ("content-type", "application/grpc".to_owned()),
            ("te", "trailers".to_owned()),
        ],
        body: Some(frame(&[])),
    };
    matches!(
        tokio::time::timeout(NO_HANG, send(address, check)).await,
        Ok(Ok(Answer { code: Some(0), .. }))
    )
}

fn code_of(number: i32) -> Code {
    Code::from_i32(number)
}

#[tokio::test]
async fn no_hostile_request_crashes_stalls_or_gets_the_wrong_status() {
    let sim = worker(&["sim", "--model-id", "sim", "--capability", "transcription"]).await;
    let grymd = Grymd::start(&format!(
        "max_message_bytes = 4194304\n[[workers]]\nid = \"sim\"\nendpoint = \"{}\"\n",
        sim.endpoint()
    ))
    .await;
    let address = grymd.address();
    let cases = the_table();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    eprintln!("{} hostile requests", cases.len());

    let mut wrong = Vec::new();
    for case in cases {
        let answer = tokio::time::timeout(NO_HANG, send(&address, case.request))
            .await
            .unwrap_or_else(|_| panic!("`{}` hung", case.name));
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                wrong.push(format!("{}: the request failed: {error:#}", case.name));
                continue;
            }
        };
        eprintln!("{}: {answer:?}", case.name);
        let right = match &case.expect {
            Expect::Http(status) => answer.http == *status,
            Expect::Code(code) => answer.code.map(code_of) == Some(*code),
            Expect::Naming(code, text) => {
                answer.code.map(code_of) == Some(*code) && answer.message.contains(text)
            }
        };
        if !right {
            wrong.push(format!("{}: got {answer:?}", case.name));
        }
        if answer.message.len() > MAX_MESSAGE {
            wrong.push(format!(
                "{}: a message of {} bytes",
                case.name,
                answer.message.len()
            ));
        }
        assert!(
            serving(&address).await,
            "grymd stopped serving after `{}`\n{}",
            case.name,
            grymd.process().log()
        );
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The simulator behind a grymd of its own.
async fn grymd_with_sim() -> (grym_e2e::Process, Grymd) {
    let sim = worker(&["sim", "--model-id", "sim", "--capability", "transcription"]).await;
    let grymd = Grymd::start(&format!(
        "builtin_workers = false\n[[workers]]\nid = \"sim\"\nendpoint = \"{}\"\n",
        sim.endpoint()
    ))
    .await;
    (sim, grymd)
}

/// The simulator's statistics for transcription, as ListModels shows them.
async fn sim_stats(grymd: &Grymd) -> api::PerformanceStats {
    let models = grymd
        .client()
        .await
        .list_models(api::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .models;
    let sim = models.iter().find(|m| m.id == "sim").unwrap();
    sim.capabilities[0].stats.unwrap_or_default()
}

fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("grym-tenant", tenant.parse().unwrap());
    request
}

#[tokio::test]
async fn the_same_task_id_in_two_tenants_is_two_tasks() {
    let (_sim, grymd) = grymd_with_sim().await;
    let mut client = grymd.client().await;
    let task = |words: &str| api::Task {
        id: "shared-id".to_owned(),
        input: Some(api::TaskInput {
            kind: Some(text(words)),
        }),
        ..valid()
    };
    for (tenant, words) in [("a", "from a"), ("b", "from b")] {
        let result = client
            .execute_task(as_tenant(
                tenant,
                api::ExecuteTaskRequest {
                    task: Some(task(words)),
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("tenant {tenant} was refused: {status:?}"))
            .into_inner()
            .result
            .unwrap();
        assert_eq!(result.task_id, "shared-id");
    }
    for (tenant, words) in [("a", "from a"), ("b", "from b")] {
        let result = client
            .get_task(as_tenant(
                tenant,
                api::GetTaskRequest {
                    task_id: "shared-id".to_owned(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        let output = result.output.unwrap();
        assert_eq!(
            output.text.as_deref(),
            Some(words),
            "tenant {tenant} read another's task"
        );
    }
    let status = client
        .get_task(as_tenant(
            "c",
            api::GetTaskRequest {
                task_id: "shared-id".to_owned(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_composite_nesting_past_what_workers_decode_is_the_requests_fault() {
    // Each step of the echoing simulator returns the context it got, which
    // holds the earlier steps' outputs: nesting grows with every step.
    let (_sim, grymd) = grymd_with_sim().await;
    let mut client = grymd.client().await;
    let steps = (0..12)
        .map(|i| step(&format!("s{i}"), &[]))
        .collect::<Vec<_>>();
    let result = tokio::time::timeout(
        NO_HANG,
        client.execute_task(api::ExecuteTaskRequest {
            task: Some(composite(api::Strategy::Sequential, steps)),
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner()
    .result
    .unwrap();
    let refused = result
        .steps
        .iter()
        .find_map(|step| step.error.as_ref())
        .expect("a step is refused");
    assert_eq!(refused.code, "INVALID_ARGUMENT", "{refused:?}");
    assert!(refused.message.contains("nests"), "{refused:?}");
    let stats = sim_stats(&grymd).await;
    assert_eq!(
        stats.failures, 0.0,
        "the request's fault was held against the model"
    );
    assert!(stats.successes >= 1.0, "{stats:?}");
}

#[tokio::test]
async fn a_huge_mime_type_is_refused_and_never_steers_routing() {
    let (_sim, grymd) = grymd_with_sim().await;
    let mut client = grymd.client().await;
    let task = api::Task {
        input: Some(api::TaskInput {
            kind: Some(audio(sine_wav(440.0, 8000, 0.01), &"a".repeat(64 * 1024))),
        }),
        ..valid()
    };
    for _ in 0..40 {
        let status = client
            .execute_task(api::ExecuteTaskRequest {
                task: Some(task.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE);
    }
    let stats = sim_stats(&grymd).await;
    assert_eq!(stats.attempts, 0.0, "{stats:?}");
    assert_eq!(stats.error_rate, 0.0, "{stats:?}");
}

#[tokio::test]
async fn reflection_can_be_switched_off_while_health_stays_open() {
    let grymd = Grymd::start("reflection = false\n").await;
    let reflection = Raw {
        path: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(),
        ..grpc("x", Some(frame(&[])))
    };
    let answer = send(&grymd.address(), reflection).await.unwrap();
    assert_eq!(
        answer.code.map(code_of),
        Some(Code::Unimplemented),
        "{answer:?}"
    );
    assert!(serving(&grymd.address()).await);
}

#[tokio::test]
async fn refused_credentials_are_logged_without_the_token() {
    let grymd =
        Grymd::start("[[auth.tokens]]\ntoken = \"a-token-of-tenant-a\"\ntenant = \"a\"\n").await;
    let address = grymd.address();
    let missing = send(&address, execute(valid())).await.unwrap();
    assert_eq!(missing.code.map(code_of), Some(Code::Unauthenticated));
    let wrong = with_header(
        execute(valid()),
        "authorization",
        "Bearer not-a-known-secret-token",
    );
    let wrong = send(&address, wrong).await.unwrap();
    assert_eq!(wrong.code.map(code_of), Some(Code::Unauthenticated));

    let deadline = tokio::time::Instant::now() + NO_HANG;
    loop {
        let log = grymd.process().log();
        let refusals = log.matches("authentication failed").count();
        if refusals >= 2 {
            assert!(
                log.contains("missing_token") && log.contains("unknown_token"),
                "{log}"
            );
            assert!(
                !log.contains("not-a-known-secret-token"),
                "the token was logged"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
