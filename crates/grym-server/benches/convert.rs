//! Request conversion from proto, as every `ExecuteTask` pays for it: the
//! decoded `grym.orchestrator.v1.Task` becomes the core's `Task` (ids and
//! task type checked, the server's task id generated, `Struct` context and
//! parameters turned into JSON, audio bytes handed on without a copy).
//!
//! `cargo bench -p grym-server --bench convert`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use grym_proto::json::json_to_struct;
use grym_proto::orchestrator::v1 as api;
use serde_json::{Map, Value, json};

fn task(input: api::task_input::Kind) -> api::Task {
    api::Task {
        r#type: "text_generation".to_owned(),
        input: Some(api::TaskInput { kind: Some(input) }),
        ..api::Task::default()
    }
}

/// A JSON object of about `bytes` bytes: an agent's notes.
fn object(bytes: usize) -> Map<String, Value> {
    let notes: Vec<Value> = (0..bytes / 48)
        .map(|i| json!({"turn": i, "note": "the caller asked about bird"}))
        .collect();
    let mut map = Map::new();
    map.insert("goal".into(), json!("identify the bird in the clip"));
    map.insert("notes".into(), Value::Array(notes));
    map
}

fn convert(c: &mut Criterion) {
    let text = task(api::task_input::Kind::Text(
        "what is in this clip? what is in this clip? what is in this c".to_owned(),
    ));
    let with_context = api::Task {
        parameters: Some(json_to_struct(Map::from_iter([
            ("language".to_owned(), json!("en")),
            ("max_tokens".to_owned(), json!(256)),
        ]))),
        context: Some(json_to_struct(object(1024))),
        ..text.clone()
    };
    let audio = task(api::task_input::Kind::Audio(api::Audio {
        data: Bytes::from(vec![0_u8; 64 * 1024]),
        mime_type: "audio/wav".to_owned(),
    }));
    let with_id = api::Task {
        id: "clip-1".to_owned(),
        ..text.clone()
    };

    let mut group = c.benchmark_group("ExecuteTask request to core task");
    for (name, request) in [
        ("64 B text, id generated", &text),
        ("64 B text, id given", &with_id),
        ("64 B text, 1 KiB context and parameters", &with_context),
        ("64 KiB audio", &audio),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || (Some(request.clone()), grym_core::Tenant::anonymous()),
                |(request, tenant)| black_box(grym_server::task_from_api(request, tenant)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, convert);
criterion_main!(benches);
