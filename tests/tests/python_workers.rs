//! The Python workers end to end: real `grym-py-worker` processes (Silero
//! VAD and basic-pitch on onnxruntime, the merge, GAMA without its
//! checkpoint) behind the real grymd, given real audio: an espeak-ng
//! sentence and a 440 Hz tone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use futures::StreamExt as _;
use grym_e2e::python::{python, python_worker, python_worker_listening};
use grym_e2e::{Grymd, Process, audio, output_json, sine_wav, task_request, worker};
use grym_proto::orchestrator::v1 as api;

/// A guard against hangs, not a performance target: the first call of a
/// Python worker loads onnxruntime's kernels.
const NO_HANG: Duration = Duration::from_secs(60);

/// The sentence espeak-ng speaks, between a second of silence each side.
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";

/// A spoken sentence as a WAV file (espeak-ng, 22050 Hz), with a second of
/// silence before and after; and where the words lie, in seconds.
fn spoken_sentence() -> (Vec<u8>, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentence.wav");
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg(SENTENCE)
        .status()
        .expect("espeak-ng is needed (apt-get install espeak-ng)");
    assert!(status.success());
    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    let words: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let rate = spec.sample_rate;
    let silence = vec![0_i16; rate as usize * usize::from(spec.channels)];
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
    for sample in silence.iter().chain(&words).chain(&silence) {
        writer.write_sample(*sample).unwrap();
    }
    writer.finalize().unwrap();
    let seconds = words.len() as f64 / f64::from(rate) / f64::from(spec.channels);
    (bytes.into_inner(), 1.0, 1.0 + seconds)
}

fn config(workers: &[(&str, &Process)], extra: &str) -> String {
    let mut config = String::from("builtin_workers = false\nhealth_interval = \"200ms\"\n");
    config.push_str(extra);
    for (id, process) in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{}\"\n",
            process.endpoint()
        ));
    }
    config
}

