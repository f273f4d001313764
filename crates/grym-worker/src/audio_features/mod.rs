//! The `audio-features` reference worker: real signal analysis of WAV audio.
//!
//! It serves `audio_analysis` and `audio_features`: duration, format, RMS and
//! peak level, silence ratio, zero-crossing rate, spectral centroid and
//! dominant frequency (see [`analysis`] for the exact definitions). Analysis
//! runs on the blocking pool, so a long clip never stalls other calls.

pub mod analysis;

use std::time::Duration;

use grym_proto::json::json_to_value;
use grym_proto::worker::v1 as pb;
use serde_json::json;
use tonic::Status;

use crate::sdk::{self, Model};

/// The model id this worker reports by default.
pub const DEFAULT_MODEL_ID: &str = "audio-features";
/// The kind of model this worker is.
pub const KIND: &str = "audio-features";

/// MIME types that may hold WAV; an empty type is tried as WAV too.
const WAV_MIME_TYPES: &[&str] = &[
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/vnd.wave",
    "application/octet-stream",
];

/// The audio-features model.
#[derive(Debug, Clone)]
pub struct AudioFeatures {
    description: pb::DescribeResponse,
}

impl AudioFeatures {
    /// The model, reporting `model_id`.
    pub fn new(model_id: impl Into<String>) -> Self {
        let latency = Duration::from_millis(20);
        Self {
            description: pb::DescribeResponse {
                model_id: model_id.into(),
                kind: KIND.to_owned(),
                capabilities: vec![
                    sdk::accepting(
                        sdk::capability("audio_analysis", 0.6, latency, 0),
                        &[pb::InputKind::Audio],
                    ),
                    sdk::accepting(
                        sdk::capability("audio_features", 0.9, latency, 0),
                        &[pb::InputKind::Audio],
                    ),
                ],
            },
        }
    }
}

impl Default for AudioFeatures {
    fn default() -> Self {
        Self::new(DEFAULT_MODEL_ID)
    }
}

impl Model for AudioFeatures {
    fn describe(&self) -> pb::DescribeResponse {
        self.description.clone()
    }

    async fn infer(&self, request: pb::InferRequest) -> Result<pb::Output, Status> {
        sdk::check_task_type(&self.description, &request)?;
        let audio = match request.input.and_then(|input| input.kind) {
            Some(pb::input::Kind::Audio(audio)) => audio,
            _ => {
                return Err(Status::invalid_argument(
                    "input.audio is required: this model analyses audio",
                ));
            }
        };
        let mime = audio.mime_type.split(';').next().unwrap_or("").trim();
        if !mime.is_empty() && !WAV_MIME_TYPES.contains(&mime.to_ascii_lowercase().as_str()) {
            return Err(Status::invalid_argument(format!(
                "input.audio.mime_type `{mime}` is not supported: this model decodes WAV"
            )));
        }
        let data = audio.data;
        let features = tokio::task::spawn_blocking(move || analysis::analyse_wav(&data))
            .await
            .map_err(|_| Status::internal("the analysis task failed"))?
            .map_err(|error| Status::invalid_argument(format!("input.audio.data: {error}")))?;

        let summary = format!(
            "{:.3} s of {} Hz {}-channel audio; RMS {:.1} dBFS, peak {:.1} dBFS{}",
            features.duration_seconds,
            features.sample_rate_hz,
            features.channels,
            features.rms_dbfs,
            features.peak_dbfs,
            features
                .dominant_frequency_hz
                .map(|f| format!(", dominant frequency {f:.1} Hz"))
                .unwrap_or_default(),
        );
        let features = json!({
            "duration_seconds": features.duration_seconds,
            "sample_rate_hz": features.sample_rate_hz,
            "channels": features.channels,
            "bits_per_sample": features.bits_per_sample,
            "sample_format": features.sample_format,
            "rms_dbfs": features.rms_dbfs,
            "peak_dbfs": features.peak_dbfs,
            "silence_ratio": features.silence_ratio,
            "zero_crossing_rate": features.zero_crossing_rate,
            "spectral_centroid_hz": features.spectral_centroid_hz,
            "dominant_frequency_hz": features.dominant_frequency_hz,
        });
        Ok(pb::Output {
            text: Some(summary),
            json: Some(json_to_value(features)),
            ..pb::Output::default()
        })
    }
}
