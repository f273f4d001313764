//! grymd's HTTP listener for operators (`[metrics] listen`, or the
//! `OTEL_EXPORTER_PROMETHEUS_*` address): read-only routes over plain
//! HTTP/1.1, apart from the gRPC port so that a scraper needs no gRPC and
//! no credentials.
//!
//! - `GET /metrics`: every metric in the Prometheus text exposition format,
//!   named as Prometheus names them over OTLP (see grym-telemetry);
//! - `GET /`: the list of routes, as plain text.
//!
//! The routes read and change nothing of the orchestrator. The listener is
//! bound before anything starts, so an address in use stops grymd at once;
//! it serves until the drain is over, so the drain itself can be watched.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use grym_telemetry::PrometheusMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::MetricsSettings;
use crate::error::Error;

/// What `GET /` answers.
const INDEX: &str = "grymd\n\n/metrics  Prometheus metrics (text exposition format 0.0.4)\n";

/// Binds the listener, so an address in use stops grymd at start.
pub(crate) async fn bind(settings: &MetricsSettings) -> Result<TcpListener, Error> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::MetricsListen {
            address: settings.listen,
            key: settings.key,
            source,
        })
}

/// The routes, over the metrics kept for a scrape (`None` when this
/// process keeps none: `/metrics` then says so).
pub(crate) fn router(metrics: Option<PrometheusMetrics>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

/// Serves `router` on `listener` until `closing` fires.
pub(crate) async fn serve(listener: TcpListener, router: Router, closing: CancellationToken) {
    let address = listener.local_addr().ok();
    tracing::info!(?address, "serving Prometheus metrics at /metrics");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { closing.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the metrics listener failed");
    }
}

async fn index() -> &'static str {
    INDEX
}

async fn scrape(State(metrics): State<Option<PrometheusMetrics>>) -> Response {
    let Some(metrics) = metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this grymd keeps no metrics for a scrape\n",
        )
            .into_response();
    };
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                grym_telemetry::PROMETHEUS_CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a scrape could not be answered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be rendered\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_index_lists_the_routes_and_metrics_not_kept_say_so() {
        let (status, body) = get(router(None), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("/metrics"), "{body}");
        let (status, body) = get(router(None), "/metrics").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no metrics"), "{body}");
        let (status, _) = get(router(None), "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
