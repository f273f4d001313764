//! The one error type of grym-worker: why a worker could not serve, or why
//! audio could not be analysed. A failed call is a gRPC status instead.

/// What went wrong in a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a WAV file the decoder reads.
    #[error("not decodable as WAV: {0}")]
    Undecodable(#[from] hound::Error),
    /// The WAV file holds no samples.
    #[error("the WAV file holds no samples")]
    Empty,
    /// The WAV header describes a format the analysis does not read.
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    /// The reflection service could not be built from the descriptors.
    #[error("building the reflection service failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}
