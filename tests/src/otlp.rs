//! An OTLP receiver for end-to-end tests: the official OpenTelemetry
//! protocol definitions (the `opentelemetry-proto` crate's messages),
//! served in-process on a free loopback port over gRPC ([`OtlpReceiver::start`])
//! or over HTTP with protobuf bodies ([`OtlpReceiver::start_http`], POSTs
//! to `/v1/traces` and `/v1/metrics` as the OTLP/HTTP specification has
//! them), keeping every trace and metric export it receives so tests can
//! look at what a process reported.
//!
//! Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint()`
//! (and `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` for the HTTP one);
//! for prompt exports also set `OTEL_BSP_SCHEDULE_DELAY=100` (spans, in ms)
//! and `OTEL_METRIC_EXPORT_INTERVAL=200` (metrics, in ms).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::Bytes;
use prost::Message;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// How often the `wait_for_*` helpers look again.
const POLL: Duration = Duration::from_millis(25);

/// One span as received, flattened out of its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that reported it.
    pub service_name: String,
    /// Every attribute of that resource, as JSON values.
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span's name.
    pub name: String,
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The span id, 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id, `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Its kind.
    pub kind: SpanKind,
    /// Its status code.
    pub status: StatusCode,
    /// Its attributes, as JSON values (integers and doubles as numbers,
    /// arrays as arrays, key-value lists as objects, bytes as hex strings).
    pub attributes: BTreeMap<String, Value>,
    /// The names of its events (what `tracing` events inside it became).
    pub events: Vec<String>,
    /// Start and end, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    /// The attribute `key`, or JSON null.
    pub fn attribute(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }

    /// How long it lasted.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }
}

/// The value of one metric data point.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A gauge or sum of integers.
    Int(i64),
    /// A gauge or sum of doubles.
    Double(f64),
    /// An explicit-bucket histogram.
    Histogram {
        /// Measurements recorded.
        count: u64,
        /// Their sum.
        sum: Option<f64>,
        /// Bucket upper bounds.
        bounds: Vec<f64>,
        /// Measurements per bucket (one more than the bounds).
        bucket_counts: Vec<u64>,
    },
    /// An exponential histogram or a summary: only count and sum kept.
    Other {
        /// Measurements recorded.
        count: u64,
        /// Their sum.
        sum: Option<f64>,
    },
}

impl PointValue {
    /// The value as a number: a gauge's or sum's value, a histogram's count.
    pub fn as_f64(&self) -> f64 {
        match self {
            Self::Int(value) => *value as f64,
            Self::Double(value) => *value,
            Self::Histogram { count, .. } | Self::Other { count, .. } => *count as f64,
        }
    }
}

/// The kind of metric a data point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A gauge.
    Gauge,
    /// A sum; a counter when monotonic.
    Sum {
        /// Whether it only goes up.
        monotonic: bool,
    },
    /// An explicit-bucket histogram.
    Histogram,
    /// An exponential histogram.
    ExponentialHistogram,
    /// A summary.
    Summary,
}

/// One metric data point as received.
#[derive(Debug, Clone)]
pub struct DataPoint {
    /// The `service.name` of the resource that reported it.
    pub service_name: String,
    /// The metric's unit (`s`, `By`, `{task}` ...).
    pub unit: String,
    /// The metric's kind.
    pub kind: MetricKind,
    /// The point's attributes, as JSON values.
    pub attributes: BTreeMap<String, Value>,
    /// Its value.
    pub value: PointValue,
    /// When it was taken, in nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
}

impl DataPoint {
    /// The attribute `key`, or JSON null.
    pub fn attribute(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

/// Every export received.
#[derive(Default)]
struct Store {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    /// How many more HTTP requests are answered 503 before any is taken.
    unavailable: AtomicU32,
    /// How many HTTP requests were answered 503.
    refused: AtomicU32,
}

#[derive(Clone)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running OTLP/gRPC receiver; it stops when dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let store = Arc::new(Store::default());
        let collector = Collector(Arc::clone(&store));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    stopped.await.ok();
                }),
        );
        Self {
            address,
            store,
            stop: Some(stop),
        }
    }

    /// Starts an OTLP/HTTP one (`http/protobuf`) on a free loopback port.
    pub async fn start_http() -> Self {
        Self::start_http_unavailable_for(0).await
    }

    /// Starts an OTLP/HTTP one that answers its first `requests` exports
    /// `503 Service Unavailable`, as a collector that is overloaded or
    /// restarting does, and takes the ones after.
    pub async fn start_http_unavailable_for(requests: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let store = Arc::new(Store {
            unavailable: AtomicU32::new(requests),
            ..Store::default()
        });
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_traces))
            .route("/v1/metrics", axum::routing::post(http_metrics))
            .with_state(Arc::clone(&store));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
        });
        Self {
            address,
            store,
            stop: Some(stop),
        }
    }

    /// How many HTTP exports were answered 503.
    pub fn refused(&self) -> u32 {
        self.store.refused.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every trace export request received so far.
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.store.traces.lock().unwrap().clone()
    }

    /// Every metrics export request received so far.
    pub fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store.metrics.lock().unwrap().clone()
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let traces = self.store.traces.lock().unwrap();
        let mut spans = Vec::new();
        for resource_spans in traces.iter().flat_map(|r| &r.resource_spans) {
            let service_name = service_name(resource_spans.resource.as_ref());
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in &scope_spans.spans {
                    spans.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: (!span.parent_span_id.is_empty())
                            .then(|| hex(&span.parent_span_id)),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        status: span
                            .status
                            .as_ref()
                            .and_then(|s| StatusCode::try_from(s.code).ok())
                            .unwrap_or(StatusCode::Unset),
                        attributes: attributes(&span.attributes),
                        events: span.events.iter().map(|e| e.name.clone()).collect(),
                        start_unix_nanos: span.start_time_unix_nano,
                        end_unix_nanos: span.end_time_unix_nano,
                    });
                }
            }
        }
        spans
    }

    /// Waits until a span named `name` arrives and returns the first one;
    /// panics, listing what did arrive, when none does within `timeout`.
    pub async fn wait_for_span(&self, name: &str, timeout: Duration) -> ReceivedSpan {
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(span) = self.spans().into_iter().find(|s| s.name == name) {
                    return span;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let names: Vec<String> = self.spans().into_iter().map(|s| s.name).collect();
            panic!("no span `{name}` within {timeout:?}; received {names:?}")
        })
    }

    /// Every data point of the metric `name` received so far, in arrival
    /// order (with cumulative temporality, later points include earlier
    /// ones).
    pub fn metric(&self, name: &str) -> Vec<DataPoint> {
        let metrics = self.store.metrics.lock().unwrap();
        let mut points = Vec::new();
        for resource_metrics in metrics.iter().flat_map(|r| &r.resource_metrics) {
            let service_name = service_name(resource_metrics.resource.as_ref());
            let found = resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .filter(|m| m.name == name);
            for metric in found {
                let point = |kind, attrs: &[KeyValue], value, time_unix_nanos| DataPoint {
                    service_name: service_name.clone(),
                    unit: metric.unit.clone(),
                    kind,
                    attributes: attributes(attrs),
                    value,
                    time_unix_nanos,
                };
                match &metric.data {
                    Some(metric::Data::Gauge(gauge)) => {
                        points.extend(gauge.data_points.iter().map(|p| {
                            point(
                                MetricKind::Gauge,
                                &p.attributes,
                                number(p.value),
                                p.time_unix_nano,
                            )
                        }))
                    }
                    Some(metric::Data::Sum(sum)) => {
                        let kind = MetricKind::Sum {
                            monotonic: sum.is_monotonic,
                        };
                        points.extend(sum.data_points.iter().map(|p| {
                            point(kind, &p.attributes, number(p.value), p.time_unix_nano)
                        }));
                    }
                    Some(metric::Data::Histogram(histogram)) => {
                        points.extend(histogram.data_points.iter().map(|p| {
                            let value = PointValue::Histogram {
                                count: p.count,
                                sum: p.sum,
                                bounds: p.explicit_bounds.clone(),
                                bucket_counts: p.bucket_counts.clone(),
                            };
                            point(
                                MetricKind::Histogram,
                                &p.attributes,
                                value,
                                p.time_unix_nano,
                            )
                        }));
                    }
                    Some(metric::Data::ExponentialHistogram(histogram)) => {
                        points.extend(histogram.data_points.iter().map(|p| {
                            let value = PointValue::Other {
                                count: p.count,
                                sum: p.sum,
                            };
                            let kind = MetricKind::ExponentialHistogram;
                            point(kind, &p.attributes, value, p.time_unix_nano)
                        }));
                    }
                    Some(metric::Data::Summary(summary)) => {
                        points.extend(summary.data_points.iter().map(|p| {
                            let value = PointValue::Other {
                                count: p.count,
                                sum: Some(p.sum),
                            };
                            point(MetricKind::Summary, &p.attributes, value, p.time_unix_nano)
                        }));
                    }
                    None => {}
                }
            }
        }
        points
    }

    /// Waits until data points of the metric `name` arrive and returns them
    /// all; panics, listing the metrics that did arrive, when none does
    /// within `timeout`.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> Vec<DataPoint> {
        let found = tokio::time::timeout(timeout, async {
            loop {
                let points = self.metric(name);
                if !points.is_empty() {
                    return points;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no metric `{name}` within {timeout:?}; received {:?}",
                self.metric_names()
            )
        })
    }

    /// The names of every metric received so far.
    pub fn metric_names(&self) -> Vec<String> {
        let metrics = self.store.metrics.lock().unwrap();
        let mut names: Vec<String> = metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// Decodes an OTLP/HTTP protobuf body, or says why it cannot.
fn decode_http<M: Message + Default>(
    store: &Store,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<M, (HttpStatus, String)> {
    let remaining = store.unavailable.load(Ordering::Relaxed);
    if remaining > 0 {
        store.unavailable.store(remaining - 1, Ordering::Relaxed);
        store.refused.fetch_add(1, Ordering::Relaxed);
        return Err((HttpStatus::SERVICE_UNAVAILABLE, "restarting".to_owned()));
    }
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value == "application/x-protobuf");
    if !protobuf {
        return Err((
            HttpStatus::UNSUPPORTED_MEDIA_TYPE,
            "expected application/x-protobuf".to_owned(),
        ));
    }
    M::decode(body.as_ref()).map_err(|error| {
        (
            HttpStatus::BAD_REQUEST,
            format!("undecodable body: {error}"),
        )
    })
}

/// An OTLP/HTTP answer: the protobuf response message.
fn protobuf_response(message: impl Message) -> HttpResponse {
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        message.encode_to_vec(),
    )
        .into_response()
}

async fn http_traces(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    match decode_http::<ExportTraceServiceRequest>(&store, &headers, &body) {
        Ok(request) => {
            store.traces.lock().unwrap().push(request);
            protobuf_response(ExportTraceServiceResponse::default())
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn http_metrics(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    match decode_http::<ExportMetricsServiceRequest>(&store, &headers, &body) {
        Ok(request) => {
            store.metrics.lock().unwrap().push(request);
            protobuf_response(ExportMetricsServiceResponse::default())
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(json)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
        .collect()
}

fn json(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(bytes)) => Value::from(hex(bytes)),
        Some(any_value::Value::StringValueStrindex(index)) => Value::from(*index),
        None => Value::Null,
    }
}

fn number(value: Option<number_data_point::Value>) -> PointValue {
    match value {
        Some(number_data_point::Value::AsInt(i)) => PointValue::Int(i),
        Some(number_data_point::Value::AsDouble(d)) => PointValue::Double(d),
        None => PointValue::Double(f64::NAN),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
