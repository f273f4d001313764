//! Retries of the exports that a broken connection failed.
//!
//! The OTLP exporters retry, with backoff, every answer the specification
//! calls retryable. A gRPC call whose connection breaks before an answer,
//! though, is reported by tonic as `UNKNOWN` (the code of an error it
//! cannot classify), which the specification lists as final: the batch
//! would be dropped for a collector that merely restarted. The exporter
//! marks the statuses tonic made locally by appending their source chain
//! (`... gRPC code: Unknown: transport error ...`); those, and only those,
//! are tried again here, a few times with a growing pause.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How many times a transport failure is retried.
const RETRIES: u32 = 3;

/// The first pause; each next one doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// An exporter whose exports failed by the transport are tried again.
#[derive(Debug)]
pub(crate) struct RetryTransport<E> {
    inner: E,
}

impl<E> RetryTransport<E> {
    pub(crate) fn new(inner: E) -> Self {
        Self { inner }
    }
}

/// Whether `error` is a gRPC call that got no answer from the collector.
fn is_transport_failure(error: &OTelSdkError) -> bool {
    matches!(error, OTelSdkError::InternalFailure(message)
        if message.contains("gRPC code: Unknown: "))
}

/// Runs `export` until it succeeds, fails otherwise than by the transport,
/// or has been retried [`RETRIES`] times.
async fn with_retries<F, Fut>(mut export: F) -> OTelSdkResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = OTelSdkResult>,
{
    let mut pause = FIRST_PAUSE;
    let mut retries = 0;
    loop {
        match export().await {
            Err(error) if retries < RETRIES && is_transport_failure(&error) => {
                retries += 1;
                pause_for(pause).await;
                pause *= 2;
            }
            result => return result,
        }
    }
}

/// Exports run on the SDK's own threads, outside any runtime, where
/// blocking the thread is what waiting means; inside one, the runtime's
/// timer waits instead.
async fn pause_for(pause: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(pause).await;
    } else {
        std::thread::sleep(pause);
    }
}

impl<E: SpanExporter> SpanExporter for RetryTransport<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        with_retries(|| self.inner.export(batch.clone())).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for RetryTransport<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        with_retries(|| self.inner.export(metrics)).await
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn failure(message: &str) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure(message.to_owned()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_connection_is_tried_again_until_it_answers() {
        let calls = AtomicU32::new(0);
        let result = with_retries(|| async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                failure(
                    "TonicTracesClient export failed with gRPC code: Unknown: \
                     transport error: connection closed",
                )
            } else {
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_and_endless_ones_are_given_up() {
        let calls = AtomicU32::new(0);
        let result = with_retries(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            failure("TonicTracesClient export failed with gRPC code: InvalidArgument")
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let calls = AtomicU32::new(0);
        let result = with_retries(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            failure("export failed with gRPC code: Unknown: transport error")
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1 + RETRIES);
    }
}