async fn execute(grymd: &Grymd, request: api::ExecuteTaskRequest) -> api::TaskResult {
    tokio::time::timeout(NO_HANG, grymd.client().await.execute_task(request))
        .await
        .expect("ExecuteTask hung")
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

fn segments(json: &serde_json::Value) -> Vec<(f64, f64)> {
    json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_spoken_sentence_yields_speech_segments_that_cover_its_words() {
    let vad = python_worker("vad", &[]).await;
    let grymd = Grymd::start(&config(&[("vad", &vad)], "")).await;
    let (wav, words_start, words_end) = spoken_sentence();
    let result = execute(
        &grymd,
        task_request("voice_activity", audio(wav, "audio/wav")),
    )
    .await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    assert_eq!(result.model_id, "vad");
    let json = output_json(&result);
    let found = segments(&json);
    assert!(!found.is_empty(), "{json}");
    let (first, last) = (found[0].0, found[found.len() - 1].1);
    assert!(
        (first - words_start).abs() < 0.2,
        "speech starts at {first}: {json}"
    );
    assert!(
        (last - words_end).abs() < 0.3,
        "speech ends at {last}: {json}"
    );
    let covered: f64 = found.iter().map(|(s, e)| e - s).sum();
    assert!(
        covered > 0.7 * (words_end - words_start),
        "speech covers {covered} s of the words' {} s: {json}",
        words_end - words_start
    );
    assert!(json["latency_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_440_hz_tone_is_midi_note_69_and_a_midi_file_when_asked() {
    let pitch = python_worker("pitch", &[]).await;
    let grymd = Grymd::start(&config(&[("pitch", &pitch)], "")).await;
    let mut request = task_request(
        "music_transcription",
        audio(sine_wav(440.0, 16_000, 1.0), "audio/wav"),
    );
    request.task.as_mut().unwrap().parameters = Some(grym_proto::json::json_to_struct(
        serde_json::json!({"midi": true})
            .as_object()
            .cloned()
            .unwrap(),
    ));
    let result = execute(&grymd, request).await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    let json = output_json(&result);
    let pitches: Vec<i64> = json["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pitch"].as_i64().unwrap())
        .collect();
    assert_eq!(pitches, [69], "{json}");
    let output = result.output.unwrap();
    assert_eq!(output.data_mime_type, "audio/midi");
    assert!(output.data.starts_with(b"MThd"));
}

#[tokio::test]
async fn undecodable_audio_ends_the_task_with_the_workers_reason() {
    let pitch = python_worker("pitch", &[]).await;
    let grymd = Grymd::start(&config(&[("pitch", &pitch)], "")).await;
    let result = execute(
        &grymd,
        task_request(
            "music_transcription",
            audio(b"RIFF\x04\x00\x00\x00WAVE".to_vec(), "audio/wav"),
        ),
    )
    .await;
    assert_eq!(result.status(), api::TaskStatus::Failed);
    let error = result.error.unwrap();
    assert!(error.message.contains("undecodable audio"), "{error:?}");
    assert_eq!(
        result.metrics.unwrap().attempts.len(),
        1,
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn audio_analysis_falls_back_to_the_composite_of_real_models_while_gama_is_absent() {
    let missing = tempfile::tempdir().unwrap();
    let checkpoint = missing.path().join("gama-checkpoint");
    let gama =
        python_worker_listening("gama", &["--checkpoint", checkpoint.to_str().unwrap()]).await;
    let vad = python_worker("vad", &[]).await;
    let pitch = python_worker("pitch", &[]).await;
    let merge = python_worker("merge", &[]).await;
    let features = worker(&["audio-features"]).await;
    // As deploy/grymd.python.toml: GAMA's capabilities are declared, so a
    // GAMA that never came up is known to serve `audio_analysis` and to be
    // down; the features worker serves only `audio_features`; so no healthy
    // model serves `audio_analysis` and the fan-out recipe stands in.
    let mut toml = config(
        &[("vad", &vad), ("pitch", &pitch), ("merge", &merge)],
        "[recipes]\naudio_analysis = { parallel = [\"voice_activity\", \"audio_features\", \"music_transcription\"], then = \"analysis_merge\" }\n",
    );
    toml.push_str(&format!(
        "[[workers]]\nid = \"gama\"\nendpoint = \"{}\"\nkind = \"audio-language\"\ncapabilities = [{{ task_type = \"audio_analysis\", confidence = 0.95, estimated_latency = \"800ms\" }}]\n",
        gama.endpoint()
    ));
    toml.push_str(&format!(
        "[[workers]]\nid = \"audio-features\"\nendpoint = \"{}\"\ncapabilities = [{{ task_type = \"audio_features\", confidence = 0.9, estimated_latency = \"20ms\" }}]\n",
        features.endpoint()
    ));
    let grymd = Grymd::start(&toml).await;
    let result = execute(
        &grymd,
        task_request(
            "audio_analysis",
            audio(sine_wav(440.0, 16_000, 1.0), "audio/wav"),
        ),
    )
    .await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    let recipe = result.recipe.clone().unwrap();
    assert_eq!(recipe.then, "analysis_merge");
    assert!(recipe.reason.contains("gama"), "{recipe:?}");
    assert_eq!(result.model_id, "merge");
    let json = output_json(&result);
    assert_eq!(
        json["music_transcription"]["output"]["notes"][0]["pitch"], 69,
        "{json}"
    );
    let dominant = json["audio_features"]["output"]["dominant_frequency_hz"]
        .as_f64()
        .unwrap();
    assert!((dominant - 440.0).abs() < 2.0, "{json}");
    assert_eq!(
        json["voice_activity"]["output"]["segments"],
        serde_json::json!([])
    );
    let mut used = result.metrics.unwrap().models_used;
    used.sort();
    assert_eq!(used, ["audio-features", "merge", "pitch", "vad"]);
    let text = result.output.unwrap().text.unwrap();
    assert!(text.contains("A4 (69)"), "{text}");
    assert!(gama.log().contains("does not exist"), "{}", gama.log());
}

#[tokio::test]
async fn stream_task_passes_each_speech_segment_on_in_order_before_the_result() {
    let vad = python_worker("vad", &[]).await;
    let grymd = Grymd::start(&config(&[("vad", &vad)], "")).await;
    let (wav, _, _) = spoken_sentence();
    let task = task_request("voice_activity", audio(wav, "audio/wav")).task;
    let mut stream = grymd
        .client()
        .await
        .stream_task(api::StreamTaskRequest { task })
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    let mut order = Vec::new();
    let mut result = None;
    while let Some(message) = tokio::time::timeout(NO_HANG, stream.next())
        .await
        .expect("StreamTask hung")
    {
        use api::stream_task_response::Event;
        match message.unwrap().event.unwrap() {
            Event::OutputChunk(chunk) => {
                assert_eq!(
                    (chunk.model_id.as_str(), chunk.step_id.as_str()),
                    ("vad", "")
                );
                let json = grym_proto::json::value_to_json(chunk.json.unwrap());
                chunks.push(json["segment"].clone());
                order.push("chunk");
            }
            Event::AttemptFinished(_) => order.push("attempt"),
            Event::Result(done) => {
                result = Some(done);
                order.push("result");
            }
            _ => {}
        }
    }
    let result = result.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded);
    let json = output_json(&result);
    assert!(!chunks.is_empty());
    assert_eq!(serde_json::Value::Array(chunks.clone()), json["segments"]);
    let chunk_count = chunks.len();
    let mut expected = vec!["chunk"; chunk_count];
    expected.extend(["attempt", "result"]);
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_python_agent_executes_submits_and_streams_through_grym_client() {
    let vad = python_worker("vad", &[]).await;
    let grymd = Grymd::start(&config(&[("vad", &vad)], "")).await;
    let (wav, _, _) = spoken_sentence();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    std::fs::write(&clip, wav).unwrap();
    let script = r#"
import sys, time
from grym_worker import GrymClient, output_json, task
address, clip = sys.argv[1], open(sys.argv[2], "rb").read()
with GrymClient(address) as grym:
    done = grym.execute(task("voice_activity", audio=clip), timeout=60)
    assert done.status == 3, done  # TASK_STATUS_SUCCEEDED
    task_id = grym.submit(task("voice_activity", audio=clip, id="agent-1"))
    while grym.get(task_id).status in (1, 2):
        time.sleep(0.05)
    assert output_json(grym.get(task_id))["segments"], grym.get(task_id)
    events = [m.WhichOneof("event") for m in grym.stream(task("voice_activity", audio=clip), timeout=60)]
    assert "output_chunk" in events and events[-1] == "result", events
print("ok", len(output_json(done)["segments"]))
"#;
    let output = tokio::time::timeout(
        NO_HANG,
        tokio::process::Command::new(python())
            .args(["-c", script, &grymd.address()])
            .arg(&clip)
            .output(),
    )
    .await
    .expect("the agent hung")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
